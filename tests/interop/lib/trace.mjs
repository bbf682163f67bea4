// Loading and faithfully replaying the recorded editing traces in
// tests/data/editing-traces (origin, licence and format: that folder's README.md).
//
// Concurrent traces are replayed *offline* first: one Y.Doc per agent, each
// forked exactly at the version its next transaction was written against.
// Every transaction's resulting Yjs update is captured together with the
// state vector its author's document had just before it (its dependencies).
// The network part of a test then pushes those updates through one real
// WebsocketProvider per agent, each waiting until its dependencies arrived
// *through the server*, so the server has to relay everything.

import * as fs from 'node:fs'
import * as path from 'node:path'
import * as zlib from 'node:zlib'
import { fileURLToPath } from 'node:url'
import * as Y from 'yjs'

const ASTRAL = /[\u{10000}-\u{10FFFF}]/u

export function tracesDir () {
  if (process.env.QUIRE_TRACES_DIR) return process.env.QUIRE_TRACES_DIR
  // The copy in the repository (tests/interop/lib -> tests/data), so that a
  // clone with nothing beside it runs the suite.
  const here = path.dirname(fileURLToPath(import.meta.url))
  return path.resolve(here, '../../data/editing-traces')
}

export function loadTrace (name) {
  const file = path.join(tracesDir(), name.endsWith('.json.gz') ? name : `${name}.json.gz`)
  return JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString('utf8'))
}

/** Code-point position -> UTF-16 index in `s`. */
function cpToUtf16 (s, cp) {
  let i = 0
  while (cp > 0 && i < s.length) {
    const c = s.charCodeAt(i)
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < s.length ? 2 : 1
    cp--
  }
  if (cp > 0) throw new Error(`position past the end of the text (${cp} code points short)`)
  return i
}

/**
 * Applies one trace patch [pos, del, ins] (positions in code points) to a Y.Text.
 * `astralSeen` tells whether any astral character may be in the text, which
 * is the only case where code points and UTF-16 units differ.
 */
export function applyPatch (ytext, [pos, del, ins], astralSeen) {
  if (!astralSeen) {
    if (del > 0) ytext.delete(pos, del)
    if (ins.length > 0) ytext.insert(pos, ins)
    return
  }
  const s = ytext.toString()
  const from = cpToUtf16(s, pos)
  if (del > 0) {
    const to = from + cpToUtf16(s.slice(from), del)
    ytext.delete(from, to - from)
  }
  if (ins.length > 0) ytext.insert(from, ins)
}

/** Applies patches to a plain JS string, positions in code points. */
export function applyPatchToString (s, [pos, del, ins]) {
  const cps = Array.from(s)
  cps.splice(pos, del, ...Array.from(ins))
  return cps.join('')
}

/** The agents' client ids in the offline replay (small, fixed, never random). */
export const agentClientId = (agent) => agent + 1

/**
 * Replays a concurrent trace offline.
 * Returns { endContent, numAgents, perAgent: [[{ txn, update, deps }]], merged }
 * where `deps` is the state vector (Map clientId -> clock) the author's doc had
 * right before the transaction, and `merged` the text of all agents merged.
 */
export function replayConcurrentOffline (trace, { root = 'text' } = {}) {
  if (trace.kind !== 'concurrent') throw new Error('not a concurrent trace')
  const { txns, numAgents } = trace
  // Version of a txn's closure: per agent, how many of that agent's txns it includes.
  // This works because each agent's own transactions form a chain (checked below).
  const seqOf = new Array(txns.length) // index of txn within its agent's list
  const version = new Array(txns.length)
  const byAgent = Array.from({ length: numAgents }, () => [])
  for (let i = 0; i < txns.length; i++) {
    const { parents, agent } = txns[i]
    const v = new Array(numAgents).fill(0)
    for (const p of parents) {
      if (!(p < i)) throw new Error(`txn ${i}: parent ${p} does not precede it`)
      const pv = version[p]
      for (let a = 0; a < numAgents; a++) if (pv[a] > v[a]) v[a] = pv[a]
    }
    if (v[agent] !== byAgent[agent].length) {
      throw new Error(`txn ${i}: agent ${agent}'s own history is not a chain`)
    }
    seqOf[i] = byAgent[agent].length
    byAgent[agent].push(i)
    version[i] = v.slice()
    version[i][agent]++
  }

  const docs = Array.from({ length: numAgents }, (_, a) => {
    const d = new Y.Doc({ gc: false })
    d.clientID = agentClientId(a)
    return d
  })
  const have = docs.map(() => new Array(numAgents).fill(0)) // versions of the agent docs
  const updates = new Array(txns.length)
  const perAgent = Array.from({ length: numAgents }, () => [])
  let astralSeen = ASTRAL.test(trace.startContent ?? '')

  for (let i = 0; i < txns.length; i++) {
    const { agent, patches, parents } = txns[i]
    const doc = docs[agent]
    const h = have[agent]
    // The required version: closure of the parents.
    const need = new Array(numAgents).fill(0)
    for (const p of parents) for (let a = 0; a < numAgents; a++) need[a] = Math.max(need[a], version[p][a])
    const missing = []
    for (let b = 0; b < numAgents; b++) {
      if (h[b] > need[b]) throw new Error(`txn ${i}: agent ${agent} already saw more of agent ${b} than its parents`)
      for (let s = h[b]; s < need[b]; s++) missing.push(byAgent[b][s])
      h[b] = need[b]
    }
    missing.sort((x, y) => x - y)
    for (const j of missing) Y.applyUpdate(doc, updates[j], 'fork-merge')
    const deps = Y.decodeStateVector(Y.encodeStateVector(doc))
    let update = null
    const onUpdate = (u, origin) => { if (origin === 'local') update = update ? Y.mergeUpdates([update, u]) : u }
    doc.on('update', onUpdate)
    doc.transact(() => {
      const ytext = doc.getText(root)
      for (const patch of patches) {
        if (ASTRAL.test(patch[2])) astralSeen = true
        applyPatch(ytext, patch, astralSeen)
      }
    }, 'local')
    doc.off('update', onUpdate)
    if (update === null) update = Y.encodeStateAsUpdate(new Y.Doc()) // empty txn: an empty update
    updates[i] = update
    h[agent]++
    perAgent[agent].push({ txn: i, update, deps })
  }
  const all = new Y.Doc()
  for (const u of updates) Y.applyUpdate(all, u)
  return { endContent: trace.endContent, numAgents, perAgent, merged: all.getText(root).toString(), updates }
}
