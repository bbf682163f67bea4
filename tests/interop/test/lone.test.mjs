// A lone editor stays connected. y-websocket's provider closes and reopens a
// socket that received no message for 30 s (messageReconnectTimeout), and
// WebSocket pings do not count; the reference server keeps a lone editor
// alive by echoing every awareness change, renewals included (every 15 s),
// to its sender too. Quire must do the same, or one person typing alone is
// disconnected and resynced every 30 s.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { withQuire, waitSynced, sleep } from '../lib/harness.mjs'

// Past two reconnect timeouts (30 s each) of y-websocket 3.
const ALONE_MS = 72000

test('a lone provider that types and then idles stays on one connection for 70 s', { timeout: ALONE_MS + 60000 }, async () => {
  await withQuire(async (ctx) => {
    const p = ctx.provider('alone', { name: 'alone' })
    const statuses = []
    p.on('status', ({ status }) => statuses.push({ status, at: Date.now() }))
    await waitSynced(p)
    const socket = p.ws
    const start = Date.now()
    p.awareness.setLocalStateField('user', { name: 'Ada' })
    const text = p.doc.getText('body')
    // Typing for a while, then idle, as a person writing alone does.
    for (let i = 0; i < 10; i++) {
      text.insert(text.length, `word${i} `)
      await sleep(1000)
    }
    await sleep(ALONE_MS - (Date.now() - start))

    const after = statuses.filter((s) => s.at >= start).map((s) => `${s.status} at ${((s.at - start) / 1000).toFixed(1)} s`)
    assert.deepEqual(p.closeEvents, [], `the provider's socket closed: ${JSON.stringify(p.closeEvents)}; statuses: ${after.join(', ')}`)
    assert.deepEqual(after, [], 'the provider changed status while alone')
    assert.equal(p.ws, socket, 'the provider opened another socket')
    assert.ok(p.wsconnected && p.synced, 'the provider is still connected and synced')
    assert.equal(await ctx.server.snapshotText('alone', 'body'), text.toString(), 'the server has every word typed')
  })
})
