/**
 * The page's state: one TanStack DB collection per feed, fed by the hub — one sync transaction per
 * 16 ms batch, a snapshot as truncate + inserts in ONE transaction (no empty flash). The collection
 * is read-only (no optimistic mutations, which would hold back sync commits).
 *
 * Ticking grids read it two ways: the table's row order from `rows()` a few times a second, and
 * each *visible* row its live value through `subscribeKey` (cost ∝ visible ∩ changed rows),
 * notified once per animation frame in one React commit (none while the tab gets no frames).
 * The feed is subscribed only while a view uses it (`acquire`/`release`); the rows stay as last
 * known values meanwhile and the hub's cache refreshes them at once on the next `acquire`.
 */
import { createCollection, type Collection } from '@tanstack/db'
import { flushSync } from 'react-dom'
import type { FeedConnection } from '../feed/connection'
import type { FeedName, FeedRow, RowsMessage } from '../worker/protocol'
import { duringFrame, perf } from '../perf'
import { FrameCoalescer } from './frame'


export class LiveTable {
  readonly collection: Collection<FeedRow, string>
  private readonly values = new Map<string, FeedRow>()
  private readonly listeners = new Map<string, Set<() => void>>()
  private readonly changeListeners = new Set<() => void>()
  /** Rows on screen hear of their changes once per animation frame, all in one React commit. */
  private readonly frame = new FrameCoalescer((keys) =>
    duringFrame(() =>
      flushSync(() => {
        for (const k of keys) {
          const ls = this.listeners.get(k)
          if (ls) for (const l of ls) l()
        }
      }),
    ),
  )
  private sink: ((m: RowsMessage) => void) | undefined
  private early: RowsMessage[] = []
  private users = 0
  private unsubscribe: (() => void) | undefined
  /** Bumped on every applied batch (the grid re-reads order when it moved). */
  version = 0
  /** Batches applied (non-reset) and snapshots (reset) applied. */
  batches = 0
  resets = 0

  constructor(
    readonly feed: FeedName,
    private readonly conn: FeedConnection,
  ) {
    conn.onMessage((m) => {
      if (m.type !== 'rows' || m.feed !== feed) return
      if (this.sink) this.sink(m)
      else this.early.push(m)
    })
    this.collection = createCollection<FeedRow, string>({
      id: `live-${feed}`,
      getKey: (r) => r.key,
      startSync: true,
      gcTime: 0,
      sync: {
        rowUpdateMode: 'full',
        sync: ({ begin, write, commit, truncate, markReady, collection }) => {
          this.sink = (m) => {
            begin()
            if (m.reset) {
              truncate()
              for (const r of m.rows) write({ type: 'insert', value: r })
            } else {
              for (const r of m.rows) write({ type: collection.has(r.key) ? 'update' : 'insert', value: r })
            }
            for (const k of m.deleted) if (collection.has(k)) write({ type: 'delete', key: k })
            commit()
            markReady()
          }
          for (const m of this.early.splice(0)) this.sink(m)
          return () => {
            this.sink = undefined
          }
        },
      },
    })
    this.collection.subscribeChanges((changes) => {
      for (const c of changes) {
        const key = String(c.key)
        if (c.type === 'delete') this.values.delete(key)
        else this.values.set(key, c.value)
        if (this.listeners.has(key)) this.frame.add(key)
      }
      this.version++
      for (const l of this.changeListeners) l()
    })
    conn.onMessage((m) => {
      if (m.type === 'rows' && m.feed === feed) {
        if (m.reset) this.resets++
        else {
          this.batches++
          const now = performance.timeOrigin + performance.now()
          for (const r of m.rows) {
            if (typeof r.tsMs !== 'number' || !(r.tsMs > 0)) continue
            if (typeof r.gwMs === 'number') perf.gateway.push(r.gwMs - r.tsMs)
            if (typeof r.rxMs === 'number') perf.hubRx.push(r.rxMs - r.tsMs)
            perf.arrival.push(m.sentAt - r.tsMs)
            perf.received.push(now - r.tsMs)
          }
        }
      }
    })
  }

  /** A view starts using the feed (subscribes on the first user). */
  acquire(): void {
    if (this.users++ === 0) this.unsubscribe = this.conn.subscribe(this.feed)
  }

  /** A view stops using the feed (unsubscribes after the last user). */
  release(): void {
    if (--this.users === 0) {
      this.unsubscribe?.()
      this.unsubscribe = undefined
    }
  }

  /** The current value of one row (a stable object until that row changes). */
  get(key: string): FeedRow | undefined {
    return this.values.get(key)
  }

  /** Every row (for the table's order and counts). */
  rows(): FeedRow[] {
    return [...this.values.values()]
  }

  get size(): number {
    return this.values.size
  }

  /** `useSyncExternalStore` subscription for one row. */
  subscribeKey(key: string, listener: () => void): () => void {
    let ls = this.listeners.get(key)
    if (!ls) this.listeners.set(key, (ls = new Set()))
    ls.add(listener)
    return () => {
      ls.delete(listener)
      if (ls.size === 0) this.listeners.delete(key)
    }
  }

  /** Called after every applied batch. */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener)
    return () => this.changeListeners.delete(listener)
  }
}
