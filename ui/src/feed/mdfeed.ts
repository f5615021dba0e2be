/** One market-data style feed held by the hub: a Replica per group, rebuilt from a snapshot on an
 * unknown group or a gap, with the changed rows kept (latest per key) until the next flush. */
import { Replica, type DeltaLike, type SnapshotLike } from './replica'
import type { FeedName, FeedRow } from '../worker/protocol'

/** How a feed's wire messages map to groups, records and rows. */
export interface MdCodec<R> {
  /** The gateway subscription carrying the deltas. */
  topic: string
  decodeDelta(payload: Uint8Array): { group: string; delta: DeltaLike<R> }
  decodeSnapshot(payload: Uint8Array): { group: string; snapshot: SnapshotLike<R> }
  /** The snapshot key of a group (KV `md_snapshots` / the aggregator's snapshot request). */
  snapshotKey(group: string): string
  /** The group a snapshot key names (undefined: not this feed's key). */
  groupOfKey(key: string): string | undefined
  keyOf(r: R): string
  toRow(r: R): FeedRow
  /** Reference data whose groups are another feed's (contracts: the tick feed's venues). Such a
   * feed has no steady deltas to reveal its groups, so the hub asks for the snapshot of each
   * group the other feed has as soon as both are subscribed. */
  followsGroupsOf?: FeedName
}

export interface FlushOut {
  reset: boolean
  rows: FeedRow[]
}

/** When the frame carrying a delta left the gateway and reached the hub (ms since the epoch):
 * copied onto the delta's rows as `gwMs`/`rxMs`, so the page can split tick → paint by stage. */
export interface Arrival {
  gwMs: number
  rxMs: number
}

export class MdFeed<R> {
  private readonly groups = new Map<string, Replica<R>>()
  /** Deltas waiting for the snapshot of a group that is new or re-reading after a gap. */
  private readonly pending = new Map<string, DeltaLike<R>[]>()
  private readonly dirty = new Map<string, R>()
  private readonly arrivals = new Map<string, Arrival>()
  private reset = false
  /** Deltas applied. */
  applied = 0
  /** Snapshot requests made because of a gap or an unknown group. */
  resyncs = 0
  /** When each group waiting for a snapshot asked for it (ms, `now`). */
  private readonly rebuildSince = new Map<string, number>()
  /** Snapshot rebuilds finished, and how long the last and the longest took (request → applied). */
  rebuilds = 0
  rebuildLastMs: number | null = null
  /** When the last rebuild finished (`now`), to tell which feed's was last. */
  rebuildLastAt = -Infinity
  rebuildMaxMs: number | null = null
  /** Durations of the rebuilds since the last `takeRebuildDurations` (for the gateway's metrics;
   * at most 1,000 kept). */
  private rebuildDurations: number[] = []

  constructor(
    readonly codec: MdCodec<R>,
    /** `optional`: the group may have no snapshot at all (a NOT_FOUND answer is not retried). */
    private readonly requestSnapshot: (key: string, optional?: boolean) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A delta from the gateway. Throws on an undecodable payload (the hub counts it). */
  onDelta(payload: Uint8Array, arrival?: Arrival): void {
    const { group, delta } = this.codec.decodeDelta(payload)
    const replica = this.groups.get(group)
    if (!replica || this.pending.has(group)) {
      this.buffer(group, delta)
      return
    }
    const r = replica.apply(delta)
    if (r.kind === 'applied') {
      this.applied++
      for (const rec of delta.records) {
        const key = this.codec.keyOf(rec)
        this.dirty.set(key, rec)
        if (arrival) this.arrivals.set(key, arrival)
      }
    } else if (r.kind === 'gap') {
      // The old rows stay readable (last known values) until the snapshot replaces them.
      this.buffer(group, delta)
    }
  }

  /** A snapshot (answer to a request): the group restarts from it; buffered deltas go on top. */
  onSnapshot(payload: Uint8Array): void {
    const { group, snapshot } = this.codec.decodeSnapshot(payload)
    const replica = new Replica<R>(snapshot, (r) => this.codec.keyOf(r))
    for (const d of this.pending.get(group) ?? []) {
      if (replica.apply(d).kind === 'applied') this.applied++
    }
    this.pending.delete(group)
    this.groups.set(group, replica)
    this.reset = true
    const since = this.rebuildSince.get(group)
    if (since !== undefined) {
      this.rebuildSince.delete(group)
      const at = this.now()
      const ms = at - since
      this.rebuilds++
      this.rebuildLastMs = ms
      this.rebuildLastAt = at
      if (this.rebuildDurations.length < 1000) this.rebuildDurations.push(ms)
      this.rebuildMaxMs = Math.max(this.rebuildMaxMs ?? 0, ms)
    }
  }

  /** The rebuild durations (ms) since the previous call. */
  takeRebuildDurations(): number[] {
    const out = this.rebuildDurations
    this.rebuildDurations = []
    return out
  }

  /** Groups waiting for their snapshot. */
  get rebuilding(): number {
    return this.rebuildSince.size
  }

  /** The groups this feed has or is waiting for. */
  groupNames(): string[] {
    return [...new Set([...this.groups.keys(), ...this.pending.keys()])]
  }

  /** Asks for the snapshot of `group` unless it is known or asked for already (a feed that
   * follows another's groups); true when it asked. */
  ensureGroup(group: string): boolean {
    if (this.groups.has(group) || this.pending.has(group)) return false
    this.pending.set(group, [])
    this.markRebuilding(group)
    this.requestSnapshot(this.codec.snapshotKey(group), true)
    return true
  }

  /** An optional snapshot does not exist: the group is not waited for any more; a delta that
   * came meanwhile asks again for real. */
  noSnapshot(key: string): void {
    const group = this.codec.groupOfKey(key)
    if (group === undefined || this.groups.has(group)) return
    const waiting = this.pending.get(group)
    this.pending.delete(group)
    this.rebuildSince.delete(group)
    for (const d of waiting ?? []) this.buffer(group, d)
  }

  /** After a reconnect: every group re-reads its snapshot (deltas were missed meanwhile). */
  resyncAll(): void {
    // Groups still waiting too: their request was lost with the socket.
    for (const g of this.groupNames()) {
      this.resyncs++
      this.markRebuilding(g)
      // Waiting with no delta buffered: asked for by `ensureGroup`, may have no snapshot.
      const optional = !this.groups.has(g) && (this.pending.get(g)?.length ?? 0) === 0
      this.requestSnapshot(this.codec.snapshotKey(g), optional)
    }
  }

  /** Changed rows since the last call (everything after a snapshot); undefined when nothing changed. */
  flush(): FlushOut | undefined {
    if (this.reset) {
      this.reset = false
      this.dirty.clear()
      this.arrivals.clear()
      return { reset: true, rows: this.rows() }
    }
    if (this.dirty.size === 0) return undefined
    const rows: FeedRow[] = []
    for (const [key, r] of this.dirty) {
      const row = this.codec.toRow(r)
      const a = this.arrivals.get(key)
      if (a) {
        row.gwMs = a.gwMs
        row.rxMs = a.rxMs
      }
      rows.push(row)
    }
    this.dirty.clear()
    this.arrivals.clear()
    return { reset: false, rows }
  }

  /** Every row of every group (the last-value cache a new page starts from). */
  rows(): FeedRow[] {
    const out: FeedRow[] = []
    for (const g of this.groups.values()) for (const r of g.all()) out.push(this.codec.toRow(r))
    return out
  }

  get hasData(): boolean {
    return this.groups.size > 0
  }

  private buffer(group: string, d: DeltaLike<R>): void {
    const list = this.pending.get(group)
    if (list) {
      // Bounded: a group whose snapshot never comes keeps the newest 500 deltas.
      if (list.length >= 500) list.shift()
      list.push(d)
      return
    }
    this.pending.set(group, [d])
    this.resyncs++
    this.markRebuilding(group)
    this.requestSnapshot(this.codec.snapshotKey(group))
  }

  /** A rebuild's clock starts at its first request (asking again does not restart it). */
  private markRebuilding(group: string): void {
    if (!this.rebuildSince.has(group)) this.rebuildSince.set(group, this.now())
  }
}
