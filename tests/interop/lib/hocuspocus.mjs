// The Hocuspocus dialect: the real `@hocuspocus/provider` (4.8.0, and 3.4.4
// through the npm alias `hocuspocus-provider-v3`) against a server under test.
//
// The server is the real quire binary (its `/hocuspocus` endpoint). With
// QUIRE_HOCUSPOCUS_TARGET=hocuspocus the same cases run against the real
// `@hocuspocus/server` 4.7.0 instead (tests/bench-peers/
// hocuspocus-reference-server.mjs: hooks for Quire's JWTs and its relay of
// stateless messages), to check that a test expects what Hocuspocus itself
// does; cases or assertions about Quire-only features (REST, y-websocket,
// metrics, server pings) and the rules where Quire deliberately differs then
// say so and are left out.

import { spawn } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import * as v4 from '@hocuspocus/provider'
import * as v3 from 'hocuspocus-provider-v3'
import { Ctx, QuireServer, WebSocket, Y, preview, waitFor } from './harness.mjs'
import { interopDir } from './server.mjs'

/** Both provider lines; every case runs under each. */
export const PROVIDERS = { v4, v3 }
export const VERSIONS = Object.keys(PROVIDERS)

/** 'quire' (default) or 'hocuspocus' (the real @hocuspocus/server 4.7.0). */
export const TARGET = process.env.QUIRE_HOCUSPOCUS_TARGET || 'quire'
export const ON_QUIRE = TARGET === 'quire'
if (!['quire', 'hocuspocus'].includes(TARGET)) throw new Error(`QUIRE_HOCUSPOCUS_TARGET must be quire or hocuspocus, not ${TARGET}`)

/** A `test()` option: run only against Quire, saying why not otherwise. */
export const quireOnly = (why) => (ON_QUIRE ? {} : { skip: `Quire-only: ${why}` })
/** A `test()` option: a v4-only case, skipped under v3 with the reason. */
export const v4Only = (version, why) => (version === 'v4' ? {} : { skip: `v4-only: ${why}` })

// ---- JWTs ------------------------------------------------------------------

const b64url = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url')

/** An HS256 JWT as Quire's --auth-secret expects: claims sub, docs, scope, exp. */
export function jwt (secret, { sub = 'tester', docs, scope, exp = Math.floor(Date.now() / 1000) + 3600 }) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' })
  const body = b64url({ sub, docs, scope, exp })
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

// ---- frames ----------------------------------------------------------------

const varUint = (n) => {
  const out = []
  while (n > 0x7f) { out.push(0x80 | (n & 0x7f)); n >>>= 7 }
  out.push(n)
  return out
}
const varString = (s) => { const b = Buffer.from(s, 'utf8'); return [...varUint(b.length), ...b] }

/** A raw Hocuspocus frame: varString(address) varUint(type) payload. */
export const frame = (address, type, payload = []) => new Uint8Array([...varString(address), ...varUint(type), ...payload])
export const MSG = { Sync: 0, Awareness: 1, Auth: 2, QueryAwareness: 3, Stateless: 5, BroadcastStateless: 6, Close: 7, SyncStatus: 8 }
export { varString }

/** {address, type, payload} of a frame, or null for a 1-byte Ping/Pong. */
export function readFrame (bytes) {
  if (bytes.length === 1) return null
  let i = 0
  const readUint = () => {
    let n = 0; let shift = 0
    for (;;) { const b = bytes[i++]; n += (b & 0x7f) * 2 ** shift; shift += 7; if (b < 0x80) return n }
  }
  const len = readUint()
  const address = Buffer.from(bytes.subarray(i, i + len)).toString('utf8')
  i += len
  const type = readUint()
  return { address, type, payload: bytes.subarray(i) }
}

// ---- the real @hocuspocus/server -------------------------------------------

const freePort = () => new Promise((resolve, reject) => {
  const s = net.createServer()
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  s.on('error', reject)
})

/** tests/bench-peers/hocuspocus-reference-server.mjs (npm ci there first), on a fresh port. */
class RealHocuspocus {
  constructor ({ extraArgs }) {
    // the only quire flag with a counterpart there
    const i = extraArgs.indexOf('--auth-secret')
    this.secret = i >= 0 ? extraArgs[i + 1] : null
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quire-hp-ref-'))
    this.log = ''
    this.child = null
    this.port = null
  }

  get url () { return `ws://127.0.0.1:${this.port}` }

  async start () {
    const script = path.resolve(interopDir, '../bench-peers/hocuspocus-reference-server.mjs')
    if (!fs.existsSync(path.resolve(interopDir, '../bench-peers/node_modules/@hocuspocus/server'))) {
      throw new Error('run `npm ci` in tests/bench-peers first (QUIRE_HOCUSPOCUS_TARGET=hocuspocus)')
    }
    this.port ??= await freePort()
    const child = spawn(process.execPath, [script, String(this.port), ...(this.secret ? [this.secret] : [])], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    child.exited = new Promise((resolve) => child.on('exit', (code, signal) => { if (this.child === child) this.child = null; resolve({ code, signal }) }))
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (s) => { this.log += s })
    child.stderr.setEncoding('utf8')
    await new Promise((resolve, reject) => {
      child.stderr.on('data', (s) => { this.log += s; if (this.log.includes('hocuspocus listening')) resolve() })
      child.exited.then(() => reject(new Error(`@hocuspocus/server exited before listening:\n${this.log}`)))
    })
  }

  async stop () {
    const child = this.child
    if (!child) return null
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), 10000)
    const res = await child.exited
    clearTimeout(t)
    return res
  }

  async dispose () {
    if (this.child) { this.child.kill('SIGKILL'); await this.child.exited }
    fs.rmSync(this.dataDir, { recursive: true, force: true })
  }
}

process.on('exit', () => { for (const s of liveRefs) { try { s.child?.kill('SIGKILL') } catch {} } })
const liveRefs = new Set()

// ---- providers -------------------------------------------------------------

/** Keeps everything a provider reports in `p.seen`, for assertions and failure messages. */
function record (p, label) {
  p.label = label
  p.seen = { authenticated: [], authFailed: [], closes: [], disconnects: [], stateless: [], unsynced: [p.unsyncedChanges], synced: [] }
  p.on('authenticated', ({ scope }) => p.seen.authenticated.push(scope))
  p.on('authenticationFailed', ({ reason }) => p.seen.authFailed.push(reason))
  p.on('close', ({ event }) => p.seen.closes.push({ code: event?.code, reason: event?.reason }))
  p.on('disconnect', ({ event }) => p.seen.disconnects.push({ code: event?.code, reason: event?.reason }))
  p.on('stateless', ({ payload }) => p.seen.stateless.push(payload))
  p.on('unsyncedChanges', ({ number }) => p.seen.unsynced.push(number))
  p.on('synced', ({ state }) => p.seen.synced.push(state))
  // SyncStatus frames as they arrive (the provider only exposes the count)
  p.seen.syncStatus = []
  p.on('message', ({ event }) => {
    const f = readFrame(new Uint8Array(event.data))
    if (f?.type === MSG.SyncStatus) p.seen.syncStatus.push(f.payload[0])
  })
  return p
}

export const describeProvider = (p) =>
  `${p.label}: synced=${p.isSynced} authenticated=${p.isAuthenticated} scope=${p.authorizedScope} unsynced=${p.unsyncedChanges} seen=${JSON.stringify(p.seen)}`

/**
 * One test's world: a server (Quire, or the real Hocuspocus) plus every
 * socket and provider the test opened; `close()` tears all of it down.
 */
export class HpCtx {
  constructor ({ extraArgs = [], flushIntervalMs = 10, env = {} } = {}) {
    this.server = ON_QUIRE ? new QuireServer({ extraArgs, flushIntervalMs, env }) : new RealHocuspocus({ extraArgs })
    /** y-websocket providers (Quire only) come from the existing harness. */
    this.yws = ON_QUIRE ? new Ctx(this.server) : null
    this.providers = []
    this.sockets = []
  }

  /** The Hocuspocus endpoint. */
  get url () { return ON_QUIRE ? `ws://${this.server.addr}/hocuspocus` : this.server.url }

  /** A shared socket for `provider({ socket })`. */
  socket (version, opts = {}) {
    const { HocuspocusProviderWebsocket } = PROVIDERS[version]
    const s = new HocuspocusProviderWebsocket({ url: this.url, WebSocketPolyfill: WebSocket, ...opts })
    s.seen = { disconnects: [], closes: [] }
    s.on('disconnect', ({ event }) => s.seen.disconnects.push({ code: event?.code, reason: event?.reason }))
    s.on('close', ({ event }) => s.seen.closes.push({ code: event?.code, reason: event?.reason }))
    this.sockets.push(s)
    return s
  }

  /**
   * A HocuspocusProvider for document `name`. Without `socket` it gets a
   * socket of its own (made here, so the test can inspect it). Extra
   * options go to the provider unchanged.
   */
  provider (version, name, { socket, label, doc = new Y.Doc(), socketOpts, ...opts } = {}) {
    const { HocuspocusProvider } = PROVIDERS[version]
    socket ??= this.socket(version, socketOpts)
    const p = record(new HocuspocusProvider({ websocketProvider: socket, name, document: doc, ...opts }), label ?? `${version}:${name}#${this.providers.length}`)
    p.attach()
    p.socket = socket
    this.providers.push(p)
    return p
  }

  /** A y-websocket provider on /ws/{room} (Quire only). */
  ywsProvider (room, opts) {
    if (!this.yws) throw new Error('y-websocket clients need the quire target')
    return this.yws.provider(room, opts)
  }

  describe () {
    const lines = this.providers.map(describeProvider)
    if (this.yws) lines.push(...this.yws.providers.map((p) => `${p.name}: y-websocket connected=${p.wsconnected} synced=${p.synced}`))
    return lines.join('\n')
  }

  async close () {
    for (const p of this.providers) { try { p.destroy() } catch {} }
    for (const s of this.sockets) { try { s.destroy() } catch {} }
    for (const p of this.providers) { try { p.awareness?.destroy() } catch {} }
    if (this.yws) {
      // Ctx.close() also disposes the server
      await this.yws.close()
    } else {
      await this.server.dispose()
      liveRefs.delete(this.server)
    }
  }
}

/** Like harness.withQuire: a fresh server for `body(ctx)`, its log printed on failure. */
export async function withServer (opts, body) {
  if (typeof opts === 'function') { body = opts; opts = {} }
  const ctx = new HpCtx(opts)
  if (!ON_QUIRE) liveRefs.add(ctx.server)
  try {
    await ctx.server.start()
    return await body(ctx)
  } catch (e) {
    process.stderr.write(`\n----- providers -----\n${ctx.describe()}\n----- ${TARGET} log -----\n${ctx.server.log}\n----- end of log -----\n`)
    throw e
  } finally {
    await ctx.close()
  }
}

// ---- waits -----------------------------------------------------------------

/** Synced and every change acknowledged (`unsyncedChanges` back at 0). */
export async function waitSaved (p, what) {
  return waitFor(() => p.isSynced && p.unsyncedChanges === 0 && !p.hasUnsyncedChanges, {
    what: what ?? `${p.label} synced with no unacknowledged changes`, detail: () => describeProvider(p)
  })
}

export async function waitDenied (p) {
  return waitFor(() => p.seen.authFailed.length > 0 || p.seen.authenticated.length > 0, {
    what: `${p.label} to be told PermissionDenied`, detail: () => describeProvider(p)
  })
}

/** Waits until every named doc's XmlFragment("default") renders as `expected`. */
export async function waitXml (docs, expected, what) {
  const entries = Object.entries(docs)
  return waitFor(() => entries.every(([, d]) => d.getXmlFragment('default').toString() === expected), {
    what: what ?? `${entries.map(([n]) => n).join(', ')} to hold the fragment ${preview(expected)}`,
    detail: () => entries.map(([n, d]) => `${n}=${preview(d.getXmlFragment('default').toString())}`).join(' ')
  })
}

/** The `name{labels} value` samples of a Prometheus exposition. */
export async function metric (server, name, labels = '') {
  const text = await (await server.fetch('/metrics')).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)))
  return line === undefined ? undefined : Number(line.split(' ').at(-1))
}

/** A paragraph with `text` appended to a doc's XmlFragment("default"), Tiptap-shaped. */
export function appendParagraph (doc, text) {
  const p = new Y.XmlElement('paragraph')
  p.insert(0, [new Y.XmlText(text)])
  const frag = doc.getXmlFragment('default')
  frag.insert(frag.length, [p])
}
