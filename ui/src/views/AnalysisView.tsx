/** Arrow tables published on `lt.analysis.<name>` (Python `publish_frame`, `lt query --publish`). */
import { useSyncExternalStore, useState } from 'react'
import { tableFromIPC, type Table } from 'apache-arrow'
import type { FeedConnection } from '../feed/connection'

const SHOWN_ROWS = 200

export interface AnalysisTable {
  name: string
  table?: Table
  error?: string
  bytes: number
  receivedAt: number
}

/** Decodes one message; a payload that is not an Arrow IPC stream becomes an error entry. */
export function decodeAnalysis(subject: string, payload: Uint8Array): AnalysisTable {
  const name = subject.split('.').slice(2).join('.')
  try {
    const table = tableFromIPC(payload)
    // apache-arrow reads garbage as an empty table: no schema means it was not a table.
    if (table.schema.fields.length === 0) throw new Error('no schema in the message')
    return { name, table, bytes: payload.length, receivedAt: Date.now() }
  } catch (e) {
    return { name, error: `not an Arrow IPC stream: ${String(e)}`, bytes: payload.length, receivedAt: Date.now() }
  }
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '∅'
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toPrecision(6)
  if (typeof v === 'bigint') return v.toString()
  if (v instanceof Date) return v.toISOString()
  return String(v)
}

/** The latest table per name; subscribed for the page's lifetime so switching views keeps them. */
export class AnalysisStore {
  private tables = new Map<string, AnalysisTable>()
  private readonly listeners = new Set<() => void>()

  constructor(conn: FeedConnection) {
    conn.onMessage((m) => {
      if (m.type !== 'raw' || m.feed !== 'analysis') return
      const next = new Map(this.tables)
      for (const msg of m.messages) {
        const t = decodeAnalysis(msg.subject, msg.payload)
        next.set(t.name, t)
      }
      this.tables = next
      for (const l of this.listeners) l()
    })
    conn.subscribe('analysis')
  }

  snapshot = (): Map<string, AnalysisTable> => this.tables

  subscribe = (l: () => void): (() => void) => {
    this.listeners.add(l)
    return () => this.listeners.delete(l)
  }
}

export function AnalysisView({ store }: { store: AnalysisStore }) {
  const tables = useSyncExternalStore(store.subscribe, store.snapshot)
  const [selected, setSelected] = useState<string>()
  const names = [...tables.keys()].sort()
  const current = tables.get(selected ?? '') ?? tables.get(names[names.length - 1] ?? '')
  const t = current?.table
  const fields = t?.schema.fields ?? []
  const shown = t ? Math.min(t.numRows, SHOWN_ROWS) : 0
  return (
    <section>
      <h2>Analysis</h2>
      <p className="muted">
        Tables published on <code>lt.analysis.&lt;name&gt;</code> while this browser is open, e.g.{' '}
        <code>lt query --publish fade "SELECT …"</code> or Python <code>publish_frame(name, df)</code>.
      </p>
      <nav className="tabs" data-testid="analysis-names">
        {names.map((n) => (
          <button key={n} className={n === current?.name ? 'active' : ''} onClick={() => setSelected(n)}>
            {n}
          </button>
        ))}
      </nav>
      {current?.error ? <p className="error">{current.name}: {current.error}</p> : null}
      {t && current ? (
        <>
          <p data-testid="analysis-meta">
            <b>{current.name}</b>: {t.numRows} rows × {t.numCols} columns, {current.bytes} bytes, received{' '}
            {new Date(current.receivedAt).toLocaleTimeString()}
            {t.numRows > shown ? ` (first ${shown} shown)` : ''}
          </p>
          <table className="plain" data-testid="analysis-table">
            <thead>
              <tr>
                {fields.map((f) => (
                  <th key={f.name} title={String(f.type)}>
                    {f.name}
                    <br />
                    <small className="muted">{String(f.type)}</small>
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {Array.from({ length: shown }, (_, i) => {
                const row = t.get(i)
                return (
                  <tr key={i}>
                    {fields.map((f) => (
                      <td key={f.name} className="num">
                        {cell(row?.[f.name])}
                      </td>
                    ))}
                  </tr>
                )
              })}
            </tbody>
          </table>
        </>
      ) : names.length === 0 ? (
        <p className="muted">nothing published yet</p>
      ) : null}
    </section>
  )
}
