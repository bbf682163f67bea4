// A Tiptap app on @hocuspocus/provider, unchanged, against quire's Hocuspocus
// endpoint (H14 of the Hocuspocus protocol reference): two such pages write
// together, each shows the other's caret label and lists both people in
// `editor.storage.collaborationCaret.users`, and Quire's own editor page
// (y-websocket) on the same document converges with them and shows up in
// their presence. No page may log an error.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startQuire } from '../lib/server.mjs'
import { editorText, eventually, launchBrowser, newPerson, screenshotPath, typeAtEnd } from '../lib/browser.mjs'
import { bundleTiptapPage, serveTiptapPage, tiptapPageUrl } from '../lib/tiptap-page.mjs'

const DOC = 'tiptap/hocuspocus'

let server
let browser
let site
const errors = []

before(async () => {
  site = await serveTiptapPage(await bundleTiptapPage())
  server = await startQuire()
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await server?.stop()
  await site?.close()
})

/** A person on the Tiptap page, synced. */
async function openTiptap (label, name, color) {
  const person = await newPerson(browser, { label, errors })
  const ws = server.url.replace('http://', 'ws://') + '/hocuspocus'
  await person.page.goto(tiptapPageUrl(site.origin, { ws, doc: DOC, name, color }))
  await person.page.waitForFunction(() => window.tiptap?.provider.isSynced && window.tiptap.provider.isAuthenticated)
  return person
}

const tiptapText = (page) => page.evaluate(() => window.tiptap.editor.getText())
const caretUsers = (page) => page.evaluate(() => window.tiptap.editor.storage.collaborationCaret.users.map((u) => u.name).filter(Boolean).sort())
const caretLabels = (page) => page.locator('.collaboration-carets__label').allInnerTexts()


test('two Tiptap pages on HocuspocusProvider converge, show each other\'s carets, list both users, and converge with Quire\'s own editor page on the same document', async () => {
  const ada = await openTiptap('tiptap-ada', 'Ada', '#6e56cf')
  const grace = await openTiptap('tiptap-grace', 'Grace', '#30a46c')
  let quentin
  try {
    assert.equal(await ada.page.evaluate(() => window.tiptap.provider.authorizedScope), 'read-write')

    await typeAtEnd(ada.page, 'Ada writes on Hocuspocus.', { newParagraph: true })
    await typeAtEnd(grace.page, 'Grace answers.', { newParagraph: true })
    const both = await eventually(async () => {
      const [a, g] = await Promise.all([tiptapText(ada.page), tiptapText(grace.page)])
      return a === g && a.includes('Ada writes on Hocuspocus.') && a.includes('Grace answers.') ? a : false
    }, { what: 'the two Tiptap pages converge' })

    // Carets: each page draws the other's label (never its own).
    await eventually(async () => (await caretLabels(ada.page)).includes('Grace'), { what: 'Ada sees Grace\'s caret label' })
    await eventually(async () => (await caretLabels(grace.page)).includes('Ada'), { what: 'Grace sees Ada\'s caret label' })
    assert.ok(!(await caretLabels(ada.page)).includes('Ada'), 'Ada does not see her own caret label')
    await eventually(async () => JSON.stringify(await caretUsers(ada.page)) === '["Ada","Grace"]', { what: 'Ada\'s collaborationCaret.users lists Ada and Grace' })
    await eventually(async () => JSON.stringify(await caretUsers(grace.page)) === '["Ada","Grace"]', { what: 'Grace\'s collaborationCaret.users lists Ada and Grace' })
    // Everything written was acknowledged by the server.
    await eventually(() => ada.page.evaluate(() => !window.tiptap.provider.hasUnsyncedChanges), { what: 'Ada\'s edits acknowledged' })

    // Quire's own editor page (y-websocket on /ws/{doc}) joins the same document.
    quentin = await newPerson(browser, { label: 'quire-editor', name: 'Quentin', color: '#e5484d', errors })
    await quentin.page.goto(`${server.url}/d/${DOC}`)
    await quentin.page.waitForSelector('.ProseMirror')
    await eventually(async () => (await editorText(quentin.page)) === both, { what: 'Quire\'s editor page shows what the Tiptap pages wrote' })
    await typeAtEnd(quentin.page, 'Quentin from the Quire editor.', { newParagraph: true })
    const all = await eventually(async () => {
      const texts = await Promise.all([tiptapText(ada.page), tiptapText(grace.page), editorText(quentin.page)])
      return texts.every((t) => t === texts[0]) && texts[0].includes('Quentin from the Quire editor.') ? texts[0] : false
    }, { what: 'all three pages converge' })
    assert.ok(all.includes('Ada writes on Hocuspocus.') && all.includes('Grace answers.'))
    // Presence crosses the dialects too.
    await eventually(async () => JSON.stringify(await caretUsers(ada.page)) === '["Ada","Grace","Quentin"]', { what: 'Ada\'s users include Quentin from the y-websocket page' })
    await eventually(async () => (await caretLabels(ada.page)).includes('Quentin'), { what: 'Ada sees Quentin\'s caret label' })
    await eventually(async () => (await quentin.page.locator('.collaboration-carets__label').allInnerTexts()).some((t) => t.includes('Ada')), { what: 'Quire\'s editor page shows Ada\'s caret' })

    await ada.page.screenshot({ path: screenshotPath('hocuspocus-tiptap-ada.png') })
    await quentin.page.screenshot({ path: screenshotPath('hocuspocus-quire-editor.png') })
    assert.deepEqual(errors, [], `pages reported errors:\n${errors.join('\n')}`)
  } finally {
    await ada.context.close()
    await grace.context.close()
    await quentin?.context.close()
  }
})
