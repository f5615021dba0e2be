/** The client side of the aggregator's deltas and snapshots, like `langtian_core::aggregate::Replica`:
 * start from a snapshot, apply the deltas that follow, notice a gap (then ask for the snapshot). */

/** What a delta or snapshot carries, independent of the record type. */
export interface DeltaLike<R> {
  shard: number
  version: bigint
  baseVersion: bigint
  records: R[]
}

export interface SnapshotLike<R> {
  version: bigint
  records: R[]
  shardVersions: bigint[]
}

export type Applied = { kind: 'applied' } | { kind: 'stale' } | { kind: 'gap'; shard: number; have: bigint; base: bigint }

export class Replica<R> {
  private readonly records = new Map<string, R>()
  private readonly shardVersions: bigint[]
  readonly snapshotVersion: bigint

  constructor(
    snapshot: SnapshotLike<R>,
    private readonly keyOf: (r: R) => string,
  ) {
    for (const r of snapshot.records) this.records.set(keyOf(r), r)
    this.shardVersions = [...snapshot.shardVersions]
    this.snapshotVersion = snapshot.version
  }

  apply(d: DeltaLike<R>): Applied {
    const have = this.shardVersions[d.shard]
    if (have === undefined) return { kind: 'gap', shard: d.shard, have: 0n, base: d.baseVersion }
    if (d.version <= have) return { kind: 'stale' }
    if (d.baseVersion > have) return { kind: 'gap', shard: d.shard, have, base: d.baseVersion }
    for (const r of d.records) this.records.set(this.keyOf(r), r)
    this.shardVersions[d.shard] = d.version
    return { kind: 'applied' }
  }

  get(key: string): R | undefined {
    return this.records.get(key)
  }

  get size(): number {
    return this.records.size
  }

  /** Every record, by key. */
  all(): R[] {
    return [...this.records.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r)
  }

  versions(): readonly bigint[] {
    return this.shardVersions
  }
}
