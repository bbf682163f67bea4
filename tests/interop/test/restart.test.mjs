// Persistence across server restarts (SIGTERM and kill -9), with providers
// that stay open through the restart and reconnect by themselves.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Y, Ledger, withQuire, waitFor, waitSynced, waitSameState, sameState, serverDoc, sleep, rng, seedFor, sv
} from '../lib/harness.mjs'
import { randomEdit } from '../lib/edits.mjs'

const FLUSH_MS = 10
/** "Wait for the flush window", with a wide margin: a guard, not a speed test. */
const FLUSH_WAIT_MS = Math.max(300, 30 * FLUSH_MS)

/**
 * A writer edits `room` and leaves; afterwards only the server's storage holds
 * the document. Returns the document the writer ended with.
 */
async function writeAndLeave (ctx, room, r) {
  const w = ctx.provider(room, { name: `writer(${room})` })
  await waitSynced(w)
  const t = w.doc.getText('text')
  for (let i = 0; i < 300; i++) {
    randomEdit(t, r, `{w${i}}`)
    if (i % 50 === 0) await sleep(1)
  }
  w.doc.getMap('meta').set('written', 'before restart')
  const expected = new Y.Doc()
  Y.applyUpdate(expected, Y.encodeStateAsUpdate(w.doc))
  let seen
  await waitFor(async () => {
    seen = await serverDoc(ctx.server, room)
    return sameState(seen, expected)
  }, { what: `the server to have applied everything the writer sent to ${room}`, detail: () => JSON.stringify(sv(seen)) })
  w.destroy()
  return expected
}

/** A fresh provider must load `expected` from the restarted server. */
async function assertFreshProviderSees (ctx, room, expected) {
  const fresh = ctx.provider(room, { name: `fresh(${room})` })
  await waitSynced(fresh)
  await waitSameState({ fresh: fresh.doc }, expected, `a fresh provider on ${room} to receive the whole persisted document`)
  assert.equal(fresh.doc.getText('text').toString(), expected.getText('text').toString())
  assert.deepEqual(fresh.doc.getMap('meta').toJSON(), expected.getMap('meta').toJSON())
  assert.equal(await ctx.server.snapshotText(room, 'text'), expected.getText('text').toString(), `format=text of ${room} after restart`)
  fresh.destroy()
}

async function waitDisconnected (...providers) {
  await waitFor(() => providers.every((p) => !p.wsconnected), {
    what: `${providers.map((p) => p.name).join(', ')} to notice that the server went away`
  })
}

async function waitReconnected (...providers) {
  for (const p of providers) {
    await waitSynced(p, `${p.name} to reconnect and resync by itself after the restart`)
  }
}

test('SIGTERM exits 0 and a restart on the same data dir and port keeps everything', async () => {
  const r = rng(seedFor('sigterm'))
  await withQuire({ flushIntervalMs: FLUSH_MS }, async (ctx) => {
    const persisted = await writeAndLeave(ctx, 'persist-term', r)

    const room = 'live-term'
    const ledger = new Ledger()
    const a = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'A' })
    const b = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    for (let i = 0; i < 100; i++) {
      randomEdit(a.doc.getText('text'), r, `<a${i}>`)
      randomEdit(b.doc.getText('text'), r, `<b${i}>`)
      if (i % 10 === 0) await sleep(1)
    }
    await waitSameState({ A: a.doc, B: b.doc }, ledger.expectedDoc())
    await sleep(FLUSH_WAIT_MS)

    const exit = await ctx.server.stop()
    assert.deepEqual(exit, { code: 0, signal: null }, 'quire exits with code 0 on SIGTERM')
    await waitDisconnected(a, b)
    const closeCodes = [...a.closeEvents, ...b.closeEvents].map((e) => e.code)
    assert.ok(closeCodes.includes(1001), `sockets are closed with 1001 on shutdown (seen: ${JSON.stringify(closeCodes)})`)

    await ctx.server.start()
    await assertFreshProviderSees(ctx, 'persist-term', persisted)

    await waitReconnected(a, b)
    // Edits after the restart still travel both ways.
    a.doc.getText('text').insert(0, 'A after restart. ')
    b.doc.getText('text').insert(b.doc.getText('text').length, ' B after restart.')
    const expected = ledger.expectedDoc()
    await waitSameState({ A: a.doc, B: b.doc }, expected)
    const text = expected.getText('text').toString()
    assert.ok(text.startsWith('A after restart. ') && text.endsWith(' B after restart.'))
    assert.equal(a.doc.getText('text').toString(), text)
    assert.equal(b.doc.getText('text').toString(), text)
    const fromServer = await serverDoc(ctx.server, room)
    assert.equal(fromServer.getText('text').toString(), text)
  })
})

test('kill -9 after the flush window loses nothing; providers reconnect and hand back the rest', async () => {
  const r = rng(seedFor('kill9'))
  await withQuire({ flushIntervalMs: FLUSH_MS }, async (ctx) => {
    const persisted = await writeAndLeave(ctx, 'persist-kill', r)

    const room = 'live-kill'
    const ledger = new Ledger()
    const a = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'A' })
    const b = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    for (let i = 0; i < 100; i++) {
      randomEdit(a.doc.getText('text'), r, `<a${i}>`)
      randomEdit(b.doc.getText('text'), r, `<b${i}>`)
      if (i % 10 === 0) await sleep(1)
    }
    await waitSameState({ A: a.doc, B: b.doc }, ledger.expectedDoc())
    await sleep(FLUSH_WAIT_MS)

    // Edits right before the kill may be inside the last flush window: the
    // server may lose them, but A still holds them and must hand them back.
    a.doc.getText('text').insert(0, 'A just before the kill. ')
    const exit = await ctx.server.kill()
    assert.equal(exit.signal, 'SIGKILL')
    await waitDisconnected(a, b)
    // B edits while the server is down.
    b.doc.getText('text').insert(b.doc.getText('text').length, ' B while the server was down.')

    await ctx.server.start()
    // Storage alone must have the document written before the flush window.
    await assertFreshProviderSees(ctx, 'persist-kill', persisted)

    await waitReconnected(a, b)
    a.doc.getMap('meta').set('after', 'restart')
    const expected = ledger.expectedDoc()
    await waitSameState({ A: a.doc, B: b.doc }, expected)
    const text = expected.getText('text').toString()
    assert.ok(text.startsWith('A just before the kill. '))
    assert.ok(text.endsWith(' B while the server was down.'))
    assert.equal(b.doc.getText('text').toString(), text)
    assert.equal(b.doc.getMap('meta').get('after'), 'restart')

    // The document ends complete on the server too, for a newcomer.
    const c = ctx.provider(room, { name: 'C (after the kill)' })
    await waitSynced(c)
    await waitSameState({ C: c.doc }, expected, 'a newcomer to receive the complete document')
    assert.equal(c.doc.getText('text').toString(), text)
  })
})
