/**
 * In-page measurements for the browser benchmark (`npm run bench`): frame intervals sampled with
 * requestAnimationFrame, and tick → paint latency — from a row's source timestamp (`tsMs`, ms
 * since the epoch, stamped by the publisher) to the first task after the frame that painted it
 * (rAF → setTimeout(0), the "after next paint" point). Bounded ring buffers; read as `window.__perf`.
 * The tick → paint latencies and frame intervals also go, as histograms, to the feed hub once a
 * second (`takePaintLatencies`, `takeFrameIntervals`), which shows the browser's figures in the
 * system view and reports them to the gateway (`ui_tick_to_paint_latency`, `ui_frame_interval`).
 */
import { LatencyHistogram, type SparseCounts } from './feed/histogram'
const CAP = 20_000

class Ring {
  private readonly buf = new Float64Array(CAP)
  private n = 0
  push(v: number): void {
    this.buf[this.n % CAP] = v
    this.n++
  }
  values(): number[] {
    return Array.from(this.buf.subarray(0, Math.min(this.n, CAP)))
  }
  clear(): void {
    this.n = 0
  }
  get count(): number {
    return this.n
  }
}

const frames = new Ring()
const latency = new Ring()
/** Source time → the gateway sent the frame carrying the row (NATS, aggregator, gateway batching). */
const gateway = new Ring()
/** Source time → the hub (SharedWorker) received that frame (adds the WebSocket hop). */
const hubRx = new Ring()
/** Source time → the hub's flush of the batch (adds the hub's 16 ms batching). */
const arrival = new Ring()
/** Source time → the page's handler of that batch (adds the hop from the worker to the page). */
const received = new Ring()
/** Source time → React committed the row to the DOM (adds applying the batch and the frame wait). */
const committed = new Ring()
/** Tick → paint latencies since the last `takePaintLatencies` (not cleared by `perf.reset`). Only
 * while the tab gets frames steadily: none more than `THROTTLED_GAP_MS` apart in the last
 * `STEADY_MS`. A tab the browser throttles (hidden, minimised, in the background: measured, a
 * burst of frames about once a second) paints rows late because it gets no frames, and that wait
 * is the browser's choice, not the feed's. */
const paintSinceReport = new LatencyHistogram()
/** Frame intervals since the last `takeFrameIntervals`, under the same rule: a throttled tab's
 * long gaps are the browser's choice, not jank. */
const framesSinceReport = new LatencyHistogram()
export const THROTTLED_GAP_MS = 250
const STEADY_MS = 2000
/** When the last frame that came more than `THROTTLED_GAP_MS` after the one before came. */
let lastThrottled = 0
let pending: number[] = []
let scheduled = false
/** True while an animation-frame callback commits rows (see `duringFrame`). */
let inFrame = false

export const perf = {
  frames,
  latency,
  gateway,
  hubRx,
  arrival,
  received,
  committed,
  /** Clears every series (the benchmark calls it after its warm-up). */
  reset(): void {
    frames.clear()
    latency.clear()
    gateway.clear()
    hubRx.clear()
    arrival.clear()
    received.clear()
    committed.clear()
    // Rows rendered while the tab was in the background wait for its next frame: not counted.
    pending = []
  },
}

/** Runs `fn` (an animation-frame callback's DOM commit): rows it renders are painted by THIS frame. */
export function duringFrame(fn: () => void): void {
  inFrame = true
  try {
    fn()
  } finally {
    inFrame = false
  }
}

/** A row with source time `tsMs` was just committed to the DOM: measure when it is painted. */
export function markRendered(tsMs: number): void {
  if (!(tsMs > 0)) return
  committed.push(performance.timeOrigin + performance.now() - tsMs)
  pending.push(tsMs)
  if (scheduled) return
  scheduled = true
  const afterPaint = () =>
    setTimeout(() => {
      const now = performance.timeOrigin + performance.now()
      const report = last > 0 && last - lastThrottled >= STEADY_MS && document.visibilityState === 'visible'
      for (const t of pending) {
        latency.push(now - t)
        if (report) paintSinceReport.add(now - t)
      }
      pending = []
      scheduled = false
    }, 0)
  // Committed inside a frame callback: this frame paints it. Otherwise the next frame will.
  if (inFrame) afterPaint()
  else requestAnimationFrame(afterPaint)
}

/** The frame intervals measured since the previous call (for the hub's end-to-end figures). */
export function takeFrameIntervals(): SparseCounts {
  const out = framesSinceReport.toSparse()
  framesSinceReport.clear()
  return out
}

/** The tick → paint latencies measured since the previous call (for the hub's end-to-end figures). */
export function takePaintLatencies(): SparseCounts {
  const out = paintSinceReport.toSparse()
  paintSinceReport.clear()
  return out
}

let last = 0
function loop(t: number): void {
  if (last > 0) {
    frames.push(t - last)
    if (t - last > THROTTLED_GAP_MS) lastThrottled = t
    else if (t - lastThrottled >= STEADY_MS && document.visibilityState === 'visible') framesSinceReport.add(t - last)
  } else lastThrottled = t
  last = t
  requestAnimationFrame(loop)
}

export function startFrameSampling(): void {
  requestAnimationFrame(loop)
}

declare global {
  interface Window {
    __perf?: typeof perf
  }
}
window.__perf = perf
