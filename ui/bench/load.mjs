// The browser benchmark's load, shared by bench/browser.mjs and bench/profile.mjs: `lt up` at
// 4,000 ticks/s (the seed's load, bursts included) and five tabs of the ticks view in one
// Chromium context (one SharedWorker, one WebSocket).
import { chromium } from 'playwright-core'
import { chromiumPath, startUp } from '../e2e/helpers.mjs'

export const RATE = 4000
export const TABS = 5

export const chromeArgs = [
  '--no-sandbox',
  // Five windows side by side, all visible (the seed's desk: 4–5 windows on screens): without
  // these, Chromium treats every page but the last as hidden and gives it ~1 frame per second.
  '--disable-backgrounding-occluded-windows',
  '--disable-renderer-backgrounding',
  '--disable-background-timer-throttling',
]

/** Starts `lt up` with the aggregator's deltas every `deltaMs` and opens `tabs` tabs.
 * Returns { up, browser, context, pages, close() }. */
export async function startLoad(prefix, deltaMs, tabs = TABS) {
  const up = await startUp(prefix, ['--tick-rate', String(RATE), '--no-flow', '--delta-interval', `${deltaMs}ms`])
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromeArgs }).catch(async (e) => {
    await up.stop()
    throw e
  })
  const close = async () => {
    await browser.close()
    await up.stop()
  }
  try {
    const context = await browser.newContext()
    const pages = []
    for (let i = 0; i < tabs; i++) {
      const p = await context.newPage()
      await p.setViewportSize({ width: 1280, height: 760 })
      await p.goto(up.url)
      pages.push(p)
    }
    return { up, browser, context, pages, close }
  } catch (e) {
    await close()
    throw e
  }
}
