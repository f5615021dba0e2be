import { describe, expect, it } from 'vitest'
import { tableToIPC, tableFromArrays } from 'apache-arrow'
import { componentOf, isJetStreamSeries, jetStreamTables, metricTypes, parsePrometheus, parseSeries } from './metrics'
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

  it('reads labelled series, escapes included, and skips malformed label sets', () => {
    const text = [
      '# HELP x y',
      'a_total 1',
      'b{x="1",y="two"} 2.5',
      'c{path="C:\\\\lake",quote="say \\"hi\\"",nl="a\\nb",brace="}{"} 3',
      'd{x="unterminated} 4',
      'e{x="1"y="2"} 5',
      'f{x="1"} NaN',
    ].join('\n')
    const s = parseSeries(text)
    expect(s.map((x) => x.name)).toEqual(['a_total', 'b', 'c'])
    expect(s[1]).toEqual({ name: 'b', labels: { x: '1', y: 'two' }, value: 2.5 })
    expect(s[2]?.labels).toEqual({ path: 'C:\\lake', quote: 'say "hi"', nl: 'a\nb', brace: '}{' })
  })

  it('builds one row per JetStream stream and durable consumer instead of summing them', () => {
    const text = [
      'jetstream_stream_total_messages{stream_name="XY_SRC"} 40',
      'jetstream_stream_total_messages{stream_name="LT_EVENTS"} 1200',
      'jetstream_stream_total_bytes{stream_name="LT_EVENTS"} 90000',
      'jetstream_stream_first_seq{stream_name="LT_EVENTS"} 1',
      'jetstream_stream_last_seq{stream_name="LT_EVENTS"} 1200',
      'jetstream_stream_consumer_count{stream_name="LT_EVENTS"} 2',
      'jetstream_consumer_num_pending{stream_name="LT_EVENTS",consumer_name="lake"} 7',
      'jetstream_consumer_num_ack_pending{stream_name="LT_EVENTS",consumer_name="lake"} 3',
      'jetstream_consumer_delivered_stream_seq{stream_name="LT_EVENTS",consumer_name="lake"} 1193',
      'jetstream_consumer_num_pending{stream_name="LT_EVENTS",consumer_name="audit"} 0',
      'jetstream_consumer_num_pending{consumer_name="no-stream"} 9',
      'jetstream_state_errors 2',
    ].join('\n')
    const { streams, consumers } = jetStreamTables(parseSeries(text))
    expect(streams.map((s) => s.stream)).toEqual(['LT_EVENTS', 'XY_SRC'])
    expect(streams[0]).toEqual({ stream: 'LT_EVENTS', messages: 1200, bytes: 90000, firstSeq: 1, lastSeq: 1200, consumers: 2 })
    expect(streams[1]?.messages).toBe(40)
    expect(consumers.map((c) => c.consumer)).toEqual(['audit', 'lake'])
    expect(consumers[1]).toMatchObject({ stream: 'LT_EVENTS', pending: 7, ackPending: 3, delivered: 1193, redelivered: 0 })
    expect(isJetStreamSeries('jetstream_stream_first_seq')).toBe(true)
    expect(isJetStreamSeries('jetstream_state_errors')).toBe(false)
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
