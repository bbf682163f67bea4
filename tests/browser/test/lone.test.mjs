// One person writing alone: the status pill says "connected" the whole time.
// y-websocket reconnects a socket that heard nothing for 30 s; the server
// echoes the editor's own awareness renewals (every 15 s) so that it never
// does, and the status never flickers to "reconnecting".

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startQuire } from '../lib/server.mjs'
import { editorText, eventually, launchBrowser, newPerson, recordStatus } from '../lib/browser.mjs'

// Past two of y-websocket's 30 s reconnect timeouts.
const ALONE_MS = 72000

let server
let browser
const errors = []

before(async () => {
  server = await startQuire()
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await server?.stop()
})

test('a lone editor stays connected for 70 s without the status flickering', { timeout: ALONE_MS + 60000 }, async () => {
  const ada = await newPerson(browser, { label: 'ada', name: 'Ada', errors })
  await ada.page.goto(server.url + '/d/alone')
  await ada.page.waitForSelector('.ProseMirror')
  const statusOf = () => ada.page.getAttribute('[data-testid=status]', 'data-status')
  await eventually(async () => (await statusOf()) === 'connected', { what: 'ada connected' })
  await recordStatus(ada.page)
  const start = Date.now()
  await ada.page.locator('.ProseMirror').click()
  await ada.page.keyboard.type('Writing alone for a while.', { delay: 20 })
  await ada.page.waitForTimeout(ALONE_MS - (Date.now() - start))

  const log = await ada.page.evaluate(() => window.__statusLog)
  assert.deepEqual(log.filter((s) => s !== 'connected'), [], `the status left "connected": ${log.join(' -> ')}`)
  assert.equal(await statusOf(), 'connected')
  assert.match(await editorText(ada.page), /Writing alone for a while\./)
  assert.deepEqual(errors, [], `the page reported errors:\n${errors.join('\n')}`)
})
