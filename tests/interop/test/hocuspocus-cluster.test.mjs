// The Hocuspocus dialect across cluster nodes: two quire nodes sharing a
// real redis-server. A Hocuspocus provider on node A, a y-websocket client
// and another Hocuspocus provider on node B edit one document and see each
// other's presence — under @hocuspocus/provider 4.8.0 and 3.4.4.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { waitFor, waitSynced } from '../lib/harness.mjs'
import { HpCtx, VERSIONS, appendParagraph, describeProvider, quireOnly, waitSaved, waitXml } from '../lib/hocuspocus.mjs'

const freePort = () => new Promise((resolve, reject) => {
  const s = net.createServer()
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  s.on('error', reject)
})

/** A private redis-server (REDIS_SERVER, else `redis-server` on PATH), persistence off. */
async function startRedis () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quire-interop-redis-'))
  const port = await freePort()
  const child = spawn(process.env.REDIS_SERVER || 'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  child.stdout.on('data', (s) => { log += s })
  child.stderr.on('data', (s) => { log += s })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  child.on('error', (e) => { log += String(e) })
  await waitFor(() => /Ready to accept connections/.test(log) || child.exitCode !== null, { what: 'redis-server ready' })
  if (child.exitCode !== null) throw new Error(`redis-server exited:\n${log}`)
  return {
    url: `redis://127.0.0.1:${port}`,
    log: () => log,
    async stop () {
      child.kill('SIGKILL')
      await exited
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

for (const v of VERSIONS) {
  test(`cluster [provider ${v}] a Hocuspocus provider on node A, and a y-websocket client and a Hocuspocus provider on node B, share edits and presence through Redis`,
    quireOnly('cluster nodes'), async () => {
      const redis = await startRedis()
      const a = new HpCtx({ extraArgs: ['--redis-url', redis.url] })
      const b = new HpCtx({ extraArgs: ['--redis-url', redis.url] })
      try {
        await a.server.start()
        await b.server.start()
        const room = 'cluster/doc'
        const onA = a.provider(v, room, { label: 'Hocuspocus on A' })
        const onB = b.provider(v, room, { label: 'Hocuspocus on B' })
        const yOnB = b.ywsProvider(room, { name: 'y-websocket on B' })
        await waitSaved(onA)
        await waitSaved(onB)
        await waitSynced(yOnB)

        appendParagraph(onA.document, 'from A')
        await waitSaved(onA)
        await waitXml({ onB: onB.document, yOnB: yOnB.doc }, '<paragraph>from A</paragraph>')
        appendParagraph(yOnB.doc, 'from y-websocket on B')
        appendParagraph(onB.document, 'from Hocuspocus on B')
        await waitSaved(onB)
        await waitFor(() => onA.document.getXmlFragment('default').length === 3 &&
          onA.document.getXmlFragment('default').toString() === yOnB.doc.getXmlFragment('default').toString() &&
          onA.document.getXmlFragment('default').toString() === onB.document.getXmlFragment('default').toString(),
        { what: 'all three to converge on three paragraphs', detail: () => `${a.describe()}\n${b.describe()}\nY: ${yOnB.doc.getXmlFragment('default')}` })

        // presence: Hocuspocus on A <-> y-websocket on B
        onA.awareness.setLocalStateField('user', { name: 'Ada on A', color: '#6e56cf' })
        yOnB.awareness.setLocalState({ user: { name: 'Yann on B', color: '#30a46c' } })
        const aId = onA.document.clientID
        const yId = yOnB.doc.clientID
        await waitFor(() => yOnB.awareness.getStates().get(aId)?.user?.name === 'Ada on A' && onB.awareness.getStates().get(aId)?.user?.name === 'Ada on A',
          { what: 'node B\'s clients to see A\'s presence', detail: () => JSON.stringify([...yOnB.awareness.getStates()]) })
        await waitFor(() => onA.awareness.getStates().get(yId)?.user?.name === 'Yann on B',
          { what: 'the Hocuspocus provider on A to see the y-websocket client on B', detail: () => describeProvider(onA) + JSON.stringify([...onA.awareness.getStates()]) })
        onA.destroy()
        await waitFor(() => !yOnB.awareness.getStates().has(aId) && !onB.awareness.getStates().has(aId),
          { timeout: 10000, what: 'A\'s presence to leave node B\'s clients after destroy()' })
        assert.equal(onB.document.getXmlFragment('default').length, 3)
      } catch (e) {
        process.stderr.write(`\n----- node A -----\n${a.server.log}\n----- node B -----\n${b.server.log}\n----- redis -----\n${redis.log()}\n`)
        throw e
      } finally {
        await a.close()
        await b.close()
        await redis.stop()
      }
    })
}

