/** Messages between a page (tab) and the feed hub (the SharedWorker, or the leader tab of the
 * Web Locks fallback) over a MessagePort or a BroadcastChannel. */

/** The live feeds a page can subscribe to (see `src/feed/feeds.ts`). */
export type FeedName = 'ticks' | 'cells' | 'nodes' | 'analysis'

export type PageToHub =
  | { type: 'hello'; url: string; token: string }
  | { type: 'sub'; feed: FeedName }
  | { type: 'unsub'; feed: FeedName }
  /** Ask for a fresh snapshot of every group of an md feed (e.g. after the page missed rows). */
  | { type: 'resync'; feed: FeedName }
  /** The page got an animation frame after `n` rows messages (flow control: `src/feed/flow.ts`). */
  | { type: 'ack'; n: number }
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

export type HubToPage =
  | HubStatus
  /** Changed rows of a keyed feed since the previous flush (latest per key); `reset`: replace all. */
  | { type: 'rows'; feed: FeedName; reset: boolean; rows: FeedRow[]; deleted: string[]; sentAt: number }
  | { type: 'raw'; feed: FeedName; messages: RawMessage[] }
  | { type: 'error'; message: string }

/** A `rows` message (the keyed feeds' batches and snapshots). */
export type RowsMessage = Extract<HubToPage, { type: 'rows' }>
