// Debian's Chromium driven by playwright-core, with every page's errors
// collected so a test can assert there were none.

import * as fs from 'node:fs'
import * as path from 'node:path'
import { chromium } from 'playwright-core'
import { repoDir } from './server.mjs'

export const CHROMIUM = process.env.QUIRE_CHROMIUM || '/usr/bin/chromium'
export const artifactsDir = path.join(repoDir, 'tests', 'artifacts')

/** Flags that keep Chromium quiet on a machine with a closed network. */
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
]

export async function launchBrowser () {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium, or set QUIRE_CHROMIUM)`)
  }
  fs.mkdirSync(artifactsDir, { recursive: true })
  return await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS })
}

/**
 * A person: their own browser context (own localStorage, own network state)
 * with one page, whose `pageerror`s and console errors land in `errors`.
 * @param {import('playwright-core').Browser} browser
 * @param {{ label: string, name?: string, color?: string, errors: string[] }} opts
 */
export async function newPerson (browser, { label, name, color, errors }) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 820 },
    deviceScaleFactor: 1,
    locale: 'en-US',
    timezoneId: 'UTC'
  })
  if (name) {
    // The identity the app remembers in localStorage, as if chosen before.
    await context.addInitScript(({ name, color }) => {
      if (location.protocol !== 'http:') return // about:blank has no storage
      if (!localStorage.getItem('quire.identity')) {
        localStorage.setItem('quire.identity', JSON.stringify({ name, color }))
      }
    }, { name, color: color || '#e5484d' })
  }
  const watch = (page) => {
    page.on('pageerror', (error) => errors.push(`[${label}] pageerror: ${error.stack || error.message}`))
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(`[${label}] console.error: ${message.text()}`)
    })
  }
  context.on('page', watch)
  const page = await context.newPage()
  return { label, context, page }
}

export function screenshotPath (name) {
  return path.join(artifactsDir, name)
}

/**
 * The document's text as the editor holds it (blocks separated by blank
 * lines). Not the DOM's innerText, which would include other people's caret
 * labels.
 */
export async function editorText (page) {
  await page.waitForFunction(() => window.quire?.editor)
  return await page.evaluate(() => window.quire.editor.getText())
}

/** What the editor's status pill says: `connected`, `offline`, … */
export const statusOf = (page) => page.getAttribute('[data-testid=status]', 'data-status')

/** Opens the editor at `url` and waits until it is connected. */
export async function openEditor (person, url) {
  await person.page.goto(url)
  await person.page.waitForSelector('.ProseMirror')
  await eventually(async () => (await statusOf(person.page)) === 'connected', { what: `${person.label} connected` })
}

/** Clicks into the editor and puts the caret at the very end. */
export async function typeAtEnd (page, text, { newParagraph = false } = {}) {
  await page.locator('.ProseMirror').click()
  await page.keyboard.press('Control+End')
  if (newParagraph) await page.keyboard.press('Enter')
  await page.keyboard.type(text, { delay: 5 })
}

/** Polls `fn` until it returns truthy; fails with `what` and the last value. */
export async function eventually (fn, { what, timeout = 15000, interval = 50 } = {}) {
  const start = Date.now()
  let last
  for (;;) {
    last = await fn()
    if (last) return last
    if (Date.now() - start > timeout) {
      throw new Error(`timed out after ${timeout} ms: ${what}${last === undefined ? '' : ` (last: ${JSON.stringify(last)})`}`)
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

/** Records every value the status pill takes, from now on. */
export async function recordStatus (page) {
  await page.evaluate(() => {
    const pill = document.querySelector('[data-testid=status]')
    window.__statusLog = [pill.dataset.status]
    new MutationObserver(() => {
      const now = pill.dataset.status
      if (window.__statusLog.at(-1) !== now) window.__statusLog.push(now)
    }).observe(pill, { attributes: true, attributeFilter: ['data-status'] })
  })
}
