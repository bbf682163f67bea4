// The formatting toolbar: marks and blocks, each button showing whether it
// is active at the selection (aria-pressed) and whether it applies (disabled).

import type { Editor } from '@tiptap/core'
import { h, icon } from './ui'

interface Tool {
  id: string
  label: string
  /** An icon name, or a short text such as "H1". */
  glyph: { icon: string } | { text: string }
  shortcut?: string
  run: (editor: Editor) => boolean
  active?: (editor: Editor) => boolean
  enabled: (editor: Editor) => boolean
}

const isMac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent)
const keys = (shortcut: string) => shortcut.replace('Mod', isMac ? '⌘' : 'Ctrl').replace(/\+/g, isMac ? '' : '+')

const mark = (id: 'bold' | 'italic' | 'strike' | 'code', label: string, shortcut: string): Tool => {
  const toggle = {
    bold: (e: Editor) => e.chain().focus().toggleBold(),
    italic: (e: Editor) => e.chain().focus().toggleItalic(),
    strike: (e: Editor) => e.chain().focus().toggleStrike(),
    code: (e: Editor) => e.chain().focus().toggleCode(),
  }[id]
  const can = {
    bold: (e: Editor) => e.can().chain().toggleBold().run(),
    italic: (e: Editor) => e.can().chain().toggleItalic().run(),
    strike: (e: Editor) => e.can().chain().toggleStrike().run(),
    code: (e: Editor) => e.can().chain().toggleCode().run(),
  }[id]
  return {
    id,
    label,
    glyph: { icon: id === 'strike' ? 'strike' : id },
    shortcut,
    run: (e) => toggle(e).run(),
    active: (e) => e.isActive(id),
    enabled: can,
  }
}

const heading = (level: 1 | 2 | 3): Tool => ({
  id: `h${level}`,
  label: `Heading ${level}`,
  glyph: { text: `H${level}` },
  shortcut: `Mod+Alt+${level}`,
  run: (e) => e.chain().focus().toggleHeading({ level }).run(),
  active: (e) => e.isActive('heading', { level }),
  enabled: (e) => e.can().chain().toggleHeading({ level }).run(),
})

const GROUPS: Tool[][] = [
  [mark('bold', 'Bold', 'Mod+B'), mark('italic', 'Italic', 'Mod+I'), mark('strike', 'Strikethrough', 'Mod+Shift+S'), mark('code', 'Inline code', 'Mod+E')],
  [heading(1), heading(2), heading(3)],
  [
    {
      id: 'bulletList',
      label: 'Bullet list',
      glyph: { icon: 'bulletList' },
      shortcut: 'Mod+Shift+8',
      run: (e) => e.chain().focus().toggleBulletList().run(),
      active: (e) => e.isActive('bulletList'),
      enabled: (e) => e.can().chain().toggleBulletList().run(),
    },
    {
      id: 'orderedList',
      label: 'Numbered list',
      glyph: { icon: 'orderedList' },
      shortcut: 'Mod+Shift+7',
      run: (e) => e.chain().focus().toggleOrderedList().run(),
      active: (e) => e.isActive('orderedList'),
      enabled: (e) => e.can().chain().toggleOrderedList().run(),
    },
    {
      id: 'blockquote',
      label: 'Quote',
      glyph: { icon: 'blockquote' },
      shortcut: 'Mod+Shift+B',
      run: (e) => e.chain().focus().toggleBlockquote().run(),
      active: (e) => e.isActive('blockquote'),
      enabled: (e) => e.can().chain().toggleBlockquote().run(),
    },
    {
      id: 'codeBlock',
      label: 'Code block',
      glyph: { icon: 'codeBlock' },
      shortcut: 'Mod+Alt+C',
      run: (e) => e.chain().focus().toggleCodeBlock().run(),
      active: (e) => e.isActive('codeBlock'),
      enabled: (e) => e.can().chain().toggleCodeBlock().run(),
    },
    {
      id: 'horizontalRule',
      label: 'Divider',
      glyph: { icon: 'rule' },
      run: (e) => e.chain().focus().setHorizontalRule().run(),
      enabled: (e) => e.can().chain().setHorizontalRule().run(),
    },
  ],
  [
    {
      id: 'undo',
      label: 'Undo your last change',
      glyph: { icon: 'undo' },
      shortcut: 'Mod+Z',
      run: (e) => e.chain().focus().undo().run(),
      enabled: (e) => e.can().undo(),
    },
    {
      id: 'redo',
      label: 'Redo',
      glyph: { icon: 'redo' },
      shortcut: isMac ? 'Mod+Shift+Z' : 'Mod+Y',
      run: (e) => e.chain().focus().redo().run(),
      enabled: (e) => e.can().redo(),
    },
  ],
]

export interface Toolbar {
  element: HTMLElement
  /** Re-reads active and enabled states from the editor. */
  update(): void
}

export function createToolbar(editor: Editor): Toolbar {
  const buttons: { tool: Tool; el: HTMLButtonElement }[] = []
  const groups = GROUPS.map((group) =>
    h(
      'div',
      { class: 'toolbar-group', role: 'group' },
      ...group.map((tool) => {
        const title = tool.shortcut ? `${tool.label} (${keys(tool.shortcut)})` : tool.label
        const el = h(
          'button',
          {
            type: 'button',
            class: 'tool',
            title,
            'aria-label': tool.label,
            'data-tool': tool.id,
            'aria-pressed': tool.active ? 'false' : null,
          },
          'icon' in tool.glyph ? icon(tool.glyph.icon, 18) : h('span', { class: 'tool-text' }, tool.glyph.text),
        )
        // Keep the editor's selection: act on mousedown without taking focus.
        el.addEventListener('mousedown', (event) => event.preventDefault())
        el.addEventListener('click', () => {
          tool.run(editor)
          update()
        })
        buttons.push({ tool, el })
        return el
      }),
    ),
  )
  const element = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Formatting' }, ...groups)

  function update() {
    const editable = editor.isEditable
    for (const { tool, el } of buttons) {
      el.disabled = !editable || !tool.enabled(editor)
      if (tool.active) {
        const on = editable && tool.active(editor)
        el.setAttribute('aria-pressed', String(on))
        el.classList.toggle('is-active', on)
      }
    }
  }

  // Arrow keys move between buttons (one tab stop for the whole toolbar).
  element.addEventListener('keydown', (event) => {
    if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return
    const enabled = buttons.map((b) => b.el).filter((b) => !b.disabled)
    const index = enabled.indexOf(document.activeElement as HTMLButtonElement)
    if (index < 0) return
    const next = enabled[(index + (event.key === 'ArrowRight' ? 1 : enabled.length - 1)) % enabled.length]
    next.focus()
    event.preventDefault()
  })

  update()
  return { element, update }
}
