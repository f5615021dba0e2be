// End-to-end in a real browser: Debian's Chromium driven by playwright-core against `lt up`
// (embedded nats-server, battery + tick simulators, flow into DuckLake, query service, aggregator,
// gateway serving ui/dist).   node --test e2e/   (LT_BIN: the lt binary; CHROMIUM: the browser)
// Playwright cannot see a SharedWorker's WebSocket, so connections are counted at the gateway
// (/healthz ws_active) and the worker through CDP (Target.getTargets).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { chromium } from 'playwright-core'
import { artifacts, chromiumPath, feeds, health, ltBin, startUp, until } from './helpers.mjs'

const run = promisify(execFile)
const CHANNELS = 32 * 64
let up
let browser

before(async () => {
  up = await startUp('lt-ui-views-', ['--tick-rate', '1000', '--devices', '32', '--channels', '64', '--rate', '4000'])
  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] })
})
after(async () => {
  await browser?.close()
  await up?.stop()
})

async function sharedWorkers() {
  const cdp = await browser.newBrowserCDPSession()
  const { targetInfos } = await cdp.send('Target.getTargets')
  await cdp.detach()
  return targetInfos.filter((t) => t.type === 'shared_worker').length
}

test('five tabs share one WebSocket through one SharedWorker; every view works; screenshots', async () => {
  const context = await browser.newContext() // one context = one SharedWorker
  try {
    const pages = []
    for (let i = 0; i < 5; i++) {
      const p = await context.newPage()
      await p.setViewportSize({ width: 1280, height: 760 })
      await p.goto(up.url)
      pages.push(p)
    }
    await until('every tab connected with every instrument', async () =>
      (await feeds(pages)).every((f) => f?.state === 'connected' && f.mode === 'shared-worker' && f.ticks >= 150 && f.tickBatches > 0),
    )
    assert.equal((await health(up.gw)).ws_active, 1, 'exactly one WebSocket at the gateway for five tabs')
    assert.equal(await sharedWorkers(), 1, 'one shared worker')

    // Ticks keep flowing in every tab.
    const before = (await feeds(pages)).map((f) => f.tickBatches)
    await until('more tick batches in every tab', async () => (await feeds(pages)).every((f, i) => f.tickBatches > before[i]))

    // Ticks view: a virtualised grid with every instrument in its row model, only the visible rows in the DOM.
    const ticks = pages[0]
    const grid = ticks.locator('[data-testid=ticks-grid]')
    assert.equal(Number(await grid.getAttribute('data-rows')), (await feeds([ticks]))[0].ticks)
    // Sorting by a header click (the order refreshes a few times a second).
    const lastHeader = ticks.locator('[role=columnheader]', { hasText: /^last/ })
    await until('the last column sorted descending', async () => {
      if ((await lastHeader.getAttribute('aria-sort')) === 'descending') return true
      await lastHeader.click()
      return false
    })
    await until('sorted by last, descending', async () => {
      const lasts = await ticks.locator('.grid-row').evaluateAll((rows) =>
        rows.sort((a, b) => Number(a.dataset.index) - Number(b.dataset.index)).slice(0, 10).map((r) => Number(r.children[4].textContent)),
      )
      return lasts.length === 10 && lasts.every((v, i) => i === 0 || v <= lasts[i - 1] + 5)
    })
    // Each row carries its instrument's contract (XY_REF → aggregator → xy.md.contract.*), joined by
    // key: a name like "rebar 2501" and a lot multiplier.
    await until('contract names and multipliers in the visible rows', async () => {
      const joined = await ticks.locator('[data-testid=ticks-grid] .grid-row').evaluateAll((rows) =>
        rows.slice(0, 10).map((r) => [r.children[1].textContent, r.children[2].textContent, r.children[3].textContent]),
      )
      return joined.length === 10 && joined.every(([symbol, name, mult]) => name.endsWith(symbol.slice(-4)) && /^[a-zA-Z]/.test(name) && Number(mult) > 0)
    })
    await until('every contract counted', async () => /· 150 contracts ·/.test((await ticks.locator('h2').textContent()) ?? ''))
    await ticks.screenshot({ path: join(artifacts, 'ticks.png') })

    // Battery channel grid: thousands of rows, coloured status.
    const cells = pages[1]
    await cells.goto(`${up.url}#/cells`)
    await until(`all ${CHANNELS} channels`, async () => (await feeds([cells]))[0].cells >= CHANNELS, 30_000)
    const cgrid = cells.locator('[data-testid=cells-grid]')
    await until('the cells grid row model', async () => Number(await cgrid.getAttribute('data-rows')) >= CHANNELS)
    const domRows = await cells.locator('[data-testid=cells-grid] .grid-row').count()
    assert.ok(domRows > 10 && domRows < 100, `virtualised: ${domRows} rows in the DOM for ${CHANNELS}`)
    const statuses = await cells.locator('[data-testid=cells-grid] [class*=status-]').evaluateAll((els) => els.map((e) => e.className))
    assert.ok(statuses.some((c) => /status-(charge|discharge|rest|pause|warn|alarm)/.test(c)), 'status cells are coloured')
    // Values move: a visible row's seq increases.
    const firstSeq = () => cells.locator('[data-testid=cells-grid] .grid-row[data-index="0"] [role=cell]').last().textContent()
    const seq0 = Number(await firstSeq())
    await until('the first visible channel updates', async () => Number(await firstSeq()) > seq0, 10_000)
    await cells.screenshot({ path: join(artifacts, 'cells.png') })

    // System view: discovery list (lt up registers itself), metrics from /metrics, no banner at level 0.
    const system = pages[2]
    await system.goto(`${up.url}#/system`)
    await until('a node in the discovery list', async () => (await system.locator('[data-testid=nodes] tbody tr').count()) >= 1, 15_000)
    await until('gateway metrics', async () => (await system.locator('[data-metric=ws_active]').count()) === 1)
    const wsActive = await system.locator('[data-metric=ws_active] td').nth(1).textContent()
    assert.equal(wsActive, '1')
    assert.ok((await system.locator('[data-metric=ticks_out]').count()) === 1, 'aggregator metrics shown')
    // Counters get a rate from two scrapes.
    await until('a rate for ticks_out', async () => /\/s$/.test((await system.locator('[data-metric=ticks_out] td').nth(2).textContent()) ?? ''))
    assert.equal(await system.locator('[data-testid=degrade-banner]').count(), 0)
    assert.match(await system.locator('[data-testid=hub]').textContent(), /shared-worker.*connected.*tabs on this connection 5/s)
    // End-to-end figures: the hub's receipt latency, bandwidth and the first loads' rebuilds at
    // once; tick → paint once a tab showing a grid has painted (the front one gets frames).
    await pages[0].bringToFront()
    const e2eRow = async (stage) => (await system.locator(`[data-testid=e2e] tr[data-stage=${stage}] td`).allTextContents()).slice(1)
    const msFigures = (cells) => cells.slice(0, 3).map((c) => Number(/^(\d+) ms$/.exec(c)?.[1] ?? NaN))
    await until('tick → paint reported by the ticks tab', async () => Number((await e2eRow('paint'))[3]) > 0, 10_000)
    for (const stage of ['browser', 'paint']) {
      const cells = await e2eRow(stage)
      const [p50, p95, p99] = msFigures(cells)
      assert.ok(p50 >= 0 && p50 <= p95 && p95 <= p99, `${stage}: p50/p95/p99 ${cells.join(' / ')}`)
      assert.ok(Number(cells[3]) > 0, `${stage}: rows counted`)
    }
    // The rate needs two of the hub's once-a-second stats since this page loaded.
    const bandwidth = /WebSocket in: \d+\.\d (KiB|MiB)\/s · \d+ frames\/s · total \d+\.\d (KiB|MiB) in [1-9]\d* frames/
    await until('the bandwidth from two stats', async () => bandwidth.test((await system.locator('[data-testid=bandwidth]').textContent()) ?? ''), 5_000)
    assert.doesNotMatch((await system.locator('[data-testid=bandwidth]').textContent()) ?? '', /WebSocket in: 0\.0 KiB\/s/, 'ticks are flowing')
    assert.match((await system.locator('[data-testid=rebuilds]').textContent()) ?? '', /rebuilds .*: [1-9]\d* · last \d+ ms · longest \d+ ms · waiting now 0/)
    // The hub's ClientStats report (every 10 s) reaches the gateway's /metrics.
    await until('the browsers\' tick → paint in the gateway\'s metrics', async () => (await system.locator('[data-metric=ui_tick_to_paint_latency_count]').count()) === 1, 25_000)
    assert.ok(Number(await system.locator('[data-metric=ui_tick_to_paint_latency_count] td').nth(1).textContent()) > 0, 'paint samples recorded')
    assert.ok(Number(await system.locator('[data-metric=ui_stats_reports] td').nth(1).textContent()) >= 1)
    // The pages' animation-frame intervals: in the system view, and in the same reports.
    assert.match((await system.locator('[data-testid=frames]').textContent()) ?? '', /p50 \d+–\d+ ms · p95 \d+–\d+ ms .*· [1-9]\d* frames$/)
    assert.ok(Number(await system.locator('[data-metric=ui_frame_interval_count] td').nth(1).textContent()) > 0, 'frame intervals recorded')
    // JetStream's own state, which lt up adds to /metrics: one row per stream and durable consumer
    // (the events stream with the lake writer under it), not summed into the metric groups.
    assert.equal(await system.locator('[data-metric=jetstream_stream_total_messages]').count(), 0, 'per-stream series are not summed')
    await until('the JetStream table', async () => (await system.locator('[data-testid=jetstream] tr[data-stream=LT_EVENTS]').count()) === 1, 15_000)
    const events = await system.locator('[data-testid=jetstream] tr[data-stream=LT_EVENTS] td').allTextContents()
    assert.ok(Number(events[1]) > 0, `LT_EVENTS holds messages: ${events}`)
    assert.ok(Number(events[4]) >= Number(events[1]), `last seq ≥ messages: ${events}`)
    const writer = system.locator('[data-testid=jetstream] tr[data-consumer="LT_EVENTS/lake-writer"]')
    assert.equal(await writer.count(), 1, 'the lake writer is listed under LT_EVENTS')
    await until('the lake writer delivered messages', async () => Number(await writer.locator('[data-field=delivered]').textContent()) > 0, 15_000)
    await system.bringToFront()
    await system.screenshot({ path: join(artifacts, 'system.png'), fullPage: true })

    // Analysis view: a lake query published as an Arrow table reaches the browser.
    const analysis = pages[3]
    await analysis.goto(`${up.url}#/analysis`)
    const sql = 'SELECT device_id, channel, count(*) AS samples, round(max(voltage), 4) AS v_max FROM lake.battery_samples GROUP BY ALL ORDER BY ALL LIMIT 40'
    await until('the lake has rows and the table is published', async () => {
      try {
        await run(ltBin, ['query', '--nats-url', `nats://127.0.0.1:${up.nats}`, '--publish', 'e2e_fade', '--format', 'csv', sql])
      } catch {
        return false
      }
      return (await feeds([analysis]))[0].analysis.includes('e2e_fade')
    }, 30_000)
    await until('the table rendered', async () => (await analysis.locator('[data-testid=analysis-table] tbody tr').count()) > 0)
    assert.match(await analysis.locator('[data-testid=analysis-meta]').textContent(), /e2e_fade.*rows × 4 columns/)
    const headers = await analysis.locator('[data-testid=analysis-table] th').allTextContents()
    assert.deepEqual(headers.map((h) => h.split(/\s/)[0].replace(/(Utf8|Int|Float|Uint|Decimal).*$/, '')), ['device_id', 'channel', 'samples', 'v_max'])
    await analysis.screenshot({ path: join(artifacts, 'analysis.png') })

    // A closed tab leaves the socket to the others (the worker hears its goodbye).
    await pages[4].close()
    await until('the worker counts four tabs', async () => (await feeds(pages.slice(0, 4))).every((f) => f.ports === 4))
    assert.equal((await health(up.gw)).ws_active, 1)
  } finally {
    await context.close()
  }
})

test('without SharedWorker: a Web Locks leader tab holds the one socket; when it closes another takes over', async () => {
  const context = await browser.newContext()
  try {
    await until('the previous context gone', async () => (await health(up.gw)).ws_active === 0)
    const pages = []
    for (let i = 0; i < 3; i++) {
      const p = await context.newPage()
      await p.goto(`${up.url}&feed=locks`)
      pages.push(p)
    }
    let last
    await until('every tab live through the leader', async () => {
      last = await feeds(pages)
      return last.every((f) => f?.mode === 'web-locks' && f.state === 'connected' && f.ticks >= 150 && f.tickBatches > 0)
    }).catch((e) => {
      throw new Error(`${e.message}; tabs: ${JSON.stringify(last)}`)
    })
    const leaders = (await feeds(pages)).map((f) => f.leading)
    assert.equal(leaders.filter(Boolean).length, 1, 'exactly one leader')
    assert.equal((await health(up.gw)).ws_active, 1, 'one WebSocket for three tabs')
    assert.equal(await sharedWorkers(), 0, 'no SharedWorker in this mode')

    const leader = leaders.indexOf(true)
    const rest = pages.filter((_, i) => i !== leader)
    const t0 = Date.now()
    await pages[leader].close()
    const before = (await feeds(rest)).map((f) => f.tickBatches)
    await until('a new leader and live ticks in the remaining tabs', async () => {
      const f = await feeds(rest)
      return f.filter((x) => x.leading).length === 1 && f.every((x, i) => x.state === 'connected' && x.tickBatches > before[i])
    }, 10_000)
    console.log(`leader hand-over: tabs live again ${Date.now() - t0} ms after the leader tab closed`)
    await until('one socket again', async () => (await health(up.gw)).ws_active === 1)
    await rest[0].screenshot({ path: join(artifacts, 'fallback-after-handover.png') })
  } finally {
    await context.close()
  }
})
