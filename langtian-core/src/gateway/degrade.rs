//! Slow-consumer protection, as pure logic: the per-connection [`Outbox`] (what waits to be sent,
//! conflated from level 1 on) and the [`Pressure`] state machine that picks the level from the
//! queued bytes and how long the socket write has been stuck, with hysteresis on the way down.
//!
//! | level | name | what changes |
//! |---|---|---|
//! | 0 | normal | every message, a batch every `batch_interval` (16 ms) |
//! | 1 | sampled | latest value per subscription+subject per `sample_interval` (market/battery deltas are merged, not dropped) |
//! | 2 | trimmed | as 1, and deltas/snapshots keep only the configured minimal fields |
//! | 3 | paused | as 2, and subscriptions that are not `priority` are paused (re-snapshot on resume) |

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;

use crate::proto::battery::v1::{ChannelDelta, ChannelSample, ChannelSnapshot};
use crate::proto::md::v1::{ContractDelta, Delta, Snapshot, Tick};

/// Thresholds of the three levels.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradePolicy {
    /// Batch interval at level 0.
    pub batch_interval: Duration,
    /// Batch interval from level 1 on.
    pub sample_interval: Duration,
    /// How long a batch waits after its first message for more (bursts go out together).
    pub linger: Duration,
    /// Queued bytes that raise the level to 1, 2, 3.
    pub high_bytes: [usize; 3],
    /// Queued bytes below which a level may be left (level 1, 2, 3).
    pub low_bytes: [usize; 3],
    /// A socket write stuck this long raises the level to 1, 2, 3.
    pub stall: [Duration; 3],
    /// How long the connection must be healthy before going down one level.
    pub recover_after: Duration,
    /// Beyond this many queued bytes, or a write stuck for `max_stall`, the connection is closed.
    pub hard_limit_bytes: usize,
    /// See `hard_limit_bytes`.
    pub max_stall: Duration,
    /// Tick fields kept at level 2 (the rest are cleared).
    pub tick_fields: BTreeSet<String>,
    /// Battery sample fields kept at level 2.
    pub sample_fields: BTreeSet<String>,
}

impl Default for DegradePolicy {
    fn default() -> Self {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Self {
            batch_interval: Duration::from_millis(16),
            sample_interval: Duration::from_millis(250),
            linger: Duration::from_millis(2),
            high_bytes: [256 << 10, 1 << 20, 4 << 20],
            low_bytes: [64 << 10, 256 << 10, 1 << 20],
            stall: [
                Duration::from_millis(250),
                Duration::from_secs(1),
                Duration::from_secs(3),
            ],
            recover_after: Duration::from_secs(1),
            hard_limit_bytes: 64 << 20,
            max_stall: Duration::from_secs(60),
            tick_fields: set(&["symbol", "venue", "seq", "last", "ts_exchange", "ts_arrival"]),
            sample_fields: set(&[
                "device_id",
                "channel",
                "seq",
                "voltage",
                "current",
                "temperature",
                "soc",
                "step_type",
                "ts_device",
            ]),
        }
    }
}

impl DegradePolicy {
    /// Checks that thresholds rise with the level and lows stay below highs.
    pub fn validate(&self) -> Result<(), String> {
        let ms = self.batch_interval.as_millis();
        if !(1..=1000).contains(&ms) {
            return Err(format!("batch_interval {ms} ms is outside 1–1000 ms"));
        }
        if self.linger > self.batch_interval {
            return Err("linger must not exceed batch_interval".into());
        }
        if self.sample_interval < self.batch_interval {
            return Err("sample_interval must be at least batch_interval".into());
        }
        for i in 0..3 {
            if self.low_bytes[i] >= self.high_bytes[i] {
                return Err(format!(
                    "level {}: low watermark must be below the high one",
                    i + 1
                ));
            }
            if i > 0 && (self.high_bytes[i] <= self.high_bytes[i - 1] || self.stall[i] <= self.stall[i - 1]) {
                return Err(format!("level {} thresholds must be above level {}'s", i + 1, i));
            }
        }
        if self.hard_limit_bytes <= self.high_bytes[2] || self.max_stall <= self.stall[2] {
            return Err("the hard limits must be above level 3's thresholds".into());
        }
        Ok(())
    }
}

/// A level change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    /// Level before.
    pub from: u8,
    /// Level after.
    pub to: u8,
}

/// The level state machine of one connection.
#[derive(Debug, Clone)]
pub struct Pressure {
    level: u8,
    healthy_since: Option<Instant>,
}

impl Default for Pressure {
    fn default() -> Self {
        Self::new()
    }
}

impl Pressure {
    /// Level 0.
    pub fn new() -> Self {
        Self {
            level: 0,
            healthy_since: None,
        }
    }

    /// The current level.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Re-evaluates with the queued bytes and how long the current write has been stuck.
    /// Goes up at once (possibly several levels), down one level per `recover_after` of health.
    pub fn update(
        &mut self,
        p: &DegradePolicy,
        now: Instant,
        queued: usize,
        stalled: Duration,
    ) -> Option<LevelChange> {
        let by_bytes = p.high_bytes.iter().filter(|h| queued >= **h).count() as u8;
        let by_stall = p.stall.iter().filter(|s| stalled >= **s).count() as u8;
        let target = by_bytes.max(by_stall);
        if target > self.level {
            let from = self.level;
            self.level = target;
            self.healthy_since = None;
            return Some(LevelChange { from, to: target });
        }
        if self.level == 0 {
            return None;
        }
        let i = usize::from(self.level - 1);
        let healthy = queued < p.low_bytes[i] && stalled < p.stall[0];
        if !healthy {
            self.healthy_since = None;
            return None;
        }
        let since = *self.healthy_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= p.recover_after {
            let from = self.level;
            self.level -= 1;
            self.healthy_since = Some(now);
            return Some(LevelChange { from, to: self.level });
        }
        None
    }
}

/// One message waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The client's subscription id.
    pub sub_id: u32,
    /// NATS subject.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// When the gateway received it, ns since the epoch.
    pub ts_received: i64,
}

impl Pending {
    fn size(&self) -> usize {
        self.payload.len() + self.subject.len() + 16
    }
}

/// What the payload of a subject is, by the subject's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TickDelta,
    TickSnapshot,
    ContractDelta,
    ChannelDelta,
    ChannelSnapshot,
    Other,
}

fn kind_of(subject: &str) -> Kind {
    let t: Vec<&str> = subject.split('.').collect();
    match (t.get(1), t.get(2), t.len()) {
        (Some(&"md"), Some(&"tick"), 5) => Kind::TickDelta,
        (Some(&"md"), Some(&"contract"), 5) => Kind::ContractDelta,
        (Some(&"md"), Some(&"delta"), 5) => Kind::ChannelDelta,
        (Some(&"md"), Some(&"snapshot"), 4) if t[0] == "xy" => Kind::TickSnapshot,
        (Some(&"md"), Some(&"snapshot"), 4) => Kind::ChannelSnapshot,
        _ => Kind::Other,
    }
}

/// Merges a later delta into an earlier one of the same shard: records by key (later wins), the
/// earlier base, the later version. `None` when either does not decode.
fn merge(kind: Kind, earlier: &[u8], later: &[u8]) -> Option<Bytes> {
    match kind {
        Kind::TickDelta => {
            let mut a = Delta::decode(earlier).ok()?;
            let b = Delta::decode(later).ok()?;
            a.ticks = latest_by_key(std::mem::take(&mut a.ticks), b.ticks, |t| {
                (t.venue.clone(), t.symbol.clone())
            });
            a.version = b.version;
            a.ts = b.ts;
            Some(a.encode_to_vec().into())
        }
        Kind::ContractDelta => {
            let mut a = ContractDelta::decode(earlier).ok()?;
            let b = ContractDelta::decode(later).ok()?;
            a.contracts = latest_by_key(std::mem::take(&mut a.contracts), b.contracts, |c| {
                (c.venue.clone(), c.symbol.clone())
            });
            a.version = b.version;
            a.ts = b.ts;
            Some(a.encode_to_vec().into())
        }
        Kind::ChannelDelta => {
            let mut a = ChannelDelta::decode(earlier).ok()?;
            let b = ChannelDelta::decode(later).ok()?;
            a.samples = latest_by_key(std::mem::take(&mut a.samples), b.samples, |s| {
                (s.device_id.clone(), s.channel)
            });
            a.version = b.version;
            a.ts = b.ts;
            Some(a.encode_to_vec().into())
        }
        _ => None,
    }
}

/// `earlier` then `later`, one record per key: a later record replaces the earlier one in its
/// place.
fn latest_by_key<T, K: std::hash::Hash + Eq>(
    earlier: Vec<T>,
    later: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(earlier.len() + later.len());
    let mut idx: HashMap<K, usize> = HashMap::new();
    for r in earlier.into_iter().chain(later) {
        let k = key(&r);
        match idx.get(&k) {
            Some(i) => out[*i] = r,
            None => {
                idx.insert(k, out.len());
                out.push(r);
            }
        }
    }
    out
}

fn trim_tick(t: &mut Tick, keep: &BTreeSet<String>) {
    let k = |f: &str| keep.contains(f);
    if !k("symbol") {
        t.symbol.clear();
    }
    if !k("venue") {
        t.venue.clear();
    }
    if !k("ts_exchange") {
        t.ts_exchange = 0;
    }
    if !k("ts_arrival") {
        t.ts_arrival = 0;
    }
    if !k("seq") {
        t.seq = 0;
    }
    if !k("last") {
        t.last = 0.0;
    }
    if !k("bids") {
        t.bids.clear();
    }
    if !k("asks") {
        t.asks.clear();
    }
    if !k("vol") {
        t.vol = 0.0;
    }
    if !k("oi") {
        t.oi = 0.0;
    }
    if !k("flags") {
        t.flags = 0;
    }
    if !k("source") {
        t.source.clear();
    }
}

fn trim_sample(s: &mut ChannelSample, keep: &BTreeSet<String>) {
    let k = |f: &str| keep.contains(f);
    if !k("device_id") {
        s.device_id.clear();
    }
    if !k("channel") {
        s.channel = 0;
    }
    if !k("cycle") {
        s.cycle = 0;
    }
    if !k("step") {
        s.step = 0;
    }
    if !k("step_type") {
        s.step_type = 0;
    }
    if !k("voltage") {
        s.voltage = 0.0;
    }
    if !k("current") {
        s.current = 0.0;
    }
    if !k("temperature") {
        s.temperature = 0.0;
    }
    if !k("capacity") {
        s.capacity = 0.0;
    }
    if !k("energy") {
        s.energy = 0.0;
    }
    if !k("soc") {
        s.soc = 0.0;
    }
    if !k("seq") {
        s.seq = 0;
    }
    if !k("ts_device") {
        s.ts_device = 0;
    }
    if !k("ts_received") {
        s.ts_received = 0;
    }
}

/// Clears the fields a level-2 connection does not get; other payloads pass unchanged.
pub fn trim(subject: &str, payload: &Bytes, p: &DegradePolicy) -> Bytes {
    let out = match kind_of(subject) {
        Kind::TickDelta => Delta::decode(payload.as_ref()).ok().map(|mut d| {
            d.ticks.iter_mut().for_each(|t| trim_tick(t, &p.tick_fields));
            d.encode_to_vec()
        }),
        Kind::TickSnapshot => Snapshot::decode(payload.as_ref()).ok().map(|mut d| {
            d.ticks.iter_mut().for_each(|t| trim_tick(t, &p.tick_fields));
            d.encode_to_vec()
        }),
        Kind::ChannelDelta => ChannelDelta::decode(payload.as_ref()).ok().map(|mut d| {
            d.samples
                .iter_mut()
                .for_each(|s| trim_sample(s, &p.sample_fields));
            d.encode_to_vec()
        }),
        Kind::ChannelSnapshot => ChannelSnapshot::decode(payload.as_ref()).ok().map(|mut d| {
            d.samples
                .iter_mut()
                .for_each(|s| trim_sample(s, &p.sample_fields));
            d.encode_to_vec()
        }),
        // Contracts are small and rare: sent whole.
        Kind::ContractDelta | Kind::Other => None,
    };
    out.map(Bytes::from).unwrap_or_else(|| payload.clone())
}

/// What waits to be sent on one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Vec<Pending>,
    index: HashMap<(u32, String), usize>,
    bytes: usize,
    conflate: bool,
    /// Subscriptions whose deltas could not be merged (a re-snapshot is due).
    resync: BTreeSet<u32>,
}

impl Outbox {
    /// Queued bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queued messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Switches conflation on (level ≥ 1; what is queued is conflated at once) or off.
    pub fn set_conflate(&mut self, on: bool) {
        if on == self.conflate {
            return;
        }
        self.conflate = on;
        self.index.clear();
        if on {
            let old = std::mem::take(&mut self.queue);
            self.bytes = 0;
            for p in old {
                self.push(p);
            }
        }
    }

    /// Queues a message (conflated when on).
    pub fn push(&mut self, p: Pending) {
        if self.conflate {
            let key = (p.sub_id, p.subject.clone());
            if let Some(&i) = self.index.get(&key) {
                let old = &mut self.queue[i];
                let kind = kind_of(&p.subject);
                let merged = match kind {
                    Kind::TickDelta | Kind::ContractDelta | Kind::ChannelDelta => {
                        match merge(kind, &old.payload, &p.payload) {
                            Some(m) => Some(m),
                            None => {
                                self.resync.insert(p.sub_id);
                                None
                            }
                        }
                    }
                    _ => None,
                };
                self.bytes -= old.size();
                old.payload = merged.unwrap_or(p.payload);
                old.ts_received = p.ts_received;
                self.bytes += old.size();
                return;
            }
            self.index.insert(key, self.queue.len());
        }
        self.bytes += p.size();
        self.queue.push(p);
    }

    /// Drops every queued message of `sub_id` (unsubscribe, pause).
    pub fn drop_sub(&mut self, sub_id: u32) {
        self.queue.retain(|p| p.sub_id != sub_id);
        self.bytes = self.queue.iter().map(Pending::size).sum();
        self.index = self
            .queue
            .iter()
            .enumerate()
            .filter(|_| self.conflate)
            .map(|(i, p)| ((p.sub_id, p.subject.clone()), i))
            .collect();
    }

    /// Takes everything queued, and the subscriptions due for a re-snapshot.
    pub fn take(&mut self) -> (Vec<Pending>, BTreeSet<u32>) {
        self.index.clear();
        self.bytes = 0;
        (std::mem::take(&mut self.queue), std::mem::take(&mut self.resync))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sub: u32, subject: &str, body: &[u8]) -> Pending {
        Pending {
            sub_id: sub,
            subject: subject.into(),
            payload: Bytes::copy_from_slice(body),
            ts_received: 0,
        }
    }

    #[test]
    fn levels_rise_at_once_and_fall_one_step_per_recovery_period() {
        let pol = DegradePolicy::default();
        pol.validate().unwrap();
        let mut pr = Pressure::new();
        let t0 = Instant::now();
        assert_eq!(pr.update(&pol, t0, 1000, Duration::ZERO), None);
        assert_eq!(
            pr.update(&pol, t0, 300 << 10, Duration::ZERO),
            Some(LevelChange { from: 0, to: 1 })
        );
        assert_eq!(
            pr.update(&pol, t0, 0, Duration::from_secs(4)),
            Some(LevelChange { from: 1, to: 3 })
        );
        // Healthy, but only for half the recovery period: stays.
        assert_eq!(pr.update(&pol, t0, 0, Duration::ZERO), None);
        assert_eq!(
            pr.update(&pol, t0 + pol.recover_after / 2, 0, Duration::ZERO),
            None
        );
        assert_eq!(
            pr.update(&pol, t0 + pol.recover_after, 0, Duration::ZERO),
            Some(LevelChange { from: 3, to: 2 })
        );
        // Between the low and high watermarks: not healthy, no change.
        assert_eq!(
            pr.update(&pol, t0 + pol.recover_after * 3, 300 << 10, Duration::ZERO),
            None
        );
        let t1 = t0 + pol.recover_after * 4;
        assert_eq!(pr.update(&pol, t1, 0, Duration::ZERO), None);
        assert_eq!(
            pr.update(&pol, t1 + pol.recover_after, 0, Duration::ZERO),
            Some(LevelChange { from: 2, to: 1 })
        );
        assert_eq!(
            pr.update(&pol, t1 + pol.recover_after * 2, 0, Duration::ZERO),
            Some(LevelChange { from: 1, to: 0 })
        );
        assert_eq!(pr.level(), 0);
    }

    #[test]
    fn conflation_keeps_the_latest_and_merges_deltas() {
        let mut o = Outbox::default();
        o.push(p(1, "a.b", b"1"));
        o.push(p(1, "a.b", b"2"));
        assert_eq!(o.len(), 2, "level 0 keeps everything");
        o.set_conflate(true);
        assert_eq!(o.len(), 1);
        assert_eq!(o.take().0[0].payload.as_ref(), b"2");

        let tick = |sym: &str, seq| Tick {
            venue: "shfe".into(),
            symbol: sym.into(),
            seq,
            ..Default::default()
        };
        let d1 = Delta {
            group: "shfe".into(),
            shard: 2,
            version: 5,
            base_version: 4,
            ticks: vec![tick("a", 1), tick("b", 1)],
            ..Default::default()
        };
        let d2 = Delta {
            version: 6,
            base_version: 5,
            ticks: vec![tick("b", 2), tick("c", 1)],
            ..d1.clone()
        };
        o.push(p(7, "xy.md.tick.shfe.2", &d1.encode_to_vec()));
        o.push(p(7, "xy.md.tick.shfe.2", &d2.encode_to_vec()));
        let (msgs, resync) = o.take();
        assert!(resync.is_empty());
        let m = Delta::decode(msgs[0].payload.as_ref()).unwrap();
        assert_eq!((m.base_version, m.version), (4, 6));
        let seqs: Vec<(String, u64)> = m.ticks.iter().map(|t| (t.symbol.clone(), t.seq)).collect();
        assert_eq!(seqs, vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 1)]);
        // Contract deltas merge the same way (a dropped one would cost the client a re-snapshot).
        let contract = |sym: &str, seq| crate::proto::md::v1::Contract {
            venue: "shfe".into(),
            symbol: sym.into(),
            seq,
            ..Default::default()
        };
        let c1 = ContractDelta {
            group: "shfe".into(),
            version: 2,
            base_version: 1,
            contracts: vec![contract("a", 1)],
            ..Default::default()
        };
        let c2 = ContractDelta {
            version: 3,
            base_version: 2,
            contracts: vec![contract("b", 1), contract("a", 2)],
            ..c1.clone()
        };
        o.push(p(9, "xy.md.contract.shfe.0", &c1.encode_to_vec()));
        o.push(p(9, "xy.md.contract.shfe.0", &c2.encode_to_vec()));
        let m = ContractDelta::decode(o.take().0[0].payload.as_ref()).unwrap();
        assert_eq!((m.base_version, m.version), (1, 3));
        let seqs: Vec<(&str, u64)> = m.contracts.iter().map(|c| (c.symbol.as_str(), c.seq)).collect();
        assert_eq!(seqs, vec![("a", 2), ("b", 1)]);
        // An undecodable delta cannot be merged: replaced, and the subscription must re-snapshot.
        o.push(p(8, "xy.md.tick.shfe.1", b"\xff\xff"));
        o.push(p(8, "xy.md.tick.shfe.1", b"\xff"));
        assert_eq!(o.take().1.into_iter().collect::<Vec<_>>(), vec![8]);
    }

    #[test]
    fn trimming_keeps_the_minimal_fields() {
        let pol = DegradePolicy::default();
        let d = Delta {
            ticks: vec![Tick {
                symbol: "rb2501".into(),
                venue: "shfe".into(),
                seq: 9,
                last: 3500.0,
                vol: 10.0,
                bids: vec![Default::default(); 5],
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = trim("xy.md.tick.shfe.0", &d.encode_to_vec().into(), &pol);
        let t = &Delta::decode(out.as_ref()).unwrap().ticks[0];
        assert_eq!((t.symbol.as_str(), t.seq, t.last), ("rb2501", 9, 3500.0));
        assert!(t.bids.is_empty() && t.vol == 0.0);
        let other: Bytes = Bytes::from_static(b"{\"x\":1}");
        assert_eq!(trim("lt.analysis.x", &other, &pol), other);
    }
}
