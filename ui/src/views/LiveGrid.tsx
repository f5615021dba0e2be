/**
 * A ticking grid: TanStack Table (v9) for columns, sorting and the row model, TanStack Virtual for
 * the rows on screen. The row ORDER is re-read from the collection four times a second (sorting
 * at a few Hz, rows don't jump per tick); each VISIBLE row subscribes to its own key and re-renders
 * when that row changes, so a frame costs (visible ∩ changed) rows, not the whole table.
 */
import { memo, useEffect, useLayoutEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react'
import {
  createColumnHelper,
  createSortedRowModel,
  rowSortingFeature,
  sortFn_alphanumeric,
  sortFn_basic,
  tableFeatures,
  useTable,
  type SortingState,
} from '@tanstack/react-table'
import { useVirtualizer } from '@tanstack/react-virtual'
import type { LiveTable } from '../data/live'
import type { FeedRow } from '../worker/protocol'
import { markRendered } from '../perf'

export interface GridColumn {
  id: string
  header: string
  width: number
  align?: 'left' | 'right'
  format?: (row: FeedRow) => string
  /** A CSS class for the cell (e.g. a status colour). */
  className?: (row: FeedRow) => string | undefined
  /** `join`: the value comes from the grid's joined table (the row of the same key there). */
  from?: 'join'
}

const features = tableFeatures({
  rowSortingFeature,
  sortedRowModel: createSortedRowModel(),
  sortFns: { alphanumeric: sortFn_alphanumeric, basic: sortFn_basic },
})
const helper = createColumnHelper<typeof features, FeedRow>()

const ROW_HEIGHT = 24
/** How often the row order (and sorting) is refreshed. */
export const ORDER_REFRESH_MS = 250

function cellText(c: GridColumn, row: FeedRow): string {
  if (c.format) return c.format(row)
  const v = row[c.id]
  return v === undefined ? '' : String(v)
}

/** Each column's left edge in a row (cells are absolutely placed: see `.grid-row .grid-cell`). */
function columnLefts(columns: GridColumn[]): number[] {
  let x = 0
  return columns.map((c) => {
    const left = x
    x += c.width
    return left
  })
}

const noSubscription = () => () => {}

const LiveRow = memo(function LiveRow(props: { live: LiveTable; join?: LiveTable; rowKey: string; columns: GridColumn[]; lefts: number[]; width: number; top: number; index: number }) {
  const { live, join, rowKey, columns, lefts } = props
  const row = useSyncExternalStore(
    (cb) => live.subscribeKey(rowKey, cb),
    () => live.get(rowKey),
  )
  // The joined row (a contract for a tick) changes rarely; it re-renders the row when it does.
  const joined = useSyncExternalStore(
    join ? (cb) => join.subscribeKey(rowKey, cb) : noSubscription,
    () => join?.get(rowKey),
  )
  // Tick → paint is measured for updates of a row on screen, not for a row that just came into
  // view (its value may be seconds old: that is its age, not the feed's latency).
  const mounted = useRef(false)
  useLayoutEffect(() => {
    if (!mounted.current) {
      mounted.current = true
      return
    }
    if (row && typeof row.tsMs === 'number') markRendered(row.tsMs)
  }, [row])
  if (!row) return null
  return (
    <div className="grid-row" role="row" data-index={props.index} data-key={rowKey} style={{ width: props.width, transform: `translateY(${props.top}px)` }}>
      {columns.map((c, i) => (
        <span
          key={c.id}
          role="cell"
          className={`grid-cell ${c.align === 'left' ? 'left' : ''} ${c.className?.(row) ?? ''}`}
          style={{ left: lefts[i], width: c.width }}
        >
          {c.from === 'join' ? (joined ? cellText(c, joined) : '') : cellText(c, row)}
        </span>
      ))}
    </div>
  )
})

/** `join`: a table keyed like `live` whose rows fill the columns marked `from: 'join'` (sorting
 * on them reads it too). */
export function LiveGrid(props: { live: LiveTable; join?: LiveTable; columns: GridColumn[]; initialSort: SortingState; height?: number; testId: string }) {
  const { live, join, columns } = props
  const [data, setData] = useState<FeedRow[]>(() => live.rows())
  useEffect(() => {
    let seen = -1
    const refresh = () => {
      if (live.version === seen) return
      seen = live.version
      setData(live.rows())
    }
    refresh()
    const t = setInterval(refresh, ORDER_REFRESH_MS)
    return () => clearInterval(t)
  }, [live])

  const tableColumns = useMemo(
    () =>
      helper.columns(
        columns.map((c) =>
          helper.accessor((r: FeedRow) => (c.from === 'join' ? join?.get(r.key)?.[c.id] : r[c.id]), {
            id: c.id,
            header: c.header,
            sortFn: c.from === 'join' || typeof data[0]?.[c.id] === 'string' ? 'alphanumeric' : 'basic',
          }),
        ),
      ),
    // Sorting functions follow the column types, which are fixed per feed.
    [columns, join, data.length > 0],
  )
  const [sorting, setSorting] = useState<SortingState>(props.initialSort)
  const table = useTable({
    features,
    columns: tableColumns,
    data,
    getRowId: (r) => r.key,
    state: { sorting },
    onSortingChange: setSorting,
  })
  const rows = table.getRowModel().rows
  const scrollRef = useRef<HTMLDivElement>(null)
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW_HEIGHT,
    getItemKey: (i) => rows[i]?.id ?? i,
    overscan: 8,
  })
  const width = columns.reduce((w, c) => w + c.width, 0)
  const lefts = useMemo(() => columnLefts(columns), [columns])
  return (
    <div className="grid" role="table" data-testid={props.testId} data-rows={rows.length}>
      <div className="grid-head" role="row" style={{ width }}>
        {table.getHeaderGroups()[0]?.headers.map((h, i) => {
          const c = columns[i]
          const sorted = h.column.getIsSorted()
          return (
            <span
              key={h.id}
              role="columnheader"
              className={`grid-cell ${c?.align === 'left' ? 'left' : ''} sortable`}
              style={{ width: c?.width }}
              onClick={h.column.getToggleSortingHandler()}
              aria-sort={sorted === 'asc' ? 'ascending' : sorted === 'desc' ? 'descending' : 'none'}
            >
              {c?.header}
              {sorted === 'asc' ? ' ▲' : sorted === 'desc' ? ' ▼' : ''}
            </span>
          )
        })}
      </div>
      <div ref={scrollRef} className="grid-body" style={{ height: props.height ?? 560, width: width + 16 }}>
        <div style={{ height: virtualizer.getTotalSize(), position: 'relative' }}>
          {virtualizer.getVirtualItems().map((item) => {
            const r = rows[item.index]
            if (!r) return null
            return <LiveRow key={r.id} live={live} join={join} rowKey={r.id} columns={columns} lefts={lefts} width={width} top={item.start} index={item.index} />
          })}
        </div>
      </div>
    </div>
  )
}
