import { describe, expect, it } from 'vitest'
import { PageFlow } from './flow'
import { FrameAck } from './connection'
import type { FeedRow, HubToPage, RowsMessage } from '../worker/protocol'

const row = (key: string, seq: number): FeedRow => ({ key, seq })
const rows = (feed: 'ticks' | 'cells', rs: FeedRow[], reset = false, deleted: string[] = []): RowsMessage => ({
  type: 'rows',
  feed,
  reset,
  rows: rs,
  deleted,
  sentAt: 1,
})
const keysSeqs = (m: HubToPage | undefined) => (m?.type === 'rows' ? m.rows.map((r) => [r.key, r.seq]) : undefined)

describe('PageFlow', () => {
  it('sends up to the window unacknowledged, then merges per feed (latest per key) until the page acknowledges', () => {
    const got: HubToPage[] = []
    const flow = new PageFlow((m) => got.push(m), 2, () => 99)
    flow.rows(rows('ticks', [row('a', 1)]))
    flow.rows(rows('ticks', [row('b', 1)]))
    expect(got).toHaveLength(2)
    expect(flow.credits).toBe(0)
    // Out of credit: three more batches are held as one.
    flow.rows(rows('ticks', [row('a', 2), row('c', 1)]))
    flow.rows(rows('ticks', [row('a', 3)], false, ['b']))
    flow.rows(rows('ticks', [row('c', 2)]))
    expect(got).toHaveLength(2)
    expect(flow.merged).toBe(3)
    expect(flow.heldFeeds).toBe(1)
    flow.ack(1)
    expect(got).toHaveLength(3)
    const m = got[2]!
    expect(keysSeqs(m)).toEqual([
      ['a', 3],
      ['c', 2],
    ])
    expect(m.type === 'rows' && m.deleted).toEqual(['b'])
    expect(m.type === 'rows' && m.sentAt).toBe(99)
    expect(flow.heldFeeds).toBe(0)
    expect(flow.credits).toBe(0)
    // Credit never grows past the window, however much is acknowledged.
    flow.ack(10)
    expect(flow.credits).toBe(2)
  })

  it('rows held for a feed the page unsubscribed are not sent; other feeds still are', () => {
    const got: HubToPage[] = []
    const flow = new PageFlow((m) => got.push(m), 1)
    flow.rows(rows('ticks', [row('a', 1)]))
    flow.rows(rows('ticks', [row('a', 2)]))
    flow.rows(rows('cells', [row('x', 1)]))
    expect(flow.heldFeeds).toBe(2)
    flow.drop('ticks')
    flow.ack(1)
    expect(got.map((m) => m.type === 'rows' && m.feed)).toEqual(['ticks', 'cells'])
    flow.ack(1)
    expect(got).toHaveLength(2)
    expect(flow.heldFeeds).toBe(0)
  })

  it('a snapshot replaces what was held for its feed; later deltas merge into it; other feeds are held apart', () => {
    const got: HubToPage[] = []
    const flow = new PageFlow((m) => got.push(m), 1)
    flow.rows(rows('ticks', [row('a', 1)]))
    flow.rows(rows('ticks', [row('a', 2), row('z', 9)]))
    flow.rows(rows('ticks', [row('a', 5), row('b', 5)], true))
    flow.rows(rows('ticks', [row('b', 6)]))
    flow.rows(rows('cells', [row('x', 1)]))
    // A row deleted and then written again is a row, not a deletion.
    flow.rows(rows('cells', [], false, ['y']))
    flow.rows(rows('cells', [row('y', 2)]))
    flow.ack(1)
    expect(got).toHaveLength(2)
    const snap = got[1]!
    expect(snap.type === 'rows' && snap.reset).toBe(true)
    expect(keysSeqs(snap)).toEqual([
      ['a', 5],
      ['b', 6],
    ])
    // One credit: the cells stay held until the next acknowledgement.
    expect(flow.heldFeeds).toBe(1)
    flow.ack(1)
    const cells = got[2]!
    expect(cells.type === 'rows' && cells.feed).toBe('cells')
    expect(keysSeqs(cells)).toEqual([
      ['x', 1],
      ['y', 2],
    ])
    expect(cells.type === 'rows' && cells.deleted).toEqual([])
  })

  it('a feed with rows held is not overtaken by newer rows of the same feed when credit comes back', () => {
    const got: HubToPage[] = []
    const flow = new PageFlow((m) => got.push(m), 1)
    flow.rows(rows('ticks', [row('a', 1)]))
    flow.rows(rows('ticks', [row('a', 2)]))
    flow.ack(0) // nothing acknowledged: nothing moves
    expect(got).toHaveLength(1)
    flow.ack(1)
    flow.rows(rows('ticks', [row('a', 3)]))
    expect(got.map(keysSeqs)).toEqual([[['a', 1]], [['a', 2]]])
    flow.ack(1)
    expect(got.map(keysSeqs)).toEqual([[['a', 1]], [['a', 2]], [['a', 3]]])
  })
})

describe('FrameAck', () => {
  it('acknowledges every message received before a frame, once per frame', () => {
    const frames: Array<() => void> = []
    const sent: number[] = []
    const ack = new FrameAck((n) => sent.push(n), (cb) => frames.push(cb))
    ack.received()
    ack.received()
    ack.received()
    expect(frames).toHaveLength(1)
    expect(sent).toEqual([])
    frames.shift()!()
    expect(sent).toEqual([3])
    ack.received()
    expect(frames).toHaveLength(1)
    frames.shift()!()
    expect(sent).toEqual([3, 1])
  })
})
