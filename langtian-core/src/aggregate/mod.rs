//! The aggregator (seed 002): raw ticks and battery samples in, keyed latest state, every 33 ms
//! a **delta** of the changed keys per shard, every 2–5 s a **snapshot** per group (also kept in
//! the KV bucket `md_snapshots` under its subject), so a client rebuilds from KV + deltas at once.
//!
//! | feed | source | deltas | snapshots (subject = KV key) |
//! |---|---|---|---|
//! | ticks | `xy.src.tick.<venue>.<symbol>` (stream `XY_SRC`, `langtian.md.v1.Tick`) | `xy.md.tick.<venue>.<shard>` (`Delta`) | `xy.md.snapshot.<venue>` (`Snapshot`) |
//! | contracts | `xy.ref.contract.<venue>.<symbol>` (stream `XY_REF`, `langtian.md.v1.Contract`) | `xy.md.contract.<venue>.<shard>` (`ContractDelta`) | `xy.md.contracts.<venue>` (`ContractSnapshot`) |
//! | battery | `lt.evt.battery.>` (stream `LT_EVENTS`, envelopes of `ChannelSample`) | `lt.md.delta.<group>.<shard>` (`ChannelDelta`) | `lt.md.snapshot.<group>` (`ChannelSnapshot`) |
//!
//! Duplicates are dropped and records re-ordered within a small window by the per-key sequence
//! ([`state`]); a delta carries its shard's version and the version it builds on, a snapshot the
//! version of every shard, so a client ([`Replica`]) notices a gap and reads the snapshot again.
//! Sources are read with JetStream **ordered consumers** (no durable state: the aggregator's
//! position is its last snapshot in KV, from which it restarts and replays by start time).

mod feed;
pub mod live;
pub mod records;
pub mod replica;
pub mod service;
pub mod state;

use std::time::Duration;

pub use live::{AnyLiveGroup, LiveGroup, LiveKind, LiveStats, LiveUpdate, RowCells};
pub use records::{MdRecord, MessageError};
pub use replica::{DeltaApplied, Replica};
pub use state::{Counts, GroupSnapshot, GroupState, Keyed, Offer, ReorderPolicy, ShardDelta, shard_of};

/// Settings of the aggregator.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatorConfig {
    /// How often deltas are published (16–100 ms; default 33 ms).
    pub delta_interval: Duration,
    /// How often snapshots are published and stored (2–5 s; default 3 s).
    pub snapshot_interval: Duration,
    /// Shards per group (1–256; default 4).
    pub shards: u32,
    /// De-duplication and re-ordering.
    pub reorder: ReorderPolicy,
    /// KV bucket of the latest snapshot per group.
    pub kv_bucket: String,
    /// The market tick feed (`None`: off).
    pub ticks: Option<FeedConfig>,
    /// The battery channel feed (`None`: off).
    pub battery: Option<FeedConfig>,
    /// The contract (reference data) feed (`None`: off).
    pub contracts: Option<FeedConfig>,
}

/// One feed: where its records come from and where deltas and snapshots go.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// Stream to read.
    pub stream: String,
    /// Subject filter within the stream.
    pub filter: String,
    /// Output prefix (`xy` → `xy.md.<delta_word>.<group>.<shard>`, `xy.md.snapshot.<group>`).
    pub prefix: String,
    /// The word of the delta subjects: `tick` for ticks, `contract` for contracts, `delta` for
    /// battery.
    pub delta_word: String,
    /// The word of the snapshot subjects (and KV keys): `snapshot`, or `contracts` for contracts
    /// (their groups are venues too, so they need keys of their own).
    pub snapshot_word: String,
    /// Fixed group name (battery); `None` groups ticks by venue.
    pub group: Option<String>,
    /// Where to start without a stored snapshot.
    pub start: FeedStart,
}

/// Where a feed starts reading when no snapshot of it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStart {
    /// The last message of every subject (ticks: each instrument's latest at once).
    LastPerSubject,
    /// Messages of the last `Duration`.
    Since(Duration),
    /// Only new messages.
    New,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            delta_interval: Duration::from_millis(33),
            snapshot_interval: Duration::from_secs(3),
            shards: 4,
            reorder: ReorderPolicy::default(),
            kv_bucket: "md_snapshots".into(),
            ticks: Some(FeedConfig::ticks()),
            battery: Some(FeedConfig::battery()),
            contracts: Some(FeedConfig::contracts()),
        }
    }
}

impl FeedConfig {
    /// Ticks from `XY_SRC` (`xy.src.tick.>`) to `xy.md.tick.<venue>.<shard>`.
    pub fn ticks() -> Self {
        Self {
            stream: "XY_SRC".into(),
            filter: "xy.src.tick.>".into(),
            prefix: "xy".into(),
            delta_word: "tick".into(),
            snapshot_word: "snapshot".into(),
            group: None,
            start: FeedStart::LastPerSubject,
        }
    }

    /// Contracts from `XY_REF` (`xy.ref.contract.>`) to `xy.md.contract.<venue>.<shard>`,
    /// snapshots `xy.md.contracts.<venue>`; without a stored snapshot it starts from every
    /// instrument's latest contract.
    pub fn contracts() -> Self {
        Self {
            stream: "XY_REF".into(),
            filter: "xy.ref.contract.>".into(),
            prefix: "xy".into(),
            delta_word: "contract".into(),
            snapshot_word: "contracts".into(),
            group: None,
            start: FeedStart::LastPerSubject,
        }
    }

    /// Battery samples from `LT_EVENTS` (`lt.evt.battery.>`) to `lt.md.delta.cells.<shard>`.
    pub fn battery() -> Self {
        Self {
            stream: "LT_EVENTS".into(),
            filter: "lt.evt.battery.>".into(),
            prefix: "lt".into(),
            delta_word: "delta".into(),
            snapshot_word: "snapshot".into(),
            group: Some("cells".into()),
            start: FeedStart::Since(Duration::from_secs(60)),
        }
    }

    /// The delta subject of `group`'s `shard`.
    pub fn delta_subject(&self, group: &str, shard: u32) -> String {
        format!("{}.md.{}.{group}.{shard}", self.prefix, self.delta_word)
    }

    /// The snapshot subject (and KV key) of `group`: `<prefix>.md.<snapshot_word>.<group>`.
    pub fn snapshot_subject(&self, group: &str) -> String {
        format!("{}.md.{}.{group}", self.prefix, self.snapshot_word)
    }

    /// Where the aggregator answers requests for a fresh snapshot of `group`
    /// (`<prefix>.md.req.<snapshot_word>.<group>`; an empty reply: no such group).
    pub fn snapshot_request_subject(&self, group: &str) -> String {
        format!("{}.md.req.{}.{group}", self.prefix, self.snapshot_word)
    }
}

/// A setting out of range, or a service failure.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// A setting out of range; names the setting.
    #[error("aggregator setting `{key}`: {reason}")]
    Config {
        /// Which setting.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// NATS.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// No snapshot of a group to start from: no aggregator answered and KV holds none (no
    /// aggregator has seen the group).
    #[error("no snapshot of group `{group}`: no aggregator answered and KV `{bucket}` holds no `{key}`")]
    NoSnapshot {
        /// The group.
        group: String,
        /// The KV bucket read.
        bucket: String,
        /// The key read.
        key: String,
    },
    /// A JetStream or KV call, with what was being done.
    #[error("{what}: {reason}")]
    Nats {
        /// What was being done.
        what: String,
        /// The server's or client's answer.
        reason: String,
    },
}

impl AggregatorConfig {
    /// Checks the ranges the seeds set (deltas 16–100 ms, snapshots 2–5 s) and the names.
    pub fn validate(&self) -> Result<(), AggregateError> {
        let bad = |key, reason: String| Err(AggregateError::Config { key, reason });
        let ms = self.delta_interval.as_millis();
        if !(16..=100).contains(&ms) {
            return bad("delta_interval", format!("{ms} ms is outside 16–100 ms"));
        }
        let s = self.snapshot_interval.as_secs_f64();
        if !(2.0..=5.0).contains(&s) {
            return bad("snapshot_interval", format!("{s} s is outside 2–5 s"));
        }
        if !(1..=256).contains(&self.shards) {
            return bad("shards", format!("{} is outside 1–256", self.shards));
        }
        if self.reorder.window >= self.delta_interval * 3 {
            return bad(
                "reorder_window",
                format!(
                    "{:?} would hold records for more than three delta intervals ({:?})",
                    self.reorder.window, self.delta_interval
                ),
            );
        }
        if self.feeds().next().is_none() {
            return bad("feeds", "no feed is enabled".into());
        }
        for f in self.feeds() {
            for (key, v) in [
                ("prefix", &f.prefix),
                ("delta_word", &f.delta_word),
                ("snapshot_word", &f.snapshot_word),
            ] {
                if v.is_empty() || v.contains(['*', '>', ' ']) {
                    return bad(key, format!("`{v}` is not a subject token"));
                }
            }
            if let Some(g) = &f.group
                && (g.is_empty() || g.contains(['.', '*', '>', ' ']))
            {
                return bad("group", format!("`{g}` must be one subject token"));
            }
        }
        // Two feeds writing the same snapshot keys would restore each other's state.
        let mut keys = std::collections::BTreeSet::new();
        for f in self.feeds() {
            let k = f.snapshot_subject("");
            if !keys.insert(k.clone()) {
                return bad("snapshot_word", format!("two feeds store snapshots under `{k}*`"));
            }
        }
        Ok(())
    }

    /// The enabled feeds.
    pub fn feeds(&self) -> impl Iterator<Item = &FeedConfig> {
        self.ticks
            .iter()
            .chain(self.contracts.iter())
            .chain(self.battery.iter())
    }
}

/// The group of a tick: its venue, as a subject/KV-safe token (`_` for anything else).
pub fn venue_group(venue: &str) -> String {
    let g: String = venue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if g.is_empty() { "_".into() } else { g }
}
