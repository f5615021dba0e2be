/** The system view: connection + degradation, the browser's end-to-end figures (latency, bandwidth,
 * snapshot rebuilds), the platform's metrics, the discovery list. */
import { useEffect, useMemo, useState } from 'react'
import { useLiveQuery } from '@tanstack/react-db'
import type { Collection } from '@tanstack/db'
import { componentOf, isJetStreamSeries, jetStreamTables, metricTypes, parsePrometheus, parseSeries, type ConsumerRow, type MetricSample, type StreamRow } from '../data/metrics'
import type { NodeRow } from '../data/raw'
import type { FeedConnection } from '../feed/connection'
import type { LatencySummary } from '../feed/histogram'
import type { HubStats, HubStatus } from '../worker/protocol'

const SCRAPE_MS = 1000
/** A node whose last heartbeat is older than this is shown as stale (the KV TTL is 15 s). */
const STALE_MS = 15_000

interface Scrape {
  samples: MetricSample[]
  /** JetStream's streams and durable consumers, one row each (from the labelled series). */
  jetstream: { streams: StreamRow[]; consumers: ConsumerRow[] }
  error?: string
  at?: number
}

function useMetrics(): Scrape {
  const [state, setState] = useState<Scrape>({ samples: [], jetstream: { streams: [], consumers: [] } })
  useEffect(() => {
    let prev: { at: number; values: Map<string, number> } | undefined
    let stopped = false
    const scrape = async () => {
      try {
        const res = await fetch('/metrics')
        if (!res.ok) throw new Error(`/metrics answered ${res.status}`)
        const text = await res.text()
        const at = performance.now()
        const values = parsePrometheus(text)
        const types = metricTypes(text)
        const samples = [...values.entries()]
          .filter(([name]) => !name.endsWith('_bucket') && !isJetStreamSeries(name))
          .map(([name, value]) => {
            const base = name.replace(/_(count|sum)$/, '')
            const counter = types.get(name) === 'counter' || (types.get(base) === 'histogram' && name.endsWith('_count'))
            const before = prev?.values.get(name)
            const rate = counter && prev && before !== undefined ? ((value - before) * 1000) / (at - prev.at) : undefined
            return { name, value, rate }
          })
          .sort((a, b) => a.name.localeCompare(b.name))
        prev = { at, values }
        if (!stopped) setState({ samples, jetstream: jetStreamTables(parseSeries(text)), at: Date.now() })
      } catch (e) {
        if (!stopped) setState((s) => ({ ...s, error: String(e) }))
      }
    }
    void scrape()
    const t = setInterval(() => void scrape(), SCRAPE_MS)
    return () => {
      stopped = true
      clearInterval(t)
    }
  }, [])
  return state
}

/** The hub's latest `HubStats` and the bandwidth between it and the one before. */
function useHubStats(conn: FeedConnection): { stats?: HubStats; bytesPerS?: number; framesPerS?: number } {
  const [state, setState] = useState<{ stats?: HubStats; bytesPerS?: number; framesPerS?: number }>({})
  useEffect(() => {
    let prev: { at: number; stats: HubStats } | undefined
    return conn.onMessage((m) => {
      if (m.type !== 'stats') return
      const at = performance.now()
      const dt = prev ? (at - prev.at) / 1000 : 0
      const next = {
        stats: m,
        bytesPerS: prev && dt > 0 ? (m.bytesIn - prev.stats.bytesIn) / dt : undefined,
        framesPerS: prev && dt > 0 ? (m.framesIn - prev.stats.framesIn) / dt : undefined,
      }
      prev = { at, stats: m }
      setState(next)
    })
  }, [conn])
  return state
}

const ms = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${v.toFixed(0)} ms`)
/** A frame interval bucket [b, b + 1) ms: a 60 Hz frame (16.67 ms) reads "16–17 ms". */
const ms1 = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${v}–${v + 1} ms`)
const bytes = (v: number) => (v >= 1 << 20 ? `${(v / (1 << 20)).toFixed(1)} MiB` : `${(v / 1024).toFixed(1)} KiB`)

function LatencyRow({ stage, what, s }: { stage: string; what: string; s: LatencySummary | undefined }) {
  return (
    <tr data-stage={stage}>
      <td>{what}</td>
      <td className="num">{ms(s?.p50)}</td>
      <td className="num">{ms(s?.p95)}</td>
      <td className="num">{ms(s?.p99)}</td>
      <td className="num muted">{s?.n ?? 0}</td>
    </tr>
  )
}

/** Latency from the source to this browser and to the screen, bandwidth, snapshot rebuilds. */
function EndToEnd({ conn }: { conn: FeedConnection }) {
  const { stats, bytesPerS, framesPerS } = useHubStats(conn)
  return (
    <>
      <h3>End to end (this browser{stats ? `, last ${stats.windowS} s` : ''})</h3>
      <table className="plain" data-testid="e2e">
        <thead>
          <tr>
            <th>from the source timestamp to</th>
            <th>p50</th>
            <th>p95</th>
            <th>p99</th>
            <th>rows</th>
          </tr>
        </thead>
        <tbody>
          <LatencyRow stage="browser" what="this browser (the feed hub received it)" s={stats?.toBrowser} />
          <LatencyRow stage="paint" what="painted (every tab showing a live grid)" s={stats?.toPaint} />
        </tbody>
      </table>
      <p data-testid="frames">
        frame interval (tabs getting steady frames): p50 <b>{ms1(stats?.frameIntervals.p50)}</b> · p95 <b>{ms1(stats?.frameIntervals.p95)}</b> (seed: ≤ 16.7) · p99{' '}
        <b>{ms1(stats?.frameIntervals.p99)}</b> (≤ 25) · {stats?.frameIntervals.n ?? 0} frames
      </p>
      <p data-testid="bandwidth">
        WebSocket in: <b>{bytesPerS === undefined ? '—' : `${bytes(bytesPerS)}/s`}</b> · {framesPerS === undefined ? '—' : framesPerS.toFixed(0)} frames/s · total{' '}
        <b>{stats ? bytes(stats.bytesIn) : '—'}</b> in {stats?.framesIn ?? 0} frames
      </p>
      <p data-testid="rebuilds">
        snapshot rebuilds (first load, gaps, reconnects): <b>{stats?.rebuilds ?? 0}</b> · last <b>{ms(stats?.rebuildLastMs)}</b> · longest{' '}
        <b>{ms(stats?.rebuildMaxMs)}</b> · waiting now <b>{stats?.rebuilding ?? 0}</b>
      </p>
    </>
  )
}

const bytesOf = (v: number) => (v < 1024 ? `${v} B` : bytes(v))

/** Each stream with its durable consumers under it, as `lt streams` prints them. */
function JetStreamTable({ streams, consumers }: { streams: StreamRow[]; consumers: ConsumerRow[] }) {
  if (streams.length === 0)
    return <p className="muted" data-testid="jetstream-none">no reading of JetStream's state on this gateway's /metrics (lt up adds one every few seconds unless --jetstream-metrics-every off)</p>
  return (
    <table className="plain" data-testid="jetstream">
      <thead>
        <tr>
          <th>stream / durable consumer</th>
          <th>messages</th>
          <th>bytes</th>
          <th>first seq</th>
          <th>last seq</th>
          <th>consumers</th>
        </tr>
      </thead>
      <tbody>
        {streams.map((s) => (
          <StreamRows key={s.stream} s={s} consumers={consumers.filter((c) => c.stream === s.stream)} />
        ))}
      </tbody>
    </table>
  )
}

function StreamRows({ s, consumers }: { s: StreamRow; consumers: ConsumerRow[] }) {
  return (
    <>
      <tr data-stream={s.stream}>
        <td>{s.stream}</td>
        <td className="num">{s.messages}</td>
        <td className="num">{bytesOf(s.bytes)}</td>
        <td className="num">{s.firstSeq}</td>
        <td className="num">{s.lastSeq}</td>
        <td className="num">{s.consumers}</td>
      </tr>
      {consumers.map((c) => (
        <tr key={c.consumer} data-consumer={`${c.stream}/${c.consumer}`} className={c.pending > 0 ? 'behind' : ''}>
          <td colSpan={6} className="consumer">
            └ <b>{c.consumer}</b>: <span data-field="pending">{c.pending}</span> to deliver · <span data-field="ack-pending">{c.ackPending}</span> awaiting ack ·{' '}
            <span data-field="redelivered">{c.redelivered}</span> redelivered · {c.waiting} pull requests waiting · delivered up to{' '}
            <span data-field="delivered">{c.delivered}</span> · acked below {c.ackFloor}
          </td>
        </tr>
      ))}
    </>
  )
}

const fmt = (v: number) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(3))

export function SystemView({ status, nodes, conn }: { status: HubStatus | undefined; nodes: Collection<NodeRow, string>; conn: FeedConnection }) {
  const { samples, jetstream, error, at } = useMetrics()
  const { data: nodeRows } = useLiveQuery((q) => q.from({ n: nodes }).orderBy(({ n }) => n.node_id), [nodes])
  const [now, setNow] = useState(Date.now())
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000)
    return () => clearInterval(t)
  }, [])
  const groups = useMemo(() => {
    const g = new Map<string, MetricSample[]>()
    for (const s of samples) {
      const c = componentOf(s.name)
      g.set(c, [...(g.get(c) ?? []), s])
    }
    return [...g.entries()].sort(([a], [b]) => a.localeCompare(b))
  }, [samples])
  return (
    <section>
      <h2>System</h2>
      <p data-testid="hub">
        feed: <b>{status?.mode ?? '—'}</b> · connection <b>{status?.state ?? '—'}</b> · tabs on this connection <b>{status?.ports ?? 0}</b> ·
        sockets opened <b>{status?.sockets ?? 0}</b> · deltas applied <b>{status?.applied ?? 0}</b> · snapshot requests <b>{status?.resyncs ?? 0}</b>
      </p>
      <EndToEnd conn={conn} />
      <h3>Nodes (discovery, KV lt_nodes)</h3>
      <table className="plain" data-testid="nodes">
        <thead>
          <tr>
            <th>node</th>
            <th>role</th>
            <th>host</th>
            <th>version</th>
            <th>load</th>
            <th>last heartbeat</th>
            <th>endpoints</th>
          </tr>
        </thead>
        <tbody>
          {(nodeRows ?? []).map((n) => {
            const age = now - n.last_seen_ms
            return (
              <tr key={n.node_id} className={age > STALE_MS ? 'stale' : ''} data-node={n.node_id}>
                <td>{n.node_id}</td>
                <td>{n.role}</td>
                <td>{n.host}</td>
                <td>{n.version}</td>
                <td>{n.load.toFixed(2)}</td>
                <td>{(age / 1000).toFixed(0)} s ago</td>
                <td>
                  {Object.entries(n.endpoints).map(([k, v]) => (
                    <span key={k} className="endpoint">
                      {k}: {v.startsWith('http') ? <a href={v}>{v}</a> : v}
                    </span>
                  ))}
                </td>
              </tr>
            )
          })}
        </tbody>
      </table>
      {(nodeRows ?? []).length === 0 ? <p className="muted">no node has sent a heartbeat yet (they arrive every few seconds)</p> : null}
      <h3>JetStream (streams and durable consumers)</h3>
      <JetStreamTable streams={jetstream.streams} consumers={jetstream.consumers} />
      <h3>Metrics (this gateway's /metrics{at ? `, ${new Date(at).toLocaleTimeString()}` : ''})</h3>
      {error ? <p className="error">{error}</p> : null}
      <div className="metric-groups" data-testid="metrics">
        {groups.map(([component, list]) => (
          <div key={component} className="metric-group">
            <h4>{component}</h4>
            <table className="plain">
              <tbody>
                {list.map((s) => (
                  <tr key={s.name} data-metric={s.name}>
                    <td>{s.name}</td>
                    <td className="num">{fmt(s.value)}</td>
                    <td className="num muted">{s.rate !== undefined ? `${fmt(s.rate)}/s` : ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}
      </div>
    </section>
  )
}
