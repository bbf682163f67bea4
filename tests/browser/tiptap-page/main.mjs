// A plain Tiptap app on a HocuspocusProvider, as Tiptap's documentation sets
// one up: StarterKit (its undo/redo off: Collaboration brings its own),
// Collaboration and CollaborationCaret. Bundled by lib/tiptap-page.mjs for
// the browser tests; the server, document and person come from the query
// string: ?ws=ws://host/hocuspocus&doc=name&name=Ada&color=%236e56cf
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { HocuspocusProvider } from '@hocuspocus/provider'
import * as Y from 'yjs'

const params = new URLSearchParams(location.search)
const ydoc = new Y.Doc()
const provider = new HocuspocusProvider({
  url: params.get('ws'),
  name: params.get('doc'),
  document: ydoc,
  token: params.get('token')
})
const editor = new Editor({
  element: document.querySelector('#editor'),
  extensions: [
    StarterKit.configure({ undoRedo: false }),
    Collaboration.configure({ document: ydoc }),
    CollaborationCaret.configure({
      provider,
      user: { name: params.get('name'), color: params.get('color') }
    })
  ]
})
window.tiptap = { editor, provider, ydoc }
