import { describe, expect, it } from 'vitest'
import { create, toBinary } from '@bufbuild/protobuf'
import { DeltaSchema, SnapshotSchema, TickSchema, type Tick } from '../gen/langtian/md/v1/md_pb'
import { HISTOGRAM_MAX_MS, LatencyHistogram, RecentHistogram } from './histogram'
import { tickCodec } from './feeds'
import { MdFeed } from './mdfeed'

describe('latency histogram', () => {
  it('gives exact percentiles to the millisecond (nearest rank)', () => {
    const h = new LatencyHistogram()
    for (let ms = 1; ms <= 100; ms++) h.add(ms + 0.4)
    expect(h.summary()).toEqual({ n: 100, p50: 50, p95: 95, p99: 99 })
    expect(new LatencyHistogram().summary()).toEqual({ n: 0, p50: null, p95: null, p99: null })
  })

  it('clamps skew below 0 and long waits into the overflow bucket; ignores NaN', () => {
    const h = new LatencyHistogram()
    h.add(-3)
    h.add(Number.NaN)
    h.add(5_000)
    expect(h.count).toBe(2)
    expect(h.toSparse()).toEqual([
      [0, 1],
      [HISTOGRAM_MAX_MS, 1],
    ])
    expect(h.percentile(99)).toBe(HISTOGRAM_MAX_MS)
  })

  it('merges another histogram exactly and skips malformed pairs', () => {
    const a = new LatencyHistogram()
    for (const ms of [3, 3, 7]) a.add(ms)
    const b = new LatencyHistogram()
    b.addCounts(a.toSparse())
    b.addCounts([
      [-1, 1],
      [HISTOGRAM_MAX_MS + 1, 1],
      [4, -2],
      [4.5, 1],
      [5, 0.5],
      [9, 1],
    ])
    expect(b.toSparse()).toEqual([
      [3, 2],
      [7, 1],
      [9, 1],
    ])
    expect(b.count).toBe(4)
  })

  it('a recent histogram forgets seconds that left its window', () => {
    let now = 0
    const h = new RecentHistogram(10, () => now)
    h.add(100)
    now = 5_000
    h.addCounts([[20, 3]])
    expect(h.summary()).toEqual({ n: 4, p50: 20, p95: 100, p99: 100 })
    now = 9_999
    expect(h.summary().n).toBe(4)
    // Second 0 is out of the window [1 s, 10 s]; its slot is reused by second 10.
    now = 10_000
    expect(h.summary()).toEqual({ n: 3, p50: 20, p95: 20, p99: 20 })
    h.add(1)
    now = 15_000
    expect(h.summary()).toEqual({ n: 1, p50: 1, p95: 1, p99: 1 })
  })
})

const tick = (symbol: string, seq: number): Tick => create(TickSchema, { venue: 'shfe', symbol, seq: BigInt(seq), last: seq })
const delta = (version: number, base: number, ticks: Tick[]) =>
  toBinary(DeltaSchema, create(DeltaSchema, { group: 'shfe', shard: 0, version: BigInt(version), baseVersion: BigInt(base), ticks }))
const snapshot = (version: number, ticks: Tick[]) =>
  toBinary(SnapshotSchema, create(SnapshotSchema, { group: 'shfe', version: 1n, ticks, shardVersions: [BigInt(version)] }))

describe('snapshot rebuild timing', () => {
  it('times each rebuild from its first request to the snapshot applied: first load, gap, reconnect', () => {
    let now = 1_000
    const asked: string[] = []
    const feed = new MdFeed(tickCodec, (k) => asked.push(k), () => now)
    // First load: an unknown group asks for its snapshot; a second delta meanwhile does not ask again.
    feed.onDelta(delta(5, 4, [tick('a', 5)]))
    now += 40
    feed.onDelta(delta(6, 5, [tick('a', 6)]))
    expect(asked).toHaveLength(1)
    expect(feed.rebuilding).toBe(1)
    now += 80
    feed.onSnapshot(snapshot(4, [tick('a', 4)]))
    expect([feed.rebuilds, feed.rebuildLastMs, feed.rebuildMaxMs, feed.rebuilding]).toEqual([1, 120, 120, 0])
    // A gap: 30 ms until the snapshot.
    feed.onDelta(delta(9, 8, [tick('a', 9)]))
    expect(feed.rebuilding).toBe(1)
    now += 30
    feed.onSnapshot(snapshot(9, [tick('a', 9)]))
    expect([feed.rebuilds, feed.rebuildLastMs, feed.rebuildMaxMs]).toEqual([2, 30, 120])
    // A reconnect re-reads every group.
    feed.resyncAll()
    now += 250
    feed.onSnapshot(snapshot(9, [tick('a', 9)]))
    expect([feed.rebuilds, feed.rebuildLastMs, feed.rebuildMaxMs, feed.rebuilding]).toEqual([3, 250, 250, 0])
    // A snapshot nobody waited for (an answer to a repeated request) is not a rebuild.
    feed.onSnapshot(snapshot(9, [tick('a', 9)]))
    expect(feed.rebuilds).toBe(3)
  })
})
