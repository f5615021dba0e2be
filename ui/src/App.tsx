import { useEffect, useMemo, useRef, useState } from 'react'
import { connectFeed, tokenFromLocation, type FeedConnection } from './feed/connection'
import { LiveTable } from './data/live'
import { nodesCollection } from './data/raw'
import { AnalysisStore, AnalysisView } from './views/AnalysisView'
import { CellsView, TicksView } from './views/GridViews'
import { SystemView } from './views/SystemView'
import { startFrameSampling, takeFrameIntervals, takePaintLatencies } from './perf'
import type { HubStats, HubStatus } from './worker/protocol'

declare global {
  interface Window {
    /** Read by the browser tests and the benchmark: the tab's feed state right now. */
    __feed?: () => {
      state: string
      mode: string
      leading: boolean
      level: number
      ports: number
      view: string
      ticks: number
      cells: number
      tickBatches: number
      cellBatches: number
      resets: number
      /** The hub's snapshot rebuilds so far (from its latest once-a-second stats). */
      rebuilds: number
      nodes: number
      analysis: string[]
      errors: string[]
    }
  }
}

const VIEWS = ['ticks', 'cells', 'system', 'analysis'] as const
type View = (typeof VIEWS)[number]
const TITLES: Record<View, string> = { ticks: 'Market ticks', cells: 'Battery channels', system: 'System', analysis: 'Analysis' }

function viewFromHash(): View {
  const h = location.hash.replace(/^#\/?/, '')
  return (VIEWS as readonly string[]).includes(h) ? (h as View) : 'ticks'
}

/** Everything one tab holds: its link to the hub and the collections fed by it. */
function createSession(token: string) {
  const conn: FeedConnection = connectFeed(token)
  // This tab's tick → paint latencies and frame intervals go to the hub, which merges every tab's
  // for the system view and reports them to the gateway.
  setInterval(() => {
    const counts = takePaintLatencies()
    const frames = takeFrameIntervals()
    if (counts.length > 0 || frames.length > 0) conn.send({ type: 'latency', counts, frames })
  }, 1000)
  return {
    conn,
    ticks: new LiveTable('ticks', conn),
    contracts: new LiveTable('contracts', conn),
    cells: new LiveTable('cells', conn),
    nodes: nodesCollection(conn),
    analysis: new AnalysisStore(conn),
  }
}

const LEVEL_TEXT = ['', 'level 1: sampled (latest value every 250 ms)', 'level 2: trimmed fields', 'level 3: non-priority feeds paused']

export function App() {
  const token = useMemo(tokenFromLocation, [])
  const session = useMemo(() => {
    if (!token) return undefined
    try {
      return createSession(token)
    } catch (e) {
      return String(e)
    }
  }, [token])
  const [status, setStatus] = useState<HubStatus>()
  const [errors, setErrors] = useState<string[]>([])
  const [view, setView] = useState<View>(viewFromHash)
  useEffect(() => {
    const on = () => setView(viewFromHash())
    addEventListener('hashchange', on)
    startFrameSampling()
    return () => removeEventListener('hashchange', on)
  }, [])
  // The latest stats, for the tests' probe only (the system view renders its own).
  const stats = useRef<HubStats | undefined>(undefined)
  useEffect(() => {
    if (!session || typeof session === 'string') return
    return session.conn.onMessage((m) => {
      if (m.type === 'status') setStatus(m)
      else if (m.type === 'stats') stats.current = m
      else if (m.type === 'error') setErrors((e) => [...e.slice(-4), m.message])
    })
  }, [session])
  const probe = useRef({ status, errors, view })
  probe.current = { status, errors, view }
  useEffect(() => {
    if (!session || typeof session === 'string') return
    window.__feed = () => {
      const { status: st, errors: errs, view: v } = probe.current
      return {
        state: st?.state ?? 'connecting',
        mode: session.conn.mode,
        leading: session.conn.leading(),
        level: st?.level ?? 0,
        ports: st?.ports ?? 0,
        view: v,
        ticks: session.ticks.size,
        cells: session.cells.size,
        tickBatches: session.ticks.batches,
        cellBatches: session.cells.batches,
        resets: session.ticks.resets + session.cells.resets,
        rebuilds: stats.current?.rebuilds ?? 0,
        nodes: session.nodes.size,
        analysis: [...session.analysis.snapshot().keys()],
        errors: errs,
      }
    }
  }, [session])
  if (!token) return <p className="page">Open the URL printed by <code>lt up</code> (it carries <code>?token=…</code>).</p>
  if (!session || typeof session === 'string') return <p className="page error">{session ?? 'no feed'}</p>

  const level = status?.level ?? 0
  const state = status?.state ?? 'connecting'
  return (
    <div className="page">
      <header>
        <b>Langtian</b>
        <nav>
          {VIEWS.map((v) => (
            <a key={v} href={`#/${v}`} className={v === view ? 'active' : ''}>
              {TITLES[v]}
            </a>
          ))}
        </nav>
        <span className={`conn conn-${state}`} data-testid="state">
          {state}
        </span>
      </header>
      {level > 0 ? (
        <div className={`banner level-${level}`} role="status" data-testid="degrade-banner">
          The gateway is protecting this connection — {LEVEL_TEXT[level] ?? `level ${level}`}. Values may lag until it recovers.
        </div>
      ) : null}
      {state === 'reconnecting' ? (
        <div className="banner level-1" role="status">
          Connection lost — reconnecting (attempt {status?.attempt ?? 0}); showing the last known values.
        </div>
      ) : null}
      {state === 'unauthorized' ? <div className="banner level-3">The token was refused (expired?). Open a fresh URL from lt up.</div> : null}
      {errors.length > 0 ? <p className="error">{errors[errors.length - 1]}</p> : null}
      <main>
        {view === 'ticks' ? <TicksView live={session.ticks} contracts={session.contracts} /> : null}
        {view === 'cells' ? <CellsView live={session.cells} /> : null}
        {view === 'system' ? <SystemView status={status} nodes={session.nodes} conn={session.conn} /> : null}
        {view === 'analysis' ? <AnalysisView store={session.analysis} /> : null}
      </main>
    </div>
  )
}
