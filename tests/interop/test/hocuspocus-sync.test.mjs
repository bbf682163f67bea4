// The Hocuspocus dialect, documents: handshake (H1), edits across both
// dialects (H2), read-only sessions (H4), detach and re-attach (H10), and a
// server restart (H12) — each under @hocuspocus/provider 4.8.0 and 3.4.4.
// Case numbers are those of the test plan in the Hocuspocus protocol reference.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, sleep, waitFor, waitSynced, sameState, serverDoc } from '../lib/harness.mjs'
import {
  ON_QUIRE, VERSIONS, appendParagraph, describeProvider, jwt, quireOnly, v4Only, waitSaved, waitXml, withServer
} from '../lib/hocuspocus.mjs'

const SECRET = 'interop-hocuspocus-secret'

for (const v of VERSIONS) {
  test(`H1 [provider ${v}] in open mode a provider is authenticated read-write, synced, its start acknowledged, and sees what REST put in the document`, async () => {
    await withServer(async (ctx) => {
      const room = 'h1/seeded'
      if (ON_QUIRE) {
        const seed = new Y.Doc()
        appendParagraph(seed, 'seeded over REST')
        seed.getText('notes').insert(0, 'notes from REST')
        const res = await ctx.server.postUpdate(room, Y.encodeStateAsUpdate(seed))
        assert.equal(res.status, 204, await res.text())
      }
      const a = ctx.provider(v, room)
      await waitSaved(a)
      assert.deepEqual(a.seen.authenticated, ['read-write'])
      assert.equal(a.authorizedScope, 'read-write')
      assert.equal(a.isAuthenticated, true)
      assert.deepEqual(a.seen.authFailed, [])
      // startSync() counts the handshake as one change; the server's ack of
      // the provider's SyncStep2 takes it back to 0, with no edit made.
      assert.deepEqual(a.seen.unsynced.slice(-2), [1, 0], describeProvider(a))
      assert.deepEqual(a.seen.syncStatus, [1], 'exactly one SyncStatus(1), for the SyncStep2')
      if (ON_QUIRE) {
        assert.equal(a.document.getXmlFragment('default').toString(), '<paragraph>seeded over REST</paragraph>')
        assert.equal(a.document.getText('notes').toString(), 'notes from REST')
      }
    })
  })

  test(`H1 [provider ${v}] with forceSyncInterval every repeated handshake is answered and acknowledged exactly once, so unsyncedChanges keeps returning to 0`, async () => {
    await withServer(async (ctx) => {
      const a = ctx.provider(v, 'h1/force-sync', { label: 'A', forceSyncInterval: 200 })
      // No edits: each handshake (the first and every forced one) raises the
      // count to 1 and must be acknowledged by exactly one SyncStatus(1).
      const handshakes = () => a.seen.unsynced.filter((n) => n === 1).length
      await waitFor(() => handshakes() >= 4 && a.unsyncedChanges === 0 && a.seen.syncStatus.length === handshakes(), {
        what: 'four handshakes, each acknowledged once, and none outstanding', detail: () => describeProvider(a)
      })
      assert.deepEqual([...new Set(a.seen.syncStatus)], [1])
      assert.ok(Math.max(...a.seen.unsynced) <= 1, `never more than one outstanding handshake: ${a.seen.unsynced}`)
    })
  })

  test(`H2 [provider ${v}] with flushDelay many edits travel as one merged frame, which is acknowledged once${v === 'v3' ? ' — v4-only: provider 3.x has no flushDelay' : ''}`,
    v4Only(v, 'provider 3.x has no flushDelay option'), async () => {
      await withServer(async (ctx) => {
        const room = 'h2/flush-delay'
        const a = ctx.provider(v, room, { label: 'A', flushDelay: 100 })
        const b = ctx.provider(v, room, { label: 'B' })
        await waitSaved(a)
        await waitSaved(b)
        const acksBefore = a.seen.syncStatus.length
        for (let i = 0; i < 50; i++) a.document.getText('text').insert(i, 'x')
        assert.equal(a.hasUnsyncedChanges, true)
        await waitSaved(a)
        assert.equal(a.seen.syncStatus.length - acksBefore, 1, 'one merged frame, one acknowledgement')
        await waitFor(() => b.document.getText('text').toString() === 'x'.repeat(50), { what: 'B to get all 50 edits', detail: () => describeProvider(b) })
      })
    })

  test(`H2 [provider ${v}] an edit is unsaved at once and saved later, and reaches a second provider, a y-websocket client on /ws/{doc} and the REST snapshot`, async () => {
    await withServer(async (ctx) => {
      const room = 'h2/edit'
      const a = ctx.provider(v, room, { label: 'A' })
      const b = ctx.provider(v, room, { label: 'B' })
      const y = ON_QUIRE ? ctx.ywsProvider(room, { name: 'Y' }) : null
      await waitSaved(a)
      await waitSaved(b)
      if (y) await waitSynced(y)

      a.document.transact(() => {
        appendParagraph(a.document, 'Hello from Hocuspocus')
        a.document.getText('text').insert(0, 'plain text ✓ 🎉')
      })
      assert.equal(a.hasUnsyncedChanges, true, 'a local edit is unsaved until the server acknowledges it')
      await waitSaved(a, 'A\'s edit acknowledged (hasUnsyncedChanges false again)')
      const docs = { A: a.document, B: b.document }
      if (y) docs.Y = y.doc
      await waitXml(docs, '<paragraph>Hello from Hocuspocus</paragraph>')
      await waitFor(() => b.document.getText('text').toString() === 'plain text ✓ 🎉' && (!y || y.doc.getText('text').toString() === 'plain text ✓ 🎉'),
        { what: 'B and Y to have A\'s text', detail: () => ctx.describe() })

      if (y) {
        // and back: y-websocket to both Hocuspocus providers
        appendParagraph(y.doc, 'Hello from y-websocket')
        await waitXml(docs, '<paragraph>Hello from Hocuspocus</paragraph><paragraph>Hello from y-websocket</paragraph>')
        const fromServer = await serverDoc(ctx.server, room)
        assert.ok(sameState(fromServer, a.document), 'REST format=yjs holds exactly A\'s state')
      }
      // Hocuspocus B's own edit is acknowledged too, and A sees it.
      b.document.getText('text').insert(0, '[B] ')
      await waitSaved(b)
      await waitFor(() => a.document.getText('text').toString() === '[B] plain text ✓ 🎉', { what: 'A to see B\'s edit', detail: () => ctx.describe() })
      assert.deepEqual(b.seen.syncStatus.filter((s) => s !== 1), [], 'every ack B received was SyncStatus(1)')
    })
  })

  test(`H4 [provider ${v}] a read-only session is told readonly, its edits stay unacknowledged and go nowhere, and a reader holding deletions still reaches saved`, async () => {
    await withServer({ extraArgs: ['--auth-secret', SECRET] }, async (ctx) => {
      const room = 'h4/readonly'
      const writer = ctx.provider(v, room, { label: 'writer', token: jwt(SECRET, { docs: ['h4/*'], scope: 'write' }) })
      await waitSaved(writer)
      const text = writer.document.getText('text')
      text.insert(0, 'kept and deleted')
      text.delete(4, 4) // leaves a delete set
      await waitSaved(writer)
      assert.equal(text.toString(), 'kept deleted')

      const readToken = jwt(SECRET, { docs: ['h4/*'], scope: 'read' })
      const reader = ctx.provider(v, room, { label: 'reader', token: readToken })
      await waitSaved(reader)
      assert.equal(reader.authorizedScope, 'readonly')
      assert.deepEqual(reader.seen.authenticated, ['readonly'])
      assert.equal(reader.document.getText('text').toString(), 'kept deleted')

      // A reader that already holds the document (an app with local
      // persistence) answers the server's SyncStep1 with its whole delete
      // set; that adds nothing, so it is acknowledged with 1.
      const preloaded = new Y.Doc()
      Y.applyUpdate(preloaded, Y.encodeStateAsUpdate(writer.document))
      const reader2 = ctx.provider(v, room, { label: 'reader2', token: readToken, document: preloaded })
      await waitSaved(reader2, 'a read-only provider of a document with deletions reaches unsyncedChanges 0')
      assert.deepEqual(reader2.seen.syncStatus, [1])

      // A read-only edit: SyncStatus(0), not applied, not relayed.
      reader.document.getText('text').insert(0, 'READER WAS HERE ')
      assert.equal(reader.unsyncedChanges, 1)
      await waitFor(() => reader.seen.syncStatus.length === 2, { what: 'the reader\'s update to be answered', detail: () => describeProvider(reader) })
      assert.deepEqual(reader.seen.syncStatus, [1, 0], 'a read-only update is answered SyncStatus(0)')
      await sleep(500)
      assert.ok(reader.unsyncedChanges >= 1, `a rejected edit stays unsaved (unsyncedChanges=${reader.unsyncedChanges})`)
      assert.equal(writer.document.getText('text').toString(), 'kept deleted', 'the writer never sees the reader\'s edit')
      assert.equal(reader2.document.getText('text').toString(), 'kept deleted', 'nor does another reader')
      if (ON_QUIRE) {
        const res = await ctx.server.fetch(`/api/docs/${encodeURIComponent(room)}/snapshot?format=text&root=text`, { headers: { authorization: `Bearer ${readToken}` } })
        assert.equal(res.status, 200)
        assert.equal(await res.text(), 'kept deleted', 'nor the server')
      }
      // A reader may publish presence.
      reader.awareness.setLocalStateField('user', { name: 'reader' })
      await waitFor(() => writer.awareness.getStates().get(reader.document.clientID)?.user?.name === 'reader', {
        what: 'the writer to see the reader\'s presence', detail: () => JSON.stringify([...writer.awareness.getStates()])
      })
      // The reader still receives the writer's edits.
      text.insert(text.length, '!')
      await waitFor(() => reader.document.getText('text').toString().endsWith('kept deleted!'), { what: 'the reader to still receive edits', detail: () => describeProvider(reader) })
    })
  })

  test(`H10 [provider ${v}] a provider detached and at once replaced by a new one of the same name on the same socket syncs, and the new one sees no close`,
  quireOnly('@hocuspocus/server answers a client CLOSE with CLOSE("provider_initiated"), which lands on the re-attached provider (reference §4 rule 13)'), async () => {
    await withServer(async (ctx) => {
      const room = 'h10/reattach'
      const socket = ctx.socket(v)
      const first = ctx.provider(v, room, { socket, label: 'first' })
      await waitSaved(first)
      appendParagraph(first.document, 'before the switch')
      await waitSaved(first)

      first.detach()
      const second = ctx.provider(v, room, { socket, label: 'second' })
      await waitSaved(second)
      assert.equal(second.document.getXmlFragment('default').toString(), '<paragraph>before the switch</paragraph>')
      // A round trip on the socket after the switch: anything the server sent
      // about the first provider has arrived by the time this is acknowledged.
      appendParagraph(second.document, 'after the switch')
      await waitSaved(second)
      assert.deepEqual(second.seen.closes, [], 'no close reaches the new provider')
      assert.equal(second.isSynced, true)
      assert.equal(second.isAuthenticated, true)
      assert.equal(socket.seen.disconnects.length, 0, 'the socket stayed open')
    })
  })

  test(`H12 [provider ${v}] with --flush-interval-ms 0 an edit whose SyncStatus arrived survives a kill -9 right after it (the ack waits for the disk)`,
    quireOnly('in Quire an acknowledgement means written to disk; in Hocuspocus it means applied in memory'), async () => {
      // With a flush window the ack may precede the fsync by up to that
      // window (README, "Coming from Hocuspocus"); with 0 it follows it.
      await withServer({ flushIntervalMs: 0 }, async (ctx) => {
        const room = 'h12/acked-is-durable'
        const a = ctx.provider(v, room, { label: 'A' })
        await waitSaved(a)
        for (let i = 0; i < 5; i++) {
          appendParagraph(a.document, `acknowledged ${i}`)
          await waitSaved(a)
        }
        const expected = a.document.getXmlFragment('default').toString()
        // At once. A is then gone for good,
        // so it cannot hand anything back after the restart.
        await ctx.server.kill()
        a.destroy()
        await ctx.server.start()
        const b = ctx.provider(v, room, { label: 'B after kill -9' })
        await waitSaved(b)
        assert.equal(b.document.getXmlFragment('default').toString(), expected, 'every acknowledged edit is on disk')
      })
    })

  test(`H12 [provider ${v}] after a SIGTERM and a restart providers reconnect and authenticate by themselves, hand back offline edits, and end saved`, async () => {
    await withServer(async (ctx) => {
      const room = 'h12/restart'
      const a = ctx.provider(v, room, { label: 'A' })
      const b = ctx.provider(v, room, { label: 'B' })
      await waitSaved(a)
      await waitSaved(b)
      appendParagraph(a.document, 'before')
      await waitXml({ A: a.document, B: b.document }, '<paragraph>before</paragraph>')
      await waitSaved(a)

      const exit = await ctx.server.stop()
      if (ON_QUIRE) assert.deepEqual(exit, { code: 0, signal: null }, 'quire exits 0 on SIGTERM')
      await waitFor(() => a.socket.seen.disconnects.length > 0 && b.socket.seen.disconnects.length > 0, { what: 'both sockets to see the server go', detail: () => ctx.describe() })
      if (ON_QUIRE) {
        const codes = [...a.socket.seen.disconnects, ...b.socket.seen.disconnects].map((e) => e.code)
        assert.ok(codes.includes(1001), `sockets are closed with 1001 on shutdown (seen ${JSON.stringify(codes)})`)
      }
      // offline edits on both sides
      appendParagraph(a.document, 'A offline')
      b.document.getText('text').insert(0, 'B offline')
      assert.ok(a.hasUnsyncedChanges && b.hasUnsyncedChanges)
      const authsBefore = a.seen.authenticated.length + b.seen.authenticated.length

      await ctx.server.start()
      await waitFor(() => a.document.getXmlFragment('default').toString().includes('A offline') &&
        b.document.getXmlFragment('default').toString().includes('A offline') &&
        a.document.getText('text').toString() === 'B offline', { what: 'offline edits to cross after the restart', detail: () => ctx.describe() })
      await waitSaved(a)
      await waitSaved(b)
      assert.ok(a.seen.authenticated.length + b.seen.authenticated.length >= authsBefore + 2, 'both providers authenticated again')
      assert.ok(sameState(a.document, b.document))
      if (ON_QUIRE) {
        const fromServer = await serverDoc(ctx.server, room)
        assert.ok(sameState(fromServer, a.document), 'the server holds everything, offline edits included')
      }
    })
  })
}
