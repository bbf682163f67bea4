// The history panel of the editor: the document's versions (recorded by the
// server when editing goes quiet, when the document unloads, on request and
// on restore), a read-only preview of one, "Save version" and "Restore".
// A restore is an ordinary edit on the server, so this editor (and every
// other) receives it over the WebSocket like anyone's typing.

import { ApiError, FRAGMENT_ROOT, fetchVersionText, listVersions, restoreVersion, saveVersion, type Version } from './api'
import { absoluteTime, h, icon, relativeTime, toast } from './ui'

const TRIGGER_TEXT: Record<Version['trigger'], string> = {
  auto: 'Autosaved',
  unload: 'Saved on close',
  manual: 'Saved',
  restore: 'Restored',
}

/** Refresh the list this often while the page is visible. */
const REFRESH_MS = 15000

/** The paragraphs of an XmlFragment export, as plain lines. */
export function xmlToLines(xml: string): string[] {
  const parsed = new DOMParser().parseFromString(`<root>${xml}</root>`, 'application/xml')
  if (parsed.getElementsByTagName('parsererror').length > 0) return [xml]
  return [...parsed.documentElement.children].map((node) => node.textContent ?? '')
}

export interface HistoryPanel {
  element: HTMLElement
  /** Reloads the list; the editor calls it once the document is synced. */
  refresh: () => Promise<void>
}

/**
 * The panel for `docName`. It asks nothing before `refresh` is first called
 * (the document may not exist on the server until the editor connects), and
 * then refreshes every 15 s while `live()` and the page is visible.
 */
export function createHistoryPanel(docName: string, canWrite: () => boolean, live: () => boolean): HistoryPanel {
  const list = h('ol', { class: 'version-list', 'data-testid': 'versions' })
  const empty = h('p', { class: 'side-note' }, 'No versions yet. One is saved when editing pauses.')
  const preview = h('div', { class: 'version-preview', 'data-testid': 'version-preview', hidden: true })
  const saveButton = h('button', { class: 'btn btn-secondary', type: 'button', 'data-testid': 'save-version' }, icon('save', 16), 'Save version')
  let selected: number | null = null

  async function refresh() {
    try {
      const versions = await listVersions(docName)
      empty.hidden = versions.length > 0
      list.replaceChildren(...versions.map(row))
    } catch (error) {
      // A document nobody has typed into yet has no versions and no record.
      if (error instanceof ApiError && error.status === 404) {
        empty.hidden = false
        list.replaceChildren()
        return
      }
      toast(`Could not load the history: ${message(error)}`, 'error')
    }
  }

  function row(version: Version): HTMLElement {
    const when = new Date(version.created_at)
    const title = version.label ?? TRIGGER_TEXT[version.trigger]
    const previewButton = h('button', { class: 'btn btn-ghost btn-sm', type: 'button', 'data-testid': 'preview-version' }, 'Preview')
    previewButton.addEventListener('click', () => void show(version))
    const restoreButton = h('button', { class: 'btn btn-ghost btn-sm', type: 'button', 'data-testid': 'restore-version' }, 'Restore')
    restoreButton.disabled = !canWrite()
    restoreButton.addEventListener('click', () => void restore(version))
    const item = h(
      'li',
      { class: 'version', 'data-version-id': version.id, 'data-trigger': version.trigger },
      h('div', { class: 'version-title' }, title),
      h('time', { class: 'version-time', datetime: version.created_at, title: absoluteTime(when) }, relativeTime(when)),
      ...(version.users.length > 0 ? [h('div', { class: 'version-users', 'data-testid': 'version-users' }, `with ${version.users.join(', ')}`)] : []),
      h('div', { class: 'version-actions' }, previewButton, restoreButton),
    )
    if (version.id === selected) item.classList.add('selected')
    return item
  }

  async function show(version: Version) {
    try {
      const xml = await fetchVersionText(docName, version.id, FRAGMENT_ROOT)
      selected = version.id
      const lines = xmlToLines(xml)
      preview.replaceChildren(
        h('div', { class: 'version-preview-head' }, `Version ${version.id}, read-only`),
        ...lines.map((line) => h('p', {}, line)),
      )
      preview.hidden = false
      for (const item of list.querySelectorAll('.version')) {
        item.classList.toggle('selected', item.getAttribute('data-version-id') === String(version.id))
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        preview.replaceChildren(h('div', { class: 'version-preview-head' }, `Version ${version.id} is empty.`))
        preview.hidden = false
        return
      }
      toast(`Could not show version ${version.id}: ${message(error)}`, 'error')
    }
  }

  async function restore(version: Version) {
    try {
      const made = await restoreVersion(docName, version.id)
      toast(`Restored version ${version.id}. Saved as version ${made.id}; restore that one to undo.`, 'success')
      await refresh()
    } catch (error) {
      toast(`Restore failed: ${message(error)}`, 'error')
    }
  }

  saveButton.addEventListener('click', async () => {
    try {
      const made = await saveVersion(docName)
      toast(`Saved version ${made.id}.`, 'success')
      await refresh()
    } catch (error) {
      toast(`Could not save a version: ${message(error)}`, 'error')
    }
  })

  const refreshButton = h('button', { class: 'btn btn-ghost btn-sm', type: 'button', title: 'Refresh', 'data-testid': 'refresh-versions' }, 'Refresh')
  refreshButton.addEventListener('click', () => void refresh())
  let started = false
  window.setInterval(() => {
    if (started && live() && document.visibilityState === 'visible') void refresh()
  }, REFRESH_MS)
  const panel = h(
    'section',
    { class: 'side-card', 'data-testid': 'history' },
    h('h2', { class: 'side-heading' }, icon('clock', 16), 'History', refreshButton),
    h('div', { class: 'export-list' }, saveButton),
    empty,
    list,
    preview,
  )
  saveButton.disabled = !canWrite()
  return {
    element: panel,
    refresh: async () => {
      started = true
      saveButton.disabled = !canWrite()
      await refresh()
    },
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
