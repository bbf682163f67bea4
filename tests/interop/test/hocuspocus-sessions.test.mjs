// The Hocuspocus dialect, sessions on a socket: per-document JWT auth (H3),
// multiplexing (H5), sessionAwareness (H6), stateless messages (H7) and a
// per-document close by the server (H11) — each under @hocuspocus/provider
// 4.8.0 and 3.4.4. Case numbers are those of the test plan in the Hocuspocus
// protocol reference.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../lib/harness.mjs'
import {
  MSG, ON_QUIRE, VERSIONS, appendParagraph, describeProvider, frame, jwt, metric, quireOnly, v4Only, varString,
  waitDenied, waitSaved, waitXml, withServer
} from '../lib/hocuspocus.mjs'

const SECRET = 'interop-hocuspocus-secret'
const AUTH = ['--auth-secret', SECRET]
const hour = () => Math.floor(Date.now() / 1000) + 3600

/** GET /api/docs/{doc}'s `clients`. */
async function clientsOf (server, doc) {
  const res = await server.fetch(`/api/docs/${encodeURIComponent(doc)}`)
  assert.equal(res.status, 200, await res.clone().text())
  return (await res.json()).clients
}

for (const v of VERSIONS) {
  test(`H3 [provider ${v}] JWTs are checked per document: write is read-write, read is readonly, anything else is denied with a reason without touching the socket's other documents, and a good token after a denial works`, async () => {
    await withServer({ extraArgs: AUTH }, async (ctx) => {
      const writer = ctx.provider(v, 'h3/doc', { label: 'writer', token: jwt(SECRET, { docs: ['h3/*'], scope: 'write' }) })
      const reader = ctx.provider(v, 'h3/doc', { label: 'reader', token: jwt(SECRET, { docs: ['h3/doc'], scope: 'read' }) })
      await waitSaved(writer)
      await waitSaved(reader)
      assert.deepEqual(writer.seen.authenticated, ['read-write'])
      assert.deepEqual(reader.seen.authenticated, ['readonly'])

      // Each bad token on a socket shared with a good document: the bad one
      // is denied, the good one syncs, the socket stays up (#579).
      const bad = {
        'a token for another document': jwt(SECRET, { docs: ['elsewhere/*'], scope: 'write' }),
        'an expired token': jwt(SECRET, { docs: ['h3/*'], scope: 'write', exp: Math.floor(Date.now() / 1000) - 3600 }),
        'a forged token': jwt('not-the-secret', { docs: ['h3/*'], scope: 'write', exp: hour() }),
        'no token': ''
      }
      for (const [what, token] of Object.entries(bad)) {
        const socket = ctx.socket(v)
        const denied = ctx.provider(v, 'h3/doc', { socket, label: `denied (${what})`, token })
        const allowed = ctx.provider(v, 'h3/other', { socket, label: `allowed next to ${what}`, token: jwt(SECRET, { docs: ['h3/*'], scope: 'write' }) })
        await waitDenied(denied)
        await waitSaved(allowed)
        assert.equal(denied.seen.authFailed.length, 1, `${what} is denied: ${describeProvider(denied)}`)
        assert.equal(typeof denied.seen.authFailed[0], 'string')
        assert.ok(denied.seen.authFailed[0].length > 0, `${what} is denied with a reason`)
        assert.deepEqual(denied.seen.authenticated, [], `${what} is never authenticated`)
        assert.equal(denied.isSynced, false, `${what} never syncs`)
        assert.equal(denied.document.getXmlFragment('default').length, 0)
        appendParagraph(allowed.document, `next to ${what}`)
        await waitSaved(allowed)
        assert.deepEqual(socket.seen.disconnects, [], `the socket stayed open next to ${what}`)
      }

      // Denied, then a good token on the same socket and address (#944):
      // the provider sends Auth again (as on open) and is let in.
      let token = 'garbage'
      const socket = ctx.socket(v)
      const retry = ctx.provider(v, 'h3/doc', { socket, label: 'retry', token: () => token })
      await waitDenied(retry)
      assert.equal(retry.seen.authFailed.length, 1)
      token = jwt(SECRET, { docs: ['h3/doc'], scope: 'write' })
      await retry.sendToken()
      retry.startSync()
      await waitSaved(retry, 'the retry with a good token is authenticated and synced')
      assert.deepEqual(retry.seen.authenticated, ['read-write'])
      assert.equal(retry.document.getXmlFragment('default').toString(), writer.document.getXmlFragment('default').toString())
      assert.deepEqual(socket.seen.disconnects, [])
    })
  })

  test(`H3 [provider ${v}] a session whose token is about to expire is asked for a new one: a fresh token keeps it open, a stale one gets that document closed ("token expired") while the socket's other document goes on`, quireOnly('token refresh (onTokenSync in Hocuspocus)'), async () => {
    await withServer({ extraArgs: AUTH }, async (ctx) => {
      const now = () => Math.floor(Date.now() / 1000)
      // 60 s of leeway: exp 55 s ago leaves about 5 s, and the server asks
      // for a new token at once (it asks 5 s before exp).
      const dying = () => jwt(SECRET, { docs: ['h3/*'], scope: 'write', exp: now() - 55 })
      const socket = ctx.socket(v)
      let refreshedCalls = 0
      let first = true
      const refreshed = ctx.provider(v, 'h3/refreshed', {
        socket,
        label: 'refreshed',
        token: () => {
          refreshedCalls++
          if (first) { first = false; return dying() }
          return jwt(SECRET, { docs: ['h3/*'], scope: 'write' })
        }
      })
      let staleCalls = 0
      const stale = ctx.provider(v, 'h3/stale', { socket, label: 'stale', token: () => { staleCalls++; return dying() } })
      const bystander = ctx.provider(v, 'h3/bystander', { socket, label: 'bystander', token: jwt(SECRET, { docs: ['h3/*'], scope: 'write' }) })
      await waitSaved(refreshed)
      await waitSaved(stale)
      await waitSaved(bystander)
      await waitFor(() => refreshedCalls >= 2 && staleCalls >= 2, { what: 'both providers to be asked for a new token', detail: () => `refreshed ${refreshedCalls}, stale ${staleCalls}` })

      await waitFor(() => stale.seen.closes.length > 0, { what: 'the stale session to be closed', detail: () => describeProvider(stale) })
      assert.ok(staleCalls < 10, `the stale provider was asked for its token ${staleCalls} times: once is enough`)
      assert.equal(stale.seen.closes[0].reason, 'token expired')
      assert.equal(stale.isSynced, false)
      // Past the old token's end: the refreshed session is still open and saving.
      appendParagraph(refreshed.document, 'still authorised')
      await waitSaved(refreshed)
      assert.deepEqual(refreshed.seen.closes, [], 'the refreshed session was not closed')
      assert.deepEqual(bystander.seen.closes, [])
      assert.deepEqual(socket.seen.disconnects, [], 'the socket stays open')
      appendParagraph(bystander.document, 'unaffected')
      await waitSaved(bystander)
    })
  })

  test(`H5 [provider ${v}] one socket carries two documents: one upgrade, each document its own content, and destroying one provider leaves the other working and takes its presence away`, async () => {
    await withServer(async (ctx) => {
      const socket = ctx.socket(v)
      const m1 = ctx.provider(v, 'm/1', { socket, label: 'm/1' })
      const m2 = ctx.provider(v, 'm/2', { socket, label: 'm/2' })
      await waitSaved(m1)
      await waitSaved(m2)
      if (ON_QUIRE) {
        assert.equal(await metric(ctx.server, 'quire_connections', '{protocol="hocuspocus"}'), 1, 'one Hocuspocus socket')
        assert.equal(await metric(ctx.server, 'quire_sessions', '{protocol="hocuspocus"}'), 2, 'two Hocuspocus sessions on it')
      }
      // a peer of m/1 on a socket of its own
      const peer = ctx.provider(v, 'm/1', { label: 'peer of m/1' })
      await waitSaved(peer)

      appendParagraph(m1.document, 'one')
      appendParagraph(m2.document, 'two')
      await waitSaved(m1)
      await waitSaved(m2)
      await waitXml({ peer: peer.document }, '<paragraph>one</paragraph>')
      const fresh2 = ctx.provider(v, 'm/2', { label: 'fresh m/2' })
      await waitSaved(fresh2)
      assert.equal(fresh2.document.getXmlFragment('default').toString(), '<paragraph>two</paragraph>', 'm/2 has only its own content')
      assert.equal(m1.document.getXmlFragment('default').toString(), '<paragraph>one</paragraph>', 'm/1 has only its own content')
      if (ON_QUIRE) assert.equal(await clientsOf(ctx.server, 'm/1'), 2)

      m1.awareness.setLocalStateField('user', { name: 'm1' })
      const m1Id = m1.document.clientID
      await waitFor(() => peer.awareness.getStates().get(m1Id)?.user?.name === 'm1', { what: 'the peer to see m/1\'s presence', detail: () => ctx.describe() })

      m1.destroy()
      await waitFor(() => !peer.awareness.getStates().has(m1Id), { timeout: 10000, what: 'the peer to lose m/1\'s presence after destroy()', detail: () => JSON.stringify([...peer.awareness.getStates()]) })
      if (ON_QUIRE) await waitFor(async () => (await clientsOf(ctx.server, 'm/1')) === 1, { what: 'REST clients of m/1 to drop to 1' })

      appendParagraph(m2.document, 'two again')
      await waitSaved(m2)
      await waitXml({ fresh: fresh2.document, m2: m2.document }, '<paragraph>two</paragraph><paragraph>two again</paragraph>')
      assert.deepEqual(socket.seen.disconnects, [], 'the shared socket stayed open')
      if (ON_QUIRE) assert.equal(await metric(ctx.server, 'quire_sessions', '{protocol="hocuspocus"}'), 3, 'm/2 on the shared socket, the peer and fresh m/2')
    })
  })

  test(`H5 [provider ${v}] a socket holds at most --hocuspocus-max-sessions documents: one more is denied with a reason, the others go on, and a freed place can be taken`, quireOnly('--hocuspocus-max-sessions'), async () => {
    await withServer({ extraArgs: ['--hocuspocus-max-sessions', '2'] }, async (ctx) => {
      const socket = ctx.socket(v)
      const one = ctx.provider(v, 'cap/1', { socket, label: 'cap/1' })
      const two = ctx.provider(v, 'cap/2', { socket, label: 'cap/2' })
      await waitSaved(one)
      await waitSaved(two)
      const three = ctx.provider(v, 'cap/3', { socket, label: 'cap/3' })
      await waitDenied(three)
      assert.equal(three.seen.authFailed.length, 1, describeProvider(three))
      assert.ok(three.seen.authFailed[0].length > 0, 'denied with a reason')
      assert.equal(three.isSynced, false)
      appendParagraph(two.document, 'two goes on')
      await waitSaved(two)
      assert.deepEqual(socket.seen.disconnects, [])

      one.destroy()
      const four = ctx.provider(v, 'cap/4', { socket, label: 'cap/4' })
      await waitSaved(four, 'a document in the freed place')
      assert.deepEqual(four.seen.authenticated, ['read-write'])
    })
  })

  test(`H5 [provider ${v}] a document name Quire does not accept is denied ("invalid document name") without closing the socket, and the bare /ws endpoint speaks Hocuspocus too`, quireOnly('Quire\'s name rules and endpoints'), async () => {
    await withServer(async (ctx) => {
      const socket = ctx.socket(v, { url: `ws://${ctx.server.addr}/ws` })
      const bad = ctx.provider(v, 'has a space', { socket, label: 'bad name' })
      const good = ctx.provider(v, 'bare/ws', { socket, label: 'on bare /ws' })
      await waitDenied(bad)
      assert.deepEqual(bad.seen.authFailed, ['invalid document name'])
      await waitSaved(good)
      const viaHocuspocus = ctx.provider(v, 'bare/ws', { label: 'on /hocuspocus' })
      await waitSaved(viaHocuspocus)
      appendParagraph(good.document, 'through bare /ws')
      await waitXml({ other: viaHocuspocus.document }, '<paragraph>through bare /ws</paragraph>')
      assert.deepEqual(socket.seen.disconnects, [])
    })
  })

  test(`H6 [provider ${v}] two providers of one document on one socket with sessionAwareness are both synced and see each other's edits${v === 'v3' ? ' — v4-only: provider 3.x has no sessionAwareness' : ''}`,
    v4Only(v, 'provider 3.x has no sessionAwareness option'), async () => {
      await withServer(async (ctx) => {
        const socket = ctx.socket(v)
        const a = ctx.provider(v, 'h6/doc', { socket, label: 'A', sessionAwareness: true })
        const b = ctx.provider(v, 'h6/doc', { socket, label: 'B', sessionAwareness: true })
        await waitSaved(a)
        await waitSaved(b)
        assert.notEqual(a.effectiveName, b.effectiveName)
        assert.ok(a.effectiveName.startsWith('h6/doc\0'))
        appendParagraph(a.document, 'from A')
        await waitXml({ B: b.document }, '<paragraph>from A</paragraph>')
        appendParagraph(b.document, 'from B')
        await waitXml({ A: a.document, B: b.document }, '<paragraph>from A</paragraph><paragraph>from B</paragraph>')
        await waitSaved(a)
        await waitSaved(b)
        b.awareness.setLocalStateField('user', { name: 'B' })
        await waitFor(() => a.awareness.getStates().get(b.document.clientID)?.user?.name === 'B', { what: 'A to see B\'s presence', detail: () => ctx.describe() })
      })
    })

  test(`H7 [provider ${v}] a stateless message reaches the document's other sessions but not its sender, REST pushes one to all, and a client's BroadcastStateless closes only that document`, async (t) => {
    await withServer(async (ctx) => {
      const socket = ctx.socket(v)
      const a = ctx.provider(v, 's/1', { socket, label: 'A' })
      const other = ctx.provider(v, 's/2', { socket, label: 'A\'s other document' })
      const b = ctx.provider(v, 's/1', { label: 'B' })
      await waitSaved(a)
      await waitSaved(other)
      await waitSaved(b)

      a.sendStateless('{"x":1}')
      await waitFor(() => b.seen.stateless.length === 1, { what: 'B to receive A\'s stateless message', detail: () => describeProvider(b) })
      assert.deepEqual(b.seen.stateless, ['{"x":1}'])
      // a round trip of A's after the stateless message: an echo would have come first
      appendParagraph(a.document, 'after stateless')
      await waitSaved(a)
      assert.deepEqual(a.seen.stateless, [], 'the sender does not get its own message back')
      assert.deepEqual(other.seen.stateless, [], 'another document on the sender\'s socket gets nothing')

      if (ON_QUIRE) {
        const res = await ctx.server.fetch('/api/docs/s%2F1/stateless', {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ payload: 'from the server ✓' })
        })
        assert.equal(res.status, 204, await res.text())
        await waitFor(() => a.seen.stateless.length === 1 && b.seen.stateless.length === 2, { what: 'A and B to receive the REST push', detail: () => ctx.describe() })
        assert.deepEqual(a.seen.stateless, ['from the server ✓'])
        assert.deepEqual(b.seen.stateless, ['{"x":1}', 'from the server ✓'])
        assert.deepEqual(other.seen.stateless, [])
      } else {
        t.diagnostic('Quire-only: POST /api/docs/{doc}/stateless left out')
      }

      // BroadcastStateless is server-internal; a client sending it loses that document.
      socket.webSocket.send(frame('s/1', MSG.BroadcastStateless, varString('nope')))
      await waitFor(() => a.seen.closes.length > 0, { what: 'A to be closed for sending BroadcastStateless', detail: () => describeProvider(a) })
      assert.equal(a.isSynced, false)
      assert.deepEqual(socket.seen.disconnects, [], 'the socket stays open')
      assert.deepEqual(other.seen.closes, [], 'the other document on the socket is not closed')
      appendParagraph(other.document, 'still here')
      await waitSaved(other)
      assert.deepEqual(b.seen.closes, [], 'B, on another socket, is not closed')
      appendParagraph(b.document, 'B still edits')
      await waitSaved(b)
    })
  })

  test(`H11 [provider ${v}] an update that does not decode closes only its document, with a reason, and loses nothing acknowledged`,
    quireOnly('@hocuspocus/server logs the decoding error and keeps the session (Quire closes it: reference §4 rule 13)'), async () => {
    await withServer(async (ctx) => {
      const socket = ctx.socket(v)
      const broken = ctx.provider(v, 'u/broken', { socket, label: 'u/broken' })
      const fine = ctx.provider(v, 'u/fine', { socket, label: 'u/fine' })
      await waitSaved(broken)
      await waitSaved(fine)
      appendParagraph(broken.document, 'acknowledged before')
      await waitSaved(broken)
      // Sync, Update (2), a "v1 update" of garbage bytes
      socket.webSocket.send(frame('u/broken', MSG.Sync, [2, 5, 0xff, 0xff, 0xff, 0xff, 0xff]))
      await waitFor(() => broken.seen.closes.length > 0, { what: 'u/broken to be closed', detail: () => describeProvider(broken) })
      assert.ok(broken.seen.closes[0].reason.length > 0, `with a reason: ${JSON.stringify(broken.seen.closes[0])}`)
      assert.deepEqual(fine.seen.closes, [])
      assert.deepEqual(socket.seen.disconnects, [], 'the socket stays open')
      appendParagraph(fine.document, 'unaffected')
      await waitSaved(fine)
      const again = ctx.provider(v, 'u/broken', { label: 'fresh u/broken' })
      await waitXml({ again: again.document }, '<paragraph>acknowledged before</paragraph>')
    })
  })

  test(`H11 [provider ${v}] deleting a document over REST closes it on a shared socket with a reason while the socket's other document keeps working`, quireOnly('REST DELETE'), async () => {
    await withServer(async (ctx) => {
      const socket = ctx.socket(v)
      const m1 = ctx.provider(v, 'd/1', { socket, label: 'd/1' })
      const m2 = ctx.provider(v, 'd/2', { socket, label: 'd/2' })
      await waitSaved(m1)
      await waitSaved(m2)
      appendParagraph(m1.document, 'doomed')
      await waitSaved(m1)

      const res = await ctx.server.fetch('/api/docs/d%2F1', { method: 'DELETE' })
      assert.equal(res.status, 204, await res.text())
      await waitFor(() => m1.seen.closes.length > 0, { what: 'd/1 to be closed by the server', detail: () => describeProvider(m1) })
      assert.equal(typeof m1.seen.closes[0].reason, 'string')
      assert.ok(m1.seen.closes[0].reason.length > 0, `the close says why (${JSON.stringify(m1.seen.closes[0])})`)
      assert.equal(m1.isSynced, false)
      assert.deepEqual(m2.seen.closes, [], 'd/2 is not closed')
      assert.deepEqual(socket.seen.disconnects, [], 'the socket stays open')
      appendParagraph(m2.document, 'survivor')
      await waitSaved(m2)
      const fresh = ctx.provider(v, 'd/2', { label: 'fresh d/2' })
      await waitXml({ fresh: fresh.document }, '<paragraph>survivor</paragraph>')
      assert.equal((await ctx.server.fetch('/api/docs/d%2F1')).status, 404, 'd/1 is gone')
    })
  })
}



