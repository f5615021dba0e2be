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

/** Runs `flush` every `intervalMs` while there is something to flush (no idle timers). */
export class FlushTimer {
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly intervalMs: number,
    private readonly flush: () => void,
  ) {}

  /** Call after adding: arms the timer if it is not armed. */
  poke(): void {
    if (this.timer !== undefined) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.flush()
    }, this.intervalMs)
  }

  /** Stops the timer. */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }
}
