/** The system view: connection + degradation, the platform's metrics, the discovery list. */
import { useEffect, useMemo, useState } from 'react'
import { useLiveQuery } from '@tanstack/react-db'
import type { Collection } from '@tanstack/db'
import { componentOf, metricTypes, parsePrometheus, type MetricSample } from '../data/metrics'
import type { NodeRow } from '../data/raw'
import type { HubStatus } from '../worker/protocol'

const SCRAPE_MS = 1000
/** A node whose last heartbeat is older than this is shown as stale (the KV TTL is 15 s). */
const STALE_MS = 15_000

function useMetrics(): { samples: MetricSample[]; error?: string; at?: number } {
  const [state, setState] = useState<{ samples: MetricSample[]; error?: string; at?: number }>({ samples: [] })
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
          .filter(([name]) => !name.endsWith('_bucket'))
          .map(([name, value]) => {
            const base = name.replace(/_(count|sum)$/, '')
            const counter = types.get(name) === 'counter' || (types.get(base) === 'histogram' && name.endsWith('_count'))
            const before = prev?.values.get(name)
            const rate = counter && prev && before !== undefined ? ((value - before) * 1000) / (at - prev.at) : undefined
            return { name, value, rate }
          })
          .sort((a, b) => a.name.localeCompare(b.name))
        prev = { at, values }
        if (!stopped) setState({ samples, at: Date.now() })
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

const fmt = (v: number) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(3))

export function SystemView({ status, nodes }: { status: HubStatus | undefined; nodes: Collection<NodeRow, string> }) {
  const { samples, error, at } = useMetrics()
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
