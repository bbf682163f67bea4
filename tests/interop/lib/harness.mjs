// Shared helpers: providers against a QuireServer, waiting with failure
// guards, seeded randomness, and the "expected document" bookkeeping.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { QuireServer } from './server.mjs'

export { Y, WebsocketProvider, WebSocket, QuireServer }

/** Guard for every wait: a failure detector, never a speed requirement. */
export const GUARD_MS = Number(process.env.QUIRE_WAIT_GUARD_MS || 20000)

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `cond` until it returns truthy; throws after `timeout` ms with `what`
 * and, if given, `detail()` describing the last state seen.
 */
export async function waitFor (cond, { timeout = GUARD_MS, what = 'condition', detail, interval = 10 } = {}) {
  const start = Date.now()
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() - start > timeout) {
      let d = ''
      if (detail) { try { d = `\n  last seen: ${await detail()}` } catch (e) { d = `\n  (detail failed: ${e})` } }
      throw new Error(`timed out after ${timeout} ms waiting for: ${what}${d}`)
    }
    await sleep(interval)
  }
}

/** mulberry32: small seeded PRNG so a failing run can be repeated with QUIRE_SEED. */
export function rng (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  next.int = (n) => Math.floor(next() * n)
  next.pick = (arr) => arr[next.int(arr.length)]
  return next
}

export function seedFor (name) {
  if (process.env.QUIRE_SEED) return Number(process.env.QUIRE_SEED)
  let h = 2166136261
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 16777619)
  return h >>> 0
}

/** Short printable preview of a long string for failure messages. */
export const preview = (s, n = 80) => {
  s = String(s)
  return JSON.stringify(s.length <= n ? s : `${s.slice(0, n / 2)}…(${s.length} chars)…${s.slice(-n / 2)}`)
}

/** Yjs state vector as a plain comparable object. */
export const sv = (doc) => Object.fromEntries([...Y.decodeStateVector(Y.encodeStateVector(doc))].sort((a, b) => a[0] - b[0]))
export const svEqual = (a, b) => JSON.stringify(sv(a)) === JSON.stringify(sv(b))

/** true if doc's state vector covers `need` (a Map clientId -> clock). */
export function covers (doc, need) {
  for (const [client, clock] of need) {
    if (Y.getState(doc.store, client) < clock) return false
  }
  return true
}

/**
 * Records every update a doc produced *locally* (not received from a provider),
 * so a test can rebuild the exact document every participant must end with.
 */
export class Ledger {
  constructor () { this.updates = [] }
  track (doc) {
    doc.on('update', (u, origin) => {
      if (!(origin instanceof WebsocketProvider)) this.updates.push(u)
    })
    return doc
  }

  /** The document every participant must converge to. */
  expectedDoc () {
    const d = new Y.Doc()
    for (const u of this.updates) Y.applyUpdate(d, u)
    return d
  }
}

/**
 * A test context: one server plus the providers a test opens; `close()`
 * destroys every provider and stops the server, whatever happened.
 */
export class Ctx {
  constructor (server) {
    this.server = server
    this.providers = []
    this.cleanups = []
  }

  /**
   * Opens a real y-websocket WebsocketProvider on `room`.
   * @param {string} room
   * @param {{doc?: Y.Doc, connect?: boolean, name?: string}} [opts]
   */
  provider (room, { doc = new Y.Doc(), connect = true, name = `p${this.providers.length}` } = {}) {
    const p = new WebsocketProvider(this.server.wsUrl, room, doc, {
      WebSocketPolyfill: WebSocket,
      // in Node every provider would otherwise also talk to its same-room peers
      // in this process over BroadcastChannel, bypassing the server under test
      disableBc: true,
      connect
    })
    p.name = name
    p.closeEvents = []
    p.on('connection-close', (e) => { if (e) p.closeEvents.push({ code: e.code, reason: e.reason }) })
    this.providers.push(p)
    return p
  }

  onClose (fn) { this.cleanups.push(fn) }

  async close () {
    for (const p of this.providers) {
      // provider.destroy() leaves the Awareness (and its 3 s interval) alive
      try { p.destroy() } catch {}
      try { p.awareness.destroy() } catch {}
      try { p.doc.destroy() } catch {}
    }
    for (const fn of this.cleanups.reverse()) { try { await fn() } catch {} }
    await this.server.dispose()
  }
}

/**
 * Runs `body(ctx)` against a freshly started server with its own data dir.
 * The server's log is printed when the body fails; providers and server are
 * always cleaned up so `node --test` can exit.
 */
export async function withQuire (opts, body) {
  if (typeof opts === 'function') { body = opts; opts = {} }
  const server = new QuireServer(opts)
  const ctx = new Ctx(server)
  try {
    await server.start()
    return await body(ctx)
  } catch (e) {
    const states = ctx.providers.map((p) => `${p.name}: connected=${p.wsconnected} synced=${p.synced} closes=${JSON.stringify(p.closeEvents)}`).join('\n')
    process.stderr.write(`\n----- providers -----\n${states}\n----- quire log (data dir ${server.dataDir}) -----\n${server.log}\n----- end of quire log -----\n`)
    throw e
  } finally {
    await ctx.close()
  }
}

export async function waitSynced (p, what) {
  return waitFor(() => p.synced && p.wsconnected, {
    what: what ?? `${p.name} connected and synced with the server`,
    detail: () => `connected=${p.wsconnected} synced=${p.synced} closes=${JSON.stringify(p.closeEvents)}`
  })
}

/** Waits until every doc's `root` text equals `expected` (string). */
export async function waitText (docsByName, root, expected, what) {
  const entries = Object.entries(docsByName)
  return waitFor(() => entries.every(([, d]) => d.getText(root).toString() === expected), {
    what: what ?? `${entries.map(([n]) => n).join(', ')} to have the expected ${root} (${expected.length} chars)`,
    detail: () => entries.map(([n, d]) => `${n}=${preview(d.getText(root).toString())}`).join(' ') + ` expected=${preview(expected)}`
  })
}

/**
 * Same content: equal state vectors *and* equal delete sets (Y.snapshot), so a
 * delete still in flight is not mistaken for convergence.
 */
export const sameState = (a, b) => Y.equalSnapshots(Y.snapshot(a), Y.snapshot(b))

/** Waits until every doc holds exactly what `expected` holds (inserts and deletes). */
export async function waitSameState (docsByName, expected, what) {
  const entries = Object.entries(docsByName)
  return waitFor(() => entries.every(([, d]) => sameState(d, expected)), {
    what: what ?? `${entries.map(([n]) => n).join(', ')} to reach the expected document (state vector and deletes)`,
    detail: () => entries.map(([n, d]) => `${n}: sv=${JSON.stringify(sv(d))} sameDeletes=${sameState(d, expected) || svEqual(d, expected) ? String(sameState(d, expected)) : 'n/a'}`).join('; ') +
      `; expected sv=${JSON.stringify(sv(expected))}`
  })
}

/** Applies the server's format=yjs snapshot to an empty Y.Doc. */
export async function serverDoc (server, room) {
  const d = new Y.Doc()
  Y.applyUpdate(d, await server.snapshotYjs(room))
  return d
}
