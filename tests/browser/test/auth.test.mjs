// Access tokens end to end, against a quire started with --auth-secret: the
// `?token=` of the page reaches the WebSocket and the REST calls, a writer's
// edits reach a reader, and a reader is read-only: told so up front (from the
// token's scope), and when an update is sent anyway the server's auth message
// (permission denied) keeps the editor read-only and says why.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { startQuire } from '../lib/server.mjs'
import { editorText, eventually, launchBrowser, newPerson, screenshotPath, statusOf } from '../lib/browser.mjs'

const SECRET = 'browser-test-secret'
const ADMIN = 'browser-test-admin'
const DOC = 'secure/board-memo'

let server
let browser
const errors = []

before(async () => {
  server = await startQuire({ extraArgs: ['--auth-secret', SECRET, '--admin-token', ADMIN] })
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await server?.stop()
})

async function mint (scope, sub) {
  const response = await fetch(`${server.url}/api/tokens`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ docs: ['secure/*'], scope, ttl_secs: 3600, sub })
  })
  assert.equal(response.status, 200, await response.clone().text())
  return (await response.json()).token
}

describe('access tokens', () => {
  test('a writer’s token edits, a reader’s token reads only', async (t) => {
    const writeToken = await mint('write', 'writer')
    const readToken = await mint('read', 'reader')
    const writer = await newPerson(browser, { label: 'writer', name: 'Wanda Writer', color: '#12a594', errors })
    const reader = await newPerson(browser, { label: 'reader', name: 'Rita Reader', color: '#0090ff', errors })
    try {
      // Without a token the list explains what is missing.
      await writer.page.goto(`${server.url}/`)
      await writer.page.locator('.error-state', { hasText: 'access token' }).waitFor()

      await writer.page.goto(`${server.url}/d/${DOC}?token=${writeToken}`)
      await eventually(async () => (await statusOf(writer.page)) === 'connected', { what: 'writer connected' })
      await writer.page.locator('.ProseMirror').click()
      await writer.page.keyboard.type('Minutes of the board meeting.', { delay: 5 })

      await reader.page.goto(`${server.url}/d/${DOC}?token=${readToken}`)
      await eventually(async () => (await statusOf(reader.page)) === 'connected', { what: 'reader connected' })
      await reader.page.locator('[data-testid=readonly-banner]').waitFor({ state: 'visible' })
      await eventually(async () => (await editorText(reader.page)) === 'Minutes of the board meeting.', { what: 'reader sees the text' })
      assert.equal(await reader.page.getAttribute('.ProseMirror', 'contenteditable'), 'false')
      // The reader's presence is allowed: the writer sees them.
      await eventually(async () => (await writer.page.locator('[data-testid=online-list] .person').count()) === 2,
        { what: 'writer sees the reader online' })
      await reader.page.screenshot({ path: screenshotPath('editor-read-only-token.png') })

      // The reader forces an edit anyway: the server refuses it with an auth message.
      await reader.page.evaluate(() => window.quire.editor.setEditable(true))
      await reader.page.locator('.ProseMirror').click()
      await reader.page.keyboard.press('Control+End')
      await reader.page.keyboard.type(' FORGED', { delay: 5 })
      await eventually(async () => /did not accept/.test(await reader.page.locator('[data-testid=readonly-banner]').innerText()),
        { what: 'reader told the server refused' })
      assert.equal(await reader.page.getAttribute('.ProseMirror', 'contenteditable'), 'false')
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.equal(await editorText(writer.page), 'Minutes of the board meeting.')

      // REST calls carry the token: the list and the exports work.
      await writer.page.goto(`${server.url}/?token=${writeToken}`)
      await writer.page.locator(`tr[data-doc-name="${DOC}"]`).waitFor()
      const href = await writer.page.locator(`tr[data-doc-name="${DOC}"] a`).getAttribute('href')
      assert.equal(href, `/d/${DOC}?token=${encodeURIComponent(writeToken)}`)
      const [file] = await Promise.all([reader.page.waitForEvent('download'), reader.page.click('[data-export=json]')])
      assert.equal(file.suggestedFilename(), 'secure-board-memo.json')
    } finally {
      await writer.context.close()
      await reader.context.close()
    }
    // Without a token the list's GET /api/docs is refused (401): the browser logs that.
    for (let i = errors.length - 1; i >= 0; i--) {
      if (/^\[writer\] console\.error: Failed to load resource: the server responded with a status of 401/.test(errors[i])) errors.splice(i, 1)
    }
    assert.deepEqual(errors, [], `pages reported errors:\n${errors.join('\n')}`)
  })
})
