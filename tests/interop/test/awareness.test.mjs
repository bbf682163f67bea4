// Presence (y-protocols awareness) relayed by quire.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { withQuire, waitFor, waitSynced } from '../lib/harness.mjs'

const stateOf = (p, clientId) => p.awareness.getStates().get(clientId)
const show = (p) => JSON.stringify([...p.awareness.getStates()])

// y-protocols drops a remote state by itself after 30 s without renewal, so a
// removal seen well before that came from the server.
const REMOVAL_GUARD_MS = 10000

test('awareness states are relayed, updated, sent to late joiners, and removed on disconnect', async () => {
  await withQuire(async (ctx) => {
    const room = 'awareness'
    const a = ctx.provider(room, { name: 'A' })
    const b = ctx.provider(room, { name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    const aId = a.doc.clientID
    const bId = b.doc.clientID

    a.awareness.setLocalState({ user: { name: 'alice' } })
    await waitFor(() => stateOf(b, aId)?.user?.name === 'alice', {
      what: 'B to see A\'s awareness state {user:{name:\'alice\'}}', detail: () => show(b)
    })
    assert.deepEqual(stateOf(b, aId), { user: { name: 'alice' } })

    b.awareness.setLocalState({ user: { name: 'bob' } })
    await waitFor(() => stateOf(a, bId)?.user?.name === 'bob', { what: 'A to see B\'s state', detail: () => show(a) })

    a.awareness.setLocalStateField('cursor', { anchor: 3, head: 5 })
    await waitFor(() => stateOf(b, aId)?.cursor?.head === 5, { what: 'B to see A\'s updated state', detail: () => show(b) })
    assert.deepEqual(stateOf(b, aId), { user: { name: 'alice' }, cursor: { anchor: 3, head: 5 } })

    // A late joiner receives the current states on connect.
    const c = ctx.provider(room, { name: 'C' })
    await waitSynced(c)
    await waitFor(() => stateOf(c, aId)?.user?.name === 'alice' && stateOf(c, bId)?.user?.name === 'bob', {
      what: 'late joiner C to receive A\'s and B\'s states', detail: () => show(c)
    })

    // A disconnects the ordinary way.
    a.disconnect()
    await waitFor(() => !b.awareness.getStates().has(aId) && !c.awareness.getStates().has(aId), {
      timeout: REMOVAL_GUARD_MS, what: 'B and C to see A\'s state removed after A.disconnect()', detail: () => `B: ${show(b)} C: ${show(c)}`
    })
    assert.equal(stateOf(c, bId)?.user?.name, 'bob', 'B\'s state is untouched')

    // A comes back and sets its state again. (Re-announcing the unchanged
    // state would carry the same awareness clock as the removal, which
    // y-protocols peers ignore until the 15 s renewal, so it is bumped.)
    a.connect()
    await waitSynced(a)
    a.awareness.setLocalState({ user: { name: 'alice', back: true } })
    await waitFor(() => stateOf(b, aId)?.user?.back === true, { what: 'B to see A again after it reconnected', detail: () => show(b) })
    a.destroy()
    await waitFor(() => !b.awareness.getStates().has(aId), {
      timeout: REMOVAL_GUARD_MS, what: 'B to see A\'s state removed after A.destroy()', detail: () => show(b)
    })
  })
})

test('the server removes the awareness of a connection that dropped without saying goodbye', async () => {
  await withQuire(async (ctx) => {
    const room = 'awareness-drop'
    const a = ctx.provider(room, { name: 'A' })
    const b = ctx.provider(room, { name: 'B' })
    await waitSynced(a)
    await waitSynced(b)
    const aId = a.doc.clientID
    a.awareness.setLocalState({ user: { name: 'alice' } })
    await waitFor(() => stateOf(b, aId)?.user?.name === 'alice', { what: 'B to see A\'s state', detail: () => show(b) })

    // Unlike disconnect(), this sends no "state is null" message: the socket is
    // simply torn down (no close frame), so only the server can tell B.
    a.shouldConnect = false
    a.ws.terminate()
    await waitFor(() => !b.awareness.getStates().has(aId), {
      timeout: REMOVAL_GUARD_MS,
      what: 'B to see A\'s state removed after A\'s socket dropped (server must broadcast the removal)',
      detail: () => show(b)
    })
  })
})
