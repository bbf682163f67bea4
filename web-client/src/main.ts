// Entry point: a two-route single-page app. The server answers `/` and
// `/d/{doc}` with this page; the route decides what to render. The editor
// (ProseMirror + Yjs) is loaded only on `/d/...`, so the list stays light.

import '@fontsource-variable/inter'
import './styles.css'
import { docNameFromPath } from './api'
import { renderList } from './list'

const root = document.getElementById('app')
if (!root) throw new Error('index.html has no #app element')

const docName = docNameFromPath(location.pathname)
if (docName !== null) {
  import('./editor').then(({ renderEditor }) => renderEditor(root, docName))
} else {
  renderList(root)
}
