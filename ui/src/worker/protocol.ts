/** Messages between a page (tab) and the feed hub (the SharedWorker, or the leader tab of the
 * Web Locks fallback) over a MessagePort or a BroadcastChannel. */
import type { LatencySummary, SparseCounts } from '../feed/histogram'

/** The live feeds a page can subscribe to (see `src/feed/feeds.ts`). */
export type FeedName = 'ticks' | 'contracts' | 'cells' | 'nodes' | 'analysis'

export type PageToHub =
  | { type: 'hello'; url: string; token: string }
  | { type: 'sub'; feed: FeedName }
  | { type: 'unsub'; feed: FeedName }
  /** Ask for a fresh snapshot of every group of an md feed (e.g. after the page missed rows). */
  | { type: 'resync'; feed: FeedName }
  /** The page got an animation frame after `n` rows messages (flow control: `src/feed/flow.ts`). */
  | { type: 'ack'; n: number }
  /** The page's tick → paint latencies and animation-frame intervals since its last report (1 ms
   * buckets: `src/feed/histogram.ts`). */
  | { type: 'latency'; counts: SparseCounts; frames?: SparseCounts }
  | { type: 'bye' }

export type ConnState = 'connecting' | 'connected' | 'reconnecting' | 'unauthorized'

/** One row of a keyed feed: plain values only (structured-clone friendly). */
export interface FeedRow {
  key: string
  [field: string]: string | number | boolean
}

/** A raw message of a non-md feed (discovery heartbeats, analysis tables). */
export interface RawMessage {
  subject: string
  payload: Uint8Array
}

export interface HubStatus {
  type: 'status'
  state: ConnState
  attempt: number
  /** The gateway's degradation level for this connection (0 = normal … 3 = paused). */
  level: number
  /** WebSockets this hub has opened so far (1 unless it reconnected). */
  sockets: number
  /** Pages attached to this hub. */
  ports: number
  /** `shared-worker` or `web-locks` (leader tab + BroadcastChannel). */
  mode: 'shared-worker' | 'web-locks'
  /** Deltas applied / snapshot requests made because of gaps, per md feed. */
  applied: number
  resyncs: number
}

/** The browser's end-to-end figures, sent by the hub to every page once a second (the system view). */
export interface HubStats {
  type: 'stats'
  /** Bytes and frames received over the one WebSocket since the hub started. */
  bytesIn: number
  framesIn: number
  /** The latency figures cover the last `windowS` seconds. */
  windowS: number
  /** Source time → the hub received the frame carrying the row (every row the hub delivered). */
  toBrowser: LatencySummary
  /** Source time → the row was painted, as reported by the pages that show live grids. */
  toPaint: LatencySummary
  /** Intervals between animation frames of the pages that get frames steadily. */
  frameIntervals: LatencySummary
  /** Snapshot rebuilds finished (first load, gap, reconnect); the last and the longest, in ms. */
  rebuilds: number
  rebuildLastMs: number | null
  rebuildMaxMs: number | null
  /** Groups waiting for their snapshot right now. */
  rebuilding: number
}

export type HubToPage =
  | HubStatus
  | HubStats
  /** Changed rows of a keyed feed since the previous flush (latest per key); `reset`: replace all. */
  | { type: 'rows'; feed: FeedName; reset: boolean; rows: FeedRow[]; deleted: string[]; sentAt: number }
  | { type: 'raw'; feed: FeedName; messages: RawMessage[] }
  | { type: 'error'; message: string }

/** A `rows` message (the keyed feeds' batches and snapshots). */
export type RowsMessage = Extract<HubToPage, { type: 'rows' }>
