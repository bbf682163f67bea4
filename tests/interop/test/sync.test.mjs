// Document sync through quire with the real yjs + y-websocket packages.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Y, Ledger, withQuire, waitFor, waitSynced, waitSameState, sameState, serverDoc, sleep, rng, seedFor, sv
} from '../lib/harness.mjs'
import { randomEdit } from '../lib/edits.mjs'

test('two providers editing one Y.Text concurrently converge, and the server snapshot matches', async () => {
  const r = rng(seedFor('concurrent'))
  await withQuire(async (ctx) => {
    const room = 'concurrent-text'
    const ledger = new Ledger()
    const a = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'A' })
    const b = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    const ta = a.doc.getText('text')
    const tb = b.doc.getText('text')
    for (let i = 0; i < 400; i++) {
      randomEdit(ta, r, `<A${i}>`)
      randomEdit(tb, r, `<B${i}>`)
      // Let the network deliver some, but not all, of what is in flight, so
      // plenty of the edits are concurrent with the other side's.
      const x = r()
      if (x < 0.2) await sleep(r.int(4))
      else if (x < 0.5) await new Promise((resolve) => setImmediate(resolve))
    }
    const expected = ledger.expectedDoc()
    const text = expected.getText('text').toString()
    assert.ok(text.length > 500, 'the edits produced a sizeable text')
    // Converged: both have everything either side wrote, nothing lost.
    await waitSameState({ A: a.doc, B: b.doc }, expected)
    assert.equal(ta.toString(), text)
    assert.equal(tb.toString(), text)
    // Both updates passed through the server, so its snapshot has them all.
    const fromServer = await serverDoc(ctx.server, room)
    assert.deepEqual(sv(fromServer), sv(expected), 'state vector of the format=yjs snapshot')
    assert.ok(sameState(fromServer, expected), 'the format=yjs snapshot has every insert and delete')
    assert.equal(fromServer.getText('text').toString(), text, 'text of the format=yjs snapshot')
    assert.equal(await ctx.server.snapshotText(room, 'text'), text, 'format=text&root=text')
    assert.deepEqual(await ctx.server.snapshotJson(room), { text }, 'format=json')
  })
})

test('a late joiner sees the whole document, also after every other client left', async () => {
  const r = rng(seedFor('late'))
  await withQuire(async (ctx) => {
    const room = 'late-joiner'
    const ledger = new Ledger()
    const a = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'A' })
    const b = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    for (let i = 0; i < 200; i++) {
      randomEdit(a.doc.getText('text'), r, `[a${i}]`)
      randomEdit(b.doc.getText('text'), r, `[b${i}]`)
      if (i % 10 === 0) await sleep(1)
    }
    a.doc.getMap('meta').set('title', 'Late joiners')
    a.doc.getMap('meta').set('rev', 7)
    b.doc.getArray('list').push(['one', { two: 2 }, [3]])
    const expected = ledger.expectedDoc()
    await waitSameState({ A: a.doc, B: b.doc }, expected)

    const c = ctx.provider(room, { name: 'C (late)' })
    await waitSynced(c)
    await waitSameState({ C: c.doc }, expected, 'late joiner C to receive the whole document')
    assert.equal(c.doc.getText('text').toString(), expected.getText('text').toString())
    assert.deepEqual(c.doc.getMap('meta').toJSON(), { title: 'Late joiners', rev: 7 })
    assert.deepEqual(c.doc.getArray('list').toJSON(), ['one', { two: 2 }, [3]])

    // Everybody leaves; a newcomer still gets everything.
    a.destroy(); b.destroy(); c.destroy()
    await sleep(100)
    const d = ctx.provider(room, { name: 'D (after everyone left)' })
    await waitSynced(d)
    await waitSameState({ D: d.doc }, expected, 'D, joining an empty room, to receive the whole document')
    assert.equal(d.doc.getText('text').toString(), expected.getText('text').toString())

    const json = await ctx.server.snapshotJson(room)
    assert.deepEqual(json, {
      text: expected.getText('text').toString(),
      meta: { title: 'Late joiners', rev: 7 },
      list: ['one', { two: 2 }, [3]]
    }, 'format=json exports every root')
    const info = await (await ctx.server.fetch(`/api/docs/${room}`)).json()
    assert.equal(info.name, room)
    assert.equal((await ctx.server.fetch('/api/docs/no-such-doc')).status, 404, 'GET /api/docs/{absent} is 404')
  })
})

test('offline edits on both sides merge when the disconnected provider comes back', async () => {
  const r = rng(seedFor('offline'))
  await withQuire(async (ctx) => {
    const room = 'offline-edits'
    const ledger = new Ledger()
    const a = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'A' })
    const b = ctx.provider(room, { doc: ledger.track(new Y.Doc()), name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    a.doc.getText('text').insert(0, 'shared start. ')
    await waitSameState({ A: a.doc, B: b.doc }, ledger.expectedDoc())

    a.disconnect()
    assert.equal(a.wsconnected, false)
    for (let i = 0; i < 100; i++) {
      randomEdit(a.doc.getText('text'), r, `(offA${i})`)
      randomEdit(b.doc.getText('text'), r, `(onB${i})`)
      if (i % 10 === 0) await sleep(2)
    }
    a.doc.getMap('meta').set('offline', 'A')
    b.doc.getMap('meta').set('online', 'B')
    // B's edits reach the server while A is away; A's stay local.
    let onServer
    await waitFor(async () => {
      onServer = await serverDoc(ctx.server, room)
      return sameState(onServer, b.doc)
    }, { what: 'the server to hold exactly B\'s state', detail: () => `server=${JSON.stringify(sv(onServer))} B=${JSON.stringify(sv(b.doc))}` })
    assert.ok(!onServer.getText('text').toString().includes('offA'), 'A\'s offline edits must not be on the server yet')
    assert.ok(!a.doc.getText('text').toString().includes('onB'), 'A must not receive anything while disconnected')

    a.connect()
    const expected = ledger.expectedDoc()
    await waitSynced(a)
    await waitSameState({ A: a.doc, B: b.doc }, expected)
    const text = expected.getText('text').toString()
    assert.equal(a.doc.getText('text').toString(), text)
    assert.equal(b.doc.getText('text').toString(), text)
    assert.deepEqual(b.doc.getMap('meta').toJSON(), { offline: 'A', online: 'B' })
    const fromServer = await serverDoc(ctx.server, room)
    assert.ok(sameState(fromServer, expected), 'the server holds every insert and delete')
    assert.equal(fromServer.getText('text').toString(), text)
  })
})

test('an update POSTed over REST is applied and relayed to connected providers; garbage is refused', async () => {
  await withQuire(async (ctx) => {
    const room = 'rest-post'
    const a = ctx.provider(room, { name: 'A' })
    await waitSynced(a)
    a.doc.getText('text').insert(0, 'from the socket')
    await waitFor(async () => (await ctx.server.fetch(`/api/docs/${room}`)).status === 200, { what: 'the document to exist on the server' })

    // An update made offline by a plain Y.Doc that already knows A's content.
    const offline = new Y.Doc()
    Y.applyUpdate(offline, await ctx.server.snapshotYjs(room))
    const before = Y.encodeStateVector(offline)
    offline.getText('text').insert(0, 'from REST, ')
    offline.getMap('meta').set('via', 'POST')
    const res = await ctx.server.postUpdate(room, Y.encodeStateAsUpdate(offline, before))
    assert.equal(res.status, 204, `POST /api/docs/{doc}/updates answers 204 (got ${res.status}: ${await res.text()})`)
    await waitFor(() => a.doc.getText('text').toString() === 'from REST, from the socket', {
      what: 'A to receive the REST update', detail: () => JSON.stringify(a.doc.getText('text').toString())
    })
    assert.equal(a.doc.getMap('meta').get('via'), 'POST')

    const bad = await ctx.server.postUpdate(room, new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]))
    assert.equal(bad.status, 400, 'an update that does not decode is refused with 400')
    assert.equal(await ctx.server.snapshotText(room, 'text'), 'from REST, from the socket', 'document unchanged by the refused update')
    await sleep(50)
    assert.equal(a.doc.getText('text').toString(), 'from REST, from the socket')
    assert.ok(a.wsconnected, 'A stays connected')

    // POST creates an absent document.
    const fresh = new Y.Doc()
    fresh.getText('text').insert(0, 'created by POST')
    assert.equal((await ctx.server.postUpdate('rest-created', Y.encodeStateAsUpdate(fresh))).status, 204)
    assert.equal(await ctx.server.snapshotText('rest-created', 'text'), 'created by POST')
  })
})
