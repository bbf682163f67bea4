// `/`: the documents on this server (GET /api/docs), a form to start a new
// one, and a link to open each. Refreshes while visible, so the "here now"
// column follows people coming and going.

import { ApiError, docPageUrl, listDocs, nameProblem, token, type DocSummary } from './api'
import { absoluteTime, brand, formatBytes, h, icon, identityChip, relativeTime } from './ui'

const REFRESH_MS = 5000

function suggestName(): string {
  const alphabet = 'abcdefghjkmnpqrstuvwxyz23456789'
  let suffix = ''
  for (let i = 0; i < 5; i++) suffix += alphabet[Math.floor(Math.random() * alphabet.length)]
  return `untitled-${suffix}`
}

export function renderList(root: HTMLElement) {
  document.title = 'Documents · Quire'
  document.body.dataset.page = 'list'

  const nameInput = h('input', {
    class: 'input',
    id: 'new-doc-name',
    type: 'text',
    placeholder: 'meeting-notes or team/plan',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': 'new-doc-hint',
  })
  const hint = h('p', { class: 'field-hint', id: 'new-doc-hint' }, 'Letters, digits, . _ ~ - and / for folders. Leave empty for an untitled document.')
  const createForm = h(
    'form',
    { class: 'create-form', 'aria-label': 'New document' },
    h(
      'div',
      { class: 'create-row' },
      h('label', { class: 'visually-hidden', for: 'new-doc-name' }, 'Name of the new document'),
      nameInput,
      h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'create-doc' }, icon('plus', 16), 'New document'),
    ),
    hint,
  )
  createForm.addEventListener('submit', (event) => {
    event.preventDefault()
    const name = nameInput.value.trim() || suggestName()
    const problem = nameProblem(name)
    if (problem) {
      hint.textContent = problem
      hint.classList.add('field-error')
      nameInput.setAttribute('aria-invalid', 'true')
      nameInput.focus()
      return
    }
    location.assign(docPageUrl(name))
  })
  nameInput.addEventListener('input', () => {
    const problem = nameInput.value ? nameProblem(nameInput.value.trim()) : null
    hint.classList.toggle('field-error', !!problem)
    nameInput.toggleAttribute('aria-invalid', !!problem)
    hint.textContent = problem ?? 'Letters, digits, . _ ~ - and / for folders. Leave empty for an untitled document.'
  })

  const listArea = h('section', { class: 'doc-list', 'aria-live': 'polite', 'aria-busy': 'true' })
  const countLabel = h('span', { class: 'muted' })

  root.replaceChildren(
    h(
      'header',
      { class: 'site-header' },
      h('div', { class: 'site-header-inner' }, brand(), h('div', { class: 'header-actions' }, identityChip())),
    ),
    h(
      'main',
      { class: 'list-page' },
      h(
        'div',
        { class: 'list-intro' },
        h('div', {}, h('h1', {}, 'Documents'), h('p', { class: 'lede' }, 'Write together in real time. Everyone with the link sees every keystroke, and edits made offline catch up when you reconnect.')),
      ),
      createForm,
      h('div', { class: 'section-heading' }, h('h2', {}, 'All documents'), countLabel),
      listArea,
    ),
  )

  let docs: DocSummary[] = []
  let nextCursor: string | null = null
  let loadedOnce = false

  function render(error: string | null = null) {
    listArea.setAttribute('aria-busy', 'false')
    if (error && !loadedOnce) {
      listArea.replaceChildren(
        h(
          'div',
          { class: 'empty-state error-state' },
          icon('alert', 28),
          h('h3', {}, 'Couldn’t load the documents'),
          h('p', {}, error),
          h('button', { type: 'button', class: 'btn', onclick: () => void refresh() }, icon('refresh', 16), 'Try again'),
        ),
      )
      countLabel.textContent = ''
      return
    }
    if (docs.length === 0) {
      listArea.replaceChildren(
        h(
          'div',
          { class: 'empty-state', 'data-testid': 'empty-state' },
          h('div', { class: 'empty-illustration', 'aria-hidden': 'true' }, icon('file', 30)),
          h('h3', {}, 'No documents yet'),
          h('p', {}, 'Create the first one above, then share its link to write together.'),
        ),
      )
      countLabel.textContent = ''
      return
    }
    countLabel.textContent = `${docs.length}${nextCursor ? '+' : ''} ${docs.length === 1 ? 'document' : 'documents'}`
    const now = Date.now()
    const rows = docs.map((doc) => {
      const updated = new Date(doc.updated_at)
      const valid = !Number.isNaN(updated.getTime()) && updated.getTime() > 0
      const href = docPageUrl(doc.name)
      const slash = doc.name.lastIndexOf('/')
      const folder = slash >= 0 ? doc.name.slice(0, slash + 1) : ''
      const base = doc.name.slice(slash + 1)
      const row = h(
        'tr',
        { 'data-doc-name': doc.name },
        h(
          'td',
          { class: 'cell-name' },
          h('a', { href, class: 'doc-link' }, h('span', { class: 'doc-icon' }, icon('file', 18)), h('span', {}, folder ? h('span', { class: 'doc-folder' }, folder) : null, h('span', { class: 'doc-base' }, base))),
        ),
        h('td', { class: 'cell-num' }, formatBytes(doc.bytes)),
        h('td', { class: 'cell-time', title: valid ? absoluteTime(updated) : '' }, valid ? relativeTime(updated, now) : '—'),
        h(
          'td',
          { class: 'cell-clients', 'data-clients': doc.clients },
          doc.clients > 0
            ? h('span', { class: 'presence-badge' }, h('span', { class: 'presence-dot' }), `${doc.clients} here`)
            : h('span', { class: 'muted' }, 'Nobody'),
        ),
      )
      row.addEventListener('click', (event) => {
        if ((event.target as Element).closest('a')) return
        location.assign(href)
      })
      return row
    })
    const table = h(
      'table',
      { class: 'doc-table' },
      h(
        'thead',
        {},
        h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'cell-num' }, 'Size'), h('th', { scope: 'col' }, 'Last change'), h('th', { scope: 'col' }, 'Here now')),
      ),
      h('tbody', {}, ...rows),
    )
    const more = nextCursor
      ? h('button', { type: 'button', class: 'btn btn-ghost load-more', onclick: () => void loadMore() }, 'Show more')
      : null
    listArea.replaceChildren(h('div', { class: 'table-card' }, table), more ?? '')
  }

  async function refresh() {
    try {
      // Refresh what is shown (at least the first page), keeping "show more" pages.
      const pages: DocSummary[] = []
      let cursor: string | null = null
      do {
        const page = await listDocs(cursor)
        pages.push(...page.docs)
        cursor = page.next_cursor
      } while (cursor && pages.length < docs.length)
      docs = pages
      nextCursor = cursor
      loadedOnce = true
      render()
    } catch (error) {
      render(describe(error))
    }
  }

  async function loadMore() {
    if (!nextCursor) return
    try {
      const page = await listDocs(nextCursor)
      docs = docs.concat(page.docs)
      nextCursor = page.next_cursor
      render()
    } catch (error) {
      render(describe(error))
    }
  }

  void refresh()
  setInterval(() => {
    if (document.visibilityState === 'visible' && navigator.onLine) void refresh()
  }, REFRESH_MS)
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') void refresh()
  })
  window.addEventListener('online', () => void refresh())
}

function describe(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 401) return token ? 'Your access token was not accepted.' : 'This server needs an access token: open the link you were given.'
    if (error.status === 403) return 'Your access token does not allow listing documents.'
    return error.message
  }
  return navigator.onLine ? 'The server could not be reached.' : 'You are offline.'
}
