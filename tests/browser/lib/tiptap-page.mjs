// The Tiptap + HocuspocusProvider page of tests/browser/tiptap-page, bundled
// with esbuild at test time from this directory's node_modules (nothing is
// written to disk), and served from memory by a small HTTP server on
// loopback. (Not through playwright routes: Chromium counts a routed page as
// public and its Local Network Access checks then block its WebSocket to
// 127.0.0.1.)

import * as http from 'node:http'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const browserDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

const HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tiptap on Hocuspocus</title>
<style>
  .collaboration-carets__caret { position: relative; border-left: 1px solid; margin-left: -1px; }
  .collaboration-carets__label { position: absolute; top: -1.4em; left: -1px; font-size: 12px; white-space: nowrap; color: #fff; }
</style></head>
<body><div id="editor"></div><script type="module" src="/main.js"></script></body>
</html>`

/** Bundles the page once; returns the JavaScript. */
export async function bundleTiptapPage () {
  const result = await build({
    absWorkingDir: browserDir,
    entryPoints: ['tiptap-page/main.mjs'],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'silent'
  })
  return result.outputFiles[0].text
}

/**
 * Serves the page (at `/`) and its bundle on 127.0.0.1, ephemeral port.
 * @param {string} js the bundle
 * @returns {Promise<{ origin: string, close: () => Promise<void> }>}
 */
export async function serveTiptapPage (js) {
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://x')
    if (pathname === '/main.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(js)
    } else if (pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(HTML)
    } else if (pathname === '/favicon.ico') {
      res.writeHead(204).end() // a 404 here would be logged as a console error
    } else {
      res.writeHead(404).end('not found')
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) })
  }
}

/** The page's URL for one person on one document. */
export function tiptapPageUrl (origin, { ws, doc, name, color, token }) {
  const q = new URLSearchParams({ ws, doc, name, color })
  if (token) q.set('token', token)
  return `${origin}/?${q}`
}
