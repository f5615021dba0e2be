/**
 * Row-change notifications coalesced to one delivery per animation frame. The collection takes
 * every batch at once (one transaction per batch); the rows on screen re-render at most once per
 * frame, and not at all while the page gets no frames (a hidden tab): the keys wait, bounded by
 * the number of rows, and the next frame delivers each of them once.
 */
export type FrameScheduler = (cb: () => void) => void

export class FrameCoalescer {
  private pending = new Set<string>()
  private spare = new Set<string>()
  private scheduled = false
  /** Frames that delivered something. */
  frames = 0

  constructor(
    private readonly deliver: (keys: ReadonlySet<string>) => void,
    private readonly schedule: FrameScheduler = (cb) => requestAnimationFrame(cb),
  ) {}

  /** A row changed: it is delivered with the next frame (once, however often it changes). */
  add(key: string): void {
    this.pending.add(key)
    if (this.scheduled) return
    this.scheduled = true
    this.schedule(() => this.run())
  }

  /** Keys waiting for the next frame. */
  get size(): number {
    return this.pending.size
  }

  private run(): void {
    this.scheduled = false
    if (this.pending.size === 0) return
    const keys = this.pending
    this.pending = this.spare
    this.frames++
    try {
      this.deliver(keys)
    } finally {
      keys.clear()
      this.spare = keys
    }
  }
}
