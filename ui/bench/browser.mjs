// In-browser performance benchmark (issue 6 item 6): `lt up` publishing 4,000 ticks/s, five tabs
// of the ticks view in Debian's Chromium (one SharedWorker, one WebSocket). Measured in every tab:
//   - frame interval (requestAnimationFrame sampling): p50/p95/p99 — target p95 ≤ 16.7 ms, and
//     seed 002's p99 ≤ 25 ms;
//   - tick → paint latency (source timestamp → first task after the frame that painted the row):
//     p50/p95/p99 — target p99 ≤ 50 ms (seed: p95 < 120 ms, p99 < 180 ms);
//   - rendering work per frame of the tab in front, from a trace taken after the latency windows
//     (Chromium's AnimationFrame::Render spans: rAF callbacks, style, layout, paint, commit):
//     p50/p95/p99 — seed 002's budget ≤ 8 ms per frame with 4–5 windows open.
// Beside them, from the same run: the frame intervals of an idle page in the same browser (in
// front while the five tabs keep receiving: the compositor's own limit here) and tick → arrival
// at the tab (before React and paint). Headless Chromium gives animation frames only to the
// front tab, so each tab is measured in turn while in front. Two settings: the aggregator's deltas
// every 33 ms (the seed's default) and every 16 ms (its shortest). Tail figures on a small shared
// machine move from run to run, so each setting runs `--runs` times (3 by default, 1 with --quick)
// on a fresh `lt up` and browser, and the record is the run with the median figure; every run's
// figure is kept in the record's params.
//   node bench/browser.mjs [--quick] [--runs N] [--delta 33|16] [--tabs N] [--out DIR]   (JSON → DIR/ui.json, default ../bench/results)
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { feeds, health, ui, until } from '../e2e/helpers.mjs'
import { RATE, TABS, startLoad } from './load.mjs'
import { traceRender } from './trace.mjs'

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const outDir = args.includes('--out') ? args[args.indexOf('--out') + 1] : join(ui, '..', 'bench', 'results')
const WARMUP_S = quick ? 2 : 5
const PER_TAB_S = quick ? 1.5 : 6
const TRACE_S = quick ? 1.5 : 4
// --delta N: only that delta interval (for comparing changes; the committed record has both).
// --tabs N: another number of tabs (to see how much of the tail is the other tabs' CPU; the
// record is made with the five).
const NTABS = args.includes('--tabs') ? Math.max(1, Number(args[args.indexOf('--tabs') + 1]) || TABS) : TABS
const ONLY = args.includes('--delta') ? Number(args[args.indexOf('--delta') + 1]) : undefined
const RUNS = Math.max(1, Number(args.includes('--runs') ? args[args.indexOf('--runs') + 1] : quick ? 1 : 3) || 1)

const pct = (xs, p) => {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  return +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(2)
}
const summary = (xs) => ({
  n: xs.length, p50: pct(xs, 50), p95: pct(xs, 95), p99: pct(xs, 99), max: xs.length ? +Math.max(...xs).toFixed(2) : null,
  // For frame intervals: the share of frames that took more than 1.5 display intervals (dropped).
  over_25ms: xs.length ? +(xs.filter((x) => x > 25).length / xs.length).toFixed(4) : null,
})
const log = (s) => console.log(`[bench ui] ${s}`)

/** p99 of U(0,a) + U(0,b): a tick's wait for the next delta plus a row's wait for the next frame,
 * the two waits no implementation avoids (the sum's upper tail is a triangle). */
function waitsFloorP99(a, b) {
  const [hi, lo] = a >= b ? [a, b] : [b, a]
  return +(hi + lo - Math.sqrt(0.02 * hi * lo)).toFixed(1)
}
const FRAME_MS = 1000 / 60


/** One run of lt up at RATE ticks/s with the aggregator's deltas every `deltaMs`. */
async function measure(deltaMs) {
  const { up, browser, context, pages, close } = await startLoad('lt-bench-ui-', deltaMs, NTABS)
  log(`lt up running (gateway ${up.gw}, ${RATE} ticks/s, deltas every ${deltaMs} ms)`)
  try {
    const idle = await context.newPage()
    await idle.goto(`http://127.0.0.1:${up.gw}/healthz`) // same origin: isolated too
    await idle.evaluate(() => {
      window.__idle = []
      let last = 0
      const loop = (t) => {
        if (last) window.__idle.push(t - last)
        last = t
        requestAnimationFrame(loop)
      }
      requestAnimationFrame(loop)
    })
    await until('every tab live', async () => (await feeds(pages)).every((f) => f?.state === 'connected' && f.ticks >= 150 && f.tickBatches > 0), 30_000)
    const visibility = await Promise.all(pages.map((p) => p.evaluate(() => document.visibilityState)))
    // Served by the gateway with COOP/COEP: a 5 µs clock (0.1 ms without isolation).
    const isolated = (await Promise.all(pages.map((p) => p.evaluate(() => crossOriginIsolated)))).every(Boolean)
    const ws = (await health(up.gw)).ws_active
    log(`${NTABS} tabs live over ${ws} WebSocket(s), visibility ${visibility.join(',')}; warming up ${WARMUP_S} s`)
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000))
    // Headless Chromium gives animation frames only to the front tab (a desktop browser does the
    // same with the tabs of one window), so each tab is measured while it is in front; the other
    // four stay connected and keep applying every batch meanwhile.
    const b0 = await feeds(pages)
    const tB0 = Date.now()
    log(`measuring ${PER_TAB_S} s per tab`)
    await idle.bringToFront()
    await idle.evaluate(() => (window.__idle = []))
    await new Promise((r) => setTimeout(r, PER_TAB_S * 1000))
    const idleFrames = await idle.evaluate(() => window.__idle)
    const per = []
    for (const p of pages) {
      await p.bringToFront()
      // Let the tab paint what piled up while it was behind, then start counting.
      await new Promise((r) => setTimeout(r, 500))
      await p.evaluate(() => window.__perf.reset())
      await new Promise((r) => setTimeout(r, PER_TAB_S * 1000))
      per.push(await p.evaluate(() => ({ frames: window.__perf.frames.values(), latency: window.__perf.latency.values(), gateway: window.__perf.gateway?.values() ?? [], hubRx: window.__perf.hubRx?.values() ?? [], arrival: window.__perf.arrival.values(), received: window.__perf.received.values(), committed: window.__perf.committed.values() })))
    }
    const b1 = await feeds(pages)
    // Rendering work per frame: the last tab (still in front, the others loaded behind it), then
    // the idle page in front for the browser's own per-frame floor. Traced after the latency
    // windows, so tracing does not weigh on those.
    const renderFront = await traceRender(browser, pages[pages.length - 1], TRACE_S)
    await idle.bringToFront()
    const renderIdle = await traceRender(browser, idle, TRACE_S)
    // Over the wall time between the two readings (the per-tab windows plus the switches).
    const elapsedS = (Date.now() - tB0) / 1000
    const batchesPerS = b1.map((f, i) => (f.tickBatches - b0[i].tickBatches) / elapsedS)
    // Snapshots applied (a gap or a reconnect makes the hub re-read a group: a whole-table reset)
    // and the gateway's degradation level: either would explain a latency spike.
    const resets = b1.map((f, i) => f.resets - b0[i].resets)
    const levels = b1.map((f) => f.level)
    log(`during the measurement: snapshot resets per tab ${resets.join(',')}, degradation level ${levels.join(',')}`)
    const fr = summary(per.flatMap((x) => x.frames))
    const lat = summary(per.flatMap((x) => x.latency))
    const gw = summary(per.flatMap((x) => x.gateway))
    const hrx = summary(per.flatMap((x) => x.hubRx))
    const arr = summary(per.flatMap((x) => x.arrival))
    const rcv = summary(per.flatMap((x) => x.received))
    const cmt = summary(per.flatMap((x) => x.committed))
    const idl = summary(idleFrames)
    const rnd = summary(renderFront)
    const rndIdle = summary(renderIdle)
    for (const [i, x] of per.entries()) {
      const f = summary(x.frames)
      const l = summary(x.latency)
      log(`tab ${i}: frames p50 ${f.p50} p95 ${f.p95} p99 ${f.p99} ms (${f.n}) · tick→paint p50 ${l.p50} p95 ${l.p95} p99 ${l.p99} ms (${l.n}) · ${batchesPerS[i].toFixed(1)} batches/s`)
    }
    log(`${deltaMs} ms deltas, all tabs: frame interval p95 ${fr.p95} ms (target ≤ 16.7) p99 ${fr.p99} ms (seed ≤ 25), ${(fr.over_25ms * 100).toFixed(1)} % of frames > 25 ms, vs idle page in the same browser p95 ${idl.p95} ms`)
    log(`${deltaMs} ms deltas, all tabs: tick→paint p50 ${lat.p50} p95 ${lat.p95} p99 ${lat.p99} ms (target p99 ≤ 50) vs tick→arrival at the tab p50 ${arr.p50} p95 ${arr.p95} p99 ${arr.p99} ms`)
    log(`${deltaMs} ms deltas: rendering work per frame of the tab in front p50 ${rnd.p50} p95 ${rnd.p95} p99 ${rnd.p99} max ${rnd.max} ms (${rnd.n} frames; budget ≤ 8) vs the idle page p95 ${rndIdle.p95} ms`)
    const floor = waitsFloorP99(deltaMs, FRAME_MS)
    log(`${deltaMs} ms deltas: waiting for the next delta and the next frame alone has p99 ${floor} ms (before any transport or work)`)
    log(`${deltaMs} ms deltas, stages (p50/p99 ms from the tick): gateway send ${gw.p50}/${gw.p99} → hub receipt ${hrx.p50}/${hrx.p99} → hub flush ${arr.p50}/${arr.p99} → page handler ${rcv.p50}/${rcv.p99} → DOM commit ${cmt.p50}/${cmt.p99} → painted ${lat.p50}/${lat.p99}`)
    const host = { cores: cpus().length, load_avg: +loadavg()[0].toFixed(2) }
    const params = { ticks_per_s: RATE, delta_interval_ms: deltaMs, tabs: NTABS, visibility, warmup_s: WARMUP_S, measure_s_per_tab: PER_TAB_S, ws_active: ws, cross_origin_isolated: isolated, browser: browser.version(), headless: true, quick }
    await context.close()
    return [
      {
        bench: 'ui', case: `frame_interval_p95_${deltaMs}ms`, unit: 'ms', ours: fr.p95, baseline: idl.p95,
        baseline_what: 'frame interval p95 of an idle page in the same browser during the run', ratio: fr.p95 && idl.p95 ? +(fr.p95 / idl.p95).toFixed(2) : null,
        target: 16.7, meets: fr.p95 !== null && fr.p95 <= 16.7, params: { ...params, frames: fr, idle: idl }, host,
      },
      {
        // Seed 002's second frame target: rAF frame p99 ≤ 25 ms (1.5 display intervals).
        bench: 'ui', case: `frame_interval_p99_${deltaMs}ms`, unit: 'ms', ours: fr.p99, baseline: idl.p99,
        baseline_what: 'frame interval p99 of an idle page in the same browser during the run', ratio: fr.p99 && idl.p99 ? +(fr.p99 / idl.p99).toFixed(2) : null,
        target: 25, meets: fr.p99 !== null && fr.p99 <= 25, params: { ...params, frames: fr, idle: idl }, host,
      },
      {
        bench: 'ui', case: `tick_to_paint_p99_${deltaMs}ms`, unit: 'ms', ours: lat.p99, baseline: arr.p99,
        baseline_what: 'tick → arrival of its batch at the tab (before React and paint), p99', ratio: lat.p99 && arr.p99 ? +(lat.p99 / arr.p99).toFixed(2) : null,
        target: 50, meets: lat.p99 !== null && lat.p99 <= 50, params: { ...params, waits_floor_p99_ms: floor, tick_to_paint: lat, tick_to_gateway_send: gw, tick_to_hub_receipt: hrx, tick_to_arrival: arr, tick_to_page_handler: rcv, tick_to_dom_commit: cmt, batches_per_s: batchesPerS, snapshot_resets: resets, degrade_levels: levels }, host,
      },
      {
        bench: 'ui', case: `render_per_frame_p95_${deltaMs}ms`, unit: 'ms', ours: rnd.p95, baseline: rndIdle.p95,
        baseline_what: 'rendering work per frame of an idle page in front of the same browser (p95)', ratio: rnd.p95 && rndIdle.p95 ? +(rnd.p95 / rndIdle.p95).toFixed(2) : null,
        target: 8, meets: rnd.p95 !== null && rnd.p95 <= 8,
        params: { ...params, what: "Chromium's AnimationFrame::Render spans of the tab in front (rAF callbacks incl. the grid's React commit, style, layout, pre-paint, paint, layerize, commit), traced after the latency windows", trace_s: TRACE_S, render: rnd, idle_render: rndIdle }, host,
      },
    ]
  } finally {
    await close()
  }
}

/** The record of the run with the median figure, with every run's figure beside it. */
function medianOf(runs) {
  const sorted = [...runs].sort((a, b) => (a.ours ?? Infinity) - (b.ours ?? Infinity))
  // An even count takes the higher of the two middle runs (the conservative one).
  const pick = sorted[Math.ceil((sorted.length - 1) / 2)]
  return { ...pick, params: { ...pick.params, runs: runs.length, runs_ours: runs.map((r) => r.ours), picked: 'the run with the median figure' } }
}

// The seed's 33 ms deltas, then the aggregator's shortest interval.
const records = []
for (const deltaMs of ONLY ? [ONLY] : [33, 16]) {
  const runs = []
  for (let i = 0; i < RUNS; i++) {
    if (RUNS > 1) log(`${deltaMs} ms deltas: run ${i + 1} of ${RUNS}`)
    runs.push(await measure(deltaMs))
  }
  const frames = medianOf(runs.map(([f]) => f))
  const frames99 = medianOf(runs.map(([, f]) => f))
  const paint = medianOf(runs.map(([, , l]) => l))
  const render = medianOf(runs.map(([, , , r]) => r))
  if (RUNS > 1) log(`${deltaMs} ms deltas over ${RUNS} runs: frame p95 ${frames.params.runs_ours.join(' / ')} → median ${frames.ours} ms, p99 ${frames99.params.runs_ours.join(' / ')} → median ${frames99.ours} ms; tick→paint p99 ${paint.params.runs_ours.join(' / ')} → median ${paint.ours} ms; render per frame p95 ${render.params.runs_ours.join(' / ')} → median ${render.ours} ms`)
  records.push(frames, frames99, paint, render)
}
mkdirSync(outDir, { recursive: true })
writeFileSync(join(outDir, 'ui.json'), JSON.stringify(records, null, 2) + '\n')
log(`wrote ${join(outDir, 'ui.json')}`)
