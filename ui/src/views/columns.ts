/** Column sets of the two live grids (seed 002 tick fields with the contract's name and
 * multiplier; cycler channel fields). */
import type { GridColumn } from './LiveGrid'

const num = (id: string, digits: number) => (r: Record<string, unknown>) => {
  const v = r[id]
  return typeof v === 'number' ? v.toFixed(digits) : ''
}

export const TICK_COLUMNS: GridColumn[] = [
  { id: 'venue', header: 'venue', width: 70, align: 'left' },
  { id: 'symbol', header: 'symbol', width: 90, align: 'left' },
  // From the instrument's contract (reference data, joined by key).
  { id: 'name', header: 'name', width: 150, align: 'left', from: 'join' },
  { id: 'multiplier', header: 'mult.', width: 60, from: 'join', format: num('multiplier', 0) },
  { id: 'last', header: 'last', width: 90, format: num('last', 1) },
  { id: 'bid', header: 'bid', width: 90, format: num('bid', 1) },
  { id: 'bidVol', header: 'bid vol', width: 70, format: num('bidVol', 0) },
  { id: 'ask', header: 'ask', width: 90, format: num('ask', 1) },
  { id: 'askVol', header: 'ask vol', width: 70, format: num('askVol', 0) },
  { id: 'vol', header: 'volume', width: 100, format: num('vol', 0) },
  { id: 'oi', header: 'open int.', width: 100, format: num('oi', 0) },
  { id: 'seq', header: 'seq', width: 80 },
]

export const CELL_COLUMNS: GridColumn[] = [
  { id: 'device', header: 'cycler', width: 110, align: 'left' },
  { id: 'channel', header: 'ch', width: 50 },
  { id: 'status', header: 'status', width: 90, align: 'left', className: (r) => `status-${String(r.status)}` },
  { id: 'stepName', header: 'step', width: 110, align: 'left' },
  { id: 'cycle', header: 'cycle', width: 60 },
  { id: 'voltage', header: 'V', width: 80, format: num('voltage', 4) },
  { id: 'current', header: 'A', width: 80, format: num('current', 3) },
  { id: 'temperature', header: '°C', width: 70, format: num('temperature', 1) },
  { id: 'soc', header: 'SOC %', width: 70, format: num('soc', 1) },
  { id: 'capacity', header: 'Ah', width: 80, format: num('capacity', 4) },
  { id: 'seq', header: 'seq', width: 80 },
]
