// Small DOM helpers shared by both pages: element builder, icons, toasts,
// the site header and the identity (name + colour) editor.

import { identity, initials, MAX_NAME_LENGTH, onIdentityChange, PALETTE, setIdentity } from './identity'
import { withToken } from './api'

type Child = Node | string | null | undefined | false
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>

/** `h('button', { class: 'x', onclick: f }, 'Label')` */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value)
    } else if (value === true) {
      el.setAttribute(key, '')
    } else {
      el.setAttribute(key, String(value))
    }
  }
  append(el, ...children)
  return el
}

export function append(el: Element, ...children: Child[]) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    el.append(child)
  }
}

// 24×24 stroke icons in the style of Lucide.
const ICONS: Record<string, string> = {
  bold: '<path d="M6 12h9a4 4 0 0 1 0 8H7a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1h7a4 4 0 0 1 0 8"/>',
  italic: '<line x1="19" x2="10" y1="4" y2="4"/><line x1="14" x2="5" y1="20" y2="20"/><line x1="15" x2="9" y1="4" y2="20"/>',
  strike: '<path d="M16 4H9a3 3 0 0 0-2.83 4"/><path d="M14 12a4 4 0 0 1 0 8H6"/><line x1="4" x2="20" y1="12" y2="12"/>',
  code: '<polyline points="16 18 22 12 16 6"/><polyline points="8 6 2 12 8 18"/>',
  bulletList:
    '<line x1="9" x2="21" y1="6" y2="6"/><line x1="9" x2="21" y1="12" y2="12"/><line x1="9" x2="21" y1="18" y2="18"/><circle cx="4" cy="6" r="1"/><circle cx="4" cy="12" r="1"/><circle cx="4" cy="18" r="1"/>',
  orderedList:
    '<line x1="10" x2="21" y1="6" y2="6"/><line x1="10" x2="21" y1="12" y2="12"/><line x1="10" x2="21" y1="18" y2="18"/><path d="M4 6h1v4"/><path d="M4 10h2"/><path d="M6 18H4c0-1 2-2 2-3s-1-1.5-2-1"/>',
  blockquote: '<path d="M17 6H3"/><path d="M21 12H8"/><path d="M21 18H8"/><path d="M3 12v6"/>',
  codeBlock: '<rect x="3" y="3" width="18" height="18" rx="2"/><path d="m10 9-3 3 3 3"/><path d="m14 15 3-3-3-3"/>',
  rule: '<path d="M4 12h16"/>',
  undo: '<path d="M9 14 4 9l5-5"/><path d="M4 9h10.5a5.5 5.5 0 0 1 0 11H11"/>',
  redo: '<path d="m15 14 5-5-5-5"/><path d="M20 9H9.5a5.5 5.5 0 0 0 0 11H13"/>',
  link: '<path d="M10 13a5 5 0 0 0 7.54.54l3-3a5 5 0 0 0-7.07-7.07l-1.72 1.71"/><path d="M14 11a5 5 0 0 0-7.54-.54l-3 3a5 5 0 0 0 7.07 7.07l1.71-1.71"/>',
  download: '<path d="M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4"/><polyline points="7 10 12 15 17 10"/><line x1="12" x2="12" y1="15" y2="3"/>',
  file: '<path d="M15 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V7Z"/><path d="M14 2v4a2 2 0 0 0 2 2h4"/><path d="M16 13H8"/><path d="M16 17H8"/><path d="M10 9H8"/>',
  plus: '<path d="M5 12h14"/><path d="M12 5v14"/>',
  lock: '<rect width="18" height="11" x="3" y="11" rx="2"/><path d="M7 11V7a5 5 0 0 1 10 0v4"/>',
  offline:
    '<path d="M12 20h.01"/><path d="M8.5 16.43a5 5 0 0 1 7 0"/><path d="M5 12.86a10 10 0 0 1 5.17-2.69"/><path d="M19 12.86a10 10 0 0 0-2-1.52"/><path d="M2 8.82a15 15 0 0 1 4.18-2.64"/><path d="M22 8.82a15 15 0 0 0-11.29-3.76"/><path d="m2 2 20 20"/>',
  back: '<path d="m15 18-6-6 6-6"/>',
  check: '<path d="M20 6 9 17l-5-5"/>',
  alert: '<circle cx="12" cy="12" r="10"/><line x1="12" x2="12" y1="8" y2="12"/><line x1="12" x2="12.01" y1="16" y2="16"/>',
  pencil: '<path d="M21.17 6.81a1 1 0 0 0-3.99-3.99L3.84 16.17a2 2 0 0 0-.5.83l-1.32 4.35a.5.5 0 0 0 .62.62l4.35-1.32a2 2 0 0 0 .83-.5z"/>',
  users:
    '<path d="M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2"/><circle cx="9" cy="7" r="4"/><path d="M22 21v-2a4 4 0 0 0-3-3.87"/><path d="M16 3.13a4 4 0 0 1 0 7.75"/>',
  info: '<circle cx="12" cy="12" r="10"/><path d="M12 16v-4"/><path d="M12 8h.01"/>',
  refresh: '<path d="M21 12a9 9 0 1 1-3-6.7L21 8"/><path d="M21 3v5h-5"/>',
  clock: '<circle cx="12" cy="12" r="10"/><polyline points="12 6 12 12 16 14"/>',
  save: '<path d="M19 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h11l5 5v11a2 2 0 0 1-2 2z"/><polyline points="17 21 17 13 7 13 7 21"/><polyline points="7 3 7 8 15 8"/>',
}

export function icon(name: keyof typeof ICONS | string, size = 18): SVGSVGElement {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  svg.setAttribute('viewBox', '0 0 24 24')
  svg.setAttribute('width', String(size))
  svg.setAttribute('height', String(size))
  svg.setAttribute('fill', 'none')
  svg.setAttribute('stroke', 'currentColor')
  svg.setAttribute('stroke-width', '2')
  svg.setAttribute('stroke-linecap', 'round')
  svg.setAttribute('stroke-linejoin', 'round')
  svg.setAttribute('aria-hidden', 'true')
  svg.classList.add('icon')
  svg.innerHTML = ICONS[name] ?? ''
  return svg
}

let toastRegion: HTMLElement | null = null

/** A short message at the bottom of the screen. */
export function toast(message: string, kind: 'info' | 'error' | 'success' = 'info') {
  if (!toastRegion) {
    toastRegion = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' })
    document.body.append(toastRegion)
  }
  const item = h(
    'div',
    { class: `toast toast-${kind}` },
    icon(kind === 'error' ? 'alert' : kind === 'success' ? 'check' : 'info', 16),
    h('span', {}, message),
  )
  toastRegion.append(item)
  setTimeout(() => {
    item.classList.add('leaving')
    setTimeout(() => item.remove(), 250)
  }, 3200)
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  const units = ['KB', 'MB', 'GB', 'TB']
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })

/** “just now”, “5 minutes ago”, “yesterday”, then a date. */
export function relativeTime(date: Date, now = Date.now()): string {
  const seconds = Math.round((date.getTime() - now) / 1000)
  const abs = Math.abs(seconds)
  if (abs < 45) return 'just now'
  if (abs < 3600) return relative.format(Math.round(seconds / 60), 'minute')
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), 'hour')
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), 'day')
  return absolute.format(date)
}

export function absoluteTime(date: Date): string {
  return absolute.format(date)
}

export function avatar(name: string, color: string, size: 'sm' | 'md' = 'md'): HTMLElement {
  const el = h('span', { class: `avatar avatar-${size}`, 'aria-hidden': 'true' }, initials(name))
  el.style.backgroundColor = color
  return el
}

/** The wordmark, linking home. */
export function brand(): HTMLElement {
  return h(
    'a',
    { class: 'brand', href: withToken('/'), 'aria-label': 'Quire — all documents' },
    h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'Q'),
    h('span', { class: 'brand-name' }, 'Quire'),
  )
}

/**
 * The user's own name and colour, as a chip that opens a small editor.
 * Changes are remembered (localStorage) and announced to `onIdentityChange`.
 */
export function identityChip(): HTMLElement {
  const me = identity()
  const dot = avatar(me.name, me.color, 'sm')
  const label = h('span', { class: 'identity-name', 'data-testid': 'identity-name' }, me.name)
  const button = h(
    'button',
    { class: 'identity-chip', type: 'button', 'aria-haspopup': 'dialog', 'aria-expanded': 'false', title: 'Your name and colour' },
    dot,
    label,
    icon('pencil', 14),
  )

  const input = h('input', {
    class: 'input',
    id: 'identity-input',
    type: 'text',
    maxlength: MAX_NAME_LENGTH,
    autocomplete: 'nickname',
    spellcheck: 'false',
  })
  const swatches = h('div', { class: 'swatches', role: 'radiogroup', 'aria-label': 'Colour' })
  let chosen = me.color
  const renderSwatches = () => {
    swatches.replaceChildren(
      ...PALETTE.map((color) => {
        const swatch = h('button', {
          type: 'button',
          class: 'swatch',
          role: 'radio',
          'aria-checked': String(color === chosen),
          'aria-label': color,
          'data-color': color,
          onclick: () => {
            chosen = color
            renderSwatches()
          },
        })
        swatch.style.backgroundColor = color
        return swatch
      }),
    )
  }
  const form = h(
    'form',
    { class: 'popover identity-popover', role: 'dialog', 'aria-label': 'Your name and colour', hidden: true },
    h('label', { class: 'field-label', for: 'identity-input' }, 'Your name'),
    input,
    h('div', { class: 'field-label' }, 'Your colour'),
    swatches,
    h(
      'div',
      { class: 'popover-actions' },
      h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save'),
    ),
  )
  const wrapper = h('div', { class: 'identity' }, button, form)

  const onOutside = (event: Event) => {
    if (!wrapper.contains(event.target as Node)) close()
  }
  const onKey = (event: KeyboardEvent) => {
    if (event.key === 'Escape') close()
  }
  function open() {
    const now = identity()
    input.value = now.name
    chosen = now.color
    renderSwatches()
    form.hidden = false
    button.setAttribute('aria-expanded', 'true')
    input.focus()
    input.select()
    document.addEventListener('pointerdown', onOutside)
    document.addEventListener('keydown', onKey)
  }
  function close() {
    form.hidden = true
    button.setAttribute('aria-expanded', 'false')
    document.removeEventListener('pointerdown', onOutside)
    document.removeEventListener('keydown', onKey)
  }
  button.addEventListener('click', () => (form.hidden ? open() : close()))
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    setIdentity({ name: input.value, color: chosen })
    close()
  })
  onIdentityChange((next) => {
    label.textContent = next.name
    dot.textContent = initials(next.name)
    dot.style.backgroundColor = next.color
  })
  return wrapper
}

/** Copies text, with a fallback for pages that are not a secure context. */
export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text)
      return
    } catch {
      // permission refused: fall back below
    }
  }
  const area = h('textarea', { class: 'offscreen', readonly: true })
  area.value = text
  document.body.append(area)
  area.select()
  const ok = document.execCommand('copy')
  area.remove()
  if (!ok) throw new Error('copy refused')
}

/** Saves a blob under a file name through a temporary link. */
export function download(blob: Blob, filename: string) {
  const url = URL.createObjectURL(blob)
  const link = h('a', { href: url, download: filename, class: 'offscreen' })
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}
