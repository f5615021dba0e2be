/** Collects updates between flushes and keeps only the latest per key (de-duplication), in the
 * order keys first appeared. The worker flushes every 16 ms to every port. */
export class Batcher<V> {
  private readonly latest = new Map<string, V>()
  private dropped = 0

  /** Adds an update; a later one for the same key replaces it. */
  add(key: string, value: V): void {
    if (this.latest.has(key)) {
      this.dropped++
      // Keep the first position, the latest value.
    }
    this.latest.set(key, value)
  }

  /** Updates replaced before a flush so far. */
  get deduplicated(): number {
    return this.dropped
  }

  /** Number of keys waiting. */
  get size(): number {
    return this.latest.size
  }

  /** Takes everything waiting. */
  flush(): Array<[string, V]> {
    const out = [...this.latest.entries()]
    this.latest.clear()
    return out
  }
}

/** Runs `flush` at most once per `intervalMs` while there is something to flush (no idle timers).
 * Leading edge: the first change after a quiet interval is flushed at once, later ones wait
 * until `intervalMs` after the previous flush — so batches that already arrive every 16 ms
 * (the gateway's) pass without waiting another 16 ms here. */
export class FlushTimer {
  private timer: ReturnType<typeof setTimeout> | undefined
  private last = -Infinity

  constructor(
    private readonly intervalMs: number,
    private readonly flush: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Call after adding: flushes now or arms the timer for the rest of the interval. */
  poke(): void {
    if (this.timer !== undefined) return
    const wait = this.last + this.intervalMs - this.now()
    if (wait <= 0) {
      this.run()
      return
    }
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.run()
    }, wait)
  }

  /** Stops the timer. */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  private run(): void {
    this.last = this.now()
    this.flush()
  }
}
