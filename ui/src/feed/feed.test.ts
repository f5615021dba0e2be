import { describe, expect, it, vi } from 'vitest'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { backoffDelay } from './backoff'
import { Batcher, FlushTimer } from './batcher'
import { RefCounts } from './refcount'
import { Replica } from './replica'
import { ContractDeltaSchema, ContractSchema, DeltaSchema, TickSchema, type Tick } from '../gen/langtian/md/v1/md_pb'
import { contractCodec, tickCodec } from './feeds'
import { ClientFrameSchema } from '../gen/langtian/gateway/v1/gateway_pb'

const tick = (symbol: string, seq: number): Tick => create(TickSchema, { venue: 'shfe', symbol, seq: BigInt(seq) })
const keyOf = (t: Tick) => `${t.venue}.${t.symbol}`

describe('backoff', () => {
  it('doubles from the base up to the cap, with jitter inside [1-j, 1] of the delay', () => {
    const noJitter = { baseMs: 250, capMs: 10_000, jitter: 0 }
    expect([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, noJitter))).toEqual([250, 500, 1000, 2000, 4000, 8000, 10_000])
    expect(backoffDelay(50, noJitter)).toBe(10_000)
    const half = { baseMs: 1000, capMs: 10_000, jitter: 0.5 }
    expect(backoffDelay(0, half, () => 0)).toBe(500)
    expect(backoffDelay(0, half, () => 1)).toBe(1000)
  })
})

describe('batching and de-duplication', () => {
  it('keeps the latest value per key in first-seen order', () => {
    const b = new Batcher<number>()
    b.add('a', 1)
    b.add('b', 2)
    b.add('a', 3)
    expect(b.size).toBe(2)
    expect(b.flush()).toEqual([
      ['a', 3],
      ['b', 2],
    ])
    expect(b.deduplicated).toBe(1)
    expect(b.flush()).toEqual([])
  })

  it('flushes at most once per interval: at once after a quiet spell, else at the interval', () => {
    vi.useFakeTimers()
    const flush = vi.fn()
    const t = new FlushTimer(16, flush, () => Date.now())
    t.poke() // quiet before: flushed at once
    expect(flush).toHaveBeenCalledTimes(1)
    vi.advanceTimersByTime(5)
    t.poke()
    t.poke() // within the interval: one flush, 16 ms after the previous one
    vi.advanceTimersByTime(10)
    expect(flush).toHaveBeenCalledTimes(1)
    vi.advanceTimersByTime(1)
    expect(flush).toHaveBeenCalledTimes(2)
    vi.advanceTimersByTime(100)
    expect(flush).toHaveBeenCalledTimes(2)
    t.poke() // quiet again
    expect(flush).toHaveBeenCalledTimes(3)
    vi.useRealTimers()
  })

  it('passes input that itself comes about every interval without waiting (no phase drift)', () => {
    vi.useFakeTimers()
    const flush = vi.fn()
    const t = new FlushTimer(16, flush, () => Date.now())
    // Batches from upstream about every 16 ms (jitter around the same interval): each is flushed on
    // arrival. Anchored to a timer instead, every one would wait, more and more.
    // A batch 9–12 ms after the one before (that one came late) passes too.
    for (const gap of [15, 16, 15, 15, 16, 9, 12, 15]) {
      vi.advanceTimersByTime(gap)
      const before = flush.mock.calls.length
      t.poke()
      expect(flush.mock.calls.length).toBe(before + 1)
    }
    // Still capped: a second batch 7 ms after a flush (less than half the interval) waits for
    // the interval.
    vi.advanceTimersByTime(7)
    t.poke()
    expect(flush).toHaveBeenCalledTimes(8)
    vi.advanceTimersByTime(8)
    expect(flush).toHaveBeenCalledTimes(8)
    vi.advanceTimersByTime(1)
    expect(flush).toHaveBeenCalledTimes(9)
    vi.useRealTimers()
  })
})

describe('per-topic reference counts', () => {
  it('subscribes upstream once and unsubscribes when the last port leaves', () => {
    const r = new RefCounts<string>()
    expect(r.acquire('xy.md.tick.>', 'tab1')).toBe(true)
    expect(r.acquire('xy.md.tick.>', 'tab2')).toBe(false)
    expect(r.acquire('lt.md.delta.>', 'tab2')).toBe(true)
    expect(r.release('xy.md.tick.>', 'tab1')).toBe(false)
    expect(r.releaseAll('tab2').sort()).toEqual(['lt.md.delta.>', 'xy.md.tick.>'])
    expect(r.topics()).toEqual([])
  })
})

describe('snapshot + deltas with gap detection', () => {
  it('applies the chain, skips what the snapshot holds, and reports a gap', () => {
    const r = new Replica({ version: 1n, records: [tick('a', 1)], shardVersions: [7n, 3n] }, keyOf)
    expect(r.apply({ shard: 0, version: 7n, baseVersion: 6n, records: [tick('a', 0)] }).kind).toBe('stale')
    expect(r.apply({ shard: 0, version: 8n, baseVersion: 7n, records: [tick('a', 2), tick('b', 1)] }).kind).toBe('applied')
    // A gateway-merged delta (base below the shard's version) still applies.
    expect(r.apply({ shard: 1, version: 6n, baseVersion: 2n, records: [tick('c', 4)] }).kind).toBe('applied')
    expect(r.get('shfe.a')?.seq).toBe(2n)
    expect(r.size).toBe(3)
    expect(r.apply({ shard: 0, version: 10n, baseVersion: 9n, records: [] })).toEqual({ kind: 'gap', shard: 0, have: 8n, base: 9n })
    expect(r.apply({ shard: 9, version: 1n, baseVersion: 0n, records: [] }).kind).toBe('gap')
    expect(r.versions()).toEqual([8n, 6n])
  })

  it('decodes the generated wire types (the same schema as the gateway)', () => {
    const d = create(DeltaSchema, { group: 'shfe', shard: 2, version: 5n, baseVersion: 4n, ticks: [tick('a', 9)] })
    const back = fromBinary(DeltaSchema, toBinary(DeltaSchema, d))
    expect(back.ticks[0]?.seq).toBe(9n)
    const sub = create(ClientFrameSchema, { kind: { case: 'subscribe', value: { id: 1, subject: 'xy.md.tick.>', priority: false } } })
    const bytes = toBinary(ClientFrameSchema, sub)
    expect(fromBinary(ClientFrameSchema, bytes).kind.case).toBe('subscribe')
  })
})

describe('contracts', () => {
  it('decode into rows keyed like ticks, under snapshot keys of their own', () => {
    const c = create(ContractSchema, { venue: 'shfe', symbol: 'rb2501', name: 'rebar 2501', tickSize: 1, multiplier: 10, currency: 'CNY', expiry: '2025-01-15', seq: 2n })
    const bytes = toBinary(ContractDeltaSchema, create(ContractDeltaSchema, { group: 'shfe', shard: 1, version: 3n, baseVersion: 2n, contracts: [c] }))
    const { group, delta } = contractCodec.decodeDelta(bytes)
    expect([group, delta.shard, delta.version, delta.baseVersion]).toEqual(['shfe', 1, 3n, 2n])
    const row = contractCodec.toRow(delta.records[0]!)
    expect(row).toMatchObject({ key: 'shfe.rb2501', name: 'rebar 2501', multiplier: 10, expiry: '2025-01-15', seq: 2 })
    // The market grid joins contract rows to tick rows by this key.
    expect(row.key).toBe(tickCodec.keyOf(tick('rb2501', 1)))
    expect(contractCodec.snapshotKey('shfe')).toBe('xy.md.contracts.shfe')
    expect(contractCodec.groupOfKey('xy.md.contracts.shfe')).toBe('shfe')
    // A tick snapshot key is not a contract key, and the reverse.
    expect(contractCodec.groupOfKey('xy.md.snapshot.shfe')).toBeUndefined()
    expect(tickCodec.groupOfKey('xy.md.contracts.shfe')).toBeUndefined()
  })
})
