/**
 * The feed hub: the ONE WebSocket to lt-gateway that every tab of a browser shares. It runs in the
 * SharedWorker (`src/worker/feed.worker.ts`) or, where SharedWorker is missing, in the tab that
 * holds the Web Locks leader lock (`src/feed/leader.ts`). It
 * - counts references per feed across pages and subscribes upstream once;
 * - keeps md feeds (ticks, contracts, battery channels) as replicas: snapshot + deltas, gap → snapshot request;
 * - batches every 16 ms and de-duplicates (latest row per key, latest raw message per subject);
 * - keeps a last-value cache, so a new page paints at once;
 * - sends each page only as many batches as it shows: per-page flow control (`./flow.ts`);
 * - reconnects with exponential backoff (capped, jittered) and re-reads every snapshot afterwards;
 * - sends every page the browser's end-to-end figures once a second (`HubStats`: latency, bandwidth,
 *   snapshot rebuilds), for the system view, and the gateway a `ClientStats` report every 10 s
 *   for its /metrics (`ui_tick_to_paint_latency`, …).
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { ClientFrameSchema, ErrorCode, ServerFrameSchema, type ClientFrame } from '../gen/langtian/gateway/v1/gateway_pb'
import type { ChannelSample } from '../gen/langtian/battery/v1/battery_pb'
import type { Contract, Tick } from '../gen/langtian/md/v1/md_pb'
import { backoffDelay } from './backoff'
import { Batcher, FlushTimer } from './batcher'
import { cellCodec, contractCodec, epochMs, RAW_TOPICS, tickCodec } from './feeds'
import { FLOW_WINDOW, PageFlow } from './flow'
import { LatencySeries, type SparseCounts } from './histogram'
import { MdFeed } from './mdfeed'
import { RefCounts } from './refcount'
import type { ConnState, FeedName, HubStats, HubStatus, HubToPage, PageToHub, RawMessage, RowsMessage } from '../worker/protocol'

/** Now in ms since the epoch, sub-millisecond where the clock allows (cross-origin isolated: 5 µs). */
const nowMs = () => performance.timeOrigin + performance.now()

/** Where the hub sends a page its messages. */
export interface HubPort {
  post(m: HubToPage): void
}

/** The browser's WebSocket, or a stand-in with the same surface in unit tests. */
export type SocketFactory = (url: string) => WebSocket

/** `WebSocket.OPEN` (a literal, so the hub also runs where WebSocket is not a global, e.g. tests). */
const OPEN = 1

export interface HubOptions {
  mode: HubStatus['mode']
  flushMs?: number
  /** Unacknowledged rows messages per page (flow control; default `FLOW_WINDOW`). */
  flowWindow?: number
  socket?: SocketFactory
  /** How often every page gets `HubStats` (default 1000 ms; 0: never, e.g. in unit tests). */
  statsMs?: number
  /** How often the gateway gets a `ClientStats` report (default 10,000 ms; 0: never). */
  reportMs?: number
}

/** The window of the end-to-end latency figures, in seconds. */
export const STATS_WINDOW_S = 10

export class FeedHub {
  private readonly ports = new Set<HubPort>()
  /** Per-page flow control of rows messages. */
  private readonly flows = new Map<HubPort, PageFlow>()
  private readonly refs = new RefCounts<HubPort>()
  private readonly md: Partial<Record<FeedName, MdFeed<Tick> | MdFeed<Contract> | MdFeed<ChannelSample>>>
  private readonly raw = new Map<FeedName, Batcher<RawMessage>>()
  private readonly lastRaw = new Map<FeedName, Map<string, RawMessage>>()
  private readonly subIds = new Map<string, number>()
  private readonly feedOfSub = new Map<number, FeedName>()
  private readonly snapshotRequests = new Map<number, string>()
  /** Snapshot requests that may find nothing (a followed group without reference data). */
  private readonly optionalRequests = new Set<number>()
  private readonly timer: FlushTimer
  private socket: WebSocket | undefined
  private target: { url: string; token: string } | undefined
  private state: ConnState = 'connecting'
  private attempt = 0
  private level = 0
  private sockets = 0
  private nextId = 1
  /** Undecodable frames or payloads. */
  decodeErrors = 0
  private bytesIn = 0
  private framesIn = 0
  /** Source → hub receipt and source → painted (the pages' reports). */
  private readonly toBrowser = new LatencySeries(STATS_WINDOW_S)
  private readonly toPaint = new LatencySeries(STATS_WINDOW_S)
  /** The pages' animation-frame intervals. */
  private readonly frameIntervals = new LatencySeries(STATS_WINDOW_S)
  private statsTimer: ReturnType<typeof setInterval> | undefined
  private reportTimer: ReturnType<typeof setInterval> | undefined

  constructor(private readonly opts: HubOptions) {
    const request = (key: string, optional?: boolean) => this.requestSnapshot(key, optional)
    this.md = {
      ticks: new MdFeed(tickCodec, request),
      contracts: new MdFeed(contractCodec, request),
      cells: new MdFeed(cellCodec, request),
    }
    this.timer = new FlushTimer(opts.flushMs ?? 16, () => this.flush())
  }

  attach(port: HubPort): void {
    const statsMs = this.opts.statsMs ?? 1000
    if (statsMs > 0 && this.statsTimer === undefined) this.statsTimer = setInterval(() => this.broadcast(this.stats()), statsMs)
    const reportMs = this.opts.reportMs ?? 10_000
    if (reportMs > 0 && this.reportTimer === undefined) this.reportTimer = setInterval(() => this.reportToGateway(), reportMs)
    this.ports.add(port)
    if (!this.flows.has(port)) this.flows.set(port, new PageFlow((m) => port.post(m), this.opts.flowWindow ?? FLOW_WINDOW, nowMs))
    this.broadcastStatus()
  }

  detach(port: HubPort): void {
    if (!this.ports.delete(port)) return
    this.flows.delete(port)
    for (const feed of this.refs.releaseAll(port)) this.unsubscribeUpstream(feed as FeedName)
    this.broadcastStatus()
  }

  /** Stops the socket for good (the leader tab going away). */
  close(): void {
    this.target = undefined
    this.socket?.close(1000)
    this.timer.stop()
    if (this.statsTimer !== undefined) clearInterval(this.statsTimer)
    this.statsTimer = undefined
    if (this.reportTimer !== undefined) clearInterval(this.reportTimer)
    this.reportTimer = undefined
  }

  onMessage(port: HubPort, m: PageToHub): void {
    switch (m.type) {
      case 'hello':
        if (!this.ports.has(port)) this.attach(port)
        if (!this.target) {
          this.target = { url: m.url, token: m.token }
          this.connect()
        }
        port.post(this.status())
        break
      case 'sub': {
        if (!this.ports.has(port)) this.attach(port)
        if (this.refs.acquire(m.feed, port)) {
          this.subscribeUpstream(m.feed)
          this.followGroups()
        }
        this.sendCached(port, m.feed)
        break
      }
      case 'unsub':
        this.flows.get(port)?.drop(m.feed)
        if (this.refs.release(m.feed, port)) this.unsubscribeUpstream(m.feed)
        break
      case 'ack':
        this.flows.get(port)?.ack(m.n)
        break
      case 'resync':
        this.md[m.feed]?.resyncAll()
        break
      case 'latency':
        // From our own pages, but still checked: a malformed report is dropped, not trusted.
        this.toPaint.addCounts(pairsOf(m.counts))
        this.frameIntervals.addCounts(pairsOf(m.frames))
        break
      case 'bye':
        this.detach(port)
        break
    }
  }

  status(): HubStatus {
    return {
      type: 'status',
      state: this.state,
      attempt: this.attempt,
      level: this.level,
      sockets: this.sockets,
      ports: this.ports.size,
      mode: this.opts.mode,
      applied: Object.values(this.md).reduce((n, f) => n + f.applied, 0),
      resyncs: Object.values(this.md).reduce((n, f) => n + f.resyncs, 0),
    }
  }

  /** The browser's end-to-end figures (sent to every page once a second). */
  stats(): HubStats {
    const feeds = Object.values(this.md)
    const latest = feeds.reduce<{ rebuildLastAt: number; rebuildLastMs: number | null } | undefined>((a, f) => (f.rebuildLastAt > (a?.rebuildLastAt ?? -Infinity) ? f : a), undefined)
    const max = feeds.map((f) => f.rebuildMaxMs).filter((x): x is number => x !== null)
    return {
      type: 'stats',
      bytesIn: this.bytesIn,
      framesIn: this.framesIn,
      windowS: STATS_WINDOW_S,
      toBrowser: this.toBrowser.summary(),
      toPaint: this.toPaint.summary(),
      frameIntervals: this.frameIntervals.summary(),
      rebuilds: feeds.reduce((n, f) => n + f.rebuilds, 0),
      rebuildLastMs: latest?.rebuildLastMs ?? null,
      rebuildMaxMs: max.length ? Math.max(...max) : null,
      rebuilding: feeds.reduce((n, f) => n + f.rebuilding, 0),
    }
  }

  /** Sends the gateway what was measured since the last report (kept while the socket is down). */
  private reportToGateway(): void {
    if (this.socket?.readyState !== OPEN) return
    const rebuildMs = Object.values(this.md).flatMap((f) => f.takeRebuildDurations().map((ms) => Math.min(3_600_000, Math.round(ms))))
    if (this.toPaint.unreported === 0 && this.toBrowser.unreported === 0 && this.frameIntervals.unreported === 0 && rebuildMs.length === 0) return
    const counts = (s: SparseCounts) => s.map(([ms, count]) => ({ ms, count }))
    const value = {
      paint: counts(this.toPaint.takeReport()),
      receipt: counts(this.toBrowser.takeReport()),
      frame: counts(this.frameIntervals.takeReport()),
      rebuildMs,
    }
    this.send(create(ClientFrameSchema, { kind: { case: 'stats', value } }))
  }

  private broadcastStatus(): void {
    const s = this.status()
    for (const p of this.ports) p.post(s)
  }

  /** Last-value cache: what the hub already has goes to a page that just subscribed. */
  private sendCached(port: HubPort, feed: FeedName): void {
    const md = this.md[feed]
    if (md?.hasData) this.sendRows(port, { type: 'rows', feed, reset: true, rows: md.rows(), deleted: [], sentAt: nowMs() })
    const cached = this.lastRaw.get(feed)
    if (cached && cached.size > 0) port.post({ type: 'raw', feed, messages: [...cached.values()] })
  }

  private topicOf(feed: FeedName): string | undefined {
    return this.md[feed]?.codec.topic ?? RAW_TOPICS[feed]
  }

  private send(frame: ClientFrame): void {
    if (this.socket?.readyState === OPEN) this.socket.send(toBinary(ClientFrameSchema, frame))
  }

  private subscribeUpstream(feed: FeedName): void {
    const subject = this.topicOf(feed)
    if (!subject) return
    let id = this.subIds.get(feed)
    if (id === undefined) {
      id = this.nextId++
      this.subIds.set(feed, id)
      this.feedOfSub.set(id, feed)
    }
    this.send(create(ClientFrameSchema, { kind: { case: 'subscribe', value: { id, subject, priority: true } } }))
  }

  private unsubscribeUpstream(feed: FeedName): void {
    const id = this.subIds.get(feed)
    if (id === undefined) return
    this.subIds.delete(feed)
    this.feedOfSub.delete(id)
    this.send(create(ClientFrameSchema, { kind: { case: 'unsubscribe', value: { id } } }))
  }

  /** Feeds that follow another's groups (contracts → ticks) ask for the snapshots of the groups
   * they do not have yet, while both are subscribed. */
  private followGroups(): void {
    for (const [name, md] of Object.entries(this.md) as Array<[FeedName, MdFeed<unknown>]>) {
      const leader = md.codec.followsGroupsOf
      if (!leader || !this.subIds.has(name) || !this.subIds.has(leader)) continue
      for (const g of this.md[leader]?.groupNames() ?? []) md.ensureGroup(g)
    }
  }

  private requestSnapshot(key: string, optional = false): void {
    const requestId = this.nextId++
    this.snapshotRequests.set(requestId, key)
    if (optional) this.optionalRequests.add(requestId)
    this.send(create(ClientFrameSchema, { kind: { case: 'getSnapshot', value: { requestId, key } } }))
  }

  private connect(): void {
    const target = this.target
    if (!target) return
    const url = `${target.url}?token=${encodeURIComponent(target.token)}`
    const ws = this.opts.socket ? this.opts.socket(url) : new WebSocket(url)
    ws.binaryType = 'arraybuffer'
    this.socket = ws
    ws.onopen = () => {
      this.sockets++
      this.attempt = 0
      this.state = 'connected'
      this.snapshotRequests.clear()
      this.optionalRequests.clear()
      for (const feed of this.refs.topics()) this.subscribeUpstream(feed as FeedName)
      // Deltas were missed while the socket was down: every md group re-reads its snapshot.
      for (const md of Object.values(this.md)) md.resyncAll()
      this.broadcastStatus()
    }
    ws.onmessage = (ev: MessageEvent<ArrayBuffer>) => {
      this.bytesIn += ev.data.byteLength
      this.framesIn++
      this.onFrame(new Uint8Array(ev.data))
    }
    ws.onclose = (ev: CloseEvent) => {
      if (this.socket === ws) this.socket = undefined
      if (!this.target) return
      if (ev.code === 4001 || ev.code === 1008) {
        this.state = 'unauthorized'
        this.broadcastStatus()
        return
      }
      this.state = 'reconnecting'
      const delay = backoffDelay(this.attempt++)
      this.broadcastStatus()
      setTimeout(() => this.connect(), delay)
    }
  }

  private onFrame(bytes: Uint8Array): void {
    let frame
    try {
      frame = fromBinary(ServerFrameSchema, bytes)
    } catch (e) {
      this.decodeErrors++
      this.broadcast({ type: 'error', message: `undecodable frame from the gateway: ${String(e)}` })
      return
    }
    const k = frame.kind
    switch (k.case) {
      case 'batch': {
        const arrival = { gwMs: epochMs(k.value.ts), rxMs: nowMs() }
        for (const m of k.value.messages) {
          const feed = this.feedOfSub.get(m.subId)
          if (!feed) continue
          const md = this.md[feed]
          if (md) {
            try {
              md.onDelta(m.payload, arrival)
            } catch {
              this.decodeErrors++
            }
          } else {
            const msg: RawMessage = { subject: m.subject, payload: m.payload }
            this.rawBatcher(feed).add(m.subject, msg)
            let cache = this.lastRaw.get(feed)
            if (!cache) this.lastRaw.set(feed, (cache = new Map()))
            if (m.payload.length === 0) cache.delete(m.subject)
            else cache.set(m.subject, msg)
          }
        }
        this.followGroups()
        this.timer.poke()
        break
      }
      case 'snapshot': {
        this.snapshotRequests.delete(k.value.requestId)
        this.optionalRequests.delete(k.value.requestId)
        for (const md of Object.values(this.md)) {
          if (md.codec.groupOfKey(k.value.key) === undefined) continue
          try {
            md.onSnapshot(k.value.payload)
          } catch {
            this.decodeErrors++
          }
        }
        this.timer.poke()
        break
      }
      case 'status':
        this.level = k.value.level
        this.broadcastStatus()
        break
      case 'error': {
        const key = this.snapshotRequests.get(k.value.id)
        this.snapshotRequests.delete(k.value.id)
        const optional = this.optionalRequests.delete(k.value.id)
        if (key && optional && k.value.code === ErrorCode.NOT_FOUND) {
          for (const md of Object.values(this.md)) md.noSnapshot(key)
          break
        }
        // No snapshot yet (the aggregator has not written one) or NATS slow: ask again shortly.
        if (key && (k.value.code === ErrorCode.NOT_FOUND || k.value.code === ErrorCode.UNAVAILABLE)) {
          setTimeout(() => this.requestSnapshot(key), 500)
          break
        }
        this.broadcast({ type: 'error', message: `${ErrorCode[k.value.code] ?? k.value.code}: ${k.value.message}` })
        break
      }
      default:
        break
    }
  }

  private rawBatcher(feed: FeedName): Batcher<RawMessage> {
    let b = this.raw.get(feed)
    if (!b) this.raw.set(feed, (b = new Batcher()))
    return b
  }

  /** Rows go to a page through its flow control (held and merged while it is out of credit). */
  private sendRows(port: HubPort, m: RowsMessage): void {
    const flow = this.flows.get(port)
    if (flow) flow.rows(m)
    else port.post(m)
  }

  /** Rows messages held back from pages that were out of credit, merged into later ones. */
  get mergedForSlowPages(): number {
    let n = 0
    for (const f of this.flows.values()) n += f.merged
    return n
  }

  private broadcast(m: HubToPage): void {
    for (const p of this.ports) p.post(m)
  }

  /** Every 16 ms while something changed: one message per feed per subscribed page. */
  private flush(): void {
    const sentAt = nowMs()
    for (const [feed, md] of Object.entries(this.md) as Array<[FeedName, MdFeed<unknown>]>) {
      const out = md.flush()
      if (!out) continue
      const m: RowsMessage = { type: 'rows', feed, reset: out.reset, rows: out.rows, deleted: [], sentAt }
      if (!out.reset) {
        for (const r of out.rows) if (typeof r.tsMs === 'number' && typeof r.rxMs === 'number') this.toBrowser.add(r.rxMs - r.tsMs)
      }
      for (const p of this.refs.ports(feed)) this.sendRows(p, m)
    }
    for (const [feed, b] of this.raw) {
      if (b.size === 0) continue
      const messages = b.flush().map(([, v]) => v)
      for (const p of this.refs.ports(feed)) p.post({ type: 'raw', feed, messages })
    }
  }
}

/** A page's histogram as sent: only well-formed [bucket, count] pairs (bad buckets and counts are
 * dropped by `addCounts`); anything but an array is nothing. */
function pairsOf(v: unknown): SparseCounts {
  return Array.isArray(v) ? v.filter((c): c is [number, number] => Array.isArray(c) && c.length === 2) : []
}
