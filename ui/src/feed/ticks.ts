/** Market ticks for the views: one Replica per venue group, rebuilt from snapshots on gaps. */
import { fromBinary } from '@bufbuild/protobuf'
import { DeltaSchema, SnapshotSchema, type Tick } from '../gen/langtian/md/v1/md_pb'
import { Replica, type DeltaLike } from './replica'

const keyOf = (t: Tick) => `${t.venue}.${t.symbol}`

export class TickStore {
  private readonly groups = new Map<string, Replica<Tick>>()
  private readonly pending = new Map<string, DeltaLike<Tick>[]>()
  /** Snapshot requests made because of a gap or an unknown group. */
  resyncs = 0
  /** Deltas applied. */
  applied = 0

  constructor(private readonly requestSnapshot: (key: string) => void) {}

  static snapshotKey(group: string): string {
    return `xy.md.snapshot.${group}`
  }

  onDelta(payload: Uint8Array): void {
    const d = fromBinary(DeltaSchema, payload)
    const delta: DeltaLike<Tick> = { shard: d.shard, version: d.version, baseVersion: d.baseVersion, records: d.ticks }
    const replica = this.groups.get(d.group)
    if (!replica) {
      this.buffer(d.group, delta)
      return
    }
    const r = replica.apply(delta)
    if (r.kind === 'applied') this.applied++
    if (r.kind === 'gap') {
      this.groups.delete(d.group)
      this.buffer(d.group, delta)
    }
  }

  onSnapshot(payload: Uint8Array): void {
    const s = fromBinary(SnapshotSchema, payload)
    const replica = new Replica<Tick>({ version: s.version, records: s.ticks, shardVersions: s.shardVersions }, keyOf)
    for (const d of this.pending.get(s.group) ?? []) {
      if (replica.apply(d).kind === 'applied') this.applied++
    }
    this.pending.delete(s.group)
    this.groups.set(s.group, replica)
  }

  /** After a reconnect: every group re-reads its snapshot. */
  resyncAll(): void {
    for (const g of this.groups.keys()) {
      this.resyncs++
      this.requestSnapshot(TickStore.snapshotKey(g))
    }
  }

  private buffer(group: string, d: DeltaLike<Tick>): void {
    const list = this.pending.get(group)
    if (list) {
      list.push(d)
      return
    }
    this.pending.set(group, [d])
    this.resyncs++
    this.requestSnapshot(TickStore.snapshotKey(group))
  }

  rows(): Tick[] {
    return [...this.groups.values()].flatMap((r) => r.all())
  }
}
