// The web client in real Chromium against the real quire binary: people
// typing into one document converge, see each other's named carets, keep
// working offline and catch up, a latecomer sees everything, the list at `/`
// shows the document, exports download, and read-only access is honoured.
// No page may log an error. Screenshots land in tests/artifacts/.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as Y from 'yjs'
import { startQuire } from '../lib/server.mjs'
import { editorText, eventually, launchBrowser, newPerson, openEditor, recordStatus, screenshotPath, statusOf, typeAtEnd } from '../lib/browser.mjs'

const DOC = 'team/launch-plan'
const DOC_PATH = '/d/team/launch-plan'

/** @type {Awaited<ReturnType<typeof startQuire>>} */
let server
/** @type {import('playwright-core').Browser} */
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

/** Every page error and console error so far, as one readable failure. */
function assertNoPageErrors () {
  assert.deepEqual(errors, [], `pages reported errors:\n${errors.join('\n')}`)
}


async function converged (pages, ...needles) {
  return await eventually(async () => {
    const texts = await Promise.all(pages.map(editorText))
    const same = texts.every((t) => t === texts[0])
    return same && needles.every((n) => texts[0].includes(n)) ? texts[0] : false
  }, { what: `editors converge on text containing ${JSON.stringify(needles)}` })
}

describe('the document list', () => {
  test('a fresh server shows a tidy empty state', async () => {
    const visitor = await newPerson(browser, { label: 'visitor', name: 'Visitor', errors })
    await visitor.page.goto(server.url + '/')
    await visitor.page.waitForSelector('[data-testid=empty-state]')
    assert.match(await visitor.page.locator('[data-testid=empty-state]').innerText(), /No documents yet/)
    await visitor.page.screenshot({ path: screenshotPath('list-empty.png') })
    await visitor.context.close()
    assertNoPageErrors()
  })

  test('an invalid name is explained before anything is created', async () => {
    const visitor = await newPerson(browser, { label: 'visitor', name: 'Visitor', errors })
    await visitor.page.goto(server.url + '/')
    await visitor.page.fill('#new-doc-name', 'my notes')
    await visitor.page.click('[data-testid=create-doc]')
    assert.match(await visitor.page.locator('#new-doc-hint').innerText(), /Spaces are not allowed/)
    assert.equal(new URL(visitor.page.url()).pathname, '/')
    await visitor.context.close()
    assertNoPageErrors()
  })
})

describe('writing together', () => {
  let ada, grace

  before(async () => {
    ada = await newPerson(browser, { label: 'ada', name: 'Ada Lovelace', color: '#6e56cf', errors })
    grace = await newPerson(browser, { label: 'grace', errors })
  })

  after(async () => {
    await ada?.context.close()
    await grace?.context.close()
  })

  test('a document is created from the list page', async () => {
    await ada.page.goto(server.url + '/')
    await ada.page.fill('#new-doc-name', DOC)
    await ada.page.click('[data-testid=create-doc]')
    await ada.page.waitForURL(`**${DOC_PATH}`)
    await ada.page.waitForSelector('.ProseMirror')
    await eventually(async () => (await statusOf(ada.page)) === 'connected', { what: 'ada connected' })
    assert.equal(await ada.page.locator('[data-testid=doc-title]').innerText(), DOC)
    assert.equal(await ada.page.title(), `${DOC} · Quire`)
  })

  test('a name and colour are chosen in the page and remembered', async () => {
    await grace.page.goto(server.url + DOC_PATH)
    await grace.page.click('.identity-chip')
    await grace.page.fill('#identity-input', 'Grace Hopper')
    await grace.page.click('.swatch[data-color="#30a46c"]')
    await grace.page.click('.identity-popover button[type=submit]')
    assert.equal(await grace.page.locator('[data-testid=identity-name]').innerText(), 'Grace Hopper')
    const stored = await grace.page.evaluate(() => JSON.parse(localStorage.getItem('quire.identity')))
    assert.deepEqual(stored, { name: 'Grace Hopper', color: '#30a46c' })
    await grace.page.reload()
    await grace.page.waitForSelector('.ProseMirror')
    assert.equal(await grace.page.locator('[data-testid=identity-name]').innerText(), 'Grace Hopper')
    await eventually(async () => (await statusOf(grace.page)) === 'connected', { what: 'grace connected' })
  })

  test('two people type into the same document and converge', async () => {
    await typeAtEnd(ada.page, 'Launch plan')
    await ada.page.click('[data-tool=h1]')
    await converged([ada.page, grace.page], 'Launch plan')
    await typeAtEnd(ada.page, 'Ship the editor on Friday. Everyone reviews the copy first.', { newParagraph: true })
    await converged([ada.page, grace.page], 'Ship the editor on Friday.')
    await typeAtEnd(grace.page, 'Grace: the docs are ready for review.', { newParagraph: true })
    const text = await converged([ada.page, grace.page], 'Ship the editor on Friday.', 'Grace: the docs are ready')
    assert.ok(text.startsWith('Launch plan'), text)
    // The heading is a heading for both.
    assert.equal(await grace.page.locator('.ProseMirror h1').first().innerText(), 'Launch plan')
    assertNoPageErrors()
  })

  test('formatting from the toolbar shows as active and reaches the other person', async () => {
    // Ada selects "Friday" and makes it bold.
    await ada.page.evaluate(() => {
      const { editor } = window.quire
      let from = -1
      editor.state.doc.descendants((node, pos) => {
        if (from < 0 && node.isText && node.text.includes('Friday')) from = pos + node.text.indexOf('Friday')
      })
      editor.chain().focus().setTextSelection({ from, to: from + 'Friday'.length }).run()
    })
    await ada.page.click('[data-tool=bold]')
    assert.equal(await ada.page.getAttribute('[data-tool=bold]', 'aria-pressed'), 'true')
    await eventually(async () => (await grace.page.locator('.ProseMirror strong').allInnerTexts()).includes('Friday'),
      { what: 'grace sees Friday in bold' })
    // A list from the toolbar.
    await typeAtEnd(grace.page, '', { newParagraph: true })
    await grace.page.click('[data-tool=bulletList]')
    await grace.page.keyboard.type('Copy review', { delay: 5 })
    await grace.page.keyboard.press('Enter')
    await grace.page.keyboard.type('Release notes', { delay: 5 })
    assert.equal(await grace.page.getAttribute('[data-tool=bulletList]', 'aria-pressed'), 'true')
    await eventually(async () => (await ada.page.locator('.ProseMirror ul li').count()) === 2, { what: 'ada sees the list' })
    assertNoPageErrors()
  })

  test('each person sees the other’s named caret and the online list', async () => {
    // Grace's caret (at the end of her list) is drawn in Ada's editor with her name.
    const graceCaret = ada.page.locator('.collaboration-carets__caret', { hasText: 'Grace Hopper' })
    await graceCaret.waitFor({ state: 'visible' })
    assert.match(await graceCaret.getAttribute('style'), /border-color: rgb\(48, 164, 108\)/)
    // Ada puts her caret inside the text, Grace sees it named.
    await ada.page.evaluate(() => {
      const { editor } = window.quire
      let at = -1
      editor.state.doc.descendants((node, pos) => {
        if (at < 0 && node.isText && node.text.includes('Everyone')) at = pos + node.text.indexOf('Everyone')
      })
      editor.chain().focus().setTextSelection({ from: at, to: at + 'Everyone reviews'.length }).run()
    })
    const adaCaret = grace.page.locator('.collaboration-carets__caret', { hasText: 'Ada Lovelace' })
    await adaCaret.waitFor({ state: 'visible' })
    // Ada's selection is highlighted in her colour for Grace.
    await grace.page.locator('.remote-selection').first().waitFor({ state: 'visible' })

    for (const [page, names] of [[ada.page, ['Ada Lovelace', 'Grace Hopper']], [grace.page, ['Grace Hopper', 'Ada Lovelace']]]) {
      await eventually(async () => {
        const listed = await page.locator('[data-testid=online-list] .person-name').allInnerTexts()
        return JSON.stringify(listed) === JSON.stringify(names)
      }, { what: `online list shows ${names}` })
      assert.equal(await page.locator('[data-testid=online-list] .you-tag').count(), 1)
    }
    await grace.page.screenshot({ path: screenshotPath('editor-two-people.png') })
    await ada.page.screenshot({ path: screenshotPath('editor-ada.png') })
    // The same page on a phone-sized screen.
    await grace.page.setViewportSize({ width: 390, height: 844 })
    await grace.page.screenshot({ path: screenshotPath('editor-narrow.png'), fullPage: true })
    await grace.page.setViewportSize({ width: 1280, height: 820 })
    assertNoPageErrors()
  })

  test('offline: both keep editing, and everything converges on reconnect', async () => {
    await recordStatus(grace.page)
    await grace.context.setOffline(true)
    await eventually(async () => (await statusOf(grace.page)) === 'offline', { what: 'grace shows offline' })
    await grace.page.locator('[data-testid=offline-banner]').waitFor({ state: 'visible' })

    await typeAtEnd(ada.page, 'Ada wrote this while Grace was away.', { newParagraph: true })
    await typeAtEnd(grace.page, 'Grace wrote this offline.', { newParagraph: true })
    await eventually(async () => /Offline/.test(await grace.page.locator('[data-testid=status]').innerText()),
      { what: 'status text says offline' })
    assert.match(await grace.page.locator('[data-testid=status]').innerText(), /saved on this device/)
    await grace.page.screenshot({ path: screenshotPath('editor-offline.png') })
    // Give the edits time to travel if they could: they must not.
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.ok(!(await editorText(grace.page)).includes('while Grace was away'), 'offline page received an edit')
    assert.ok(!(await editorText(ada.page)).includes('Grace wrote this offline'), 'offline edit reached the server')

    await grace.context.setOffline(false)
    await eventually(async () => (await statusOf(grace.page)) === 'connected', { what: 'grace connected again' })
    const text = await converged([ada.page, grace.page], 'Ada wrote this while Grace was away.', 'Grace wrote this offline.')
    assert.ok(text.includes('Launch plan'))
    const log = await grace.page.evaluate(() => window.__statusLog)
    assert.equal(log[0], 'connected', JSON.stringify(log))
    const offlineAt = log.indexOf('offline')
    assert.ok(offlineAt > 0 && log.indexOf('connected', offlineAt) > offlineAt, `status went offline then connected: ${JSON.stringify(log)}`)
    await grace.page.locator('[data-testid=offline-banner]').waitFor({ state: 'hidden' })
    await eventually(async () => (await ada.page.locator('[data-testid=online-list] .person').count()) === 2,
      { what: 'grace is back in ada\'s online list' })
    assertNoPageErrors()
  })

  test('someone opening the document later sees the whole text', async () => {
    const expected = await editorText(ada.page)
    const linus = await newPerson(browser, { label: 'linus', name: 'Linus', color: '#f76b15', errors })
    try {
      await openEditor(linus, server.url + DOC_PATH)
      await eventually(async () => (await editorText(linus.page)) === expected, { what: 'latecomer has the whole text' })
      assert.equal(await linus.page.locator('.ProseMirror h1').first().innerText(), 'Launch plan')
      assert.deepEqual(await linus.page.locator('.ProseMirror strong').allInnerTexts(), ['Friday'])
      await eventually(async () => (await linus.page.locator('[data-testid=online-list] .person').count()) === 3,
        { what: 'three people online' })

      // The list at `/` shows the document, and that people are in it.
      const list = await linus.context.newPage()
      await list.goto(server.url + '/')
      const row = list.locator(`tr[data-doc-name="${DOC}"]`)
      await row.waitFor()
      await eventually(async () => Number(await row.locator('[data-clients]').getAttribute('data-clients')) >= 3,
        { what: 'the list counts the connected people' })
      assert.match(await row.innerText(), /launch-plan/)
      assert.match(await row.innerText(), /\d+(\.\d)? (B|KB)/)
      await list.screenshot({ path: screenshotPath('list.png') })
      // Opening it from the list.
      await row.locator('a').click()
      await list.waitForURL(`**${DOC_PATH}`)
      await eventually(async () => (await editorText(list)) === expected, { what: 'opened from the list' })
      await list.close()
    } finally {
      await linus.context.close()
    }
    assertNoPageErrors()
  })

  test('exports download JSON, text and a Yjs snapshot from the REST API', async () => {
    const download = async (format) => {
      const [file] = await Promise.all([ada.page.waitForEvent('download'), ada.page.click(`[data-export=${format}]`)])
      return { name: file.suggestedFilename(), bytes: fs.readFileSync(await file.path()) }
    }
    const json = await download('json')
    assert.equal(json.name, 'team-launch-plan.json')
    const roots = JSON.parse(json.bytes.toString('utf8'))
    assert.match(roots.default, /Ship the editor on/)

    const text = await download('text')
    assert.equal(text.name, 'team-launch-plan.txt')
    assert.match(text.bytes.toString('utf8'), /Grace wrote this offline\./)

    const snapshot = await download('yjs')
    assert.equal(snapshot.name, 'team-launch-plan.yjs')
    const doc = new Y.Doc()
    Y.applyUpdate(doc, new Uint8Array(snapshot.bytes))
    const xml = doc.getXmlFragment('default').toString()
    assert.match(xml, /<heading level="1">Launch plan<\/heading>/)
    assert.match(xml, /Ada wrote this while Grace was away\./)
    assertNoPageErrors()
  })

  test('copy link puts the document’s address on the clipboard', async () => {
    await ada.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url })
    await ada.page.click('[data-testid=copy-link]')
    await ada.page.locator('.toast', { hasText: 'Link copied' }).waitFor()
    assert.equal(await ada.page.evaluate(() => navigator.clipboard.readText()), server.url + DOC_PATH)
    assertNoPageErrors()
  })
})

describe('read-only access', () => {
  // An unsigned token whose claims say `scope: read`: the page reads the
  // claim (without trusting it) to show read-only at once.
  const readClaims = Buffer.from(JSON.stringify({ sub: 'viewer', docs: ['team/*'], scope: 'read', exp: 4102444800 })).toString('base64url')
  const READ_TOKEN = `${Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url')}.${readClaims}.c2ln`

  test('a read-only token makes the editor read-only and says so', async () => {
    const viewer = await newPerson(browser, { label: 'viewer', name: 'Viewer', color: '#0090ff', errors })
    try {
      // The server may reject a token it did not sign; only the page's reaction is checked.
      await viewer.page.goto(`${server.url}${DOC_PATH}?token=${READ_TOKEN}`)
      await viewer.page.waitForSelector('.ProseMirror')
      await viewer.page.locator('[data-testid=readonly-banner]').waitFor({ state: 'visible' })
      assert.equal(await viewer.page.getAttribute('.ProseMirror', 'contenteditable'), 'false')
      assert.ok(await viewer.page.locator('[data-tool=bold]').isDisabled())
      assert.match(await viewer.page.locator('[data-testid=readonly-banner]').innerText(), /View only/)
    } finally {
      await viewer.context.close()
    }
    // A server that refuses the unsigned token logs a failed WebSocket: not the page's fault.
    for (let i = errors.length - 1; i >= 0; i--) {
      if (/^\[viewer\] console\.error: WebSocket connection to .* failed/.test(errors[i])) errors.splice(i, 1)
    }
    assertNoPageErrors()
  })

  test('when the server refuses an update (auth message), the editor turns read-only', async () => {
    const viewer = await newPerson(browser, { label: 'refused', name: 'Refused Writer', color: '#d6409f', errors })
    try {
      // Between page and server: answer every document update from the page
      // with y-websocket's auth message "permission denied" ([2, 0, reason]),
      // as a server does for a read-only token; pass everything else through.
      const reason = 'read-only token'
      await viewer.page.routeWebSocket(/\/ws\//, (ws) => {
        const upstream = ws.connectToServer()
        ws.onMessage((message) => {
          const bytes = typeof message === 'string' ? Buffer.from(message) : message
          if (bytes[0] === 0 && bytes[1] === 2) {
            ws.send(Buffer.concat([Buffer.from([2, 0, reason.length]), Buffer.from(reason)]))
          } else {
            upstream.send(message)
          }
        })
      })
      await openEditor(viewer, server.url + '/d/team/refusals')
      assert.equal(await viewer.page.getAttribute('.ProseMirror', 'contenteditable'), 'true')
      await typeAtEnd(viewer.page, 'x')
      await viewer.page.locator('[data-testid=readonly-banner]').waitFor({ state: 'visible' })
      assert.match(await viewer.page.locator('[data-testid=readonly-banner]').innerText(), /read-only token/)
      assert.equal(await viewer.page.getAttribute('.ProseMirror', 'contenteditable'), 'false')
      assert.ok(await viewer.page.locator('[data-tool=bold]').isDisabled())
      await viewer.page.screenshot({ path: screenshotPath('editor-read-only.png') })
    } finally {
      await viewer.context.close()
    }
    assertNoPageErrors()
  })
})
