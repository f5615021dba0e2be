// End-to-end in a real browser: Debian's Chromium driven by playwright-core against `lt up`
// (embedded nats-server, tick simulator, aggregator, gateway serving ui/dist).
//   node --test e2e/        (LT_BIN: the lt binary; CHROMIUM: the browser, default /usr/bin/chromium)
// Playwright cannot see a SharedWorker's WebSocket, so connections are counted at the gateway
// (/healthz ws_active) and the worker through CDP (Target.getTargets).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { artifacts, chromiumPath, freePort, ltBin, ui, until } from './helpers.mjs'

let up
after(() => up?.kill('SIGKILL'))

test('five tabs share one WebSocket through one SharedWorker and all show live ticks', async () => {
  const [nats, http, gw] = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), 'lt-ui-e2e-'))
  up = spawn(ltBin, [
    'up', '--data-dir', dir, '--nats-port', String(nats), '--nats-http-port', String(http),
    '--udp', '127.0.0.1:0', '--metrics-addr', 'off', '--gateway-addr', `127.0.0.1:${gw}`,
    '--ui-dir', join(ui, 'dist'), '--tick-rate', '1000', '--no-flow',
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  up.stdout.on('data', (d) => (out += d))
  const url = await until('the UI URL from lt up', () => out.match(/UI: (http:\/\/\S+)/)?.[1])
  assert.ok(!out.includes('UI not built'), 'lt up serves ui/dist')

  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] })
  try {
    const context = await browser.newContext() // one context = one SharedWorker
    const pages = []
    for (let i = 0; i < 5; i++) {
      const p = await context.newPage()
      await p.goto(url)
      pages.push(p)
    }
    for (const [i, p] of pages.entries()) {
      await until(`tab ${i} showing every instrument`, () =>
        p.evaluate(() => window.__feed?.state === 'connected' && window.__feed.rows >= 150 && window.__feed.applied > 0),
      )
    }
    const health = await (await fetch(`http://127.0.0.1:${gw}/healthz`)).json()
    assert.equal(health.ws_active, 1, 'exactly one WebSocket at the gateway for five tabs')
    const cdp = await browser.newBrowserCDPSession()
    const { targetInfos } = await cdp.send('Target.getTargets')
    assert.equal(targetInfos.filter((t) => t.type === 'shared_worker').length, 1, 'one shared worker')
    // Ticks keep flowing in every tab.
    const before = await Promise.all(pages.map((p) => p.evaluate(() => window.__feed.applied)))
    await until('more deltas in every tab', async () => {
      const now = await Promise.all(pages.map((p) => p.evaluate(() => window.__feed.applied)))
      return now.every((n, i) => n > before[i])
    })
    await pages[0].screenshot({ path: join(artifacts, 'ticks.png') })
    // A closed tab leaves the socket to the others.
    await pages[4].close()
    await new Promise((r) => setTimeout(r, 300))
    const still = await (await fetch(`http://127.0.0.1:${gw}/healthz`)).json()
    assert.equal(still.ws_active, 1)
  } finally {
    await browser.close()
    up.kill('SIGINT')
    await new Promise((r) => up.on('exit', r))
  }
})
