/** The gateway's `/metrics` (Prometheus text), summed per metric name, with rates for counters. */

export interface MetricSample {
  name: string
  value: number
  /** Per second since the previous scrape (counters only). */
  rate?: number
}

/** Parses Prometheus text exposition into name → sum over label sets (comments skipped). */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (!m?.[1] || m[3] === undefined) continue
    const v = Number(m[3])
    if (!Number.isFinite(v)) continue
    out.set(m[1], (out.get(m[1]) ?? 0) + v)
  }
  return out
}

/** Metric types from the `# TYPE` lines. */
export function metricTypes(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) if (m[1] && m[2]) out.set(m[1], m[2])
  return out
}

/** One sample of the exposition with its labels. */
export interface Series {
  name: string
  labels: Record<string, string>
  value: number
}

/** Reads the inside of a label set, `a="x",b="y\"z"` (escapes: backslash, quote, `\n`);
 * undefined when malformed. */
function parseLabels(text: string): Record<string, string> | undefined {
  const labels: Record<string, string> = {}
  let i = 0
  const n = text.length
  while (i < n) {
    const name = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(text.slice(i))
    if (!name?.[1]) return undefined
    i += name[0].length
    let value = ''
    for (;;) {
      if (i >= n) return undefined
      const c = text[i++]
      if (c === '"') break
      if (c === '\\') {
        const e = text[i++]
        value += e === 'n' ? '\n' : (e ?? '')
      } else value += c
    }
    labels[name[1]] = value
    const rest = /^\s*(,|$)/.exec(text.slice(i))
    if (!rest) return undefined
    i += rest[0].length
  }
  return labels
}

/** Parses Prometheus text exposition into samples with their labels (comments and malformed
 * lines skipped), for views that need one figure per stream or consumer rather than a sum. */
export function parseSeries(text: string): Series[] {
  const out: Series[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line)
    if (!m?.[1] || m[3] === undefined) continue
    const value = Number(m[3])
    if (!Number.isFinite(value)) continue
    const labels = m[2] === undefined ? {} : parseLabels(m[2])
    if (!labels) continue
    out.push({ name: m[1], labels, value })
  }
  return out
}

/** A stream as lt up's reading of JetStream's state puts it on `/metrics`. */
export interface StreamRow {
  stream: string
  messages: number
  bytes: number
  firstSeq: number
  lastSeq: number
  consumers: number
}

/** A durable consumer, from the same reading. */
export interface ConsumerRow {
  stream: string
  consumer: string
  pending: number
  ackPending: number
  redelivered: number
  waiting: number
  delivered: number
  ackFloor: number
}

const STREAM_FIELDS: Record<string, keyof Omit<StreamRow, 'stream'>> = {
  jetstream_stream_total_messages: 'messages',
  jetstream_stream_total_bytes: 'bytes',
  jetstream_stream_first_seq: 'firstSeq',
  jetstream_stream_last_seq: 'lastSeq',
  jetstream_stream_consumer_count: 'consumers',
}

const CONSUMER_FIELDS: Record<string, keyof Omit<ConsumerRow, 'stream' | 'consumer'>> = {
  jetstream_consumer_num_pending: 'pending',
  jetstream_consumer_num_ack_pending: 'ackPending',
  jetstream_consumer_num_redelivered: 'redelivered',
  jetstream_consumer_num_waiting: 'waiting',
  jetstream_consumer_delivered_stream_seq: 'delivered',
  jetstream_consumer_ack_floor_stream_seq: 'ackFloor',
}

/** Whether a metric is one of the per-stream or per-consumer series (shown as a table, not
 * summed: a sum of sequence numbers over streams means nothing). */
export function isJetStreamSeries(name: string): boolean {
  return name in STREAM_FIELDS || name in CONSUMER_FIELDS
}

/** JetStream's streams and durable consumers from the labelled series (`stream_name`,
 * `consumer_name`, prometheus-nats-exporter's names), sorted by stream then consumer. */
export function jetStreamTables(series: Series[]): { streams: StreamRow[]; consumers: ConsumerRow[] } {
  const streams = new Map<string, StreamRow>()
  const consumers = new Map<string, ConsumerRow>()
  for (const s of series) {
    const stream = s.labels['stream_name']
    if (stream === undefined) continue
    const sf = STREAM_FIELDS[s.name]
    if (sf) {
      const row = streams.get(stream) ?? { stream, messages: 0, bytes: 0, firstSeq: 0, lastSeq: 0, consumers: 0 }
      row[sf] = s.value
      streams.set(stream, row)
      continue
    }
    const cf = CONSUMER_FIELDS[s.name]
    const consumer = s.labels['consumer_name']
    if (!cf || consumer === undefined) continue
    const key = JSON.stringify([stream, consumer])
    const row = consumers.get(key) ?? { stream, consumer, pending: 0, ackPending: 0, redelivered: 0, waiting: 0, delivered: 0, ackFloor: 0 }
    row[cf] = s.value
    consumers.set(key, row)
  }
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)
  return {
    streams: [...streams.values()].sort((a, b) => byName(a.stream, b.stream)),
    consumers: [...consumers.values()].sort((a, b) => byName(a.stream, b.stream) || byName(a.consumer, b.consumer)),
  }
}

/** Which part of the platform a metric belongs to, for the system view. */
export function componentOf(name: string): string {
  if (/^(ws_|slow_consumers|backpressure_events|degrade_level|nats_req_latency|admin_)/.test(name)) return 'gateway'
  if (/^(src_|reorder_count|ticks_out|snapshots_out|deltas_out|md_|aggregator_)/.test(name)) return 'aggregator'
  if (/^collector_/.test(name)) return 'collector'
  if (/^(message_count|error_count|batch_processing|sink_|source_|consumer_lag|committed_sequence|dead_letters|duplicates_dropped)/.test(name))
    return 'flow'
  if (/^query_/.test(name)) return 'query'
  // JetStream's own state of its streams and durable consumers (lt up reads it for /metrics).
  if (/^jetstream_/.test(name)) return 'JetStream'
  // The browsers' own end-to-end reports (ClientStats), recorded by the gateway.
  if (/^ui_/.test(name)) return 'browsers'
  return 'other'
}
