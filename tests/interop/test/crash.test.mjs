// Crash safety with clients that keep typing: three providers type
// continuously, the server is killed with SIGKILL in the middle of the stream,
// restarted on the same data dir and port, the providers reconnect by
// themselves, and every token any of them typed ends in the document at every
// client and at a fresh client.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, withQuire, waitFor, waitSynced, waitSameState, sleep } from '../lib/harness.mjs'

const TYPISTS = ['ann', 'bob', 'cyd']

test('kill -9 while three clients type: they reconnect by themselves and no token is lost', async () => {
  await withQuire({ flushIntervalMs: 10 }, async (ctx) => {
    const room = 'crash/typing'
    const typed = new Map(TYPISTS.map((name) => [name, []]))
    const providers = TYPISTS.map((name) => ctx.provider(room, { name }))
    for (const p of providers) await waitSynced(p)

    let typing = true
    let killed = false
    // Each typist appends "<name>-<n> " at the end of its own line, whatever
    // the connection is doing: offline keystrokes stay in the page's Y.Doc.
    const loops = providers.map(async (p, i) => {
      const text = p.doc.getText('text')
      const name = TYPISTS[i]
      for (let n = 0; typing; n++) {
        const token = `${name}-${n}`
        text.insert(text.length, `${token} `)
        typed.get(name).push(token)
        await sleep(5 + i)
      }
    })

    // Let everyone type for a while, kill the server mid-stream, keep typing
    // while it is down, then bring it back.
    await waitFor(() => TYPISTS.every((n) => typed.get(n).length >= 40), { what: 'each typist to type 40 tokens' })
    await ctx.server.kill()
    killed = true
    await waitFor(() => providers.every((p) => !p.wsconnected), { what: 'the providers to notice the server died' })
    const typedWhileDown = TYPISTS.map((n) => typed.get(n).length)
    await waitFor(() => TYPISTS.every((n, i) => typed.get(n).length >= typedWhileDown[i] + 10), {
      what: 'each typist to type 10 more tokens while the server is down'
    })
    await ctx.server.start()
    for (const p of providers) await waitSynced(p, `${p.name} to reconnect by itself`)
    await sleep(200)
    typing = false
    await Promise.all(loops)
    assert.ok(killed)

    // Every participant converges to the union of everything typed.
    const expected = new Y.Doc()
    for (const p of providers) Y.applyUpdate(expected, Y.encodeStateAsUpdate(p.doc))
    await waitSameState(Object.fromEntries(providers.map((p) => [p.name, p.doc])), expected, 'every typist to converge')
    const fresh = ctx.provider(room, { name: 'fresh' })
    await waitSynced(fresh)
    await waitSameState({ fresh: fresh.doc }, expected, 'a fresh client to receive everything')

    const words = new Set(fresh.doc.getText('text').toString().split(' ').filter(Boolean))
    for (const [name, tokens] of typed) {
      const missing = tokens.filter((t) => !words.has(t))
      assert.deepEqual(missing, [], `${name}'s tokens missing after the crash`)
    }
    assert.equal(await ctx.server.snapshotText(room, 'text'), fresh.doc.getText('text').toString())
  })
})
