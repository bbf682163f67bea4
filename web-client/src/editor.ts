// `/d/{doc}`: the collaborative editor.
//
// One Y.Doc per page, bound to Tiptap through the Collaboration extension
// (XmlFragment root `default`) and to the server through y-websocket's
// WebsocketProvider on `/ws/{doc}`. Presence (name, colour, caret) travels as
// awareness. When the browser goes offline the provider is disconnected on
// purpose: edits keep landing in the local Y.Doc and are exchanged by state
// vector when the provider connects again. The side bar's history panel
// (`history.ts`) lists, previews and restores the server's versions.

import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { Placeholder } from '@tiptap/extensions'
import * as Y from 'yjs'
import { WebsocketProvider, messageAuth } from 'y-websocket'
import { readAuthMessage } from 'y-protocols/auth'
import { docPageUrl, fetchExport, FRAGMENT_ROOT, nameProblem, token, tokenScope, ApiError, type ExportFormat } from './api'
import { identity, onIdentityChange, type Identity } from './identity'
import { ConnectionStatus, STATUS_TEXT, type StatusSnapshot } from './status'
import { createHistoryPanel } from './history'
import { createToolbar } from './toolbar'
import { avatar, brand, copyText, download, h, icon, identityChip, toast } from './ui'

interface Peer {
  clientId: number
  name: string
  color: string
  self: boolean
}

export function renderEditor(root: HTMLElement, docName: string) {
  document.body.dataset.page = 'editor'
  const problem = nameProblem(docName)
  if (problem) {
    renderBadName(root, docName, problem)
    return
  }
  document.title = `${docName} · Quire`

  // --- Yjs and the connection -------------------------------------------
  const ydoc = new Y.Doc()
  const wsUrl = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`
  const provider = new WebsocketProvider(wsUrl, docName, ydoc, {
    params: token ? { token } : {},
    connect: navigator.onLine,
  })
  const status = new ConnectionStatus(provider, ydoc)

  // The server answers updates from a read-only client with an auth message
  // (permission denied). y-websocket only logs it; we make the editor read-only.
  provider.messageHandlers[messageAuth] = (_encoder, decoder) => {
    readAuthMessage(decoder, ydoc, (_doc, reason) =>
      setReadOnly(
        `The server did not accept your changes${reason ? ` (${reason})` : ''}. What you typed here is not saved; reload to see the document as it is.`,
      ),
    )
  }

  // A socket that dies because the network went away must not be retried
  // until the browser is online again (each try would fail and log).
  provider.on('connection-close', () => {
    if (!navigator.onLine) provider.shouldConnect = false
  })
  window.addEventListener('offline', () => {
    provider.disconnect()
    status.emit()
  })
  window.addEventListener('online', () => {
    if (status.current().reason === null) provider.connect()
    status.emit()
  })

  // --- Editor --------------------------------------------------------------
  const me = identity()
  const paper = h('div', { class: 'paper', 'data-testid': 'paper' })
  const readOnlyFromToken = tokenScope() === 'read'
  const editor = new Editor({
    element: paper,
    editable: !readOnlyFromToken,
    extensions: [
      // Collaboration brings its own undo (only your changes); a trailing
      // paragraph added by every client at once would multiply.
      StarterKit.configure({ undoRedo: false, trailingNode: false }),
      Collaboration.configure({ document: ydoc, field: FRAGMENT_ROOT }),
      CollaborationCaret.configure({
        provider,
        user: { name: me.name, color: me.color },
        render: renderCaret,
        selectionRender: (user) => ({
          nodeName: 'span',
          class: 'remote-selection',
          style: `background-color: ${safeColor(user.color)}33`,
        }),
      }),
      Placeholder.configure({ placeholder: 'Start writing…' }),
    ],
    editorProps: {
      attributes: { class: 'prose', spellcheck: 'true', 'aria-label': `Document ${docName}` },
    },
  })
  const toolbar = createToolbar(editor)
  editor.on('transaction', () => toolbar.update())
  editor.on('focus', () => toolbar.update())

  onIdentityChange((next: Identity) => {
    editor.commands.updateUser({ name: next.name, color: next.color })
  })

  // --- Banners ---------------------------------------------------------------
  const banners = h('div', { class: 'banners' })
  const readOnlyBanner = h(
    'div',
    { class: 'banner banner-readonly', 'data-testid': 'readonly-banner', hidden: true, role: 'status' },
    icon('lock', 16),
    h('span', {}, h('strong', {}, 'View only. '), h('span', { class: 'banner-text' })),
  )
  const offlineBanner = h(
    'div',
    { class: 'banner banner-offline', 'data-testid': 'offline-banner', hidden: true, role: 'status' },
    icon('offline', 16),
    h('span', { class: 'banner-text' }, 'You’re offline. Keep writing: your changes stay on this device and sync when the connection returns.'),
  )
  const closedBanner = h(
    'div',
    { class: 'banner banner-closed', hidden: true, role: 'alert' },
    icon('alert', 16),
    h('span', { class: 'banner-text' }),
  )
  banners.append(readOnlyBanner, offlineBanner, closedBanner)

  function setReadOnly(reason: string) {
    const wasEditable = editor.isEditable
    editor.setEditable(false)
    document.body.dataset.readonly = 'true'
    const text = readOnlyBanner.querySelector('.banner-text')
    if (text) text.textContent = reason
    readOnlyBanner.hidden = false
    toolbar.update()
    if (wasEditable) toast('This document is view-only for you.', 'info')
  }
  if (readOnlyFromToken) setReadOnly('Your link lets you read this document, not edit it.')

  // --- Header ------------------------------------------------------------------
  const slash = docName.lastIndexOf('/')
  const statusPill = h(
    'div',
    { class: 'status', 'data-testid': 'status', role: 'status', 'aria-live': 'polite' },
    h('span', { class: 'status-dot', 'aria-hidden': 'true' }),
    h('span', { class: 'status-text' }),
  )
  const headerPeers = h('div', { class: 'avatar-stack', 'aria-hidden': 'true' })
  const copyButton = h(
    'button',
    { type: 'button', class: 'btn', 'data-testid': 'copy-link', title: 'Copy a link to this document' },
    icon('link', 16),
    h('span', { class: 'btn-label' }, 'Copy link'),
  )
  copyButton.addEventListener('click', async () => {
    const link = new URL(docPageUrl(docName).split('?')[0], location.origin).href
    try {
      await copyText(link)
      toast(token ? 'Link copied, without your access token.' : 'Link copied.', 'success')
    } catch {
      toast('Could not copy the link. Copy it from the address bar.', 'error')
    }
  })

  const header = h(
    'header',
    { class: 'site-header editor-header' },
    h(
      'div',
      { class: 'site-header-inner' },
      h(
        'div',
        { class: 'header-title' },
        brand(),
        h('span', { class: 'crumb-sep', 'aria-hidden': 'true' }, '/'),
        h(
          'h1',
          { class: 'doc-title', title: docName, 'data-testid': 'doc-title' },
          slash >= 0 ? h('span', { class: 'doc-folder' }, docName.slice(0, slash + 1)) : null,
          docName.slice(slash + 1),
        ),
      ),
      h('div', { class: 'header-actions' }, statusPill, headerPeers, copyButton, identityChip()),
    ),
  )

  // --- Sidebar: who is here, exports ----------------------------------------------
  const peopleList = h('ul', { class: 'people', 'data-testid': 'online-list' })
  const peopleCount = h('span', { class: 'count-badge' }, '1')
  const exportButtons = (
    [
      ['json', 'JSON', 'Every root as JSON', '.json'],
      ['text', 'Text', `The “${FRAGMENT_ROOT}” root as markup`, '.txt'],
      ['yjs', 'Yjs snapshot', 'Binary update for Y.applyUpdate', '.yjs'],
    ] as const
  ).map(([format, label, note, ext]) =>
    h(
      'button',
      {
        type: 'button',
        class: 'export-item',
        'data-export': format,
        onclick: () => void exportAs(format, ext),
      },
      icon('download', 16),
      h('span', { class: 'export-text' }, h('span', { class: 'export-label' }, label), h('span', { class: 'export-note' }, note)),
    ),
  )
  const history = createHistoryPanel(
    docName,
    () => tokenScope() !== 'read' && document.body.dataset.readonly !== 'true',
    () => provider.wsconnected,
  )
  // The document exists on the server once this editor has synced with it.
  provider.on('sync', (synced: boolean) => {
    if (synced) void history.refresh()
  })
  const aside = h(
    'aside',
    { class: 'sidebar' },
    h('section', { class: 'side-card' }, h('h2', { class: 'side-heading' }, icon('users', 16), 'Online', peopleCount), peopleList),
    h(
      'section',
      { class: 'side-card' },
      h('h2', { class: 'side-heading' }, icon('download', 16), 'Export'),
      h('div', { class: 'export-list' }, ...exportButtons),
      h('p', { class: 'side-note' }, 'Exports are the server’s copy of the document.'),
    ),
    history.element,
  )

  async function exportAs(format: ExportFormat, ext: string) {
    const { status: now, unsynced } = status.current()
    if (now !== 'connected' && unsynced) toast('Your offline edits are not on the server yet, so the export leaves them out.', 'info')
    try {
      const blob = await fetchExport(docName, format)
      download(blob, `${docName.replace(/\//g, '-')}${ext}`)
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        toast('Nothing to export yet: the document is still empty.', 'info')
      } else {
        toast(`Export failed: ${error instanceof Error ? error.message : String(error)}`, 'error')
      }
    }
  }

  root.replaceChildren(
    header,
    h(
      'div',
      { class: 'toolbar-bar' },
      h('div', { class: 'toolbar-inner' }, toolbar.element),
    ),
    h('div', { class: 'editor-layout' }, h('main', { class: 'editor-main' }, banners, paper), aside),
  )

  // --- Live state -> DOM ------------------------------------------------------------
  status.subscribe((snapshot: StatusSnapshot) => {
    statusPill.dataset.status = snapshot.status
    document.body.dataset.status = snapshot.status
    const text = statusPill.querySelector('.status-text')
    let label = STATUS_TEXT[snapshot.status]
    if (snapshot.status === 'offline' && snapshot.unsynced) label = 'Offline · saved on this device'
    if (text) text.textContent = label
    statusPill.title =
      snapshot.status === 'offline'
        ? 'No network. Edits are kept in this tab and sync when you are back online.'
        : snapshot.status === 'connected'
          ? 'Live: changes are shared as you type.'
          : snapshot.status === 'closed'
            ? (snapshot.reason ?? '')
            : 'Trying to reach the server. Your edits are kept and will sync.'
    offlineBanner.hidden = snapshot.status !== 'offline'
    closedBanner.hidden = snapshot.status !== 'closed'
    const closedText = closedBanner.querySelector('.banner-text')
    if (closedText) closedText.textContent = snapshot.reason ?? ''
    if (snapshot.status === 'closed' && editor.isEditable) {
      editor.setEditable(false)
      toolbar.update()
    }
  })

  const renderPeers = () => {
    const peers: Peer[] = []
    provider.awareness.getStates().forEach((state, clientId) => {
      const user = state.user as Partial<Identity> | undefined
      if (!user || typeof user.name !== 'string') return
      peers.push({ clientId, name: user.name, color: safeColor(user.color), self: clientId === ydoc.clientID })
    })
    peers.sort((a, b) => Number(b.self) - Number(a.self) || a.name.localeCompare(b.name) || a.clientId - b.clientId)
    peopleCount.textContent = String(peers.length)
    peopleList.replaceChildren(
      ...peers.map((peer) =>
        h(
          'li',
          { class: 'person', 'data-client-id': peer.clientId, 'data-name': peer.name },
          avatar(peer.name, peer.color),
          h('span', { class: 'person-name' }, peer.name),
          peer.self ? h('span', { class: 'you-tag' }, 'you') : null,
        ),
      ),
    )
    const others = peers.filter((p) => !p.self)
    headerPeers.replaceChildren(
      ...others.slice(0, 4).map((p) => {
        const a = avatar(p.name, p.color, 'sm')
        a.title = p.name
        return a
      }),
      others.length > 4 ? h('span', { class: 'avatar avatar-sm avatar-more' }, `+${others.length - 4}`) : '',
    )
  }
  provider.awareness.on('change', renderPeers)
  renderPeers()

  // For debugging from the console and for end-to-end tests.
  Object.assign(window, { quire: { editor, ydoc, provider } })
}

function safeColor(color: unknown): string {
  return typeof color === 'string' && /^#[0-9a-f]{6}$/i.test(color) ? color : '#8b8d98'
}

function renderCaret(user: Record<string, unknown>): HTMLElement {
  const color = safeColor(user.color)
  const name = typeof user.name === 'string' ? user.name : 'Someone'
  const caret = h('span', { class: 'collaboration-carets__caret', 'data-name': name })
  caret.style.borderColor = color
  const label = h('span', { class: 'collaboration-carets__label' }, name)
  label.style.backgroundColor = color
  caret.append(label)
  return caret
}

function renderBadName(root: HTMLElement, docName: string, problem: string) {
  document.title = 'Not a document · Quire'
  root.replaceChildren(
    h('header', { class: 'site-header' }, h('div', { class: 'site-header-inner' }, brand(), h('div', { class: 'header-actions' }, identityChip()))),
    h(
      'main',
      { class: 'list-page' },
      h(
        'div',
        { class: 'empty-state error-state' },
        icon('alert', 28),
        h('h3', {}, `“${docName}” is not a document name`),
        h('p', {}, problem),
        h('a', { class: 'btn', href: '/' }, icon('back', 16), 'All documents'),
      ),
    ),
  )
}
