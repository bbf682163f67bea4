// The REST API and the page URLs, in one place.
//
// A `?token=` on the page URL is the caller's access token: it goes to the
// WebSocket as `?token=` (y-websocket `params`) and to REST calls as
// `Authorization: Bearer`, and it is kept on links between pages.

export interface DocSummary {
  name: string
  bytes: number
  updated_at: string
  clients: number
}

export interface DocList {
  docs: DocSummary[]
  next_cursor: string | null
}

export type ExportFormat = 'json' | 'text' | 'yjs'

/** The Tiptap collaboration fragment: a Y.XmlFragment root of this name. */
export const FRAGMENT_ROOT = 'default'

export const token: string | null = new URLSearchParams(location.search).get('token') || null

export class ApiError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

function authHeaders(): HeadersInit {
  return token ? { Authorization: `Bearer ${token}` } : {}
}

/** `/api/docs/{doc}`: the name is one path segment, so `/` travels as `%2F`. */
export function docApiPath(name: string): string {
  return `/api/docs/${encodeURIComponent(name)}`
}

/** `/d/{doc}` keeps the name's slashes readable; the token rides along. */
export function docPageUrl(name: string): string {
  return withToken(`/d/${name.split('/').map(encodeURIComponent).join('/')}`)
}

export function withToken(path: string): string {
  return token ? `${path}?token=${encodeURIComponent(token)}` : path
}

/** The document name of a `/d/{doc}` page, or null. */
export function docNameFromPath(pathname: string): string | null {
  if (!pathname.startsWith('/d/')) return null
  try {
    return decodeURIComponent(pathname.slice(3))
  } catch {
    return null
  }
}

/** The server's rule for names; null when valid, else why not. */
export function nameProblem(name: string): string | null {
  if (name.length === 0) return 'Give the document a name.'
  if (name.length > 200) return 'Names are at most 200 characters.'
  const bad = [...name].find((c) => !/[A-Za-z0-9._~/-]/.test(c))
  if (bad !== undefined) {
    return bad === ' '
      ? 'Spaces are not allowed; use - or _ instead.'
      : `“${bad}” is not allowed. Use letters, digits, . _ ~ - and / for folders.`
  }
  for (const segment of name.split('/')) {
    if (segment === '') return 'A name cannot start or end with /, or contain //.'
    if (segment === '.' || segment === '..') return '“.” and “..” are not allowed as a part of a name.'
  }
  return null
}

async function errorOf(response: Response): Promise<ApiError> {
  let message = response.statusText || `HTTP ${response.status}`
  try {
    const body: unknown = await response.json()
    if (body && typeof body === 'object' && 'error' in body && typeof body.error === 'string') {
      message = body.error
    }
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, message)
}

export async function listDocs(cursor: string | null = null): Promise<DocList> {
  const query = new URLSearchParams({ limit: '100' })
  if (cursor) query.set('cursor', cursor)
  const response = await fetch(`/api/docs?${query}`, { headers: authHeaders() })
  if (!response.ok) throw await errorOf(response)
  return (await response.json()) as DocList
}

/** A snapshot export of a document, as the server sends it. */
export async function fetchExport(name: string, format: ExportFormat): Promise<Blob> {
  const query = new URLSearchParams({ format })
  if (format === 'text') query.set('root', FRAGMENT_ROOT)
  const response = await fetch(`${docApiPath(name)}/snapshot?${query}`, { headers: authHeaders() })
  if (!response.ok) throw await errorOf(response)
  return await response.blob()
}

/** A version of a document (`GET /api/docs/{doc}/versions`). */
export interface Version {
  id: number
  created_at: string
  label: string | null
  trigger: 'auto' | 'unload' | 'manual' | 'restore'
  size: number
  clients: number
  /** Who was connected, as their tokens name them; empty in open mode. */
  users: string[]
}

/** The document's versions, newest first. */
export async function listVersions(name: string): Promise<Version[]> {
  const response = await fetch(`${docApiPath(name)}/versions`, { headers: authHeaders() })
  if (!response.ok) throw await errorOf(response)
  return ((await response.json()) as { versions: Version[] }).versions
}

/** The plain text of `root` as it was at version `id`. */
export async function fetchVersionText(name: string, id: number, root: string): Promise<string> {
  const query = new URLSearchParams({ format: 'text', root })
  const response = await fetch(`${docApiPath(name)}/versions/${id}/snapshot?${query}`, { headers: authHeaders() })
  if (!response.ok) throw await errorOf(response)
  return await response.text()
}

/** Records a version of the document as it is now. */
export async function saveVersion(name: string): Promise<Version> {
  const response = await fetch(`${docApiPath(name)}/versions`, { method: 'POST', headers: authHeaders() })
  if (!response.ok) throw await errorOf(response)
  return (await response.json()) as Version
}

/** Restores version `id`; answers the version the restore produced. */
export async function restoreVersion(name: string, id: number): Promise<Version> {
  const response = await fetch(`${docApiPath(name)}/versions/${id}/restore`, { method: 'POST', headers: authHeaders() })
  if (!response.ok) throw await errorOf(response)
  return (await response.json()) as Version
}

/**
 * The `scope` claim of a JWT access token, read without verifying it: only to
 * tell the user up front that their link is read-only. The server decides.
 */
export function tokenScope(jwt: string | null = token): string | null {
  if (!jwt) return null
  const payload = jwt.split('.')[1]
  if (!payload) return null
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/')
    const json: unknown = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')))
    if (json && typeof json === 'object' && 'scope' in json && typeof json.scope === 'string') {
      return json.scope
    }
  } catch {
    // not a JWT we can read
  }
  return null
}
