// The Hocuspocus dialect, presence: Tiptap-shaped awareness across sessions
// and dialects (H8, under @hocuspocus/provider 4.8.0 and 3.4.4) and the
// keepalive that stops lone clients from reconnecting every 30 s (H9). Case
// numbers are those of the test plan in the Hocuspocus protocol reference.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, sleep, waitFor, waitSynced } from '../lib/harness.mjs'
import { ON_QUIRE, VERSIONS, describeProvider, waitSaved, withServer } from '../lib/hocuspocus.mjs'

// y-protocols drops a remote state by itself after 30 s without renewal, so a
// removal seen well before that came from the server.
const REMOVAL_GUARD_MS = 10000

const states = (p) => JSON.stringify([...p.awareness.getStates()])

/** What CollaborationCaret puts in awareness: `user`, and y-tiptap's `cursor` as relative-position JSON. */
function caretState (doc, name, color) {
  const frag = doc.getXmlFragment('default')
  return {
    user: { name, color },
    cursor: {
      anchor: Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(frag, 0)),
      head: Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(frag, 0))
    }
  }
}

for (const v of VERSIONS) {
  test(`H8 [provider ${v}] a Tiptap-shaped presence reaches other sessions and a late joiner by the time it is synced, leaves with destroy() and detach(), and crosses to y-websocket and back`, async () => {
    await withServer(async (ctx) => {
      const room = 'h8/presence'
      const a = ctx.provider(v, room, { label: 'A' })
      const b = ctx.provider(v, room, { label: 'B' })
      await waitSaved(a)
      await waitSaved(b)
      const aState = caretState(a.document, 'Ada', '#6e56cf')
      a.awareness.setLocalState(aState)
      const aId = a.document.clientID
      await waitFor(() => b.awareness.getStates().get(aId)?.user?.name === 'Ada', { what: 'B to see A\'s presence', detail: () => states(b) })
      assert.deepEqual(b.awareness.getStates().get(aId), aState, 'nested JSON arrives unchanged')

      // A late joiner has every state when it reports synced.
      const c = ctx.provider(v, room, { label: 'C (late)' })
      let atSynced = null
      c.on('synced', () => { atSynced ??= new Map(c.awareness.getStates()) })
      await waitSaved(c)
      assert.deepEqual(atSynced.get(aId), aState, `the late joiner had A's state when synced (it had ${JSON.stringify([...atSynced])})`)

      // y-websocket on /ws/{doc}: both ways.
      if (ON_QUIRE) {
        const y = ctx.ywsProvider(room, { name: 'Y' })
        await waitSynced(y)
        await waitFor(() => y.awareness.getStates().get(aId)?.user?.name === 'Ada', { what: 'the y-websocket client to see A', detail: () => JSON.stringify([...y.awareness.getStates()]) })
        y.awareness.setLocalState({ user: { name: 'Yann', color: '#30a46c' } })
        const yId = y.doc.clientID
        await waitFor(() => [a, b, c].every((p) => p.awareness.getStates().get(yId)?.user?.name === 'Yann'), {
          what: 'every Hocuspocus provider to see the y-websocket client', detail: () => ctx.describe()
        })
        y.destroy()
        await waitFor(() => [a, b, c].every((p) => !p.awareness.getStates().has(yId)), {
          timeout: REMOVAL_GUARD_MS, what: 'the y-websocket client\'s presence to leave every Hocuspocus provider', detail: () => states(a)
        })
      }

      // destroy() takes A's presence away.
      a.destroy()
      await waitFor(() => !b.awareness.getStates().has(aId) && !c.awareness.getStates().has(aId), {
        timeout: REMOVAL_GUARD_MS, what: 'B and C to lose A\'s presence after A.destroy()', detail: () => `B ${states(b)} C ${states(c)}`
      })
      // detach() without destroy: the server drops what the session added.
      b.awareness.setLocalStateField('user', { name: 'Bea', color: '#e5484d' })
      const bId = b.document.clientID
      await waitFor(() => c.awareness.getStates().get(bId)?.user?.name === 'Bea', { what: 'C to see B', detail: () => states(c) })
      b.detach()
      await waitFor(() => !c.awareness.getStates().has(bId), {
        timeout: REMOVAL_GUARD_MS, what: 'C to lose B\'s presence after B.detach()', detail: () => states(c)
      })
    })
  })
}

const SILENCE_MS = 40000

test(`H9 lone clients stay connected: a v4 provider with a 3 s message timeout lives on server Pings alone, a v3 provider is never sent one and does not throw, and lone v4, v3 and y-websocket clients with default settings see no disconnect in ${SILENCE_MS / 1000} s`, async () => {
  const uncaught = []
  const onUncaught = (e) => uncaught.push(String(e?.stack ?? e))
  process.on('uncaughtException', onUncaught)
  try {
    // Server P pings v4 sockets every second; server Q sends no Ping at all,
    // so only the awareness echo keeps its clients alive.
    await withServer({ extraArgs: ON_QUIRE ? ['--hocuspocus-ping-secs', '1'] : [] }, async (pinging) => {
      await withServer({ extraArgs: ON_QUIRE ? ['--hocuspocus-ping-secs', '0'] : [] }, async (quiet) => {
        const watched = []
        const lone = (ctx, v, name, opts = {}) => {
          const p = ctx.provider(v, name, { label: `${v} ${name}`, ...opts })
          watched.push(p)
          return p
        }
        const v4Pinged = ON_QUIRE ? lone(pinging, 'v4', 'h9/pinged', { awareness: null, socketOpts: { messageReconnectTimeout: 3000 } }) : null
        const v3OnPinging = lone(pinging, 'v3', 'h9/v3-pinging')
        const v4Quiet = lone(quiet, 'v4', 'h9/v4-quiet')
        const v3Quiet = lone(quiet, 'v3', 'h9/v3-quiet')
        const y = ON_QUIRE ? pinging.ywsProvider('h9/y-websocket', { name: 'lone y-websocket' }) : null
        for (const p of watched) await waitSaved(p)
        if (y) await waitSynced(y)
        const started = Date.now()
        const report = () => watched.map(describeProvider).join('\n') + (y ? `\ny-websocket closes=${JSON.stringify(y.closeEvents)}` : '')

        // The pinged v4 provider would close its socket after ~3 s of silence.
        if (v4Pinged) {
          await sleep(10000)
          assert.deepEqual(v4Pinged.socket.seen.disconnects, [], `a v4 provider with messageReconnectTimeout 3000 and no awareness, pinged every second, stays connected for 10 s\n${report()}`)
        }
        await sleep(SILENCE_MS - (Date.now() - started))
        for (const p of [v3OnPinging, v4Quiet, v3Quiet]) {
          assert.deepEqual(p.socket.seen.disconnects, [], `${p.label} stays connected for ${SILENCE_MS / 1000} s\n${report()}`)
          assert.equal(p.isSynced, true)
        }
        if (y) assert.deepEqual(y.closeEvents, [], `a lone y-websocket client stays connected for ${SILENCE_MS / 1000} s\n${report()}`)
        assert.deepEqual(uncaught, [], 'no provider threw (a v3 provider throws on a Ping)')
        // and they still work
        v3OnPinging.document.getText('t').insert(0, 'still here')
        await waitSaved(v3OnPinging)
      })
    })
  } finally {
    process.off('uncaughtException', onUncaught)
  }
})
