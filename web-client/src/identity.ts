// Who the user is to others: a display name and a colour, remembered in
// localStorage and shared through awareness as `{ user: { name, color } }`
// (the shape Tiptap's CollaborationCaret and most Yjs editors read).

export interface Identity {
  name: string
  color: string
}

const STORAGE_KEY = 'quire.identity'

/** Colours that keep white label text readable and differ from each other. */
export const PALETTE = [
  '#e5484d', // red
  '#f76b15', // orange
  '#b7791f', // amber
  '#30a46c', // green
  '#12a594', // teal
  '#0090ff', // blue
  '#6e56cf', // violet
  '#d6409f', // pink
]

const ADJECTIVES = [
  'Amber', 'Brave', 'Calm', 'Clever', 'Curious', 'Eager', 'Gentle', 'Happy',
  'Keen', 'Lively', 'Lucky', 'Merry', 'Nimble', 'Quiet', 'Swift', 'Witty',
]
const ANIMALS = [
  'Badger', 'Crane', 'Dolphin', 'Falcon', 'Fox', 'Heron', 'Koala', 'Lynx',
  'Otter', 'Owl', 'Panda', 'Puffin', 'Raven', 'Seal', 'Tiger', 'Wren',
]

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]

export const MAX_NAME_LENGTH = 40

function isIdentity(value: unknown): value is Identity {
  return (
    !!value &&
    typeof value === 'object' &&
    'name' in value &&
    'color' in value &&
    typeof value.name === 'string' &&
    typeof value.color === 'string' &&
    /^#[0-9a-f]{6}$/i.test(value.color) &&
    value.name.trim().length > 0
  )
}

function read(): Identity | null {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? 'null')
    return isIdentity(parsed) ? { name: parsed.name.slice(0, MAX_NAME_LENGTH), color: parsed.color } : null
  } catch {
    return null
  }
}

type Listener = (identity: Identity) => void
const listeners = new Set<Listener>()
let current: Identity | null = null

/** The remembered identity, or a fresh friendly one (remembered from now on). */
export function identity(): Identity {
  if (!current) {
    current = read()
    if (!current) {
      current = { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(PALETTE) }
      write(current)
    }
  }
  return current
}

function write(value: Identity) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(value))
  } catch {
    // private mode or storage full: the identity lasts for this page only
  }
}

export function setIdentity(next: Identity) {
  const name = next.name.trim().slice(0, MAX_NAME_LENGTH)
  current = { name: name || identity().name, color: next.color }
  write(current)
  for (const listener of listeners) listener(current)
}

export function onIdentityChange(listener: Listener): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

// Another tab changed it: follow.
window.addEventListener('storage', (event) => {
  if (event.key !== STORAGE_KEY) return
  const next = read()
  if (next && (next.name !== current?.name || next.color !== current?.color)) {
    current = next
    for (const listener of listeners) listener(next)
  }
})

export function initials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean)
  const letters = words.length > 1 ? words[0][0] + words[words.length - 1][0] : (words[0] ?? '?').slice(0, 2)
  return letters.toUpperCase()
}
