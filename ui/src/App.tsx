import { useEffect, useMemo, useState } from 'react'
import { connectFeed, tokenFromLocation } from './feed/connection'
import { TickStore } from './feed/ticks'
import type { ConnState } from './worker/protocol'

declare global {
  interface Window {
    /** Read by the browser tests. */
    __feed?: { state: ConnState; rows: number; applied: number; resyncs: number; level: number }
  }
}

const REFRESH_MS = 250

export function App() {
  const token = useMemo(tokenFromLocation, [])
  const [state, setState] = useState<ConnState>('connecting')
  const [level, setLevel] = useState(0)
  const [, setTick] = useState(0)
  const [error, setError] = useState<string>()
  const store = useMemo(() => ({ current: undefined as TickStore | undefined }), [])

  useEffect(() => {
    if (!token) return
    let conn
    try {
      conn = connectFeed(token)
    } catch (e) {
      setError(String(e))
      return
    }
    const c = conn
    const ticks = new TickStore((key) => c.send({ type: 'snapshot', key }))
    store.current = ticks
    let last: ConnState | undefined
    c.onMessage((m) => {
      if (m.type === 'status') {
        setState(m.state)
        setLevel(m.level)
        // After a reconnect every group re-reads its snapshot (deltas were missed meanwhile).
        if (m.state === 'connected' && last !== undefined && last !== 'connected') ticks.resyncAll()
        last = m.state
      } else if (m.type === 'batch') {
        for (const f of m.messages) if (f.topic === 'xy.md.tick.>') ticks.onDelta(f.payload)
      } else if (m.type === 'snapshot') {
        ticks.onSnapshot(m.payload)
      } else if (m.type === 'error') {
        setError(m.message)
      }
    })
    c.send({ type: 'sub', topic: 'xy.md.tick.>' })
    // Rows are re-rendered a few times a second, not per tick.
    const t = setInterval(() => setTick((n) => n + 1), REFRESH_MS)
    return () => clearInterval(t)
  }, [token, store])

  const rows = store.current?.rows() ?? []
  window.__feed = {
    state,
    rows: rows.length,
    applied: store.current?.applied ?? 0,
    resyncs: store.current?.resyncs ?? 0,
    level,
  }
  if (!token) {
    return <p>Open the URL printed by <code>lt up</code> (it carries <code>?token=…</code>).</p>
  }
  return (
    <main style={{ fontFamily: 'system-ui, sans-serif', margin: 16 }}>
      <h1 style={{ fontSize: 20 }}>Langtian — market ticks</h1>
      <p>
        connection: <b data-testid="state">{state}</b> · degradation level: <b>{level}</b> · instruments: <b>{rows.length}</b>
        {error ? <span style={{ color: '#b00' }}> · {error}</span> : null}
      </p>
      <table style={{ borderCollapse: 'collapse', fontVariantNumeric: 'tabular-nums' }}>
        <thead>
          <tr>
            {['venue', 'symbol', 'last', 'bid', 'ask', 'vol', 'oi', 'seq'].map((h) => (
              <th key={h} style={{ textAlign: 'right', padding: '2px 10px' }}>
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((t) => (
            <tr key={`${t.venue}.${t.symbol}`}>
              <td style={{ padding: '2px 10px' }}>{t.venue}</td>
              <td style={{ padding: '2px 10px' }}>{t.symbol}</td>
              <td style={{ textAlign: 'right', padding: '2px 10px' }}>{t.last.toFixed(1)}</td>
              <td style={{ textAlign: 'right', padding: '2px 10px' }}>{t.bids[0]?.price.toFixed(1) ?? ''}</td>
              <td style={{ textAlign: 'right', padding: '2px 10px' }}>{t.asks[0]?.price.toFixed(1) ?? ''}</td>
              <td style={{ textAlign: 'right', padding: '2px 10px' }}>{t.vol.toFixed(0)}</td>
              <td style={{ textAlign: 'right', padding: '2px 10px' }}>{t.oi.toFixed(0)}</td>
              <td style={{ textAlign: 'right', padding: '2px 10px' }}>{t.seq.toString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  )
}
