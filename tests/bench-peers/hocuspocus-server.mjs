// A minimal Hocuspocus server for quire-bench: one process, no hooks but a
// file-per-document store (so cold-load survives a restart), the defaults
// otherwise.
//
//   node hocuspocus-server.mjs PORT DATA_DIR
//
// `timeout` is raised from 60 s so that the idle scenario's silent
// connections are not reaped while they are measured (y-websocket and Quire
// keep them alive with WebSocket pings, which quire-bench answers).
import { Server } from '@hocuspocus/server'
import { Database } from '@hocuspocus/extension-database'
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import path from 'node:path'

const port = Number(process.argv[2] ?? 1234)
const dataDir = process.argv[3] ?? './hocuspocus-data'
await mkdir(dataDir, { recursive: true })
const file = (name) => path.join(dataDir, encodeURIComponent(name) + '.bin')

const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  timeout: 600_000,
  extensions: [
    new Database({
      fetch: async ({ documentName }) => {
        try {
          return new Uint8Array(await readFile(file(documentName)))
        } catch {
          return null
        }
      },
      store: async ({ documentName, state }) => {
        const target = file(documentName)
        await writeFile(target + '.tmp', state)
        await rename(target + '.tmp', target)
      }
    })
  ]
})
await server.listen()
console.error(`hocuspocus listening on ws://127.0.0.1:${port}`)
