// Starting, restarting and stopping the real `quire` binary for the tests.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
/** tests/interop */
export const interopDir = path.resolve(here, '..')

/** The server binary: $QUIRE_BIN, else ../../target/debug/quire from tests/interop. */
export function quireBin () {
  const p = process.env.QUIRE_BIN || path.resolve(interopDir, '../../target/debug/quire')
  return path.resolve(interopDir, p)
}

const LISTENING = /listening on http:\/\/([^\s]+)/
const START_TIMEOUT_MS = Number(process.env.QUIRE_START_TIMEOUT_MS || 30000)

/** Every child still alive, so that nothing outlives the test process. */
const alive = new Set()
const killAll = () => {
  for (const c of alive) { try { c.kill('SIGKILL') } catch {} }
}
process.on('exit', killAll)
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.once(signal, () => { killAll(); process.exit(code) })
}

export class QuireServer {
  /**
   * @param {object} [opts]
   * @param {string[]} [opts.extraArgs] more flags for `quire serve`
   * @param {number} [opts.flushIntervalMs]
   * @param {object} [opts.env]
   */
  constructor ({ extraArgs = [], flushIntervalMs = 10, env = {} } = {}) {
    this.bin = quireBin()
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quire-interop-'))
    this.extraArgs = extraArgs
    this.flushIntervalMs = flushIntervalMs
    this.env = env
    /** host:port once started; the same across restarts */
    this.addr = null
    this.child = null
    /** everything every run of the server wrote to stderr and stdout */
    this.log = ''
    this.runs = 0
  }

  get httpUrl () { return `http://${this.addr}` }
  /** The `serverUrl` for WebsocketProvider: the room name is appended as `/{doc}`. */
  get wsUrl () { return `ws://${this.addr}/ws` }

  async start () {
    if (this.child) throw new Error('server already running')
    if (!fs.existsSync(this.bin)) {
      throw new Error(`quire binary not found at ${this.bin} (build it with \`cargo build -p quire-server\` or set QUIRE_BIN)`)
    }
    const listen = this.addr ?? '127.0.0.1:0'
    const args = ['serve', '--listen', listen, '--data-dir', this.dataDir,
      '--flush-interval-ms', String(this.flushIntervalMs), ...this.extraArgs]
    const run = ++this.runs
    this.log += `\n===== run ${run}: ${this.bin} ${args.join(' ')}\n`
    const child = spawn(this.bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...this.env }
    })
    this.child = child
    alive.add(child)
    child.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        alive.delete(child)
        this.log += `\n===== run ${run} exited: code=${code} signal=${signal}\n`
        if (this.child === child) this.child = null
        resolve({ code, signal })
      })
    })
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (s) => { this.log += s })
    child.stderr.setEncoding('utf8')
    let pending = ''
    const found = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`quire did not print "listening on http://..." within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS)
      child.stderr.on('data', (s) => {
        this.log += s
        pending += s
        const lines = pending.split('\n')
        pending = lines.pop()
        for (const line of lines) {
          // tracing may colour its output: strip ANSI escapes before matching
          const m = line.replace(/\x1b\[[0-9;]*m/g, '').match(LISTENING)
          if (m) { clearTimeout(timer); resolve(m[1]) }
        }
      })
      child.exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`quire exited before listening (code=${code} signal=${signal})`)) })
      child.on('error', (e) => { clearTimeout(timer); reject(e) })
    })
    try {
      const addr = await found
      if (this.addr && addr !== this.addr) throw new Error(`restarted server listens on ${addr}, expected ${this.addr}`)
      this.addr = addr
    } catch (e) {
      await this.kill()
      throw e
    }
    return this
  }

  /** SIGTERM and wait; resolves to {code, signal}. Falls back to SIGKILL after `timeoutMs`. */
  async stop ({ timeoutMs = 20000 } = {}) {
    const child = this.child
    if (!child) return null
    child.kill('SIGTERM')
    let timer
    const res = await Promise.race([
      child.exited,
      new Promise((resolve) => { timer = setTimeout(() => resolve(null), timeoutMs) })
    ])
    clearTimeout(timer)
    if (res === null) {
      this.log += `\n===== no exit ${timeoutMs} ms after SIGTERM: sending SIGKILL\n`
      child.kill('SIGKILL')
      await child.exited
      return { code: null, signal: 'SIGTERM-timeout' }
    }
    return res
  }

  /** SIGKILL (kill -9) and wait. */
  async kill () {
    const child = this.child
    if (!child) return null
    child.kill('SIGKILL')
    return child.exited
  }

  /** Stops whatever runs and removes the data dir. */
  async dispose () {
    await this.kill()
    try { fs.rmSync(this.dataDir, { recursive: true, force: true }) } catch {}
  }

  // ---- REST -------------------------------------------------------------

  async fetch (p, init) {
    return fetch(this.httpUrl + p, init)
  }

  async snapshot (doc, query = 'format=yjs') {
    const res = await this.fetch(`/api/docs/${encodeURIComponent(doc)}/snapshot?${query}`)
    if (res.status !== 200) throw new Error(`GET snapshot ${doc}?${query}: HTTP ${res.status} ${await res.text()}`)
    return res
  }

  async snapshotYjs (doc) {
    return new Uint8Array(await (await this.snapshot(doc, 'format=yjs')).arrayBuffer())
  }

  async snapshotText (doc, root) {
    return (await this.snapshot(doc, `format=text&root=${encodeURIComponent(root)}`)).text()
  }

  async snapshotJson (doc) {
    return (await this.snapshot(doc, 'format=json')).json()
  }

  async postUpdate (doc, update) {
    return this.fetch(`/api/docs/${encodeURIComponent(doc)}/updates`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: update
    })
  }
}
