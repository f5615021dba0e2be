/** The feeds the UI shows: how each maps gateway subjects and generated proto types to rows. */
import { fromBinary } from '@bufbuild/protobuf'
import { ContractDeltaSchema, ContractSnapshotSchema, DeltaSchema, SnapshotSchema, type Contract, type Tick } from '../gen/langtian/md/v1/md_pb'
import { ChannelDeltaSchema, ChannelSnapshotSchema, StepType, type ChannelSample } from '../gen/langtian/battery/v1/battery_pb'
import type { MdCodec } from './mdfeed'
import type { FeedName } from '../worker/protocol'

const NS_PER_MS = 1_000_000n

/** Nanoseconds since the epoch → ms since the epoch, keeping the sub-millisecond part. */
export const epochMs = (ns: bigint) => Number(ns / NS_PER_MS) + Number(ns % NS_PER_MS) / 1e6

/** Market ticks: deltas on `xy.md.tick.<venue>.<shard>`, snapshots `xy.md.snapshot.<venue>`. */
export const tickCodec: MdCodec<Tick> = {
  topic: 'xy.md.tick.>',
  decodeDelta(payload) {
    const d = fromBinary(DeltaSchema, payload)
    return { group: d.group, delta: { shard: d.shard, version: d.version, baseVersion: d.baseVersion, records: d.ticks } }
  },
  decodeSnapshot(payload) {
    const s = fromBinary(SnapshotSchema, payload)
    return { group: s.group, snapshot: { version: s.version, records: s.ticks, shardVersions: s.shardVersions } }
  },
  snapshotKey: (group) => `xy.md.snapshot.${group}`,
  groupOfKey: (key) => (key.startsWith('xy.md.snapshot.') ? key.slice('xy.md.snapshot.'.length) : undefined),
  keyOf: (t) => `${t.venue}.${t.symbol}`,
  toRow: (t) => ({
    key: `${t.venue}.${t.symbol}`,
    venue: t.venue,
    symbol: t.symbol,
    last: t.last,
    bid: t.bids[0]?.price ?? 0,
    bidVol: t.bids[0]?.volume ?? 0,
    ask: t.asks[0]?.price ?? 0,
    askVol: t.asks[0]?.volume ?? 0,
    vol: t.vol,
    oi: t.oi,
    seq: Number(t.seq),
    // Publish time at the source (ms since the epoch): the start of tick → paint latency.
    tsMs: epochMs(t.tsExchange),
  }),
}

/** Contracts (reference data): deltas on `xy.md.contract.<venue>.<shard>`, snapshots
 * `xy.md.contracts.<venue>`; keyed like ticks (`<venue>.<symbol>`), so the market grid joins them. */
export const contractCodec: MdCodec<Contract> = {
  topic: 'xy.md.contract.>',
  decodeDelta(payload) {
    const d = fromBinary(ContractDeltaSchema, payload)
    return { group: d.group, delta: { shard: d.shard, version: d.version, baseVersion: d.baseVersion, records: d.contracts } }
  },
  decodeSnapshot(payload) {
    const s = fromBinary(ContractSnapshotSchema, payload)
    return { group: s.group, snapshot: { version: s.version, records: s.contracts, shardVersions: s.shardVersions } }
  },
  snapshotKey: (group) => `xy.md.contracts.${group}`,
  followsGroupsOf: 'ticks',
  groupOfKey: (key) => (key.startsWith('xy.md.contracts.') ? key.slice('xy.md.contracts.'.length) : undefined),
  keyOf: (c) => `${c.venue}.${c.symbol}`,
  toRow: (c) => ({
    key: `${c.venue}.${c.symbol}`,
    name: c.name,
    tickSize: c.tickSize,
    multiplier: c.multiplier,
    currency: c.currency,
    expiry: c.expiry,
    seq: Number(c.seq),
  }),
}

export const STEP_NAMES: Record<number, string> = {
  [StepType.UNSPECIFIED]: '—',
  [StepType.REST]: 'rest',
  [StepType.CC_CHARGE]: 'CC charge',
  [StepType.CV_CHARGE]: 'CV charge',
  [StepType.CC_DISCHARGE]: 'CC discharge',
  [StepType.CV_DISCHARGE]: 'CV discharge',
  [StepType.PAUSE]: 'pause',
}

/** A channel's status for the grid's colour: alarm beats the step kind. */
export function channelStatus(s: Pick<ChannelSample, 'temperature' | 'voltage' | 'stepType'>): string {
  if (s.temperature >= 45 || s.voltage >= 4.25 || (s.voltage > 0 && s.voltage < 2.5)) return 'alarm'
  if (s.temperature >= 40) return 'warn'
  switch (s.stepType) {
    case StepType.CC_CHARGE:
    case StepType.CV_CHARGE:
      return 'charge'
    case StepType.CC_DISCHARGE:
    case StepType.CV_DISCHARGE:
      return 'discharge'
    case StepType.PAUSE:
      return 'pause'
    default:
      return 'rest'
  }
}

/** Battery channels: deltas on `lt.md.delta.cells.<shard>`, snapshot `lt.md.snapshot.cells`. */
export const cellCodec: MdCodec<ChannelSample> = {
  topic: 'lt.md.delta.cells.>',
  decodeDelta(payload) {
    const d = fromBinary(ChannelDeltaSchema, payload)
    return { group: d.group, delta: { shard: d.shard, version: d.version, baseVersion: d.baseVersion, records: d.samples } }
  },
  decodeSnapshot(payload) {
    const s = fromBinary(ChannelSnapshotSchema, payload)
    return { group: s.group, snapshot: { version: s.version, records: s.samples, shardVersions: s.shardVersions } }
  },
  snapshotKey: (group) => `lt.md.snapshot.${group}`,
  groupOfKey: (key) => (key.startsWith('lt.md.snapshot.') ? key.slice('lt.md.snapshot.'.length) : undefined),
  keyOf: (s) => `${s.deviceId}/${s.channel}`,
  toRow: (s) => ({
    key: `${s.deviceId}/${s.channel}`,
    device: s.deviceId,
    channel: s.channel,
    cycle: s.cycle,
    step: s.step,
    stepName: STEP_NAMES[s.stepType] ?? String(s.stepType),
    voltage: s.voltage,
    current: s.current,
    temperature: s.temperature,
    capacity: s.capacity,
    soc: s.soc,
    seq: Number(s.seq),
    status: channelStatus(s),
    // The source time of a channel sample is the collector's receipt of its datagram: the
    // device's own clock (`tsDevice`) is not the browser's (the simulator's runs on cell time).
    // No receipt time (trimmed at degradation level 2): no latency for the row.
    ...(s.tsReceived > 0n ? { tsMs: epochMs(s.tsReceived) } : {}),
  }),
}

/** Raw (non-md) feeds: the gateway subscription of each. */
export const RAW_TOPICS: Partial<Record<FeedName, string>> = {
  // Discovery: every heartbeat is a KV put on `$KV.lt_nodes.<node>` (JSON NodeInfo).
  nodes: '$KV.lt_nodes.>',
  // Arrow IPC tables published for the UI (Python `publish_frame`, `lt query --publish`).
  analysis: 'lt.analysis.>',
}
