import { describe, expect, it } from 'vitest'
import { tableToIPC, tableFromArrays } from 'apache-arrow'
import { componentOf, metricTypes, parsePrometheus } from './metrics'
import { parseNode } from './raw'
import { decodeAnalysis } from '../views/AnalysisView'
import { channelStatus } from '../feed/feeds'
import { StepType } from '../gen/langtian/battery/v1/battery_pb'

describe('system view data', () => {
  it('sums Prometheus samples per name over labels and reads the types', () => {
    const text = [
      '# TYPE ws_active gauge',
      'ws_active 3',
      '# TYPE ticks_out counter',
      'ticks_out{group="shfe"} 10',
      'ticks_out{group="dce"} 5',
      'nats_req_latency_bucket{le="0.1"} 4',
      'garbage line',
      'weird NaN',
    ].join('\n')
    const v = parsePrometheus(text)
    expect(v.get('ws_active')).toBe(3)
    expect(v.get('ticks_out')).toBe(15)
    expect(v.has('weird')).toBe(false)
    expect(metricTypes(text).get('ticks_out')).toBe('counter')
    expect(componentOf('ws_active')).toBe('gateway')
    expect(componentOf('src_gap')).toBe('aggregator')
    expect(componentOf('ui_tick_to_paint_latency_count')).toBe('browsers')
    expect(componentOf('collector_dropped')).toBe('collector')
    expect(componentOf('consumer_lag')).toBe('flow')
    expect(componentOf('jetstream_consumer_num_pending')).toBe('JetStream')
  })

  it('reads discovery heartbeats and treats empty or foreign payloads as gone', () => {
    const enc = new TextEncoder()
    expect(parseNode(enc.encode('{"node_id":"n1","role":"flow","last_seen_ms":5}'))).toMatchObject({ node_id: 'n1', role: 'flow', load: 0 })
    expect(parseNode(new Uint8Array())).toBeUndefined()
    expect(parseNode(enc.encode('{"x":1}'))).toBeUndefined()
    expect(parseNode(enc.encode('not json'))).toBeUndefined()
  })

  it('decodes Arrow IPC tables for the analysis view and names bad payloads', () => {
    const t = tableFromArrays({ channel: ['c1', 'c2'], fade: Float64Array.from([0.5, 0.25]) })
    const a = decodeAnalysis('lt.analysis.fade', tableToIPC(t, 'stream'))
    expect(a.name).toBe('fade')
    expect(a.table?.numRows).toBe(2)
    expect(a.table?.getChild('fade')?.get(1)).toBe(0.25)
    const bad = decodeAnalysis('lt.analysis.x', new Uint8Array([1, 2, 3]))
    expect(bad.error).toMatch(/not an Arrow IPC stream/)
  })

  it('colours channels: alarms beat the step kind', () => {
    expect(channelStatus({ temperature: 25, voltage: 3.7, stepType: StepType.CC_CHARGE })).toBe('charge')
    expect(channelStatus({ temperature: 25, voltage: 3.7, stepType: StepType.CC_DISCHARGE })).toBe('discharge')
    expect(channelStatus({ temperature: 41, voltage: 3.7, stepType: StepType.REST })).toBe('warn')
    expect(channelStatus({ temperature: 25, voltage: 4.3, stepType: StepType.CC_CHARGE })).toBe('alarm')
  })
})
