/**
 * Latency histograms for the system view's end-to-end figures: 1 ms buckets from 0 to 999 ms and
 * one overflow bucket, so the pages' histograms merge exactly in the hub and a percentile is exact
 * to the millisecond. `RecentHistogram` keeps the last few seconds (one histogram per second).
 *
 * ```ts
 * const h = new LatencyHistogram()
 * for (const ms of [3, 4, 40]) h.add(ms)
 * h.percentile(50) // 4: the bucket [4, 5) ms, reported by its lower edge
 * ```
 */

/** Buckets of 1 ms below this; everything at or above it lands in one overflow bucket. */
export const HISTOGRAM_MAX_MS = 1000

/** Non-empty buckets as [bucket, count] pairs (what a page sends the hub). */
export type SparseCounts = Array<[number, number]>

/** Percentiles of a window, in ms (null when it holds no sample). */
export interface LatencySummary {
  n: number
  p50: number | null
  p95: number | null
  p99: number | null
}

export class LatencyHistogram {
  private readonly counts = new Uint32Array(HISTOGRAM_MAX_MS + 1)
  private total = 0

  /** Adds one latency in ms (negative clock skew counts as 0; NaN is ignored). */
  add(ms: number): void {
    if (Number.isNaN(ms)) return
    const b = Math.min(HISTOGRAM_MAX_MS, Math.max(0, Math.floor(ms)))
    this.counts[b] = (this.counts[b] ?? 0) + 1
    this.total++
  }

  /** Adds another histogram's counts (pairs with a bucket out of range or a bad count are skipped). */
  addCounts(pairs: SparseCounts): void {
    for (const [b, c] of pairs) {
      if (!Number.isInteger(b) || b < 0 || b > HISTOGRAM_MAX_MS || !Number.isInteger(c) || c <= 0) continue
      this.counts[b] = (this.counts[b] ?? 0) + c
      this.total += c
    }
  }

  get count(): number {
    return this.total
  }

  /** The lower edge (ms) of the bucket holding the p-th percentile; `HISTOGRAM_MAX_MS` means "at least that". */
  percentile(p: number): number | null {
    if (this.total === 0) return null
    const rank = Math.max(1, Math.ceil((p / 100) * this.total))
    let seen = 0
    for (let b = 0; b < this.counts.length; b++) {
      seen += this.counts[b] ?? 0
      if (seen >= rank) return b
    }
    return HISTOGRAM_MAX_MS
  }

  summary(): LatencySummary {
    return { n: this.total, p50: this.percentile(50), p95: this.percentile(95), p99: this.percentile(99) }
  }

  toSparse(): SparseCounts {
    const out: SparseCounts = []
    this.counts.forEach((c, b) => {
      if (c > 0) out.push([b, c])
    })
    return out
  }

  clear(): void {
    this.counts.fill(0)
    this.total = 0
  }
}

/** The last `seconds` seconds of samples: one histogram per wall-clock second, merged on read. */
export class RecentHistogram {
  private readonly slots: Array<{ second: number; h: LatencyHistogram }>

  constructor(
    readonly seconds: number = 10,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.slots = Array.from({ length: seconds }, () => ({ second: -1, h: new LatencyHistogram() }))
  }

  add(ms: number): void {
    this.current().add(ms)
  }

  addCounts(pairs: SparseCounts): void {
    this.current().addCounts(pairs)
  }

  /** Percentiles over the window. */
  summary(): LatencySummary {
    const second = Math.floor(this.now() / 1000)
    const merged = new LatencyHistogram()
    for (const s of this.slots) if (s.second > second - this.seconds) merged.addCounts(s.h.toSparse())
    return merged.summary()
  }

  private current(): LatencyHistogram {
    const second = Math.floor(this.now() / 1000)
    const slot = this.slots[second % this.seconds]
    if (!slot) throw new Error('unreachable: slot index in range')
    if (slot.second !== second) {
      slot.second = second
      slot.h.clear()
    }
    return slot.h
  }
}

/** One latency series as the hub keeps it: the last seconds for the system view, and what came
 * since the last report to the gateway. */
export class LatencySeries {
  private readonly recent: RecentHistogram
  private readonly sinceReport = new LatencyHistogram()

  constructor(seconds: number, now?: () => number) {
    this.recent = new RecentHistogram(seconds, now)
  }

  add(ms: number): void {
    this.recent.add(ms)
    this.sinceReport.add(ms)
  }

  addCounts(pairs: SparseCounts): void {
    this.recent.addCounts(pairs)
    this.sinceReport.addCounts(pairs)
  }

  /** Percentiles over the last seconds. */
  summary(): LatencySummary {
    return this.recent.summary()
  }

  /** Samples since the last `takeReport`. */
  get unreported(): number {
    return this.sinceReport.count
  }

  /** What came since the last call, as sparse counts. */
  takeReport(): SparseCounts {
    const out = this.sinceReport.toSparse()
    this.sinceReport.clear()
    return out
  }
}
