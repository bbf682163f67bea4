// @hocuspocus/server 4.7.0 with the hooks that give it Quire's rules for
// the Hocuspocus dialect, so that tests/interop's Hocuspocus cases can be
// run against it (QUIRE_HOCUSPOCUS_TARGET=hocuspocus) to check that they
// expect what Hocuspocus itself does. Not a benchmark peer.
//
//   node hocuspocus-reference-server.mjs PORT [SECRET]
//
// With SECRET, onAuthenticate checks Quire's access tokens: an HS256 JWT
// whose `docs` (names, or prefixes ending in `*`) cover the document, `scope`
// `write` (read-write) or `read` (readonly), `exp` with 60 s of leeway.
// Without, any token is read-write (Quire's open mode). onStateless relays a
// stateless message to the document's other sessions, as Quire does.
import { createHmac, timingSafeEqual } from 'node:crypto'
import { Server } from '@hocuspocus/server'

const port = Number(process.argv[2] ?? 1234)
const secret = process.argv[3]

const deny = (reason) => Object.assign(new Error(reason), { reason })

function verify (token, documentName) {
  const parts = (token ?? '').split('.')
  if (parts.length !== 3) throw deny('missing or malformed token')
  const expected = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest()
  const given = Buffer.from(parts[2], 'base64url')
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw deny('invalid token signature')
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
  if (!(claims.exp + 60 > Date.now() / 1000)) throw deny('token expired')
  const covers = (claims.docs ?? []).some((d) => d.endsWith('*') ? documentName.startsWith(d.slice(0, -1)) : d === documentName)
  if (!covers) throw deny('token does not cover this document')
  if (claims.scope !== 'write' && claims.scope !== 'read') throw deny('bad scope')
  return claims.scope
}

const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  async onAuthenticate ({ token, documentName, connectionConfig }) {
    if (!secret) return
    if (verify(token, documentName) === 'read') connectionConfig.readOnly = true
  },
  async onStateless ({ payload, document, connection }) {
    for (const other of document.getConnections()) {
      if (other !== connection) other.sendStateless(payload)
    }
  }
})
await server.listen()
console.error(`hocuspocus listening on ws://127.0.0.1:${port}`)
