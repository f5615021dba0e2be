import { describe, expect, it, vi } from 'vitest'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { ClientFrameSchema, ErrorCode, ServerFrameSchema, type ClientFrame } from '../gen/langtian/gateway/v1/gateway_pb'
import { ContractSchema, ContractSnapshotSchema, DeltaSchema, SnapshotSchema, TickSchema, type Tick } from '../gen/langtian/md/v1/md_pb'
import { FeedHub, type HubPort } from './hub'
import type { HubToPage } from '../worker/protocol'

/** A stand-in for the browser's WebSocket with the surface the hub uses (a unit test of the
 * hub's own logic; the real socket is exercised by the browser tests in e2e/). */
class FakeSocket {
  readyState = 0
  binaryType = 'blob'
  sent: ClientFrame[] = []
  onopen: (() => void) | null = null
  onmessage: ((ev: { data: ArrayBuffer }) => void) | null = null
  onclose: ((ev: { code: number }) => void) | null = null
  constructor(readonly url: string) {}
  send(bytes: Uint8Array) {
    this.sent.push(fromBinary(ClientFrameSchema, bytes))
  }
  close() {}
  open() {
    this.readyState = 1
    this.onopen?.()
  }
  drop(code = 1006) {
    this.readyState = 3
    this.onclose?.({ code })
  }
  deliver(frame: Parameters<typeof create<typeof ServerFrameSchema>>[1]) {
    const b = toBinary(ServerFrameSchema, create(ServerFrameSchema, frame))
    this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer })
  }
}

const tick = (symbol: string, seq: number, last = seq): Tick =>
  create(TickSchema, { venue: 'shfe', symbol, seq: BigInt(seq), last, tsExchange: 1_700_000_000_000_000_000n })
const delta = (shard: number, version: number, base: number, ticks: Tick[]) =>
  toBinary(DeltaSchema, create(DeltaSchema, { group: 'shfe', shard, version: BigInt(version), baseVersion: BigInt(base), ticks }))
const snapshot = (ticks: Tick[], shardVersions: number[]) =>
  toBinary(SnapshotSchema, create(SnapshotSchema, { group: 'shfe', version: 1n, ticks, shardVersions: shardVersions.map(BigInt) }))

function setup() {
  vi.useFakeTimers()
  const sockets: FakeSocket[] = []
  const hub = new FeedHub({
    mode: 'shared-worker',
    socket: (url) => {
      const s = new FakeSocket(url)
      sockets.push(s)
      return s as unknown as WebSocket
    },
  })
  const port = (): HubPort & { got: HubToPage[] } => {
    const got: HubToPage[] = []
    return { got, post: (m) => got.push(m) }
  }
  return { hub, sockets, port }
}

const rowsOf = (got: HubToPage[]) => got.filter((m): m is Extract<HubToPage, { type: 'rows' }> => m.type === 'rows')

describe('feed hub', () => {
  it('one socket, one upstream subscription for two tabs, batched de-duplicated rows, gap → snapshot', () => {
    const { hub, sockets, port } = setup()
    const [a, b] = [port(), port()]
    hub.onMessage(a, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    hub.onMessage(b, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    expect(sockets).toHaveLength(1)
    const ws = sockets[0]!
    expect(ws.url).toBe('ws://gw/ws?token=t')
    ws.open()
    hub.onMessage(a, { type: 'sub', feed: 'ticks' })
    hub.onMessage(b, { type: 'sub', feed: 'ticks' })
    const subs = ws.sent.filter((f) => f.kind.case === 'subscribe')
    expect(subs).toHaveLength(1)
    const subId = subs[0]!.kind.case === 'subscribe' ? subs[0]!.kind.value.id : 0

    // The first delta of an unknown group asks for its snapshot; the answer resets the rows.
    ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId, subject: 'xy.md.tick.shfe.0', payload: delta(0, 5, 4, [tick('a', 5)]) }] } } })
    const req = ws.sent.find((f) => f.kind.case === 'getSnapshot')
    expect(req?.kind.case === 'getSnapshot' && req.kind.value.key).toBe('xy.md.snapshot.shfe')
    const requestId = req?.kind.case === 'getSnapshot' ? req.kind.value.requestId : 0
    ws.deliver({ kind: { case: 'snapshot', value: { requestId, key: 'xy.md.snapshot.shfe', payload: snapshot([tick('a', 4), tick('b', 1)], [4]) } } })
    vi.advanceTimersByTime(16)
    const first = rowsOf(a.got).at(-1)!
    expect(first.reset).toBe(true)
    expect(first.rows.map((r) => [r.key, r.seq])).toEqual([
      ['shfe.a', 5],
      ['shfe.b', 1],
    ])

    // Two deltas inside one 16 ms window: one message per tab, the latest row per key.
    // Each row carries when the gateway sent the frame with its latest delta (ns → ms since the
    // epoch) and when the hub received it: the benchmark's stages.
    ws.deliver({ kind: { case: 'batch', value: { ts: 1_700_000_000_001_500_000n, messages: [{ subId, subject: 'xy.md.tick.shfe.0', payload: delta(0, 6, 5, [tick('a', 6)]) }] } } })
    ws.deliver({ kind: { case: 'batch', value: { ts: 1_700_000_000_002_250_000n, messages: [{ subId, subject: 'xy.md.tick.shfe.0', payload: delta(0, 7, 6, [tick('a', 7), tick('b', 2)]) }] } } })
    const before = rowsOf(b.got).length
    vi.advanceTimersByTime(16)
    const batch = rowsOf(b.got).slice(before)
    expect(batch).toHaveLength(1)
    expect(batch[0]!.reset).toBe(false)
    expect(batch[0]!.rows.map((r) => [r.key, r.seq])).toEqual([
      ['shfe.a', 7],
      ['shfe.b', 2],
    ])
    expect(batch[0]!.rows.map((r) => r.gwMs)).toEqual([1_700_000_000_002.25, 1_700_000_000_002.25])
    expect(batch[0]!.rows.every((r) => typeof r.rxMs === 'number' && r.rxMs >= (r.gwMs as number))).toBe(true)

    // A gap (base 9 > have 7) asks for the snapshot again.
    ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId, subject: 'xy.md.tick.shfe.0', payload: delta(0, 10, 9, [tick('a', 10)]) }] } } })
    expect(ws.sent.filter((f) => f.kind.case === 'getSnapshot')).toHaveLength(2)
    expect(hub.status().resyncs).toBe(2)

    // A new tab gets the last values at once, without waiting for the network.
    const c = port()
    hub.onMessage(c, { type: 'sub', feed: 'ticks' })
    expect(rowsOf(c.got)[0]?.rows.map((r) => r.key)).toEqual(['shfe.a', 'shfe.b'])
    expect(ws.sent.filter((f) => f.kind.case === 'subscribe')).toHaveLength(1)

    // The last tab leaving unsubscribes upstream.
    hub.onMessage(a, { type: 'bye' })
    hub.onMessage(b, { type: 'bye' })
    expect(ws.sent.filter((f) => f.kind.case === 'unsubscribe')).toHaveLength(0)
    hub.onMessage(c, { type: 'unsub', feed: 'ticks' })
    expect(ws.sent.filter((f) => f.kind.case === 'unsubscribe')).toHaveLength(1)
    vi.useRealTimers()
  })

  it('flow control: a page that gets no frames is sent a few batches, then the latest rows merged when it acknowledges', () => {
    const { hub, sockets, port } = setup()
    const [front, behind] = [port(), port()]
    for (const p of [front, behind]) hub.onMessage(p, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    const ws = sockets[0]!
    ws.open()
    for (const p of [front, behind]) hub.onMessage(p, { type: 'sub', feed: 'ticks' })
    ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId: 1, subject: 'xy.md.tick.shfe.0', payload: delta(0, 1, 0, [tick('a', 1)]) }] } } })
    const requestId = (() => {
      const r = ws.sent.find((f) => f.kind.case === 'getSnapshot')
      return r?.kind.case === 'getSnapshot' ? r.kind.value.requestId : 0
    })()
    ws.deliver({ kind: { case: 'snapshot', value: { requestId, key: 'xy.md.snapshot.shfe', payload: snapshot([tick('a', 1)], [1]) } } })
    vi.advanceTimersByTime(16)
    hub.onMessage(front, { type: 'ack', n: rowsOf(front.got).length })
    // Ten batches, 16 ms apart: the page that acknowledges after each gets all ten; the one that
    // gets no frames gets what its window allows and nothing more.
    for (let v = 2; v <= 11; v++) {
      ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId: 1, subject: 'xy.md.tick.shfe.0', payload: delta(0, v, v - 1, [tick('a', v), tick(`k${v}`, 1)]) }] } } })
      vi.advanceTimersByTime(16)
      hub.onMessage(front, { type: 'ack', n: 1 })
    }
    expect(rowsOf(front.got)).toHaveLength(11)
    expect(rowsOf(behind.got)).toHaveLength(3)
    expect(hub.mergedForSlowPages).toBe(8)
    // It gets a frame: one message with the latest value of every key it has not seen.
    hub.onMessage(behind, { type: 'ack', n: 3 })
    const caughtUp = rowsOf(behind.got)
    expect(caughtUp).toHaveLength(4)
    const last = caughtUp.at(-1)!
    expect(last.reset).toBe(false)
    expect(last.rows.find((r) => r.key === 'shfe.a')?.seq).toBe(11)
    expect(last.rows.map((r) => r.key).sort()).toEqual(['shfe.a', ...Array.from({ length: 8 }, (_, i) => `shfe.k${i + 4}`)].sort())
    vi.useRealTimers()
  })

  it("end-to-end figures once a second: bytes and frames in, tick → browser, the pages' tick → paint, rebuilds", () => {
    const { hub, sockets, port } = setup()
    const a = port()
    hub.onMessage(a, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    const ws = sockets[0]!
    let bytes = 0
    const deliver = (frame: Parameters<FakeSocket['deliver']>[0]) => {
      bytes += toBinary(ServerFrameSchema, create(ServerFrameSchema, frame)).byteLength
      ws.deliver(frame)
    }
    ws.open()
    hub.onMessage(a, { type: 'sub', feed: 'ticks' })
    deliver({ kind: { case: 'batch', value: { messages: [{ subId: 1, subject: 'xy.md.tick.shfe.0', payload: delta(0, 1, 0, [tick('a', 1)]) }] } } })
    const requestId = (() => {
      const r = ws.sent.find((f) => f.kind.case === 'getSnapshot')
      return r?.kind.case === 'getSnapshot' ? r.kind.value.requestId : 0
    })()
    expect(hub.stats().rebuilding).toBe(1)
    deliver({ kind: { case: 'snapshot', value: { requestId, key: 'xy.md.snapshot.shfe', payload: snapshot([tick('a', 1)], [1]) } } })
    vi.advanceTimersByTime(16)
    // Two ticks stamped 25.5 ms before now: the hub counts source → receipt for the rows it delivers.
    const stamped = (symbol: string, seq: number) =>
      create(TickSchema, { venue: 'shfe', symbol, seq: BigInt(seq), last: seq, tsExchange: BigInt(Math.round((performance.timeOrigin + performance.now() - 25.5) * 1e6)) })
    deliver({ kind: { case: 'batch', value: { messages: [{ subId: 1, subject: 'xy.md.tick.shfe.0', payload: delta(0, 2, 1, [stamped('a', 2), stamped('b', 1)]) }] } } })
    vi.advanceTimersByTime(16)
    // A page reports its tick → paint histogram and frame intervals; a malformed entry is dropped.
    hub.onMessage(a, {
      type: 'latency',
      counts: [[40, 3], [41, 1], 'x' as unknown as [number, number]],
      frames: [[16, 58], [33, 2], [17] as unknown as [number, number]],
    })
    const before = a.got.filter((m) => m.type === 'stats').length
    vi.advanceTimersByTime(1000)
    const stats = a.got.filter((m): m is Extract<HubToPage, { type: 'stats' }> => m.type === 'stats')
    expect(stats.length).toBe(before + 1)
    const s = stats.at(-1)!
    expect([s.bytesIn, s.framesIn]).toEqual([bytes, 3])
    expect(s.toBrowser.n).toBe(2)
    expect(s.toBrowser.p50).toBeGreaterThanOrEqual(25)
    expect(s.toBrowser.p99).toBeLessThan(1000)
    expect(s.toPaint).toEqual({ n: 4, p50: 40, p95: 41, p99: 41 })
    expect(s.frameIntervals).toEqual({ n: 60, p50: 16, p95: 16, p99: 33 })
    expect([s.rebuilds, s.rebuilding, s.windowS]).toEqual([1, 0, 10])
    expect(s.rebuildLastMs).toBeGreaterThanOrEqual(0)
    // Every 10 s the gateway gets what was measured since the last report, for its /metrics.
    vi.advanceTimersByTime(9_000)
    const reports = () => ws.sent.filter((f) => f.kind.case === 'stats').map((f) => (f.kind.case === 'stats' ? f.kind.value : undefined))
    expect(reports()).toHaveLength(1)
    const r = reports()[0]!
    expect(r.paint.map((c) => [c.ms, c.count])).toEqual([
      [40, 3],
      [41, 1],
    ])
    expect(r.receipt.reduce((n, c) => n + c.count, 0)).toBe(2)
    expect(r.receipt.every((c) => c.ms >= 25 && c.ms < 1000)).toBe(true)
    expect(r.frame.map((c) => [c.ms, c.count])).toEqual([
      [16, 58],
      [33, 2],
    ])
    expect(r.rebuildMs).toHaveLength(1)
    // Nothing new: no report.
    vi.advanceTimersByTime(10_000)
    expect(reports()).toHaveLength(1)
    hub.close()
    vi.useRealTimers()
  })

  it('reconnects with backoff, subscribes again and re-reads snapshots; retries a missing snapshot', () => {
    const { hub, sockets, port } = setup()
    const a = port()
    hub.onMessage(a, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    sockets[0]!.open()
    hub.onMessage(a, { type: 'sub', feed: 'ticks' })
    const ws = sockets[0]!
    ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId: 1, subject: 'xy.md.tick.shfe.0', payload: delta(0, 1, 0, [tick('a', 1)]) }] } } })
    const req = ws.sent.find((f) => f.kind.case === 'getSnapshot')
    const requestId = req?.kind.case === 'getSnapshot' ? req.kind.value.requestId : 0
    // No snapshot stored yet: the hub asks again after 500 ms instead of waiting forever.
    ws.deliver({ kind: { case: 'error', value: { code: ErrorCode.NOT_FOUND, message: 'no snapshot', id: requestId } } })
    vi.advanceTimersByTime(499)
    expect(ws.sent.filter((f) => f.kind.case === 'getSnapshot')).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(ws.sent.filter((f) => f.kind.case === 'getSnapshot')).toHaveLength(2)
    ws.deliver({ kind: { case: 'snapshot', value: { requestId: 0, key: 'xy.md.snapshot.shfe', payload: snapshot([tick('a', 1)], [1]) } } })

    ws.drop()
    expect(a.got.at(-1)).toMatchObject({ type: 'status', state: 'reconnecting' })
    expect(sockets).toHaveLength(1)
    vi.advanceTimersByTime(250) // the first retry is at most 250 ms away
    expect(sockets).toHaveLength(2)
    const ws2 = sockets[1]!
    ws2.open()
    expect(ws2.sent.filter((f) => f.kind.case === 'subscribe')).toHaveLength(1)
    expect(ws2.sent.filter((f) => f.kind.case === 'getSnapshot')).toHaveLength(1)
    expect(hub.status()).toMatchObject({ state: 'connected', sockets: 2 })
    vi.useRealTimers()
  })

  it('a token the gateway refuses stops reconnecting', () => {
    const { hub, sockets, port } = setup()
    const a = port()
    hub.onMessage(a, { type: 'hello', url: 'ws://gw/ws', token: 'bad' })
    sockets[0]!.drop(4001)
    vi.advanceTimersByTime(60_000)
    expect(sockets).toHaveLength(1)
    expect(hub.status().state).toBe('unauthorized')
    vi.useRealTimers()
  })

  it('raw feeds keep the latest message per subject per flush and for new tabs; bad frames are counted', () => {
    const { hub, sockets, port } = setup()
    const a = port()
    hub.onMessage(a, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    sockets[0]!.open()
    hub.onMessage(a, { type: 'sub', feed: 'nodes' })
    const ws = sockets[0]!
    const enc = (s: string) => new TextEncoder().encode(s)
    ws.deliver({
      kind: {
        case: 'batch',
        value: {
          messages: [
            { subId: 1, subject: '$KV.lt_nodes.n1', payload: enc('{"node_id":"n1","role":"flow","load":0.1}') },
            { subId: 1, subject: '$KV.lt_nodes.n1', payload: enc('{"node_id":"n1","role":"flow","load":0.2}') },
            { subId: 1, subject: '$KV.lt_nodes.n2', payload: enc('{"node_id":"n2","role":"gateway"}') },
          ],
        },
      },
    })
    vi.advanceTimersByTime(16)
    const raw = a.got.filter((m) => m.type === 'raw')
    expect(raw).toHaveLength(1)
    expect(raw[0]?.type === 'raw' && raw[0].messages.map((m) => new TextDecoder().decode(m.payload))).toEqual([
      '{"node_id":"n1","role":"flow","load":0.2}',
      '{"node_id":"n2","role":"gateway"}',
    ])
    const b = port()
    hub.onMessage(b, { type: 'sub', feed: 'nodes' })
    expect(b.got.find((m) => m.type === 'raw')?.type === 'raw').toBe(true)
    const wsAny = ws as unknown as { onmessage: (ev: { data: ArrayBuffer }) => void }
    wsAny.onmessage({ data: new Uint8Array([0xff, 0xff, 0xff]).buffer })
    expect(hub.decodeErrors).toBe(1)
    expect(a.got.at(-1)?.type).toBe('error')
    vi.useRealTimers()
  })

  it('contracts follow the tick groups: their snapshot is asked for once ticks show a group, and a group without contracts is not asked again', () => {
    const { hub, sockets, port } = setup()
    const tab = port()
    hub.onMessage(tab, { type: 'hello', url: 'ws://gw/ws', token: 't' })
    const ws = sockets[0]!
    ws.open()
    hub.onMessage(tab, { type: 'sub', feed: 'contracts' })
    hub.onMessage(tab, { type: 'sub', feed: 'ticks' })
    const subId = (feedTopic: string) => {
      const f = ws.sent.find((x) => x.kind.case === 'subscribe' && x.kind.value.subject === feedTopic)
      return f?.kind.case === 'subscribe' ? f.kind.value.id : -1
    }
    expect(subId('xy.md.contract.>')).toBeGreaterThan(0)
    const requests = () => ws.sent.flatMap((f) => (f.kind.case === 'getSnapshot' ? [f.kind.value] : []))
    // No contract delta ever comes (reference data rarely changes); the first tick of shfe asks
    // for both snapshots.
    ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId: subId('xy.md.tick.>'), subject: 'xy.md.tick.shfe.0', payload: delta(0, 1, 0, [tick('a', 1)]) }] } } })
    expect(requests().map((r) => r.key).sort()).toEqual(['xy.md.contracts.shfe', 'xy.md.snapshot.shfe'])
    const contractReq = requests().find((r) => r.key === 'xy.md.contracts.shfe')!
    const c = create(ContractSchema, { venue: 'shfe', symbol: 'a', name: 'rebar 2501', multiplier: 10, seq: 1n })
    const payload = toBinary(ContractSnapshotSchema, create(ContractSnapshotSchema, { group: 'shfe', version: 1n, contracts: [c], shardVersions: [0n] }))
    ws.deliver({ kind: { case: 'snapshot', value: { requestId: contractReq.requestId, key: contractReq.key, payload } } })
    vi.advanceTimersByTime(16)
    const contracts = rowsOf(tab.got).filter((m) => m.feed === 'contracts').at(-1)!
    expect(contracts.reset).toBe(true)
    expect(contracts.rows.map((r) => [r.key, r.name, r.multiplier])).toEqual([['shfe.a', 'rebar 2501', 10]])

    // A venue without contracts: NOT_FOUND is final for this optional request (no polling), and
    // nothing is left waiting.
    const dce = toBinary(DeltaSchema, create(DeltaSchema, { group: 'dce', shard: 0, version: 1n, baseVersion: 0n, ticks: [create(TickSchema, { venue: 'dce', symbol: 'm', seq: 1n })] }))
    ws.deliver({ kind: { case: 'batch', value: { messages: [{ subId: subId('xy.md.tick.>'), subject: 'xy.md.tick.dce.0', payload: dce }] } } })
    const dceReq = requests().find((r) => r.key === 'xy.md.contracts.dce')!
    ws.deliver({ kind: { case: 'error', value: { id: dceReq.requestId, code: ErrorCode.NOT_FOUND, message: 'no snapshot' } } })
    vi.advanceTimersByTime(2_000)
    expect(requests().filter((r) => r.key === 'xy.md.contracts.dce')).toHaveLength(1)
    expect(hub.stats().rebuilding).toBe(2) // the two tick groups, still waiting for their snapshots
    vi.useRealTimers()
  })
})
