// Real editing: recorded concurrent editing traces replayed through quire,
// one real WebsocketProvider per agent.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, withQuire, waitSynced, waitText, serverDoc, covers, GUARD_MS } from '../lib/harness.mjs'
import { loadTrace, replayConcurrentOffline } from '../lib/trace.mjs'

/**
 * Resolves once `doc`'s state vector covers `need`, checking after each
 * update. An agent may legitimately wait for most of the replay (one that
 * joins late in the trace), so the guard is on progress: it fails only when
 * nothing at all arrives for GUARD_MS.
 */
function whenCovers (doc, need, what) {
  if (covers(doc, need)) return Promise.resolve()
  return new Promise((resolve, reject) => {
    let timer
    const stalled = () => {
      doc.off('update', onUpdate)
      const have = Object.fromEntries([...need.keys()].map((c) => [c, Y.getState(doc.store, c)]))
      reject(new Error(`nothing arrived for ${GUARD_MS} ms while waiting for ${what}: needs ${JSON.stringify(Object.fromEntries(need))}, has ${JSON.stringify(have)}`))
    }
    const onUpdate = () => {
      clearTimeout(timer)
      if (covers(doc, need)) { doc.off('update', onUpdate); resolve() } else timer = setTimeout(stalled, GUARD_MS)
    }
    timer = setTimeout(stalled, GUARD_MS)
    doc.on('update', onUpdate)
  })
}

/**
 * Agent `a` sends its transactions in order through its own provider; before
 * each one it waits until everything that transaction was written against
 * has reached its provider's document through the server.
 */
async function runAgent (provider, txns) {
  let sinceYield = 0
  for (const { txn, update, deps } of txns) {
    if (!covers(provider.doc, deps)) {
      await whenCovers(provider.doc, deps, `${provider.name} to receive (via the server) the parents of trace txn ${txn}`)
      sinceYield = 0
    }
    Y.applyUpdate(provider.doc, update, 'trace-replay') // the provider sends it to the server
    if (++sinceYield >= 20) { // let the sockets breathe, so agents really interleave
      sinceYield = 0
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
}

const CASES = [
  {
    name: 'friendsforever',
    // Replaying keystrokes back to back is far above a person's typing rate:
    // lift the per-connection message rate limit (env twin, so a server
    // without that option simply ignores it).
    env: { QUIRE_RATE_MESSAGES_PER_SEC: '1000000' },
    note: 'rate limit lifted'
  },
  {
    name: 'clownschool',
    // With the server's default limits the fast agents are typically closed
    // (1008) several times mid-replay; their providers reconnect and resync by
    // themselves, and nothing may be lost.
    env: {},
    note: 'default rate limits, closed agents reconnect'
  }
]

for (const { name, env, note } of CASES) {
  test(`concurrent trace ${name} (${note}): every agent's provider, an observer and the server end with endContent`, async () => {
    const trace = loadTrace(name)
    // The offline fork-per-agent replay is the reference: it must itself reach endContent.
    const offline = replayConcurrentOffline(trace, { root: 'text' })
    assert.equal(offline.merged, trace.endContent, 'harness self-check: offline replay reaches endContent')

    await withQuire({ env }, async (ctx) => {
      const room = `trace-${name}`
      const agents = offline.perAgent.map((_, a) => ctx.provider(room, { name: `agent${a}` }))
      const observer = ctx.provider(room, { name: 'observer' })
      for (const p of [...agents, observer]) await waitSynced(p)

      await Promise.all(agents.map((p, a) => runAgent(p, offline.perAgent[a])))

      const everyone = Object.fromEntries([...agents, observer].map((p) => [p.name, p.doc]))
      await waitText(everyone, 'text', trace.endContent)
      assert.equal(observer.doc.getText('text').toString(), trace.endContent)
      assert.equal(await ctx.server.snapshotText(room, 'text'), trace.endContent, 'server format=text export')
      const fromServer = await serverDoc(ctx.server, room)
      assert.equal(fromServer.getText('text').toString(), trace.endContent, 'server format=yjs snapshot')

      // A late joiner loads the finished document in one go.
      const late = ctx.provider(room, { name: 'late' })
      await waitSynced(late)
      await waitText({ late: late.doc }, 'text', trace.endContent)
    })
  })
}
