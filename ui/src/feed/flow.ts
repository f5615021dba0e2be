/**
 * Per-page flow control in the hub (research-frontend §3.1 item 5): a page acknowledges the rows
 * messages it received each time it gets an animation frame (`{ type: 'ack', n }`), and the hub
 * sends a page at most `window` rows messages it has not acknowledged. What comes for a page that
 * is out of credit is merged per feed (latest row per key, a reset absorbing what came before it)
 * and goes out as ONE message when the page acknowledges again.
 *
 * So a tab that paints at 60 Hz gets every batch as it comes (credit returns every frame), while a
 * tab the browser gives two frames a second (a background tab) or none (a hidden one) gets a few
 * merged batches, or one when it shows again, instead of applying 60 transactions a second to
 * rows nobody sees. Nothing is dropped: the merged message holds the latest value of every key
 * that changed.
 *
 * ```ts
 * const flow = new PageFlow((m) => port.postMessage(m), 3)
 * flow.rows(batch)       // sent at once while the page has credit, else held and merged
 * flow.ack(2)            // the page got a frame after two messages: held rows go out
 * ```
 */
import type { FeedName, FeedRow, HubToPage, RowsMessage } from '../worker/protocol'

/** Unacknowledged rows messages a page may have: one being painted, one or two arriving meanwhile. */
export const FLOW_WINDOW = 3

interface Held {
  reset: boolean
  rows: Map<string, FeedRow>
  deleted: Set<string>
}

export class PageFlow {
  private credit: number
  private readonly held = new Map<FeedName, Held>()
  /** Rows messages merged into a held one instead of being sent (a measure of what was saved). */
  merged = 0

  constructor(
    private readonly post: (m: HubToPage) => void,
    private readonly window = FLOW_WINDOW,
    private readonly now: () => number = () => performance.timeOrigin + performance.now(),
  ) {
    this.credit = window
  }

  /** Messages the page may still get before it acknowledges. */
  get credits(): number {
    return this.credit
  }

  /** Feeds with rows held for the page. */
  get heldFeeds(): number {
    return this.held.size
  }

  /** Sends `m` now if the page has credit and nothing of its feed is held; else merges it. */
  rows(m: RowsMessage): void {
    const h = this.held.get(m.feed)
    if (!h && this.credit > 0) {
      this.credit--
      this.post(m)
      return
    }
    this.merged++
    if (!h || m.reset) {
      this.held.set(m.feed, {
        reset: m.reset,
        rows: new Map(m.rows.map((r) => [r.key, r])),
        deleted: new Set(m.deleted),
      })
      return
    }
    for (const k of m.deleted) {
      h.rows.delete(k)
      h.deleted.add(k)
    }
    for (const r of m.rows) {
      h.deleted.delete(r.key)
      h.rows.set(r.key, r)
    }
  }

  /** The page unsubscribed `feed`: what is held of it is not sent (a later subscribe starts
   * from the hub's last-value cache). */
  drop(feed: FeedName): void {
    this.held.delete(feed)
  }

  /** The page got a frame after `n` rows messages: credit comes back, held rows go out. */
  ack(n: number): void {
    if (!(n > 0)) return
    this.credit = Math.min(this.window, this.credit + Math.floor(n))
    for (const [feed, h] of this.held) {
      if (this.credit <= 0) break
      this.held.delete(feed)
      this.credit--
      this.post({ type: 'rows', feed, reset: h.reset, rows: [...h.rows.values()], deleted: [...h.deleted], sentAt: this.now() })
    }
  }
}
