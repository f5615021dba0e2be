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
