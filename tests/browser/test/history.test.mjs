// The history panel in real Chromium against the real quire binary: a saved
// version is listed and previewed read-only, a restore reaches every open
// editor at once and is listed as a version itself, and a read-only link
// may look but not restore. No page may log an error.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { startQuire } from '../lib/server.mjs'
import { editorText, eventually, launchBrowser, newPerson, openEditor, screenshotPath, typeAtEnd } from '../lib/browser.mjs'

const DOC = 'team/history'
const DOC_PATH = '/d/team/history'

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

function assertNoPageErrors () {
  assert.deepEqual(errors, [], `pages reported errors:\n${errors.join('\n')}`)
}


/** The server's plain text of the document (XML of the fragment). */
async function serverXml () {
  const response = await fetch(`${server.url}/api/docs/${encodeURIComponent(DOC)}/snapshot?format=text&root=default`)
  return response.ok ? await response.text() : ''
}

const versionRows = (page) => page.locator('[data-testid=versions] .version')

describe('the history panel', () => {
  let ada, grace

  before(async () => {
    ada = await newPerson(browser, { label: 'ada', name: 'Ada Lovelace', errors })
    grace = await newPerson(browser, { label: 'grace', name: 'Grace Hopper', errors })
    await openEditor(ada, server.url + DOC_PATH)
    await openEditor(grace, server.url + DOC_PATH)
  })

  after(async () => {
    await ada?.context.close()
    await grace?.context.close()
  })

  test('a saved version is listed and previewed read-only', async () => {
    await typeAtEnd(ada.page, 'First draft')
    await eventually(async () => (await serverXml()).includes('First draft'), { what: 'the server has the draft' })
    await ada.page.click('[data-testid=save-version]')
    await eventually(async () => (await versionRows(ada.page).count()) === 1, { what: 'one version listed' })
    assert.equal(await versionRows(ada.page).first().getAttribute('data-trigger'), 'manual')

    await typeAtEnd(ada.page, ', then more')
    await eventually(async () => (await editorText(grace.page)).includes('then more'), { what: 'grace sees the edit' })
    await ada.page.locator('[data-testid=preview-version]').first().click()
    const preview = ada.page.locator('[data-testid=version-preview]')
    await eventually(async () => (await preview.innerText()).includes('First draft'), { what: 'the preview shows the version' })
    assert.ok(!(await preview.innerText()).includes('then more'), 'the preview is the old version')
    // The live editor is untouched by a preview.
    assert.ok((await editorText(ada.page)).includes('then more'))
    await ada.page.screenshot({ path: screenshotPath('history-preview.png') })
    assertNoPageErrors()
  })

  test('a restore reaches every open editor and is itself a version', async () => {
    await grace.page.click('[data-testid=refresh-versions]')
    await eventually(async () => (await versionRows(grace.page).count()) === 1, { what: 'grace lists the version' })
    await grace.page.locator('[data-testid=restore-version]').first().click()
    for (const person of [ada, grace]) {
      await eventually(async () => (await editorText(person.page)) === 'First draft', { what: `${person.label} sees the restored text` })
    }
    await eventually(async () => (await versionRows(grace.page).count()) === 2, { what: 'the restore is listed' })
    assert.equal(await versionRows(grace.page).first().getAttribute('data-trigger'), 'restore')
    // Typing goes on on top of the restore.
    await typeAtEnd(ada.page, '!')
    await eventually(async () => (await editorText(grace.page)) === 'First draft!', { what: 'grace sees typing after the restore' })
    assertNoPageErrors()
  })
})

describe('a read-only link', () => {
  let viewer, secured, writeToken

  before(async () => {
    secured = await startQuire({ extraArgs: ['--auth-secret', 'browser-history-secret', '--admin-token', 'browser-admin'] })
    const mint = async (scope) => {
      const response = await fetch(`${secured.url}/api/tokens`, {
        method: 'POST',
        headers: { Authorization: 'Bearer browser-admin', 'content-type': 'application/json' },
        body: JSON.stringify({ docs: [DOC], scope, ttl_secs: 600, sub: scope })
      })
      return (await response.json()).token
    }
    const write = await mint('write')
    writeToken = write
    // Content and one version, written through REST by a writer.
    const update = await (await fetch(`${server.url}/api/docs/${encodeURIComponent(DOC)}/snapshot?format=yjs`)).arrayBuffer()
    await fetch(`${secured.url}/api/docs/${encodeURIComponent(DOC)}/updates`, {
      method: 'POST', headers: { Authorization: `Bearer ${write}`, 'content-type': 'application/octet-stream' }, body: update
    })
    await fetch(`${secured.url}/api/docs/${encodeURIComponent(DOC)}/versions`, { method: 'POST', headers: { Authorization: `Bearer ${write}` } })
    viewer = await newPerson(browser, { label: 'viewer', name: 'Viewer', errors })
    await viewer.page.goto(`${secured.url}${DOC_PATH}?token=${encodeURIComponent(await mint('read'))}`)
    await viewer.page.waitForSelector('.ProseMirror')
  })

  after(async () => {
    await viewer?.context.close()
    await secured?.stop()
  })

  test('lists and previews versions but offers no restore', async () => {
    await eventually(async () => (await versionRows(viewer.page).count()) === 1, { what: 'the viewer lists the version' })
    assert.equal(await viewer.page.locator('[data-testid=restore-version]').first().isDisabled(), true)
    assert.equal(await viewer.page.locator('[data-testid=save-version]').isDisabled(), true)
    await viewer.page.locator('[data-testid=preview-version]').first().click()
    await eventually(async () => (await viewer.page.locator('[data-testid=version-preview]').innerText()).includes('First draft'), { what: 'the viewer previews' })
    assertNoPageErrors()
  })

  test('a version names who was connected when it was recorded', async () => {
    // Recorded while the viewer (token subject "read") has the document open.
    const saved = await fetch(`${secured.url}/api/docs/${encodeURIComponent(DOC)}/versions`, { method: 'POST', headers: { Authorization: `Bearer ${writeToken}` } })
    assert.equal(saved.status, 201)
    await viewer.page.reload()
    await viewer.page.waitForSelector('.ProseMirror')
    await eventually(async () => (await versionRows(viewer.page).count()) === 2, { what: 'the viewer lists both versions' })
    const newest = versionRows(viewer.page).first()
    assert.equal(await newest.locator('[data-testid=version-users]').innerText(), 'with read')
    // The first was recorded through REST with nobody connected: no line.
    assert.equal(await versionRows(viewer.page).nth(1).locator('[data-testid=version-users]').count(), 0)
    assertNoPageErrors()
  })
})
