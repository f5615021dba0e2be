/** The two live grids: market ticks and battery cycler channels. */
import { useEffect, useState } from 'react'
import type { LiveTable } from '../data/live'
import { LiveGrid } from './LiveGrid'
import { CELL_COLUMNS, TICK_COLUMNS } from './columns'

/** Subscribes the feed while the view is shown; returns its row count (refreshed 4×/s). */
function useFeed(live: LiveTable): number {
  const [n, setN] = useState(live.size)
  useEffect(() => {
    live.acquire()
    const t = setInterval(() => setN(live.size), 250)
    return () => {
      clearInterval(t)
      live.release()
    }
  }, [live])
  return n
}

/** Market ticks, joined with each instrument's contract (name, multiplier) by key. */
export function TicksView({ live, contracts }: { live: LiveTable; contracts: LiveTable }) {
  const n = useFeed(live)
  const c = useFeed(contracts)
  return (
    <section>
      <h2>Market ticks <small>{n} instruments · {c} contracts · order refreshed 4×/s, values per frame</small></h2>
      <LiveGrid live={live} join={contracts} columns={TICK_COLUMNS} initialSort={[{ id: 'symbol', desc: false }]} testId="ticks-grid" />
    </section>
  )
}

export function CellsView({ live }: { live: LiveTable }) {
  const n = useFeed(live)
  return (
    <section>
      <h2>Battery channels <small>{n} channels</small></h2>
      <p className="legend">
        {['charge', 'discharge', 'rest', 'pause', 'warn', 'alarm'].map((s) => (
          <span key={s} className={`status-${s}`}>{s}</span>
        ))}
      </p>
      <LiveGrid live={live} columns={CELL_COLUMNS} initialSort={[{ id: 'device', desc: false }, { id: 'channel', desc: false }]} testId="cells-grid" />
    </section>
  )
}
