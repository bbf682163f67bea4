// Starts and stops the real `quire` binary for the browser tests.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
/** The repository root. */
export const repoDir = path.resolve(here, '../../..')

const LISTENING = /listening on http:\/\/([^\s]+)/
const START_TIMEOUT_MS = Number(process.env.QUIRE_START_TIMEOUT_MS || 30000)

/** Children still alive, so that none outlives the test process. */
const alive = new Set()
process.on('exit', () => {
  for (const child of alive) {
    try { child.kill('SIGKILL') } catch {}
  }
})

/**
 * `quire serve --listen 127.0.0.1:0 --data-dir <tmp> [...extraArgs]`; resolves
 * once stderr says where it listens. stderr keeps being drained into `log`.
 * @param {{ extraArgs?: string[] }} [opts]
 */
export async function startQuire ({ extraArgs = [] } = {}) {
  const bin = path.resolve(repoDir, process.env.QUIRE_BIN || 'target/debug/quire')
  if (!fs.existsSync(bin)) {
    throw new Error(`quire binary not found at ${bin} (cargo build -p quire-server, or set QUIRE_BIN)`)
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quire-browser-'))
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...extraArgs]
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' }
  })
  alive.add(child)
  const server = {
    child,
    dataDir,
    log: '',
    url: '',
    exited: new Promise((resolve) => child.on('exit', (code, signal) => {
      alive.delete(child)
      resolve({ code, signal })
    })),
    async stop () {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000)
      await server.exited
      clearTimeout(timer)
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  }
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (s) => { server.log += s })
  child.stderr.setEncoding('utf8')

  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`quire did not say it was listening within ${START_TIMEOUT_MS} ms:\n${server.log}`))
    }, START_TIMEOUT_MS)
    // Keep draining stderr for the whole run: a full pipe would block the server.
    child.stderr.on('data', (s) => {
      server.log += s
      const m = server.url ? null : LISTENING.exec(server.log)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    server.exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`quire exited before listening (code=${code} signal=${signal}):\n${server.log}`))
    })
  })
  server.url = `http://${addr}`
  return server
}
