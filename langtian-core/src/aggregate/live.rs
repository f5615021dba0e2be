//! Following one group live from a process: the snapshot + deltas a browser gets through the
//! gateway, read straight from NATS and kept as a [`Replica`] — for a service, a notebook or a
//! test that wants the aggregator's current state of a venue (or of the battery channels)
//! without a WebSocket.
//!
//! [`LiveGroup::open`] subscribes to the group's deltas first, then reads a snapshot: a fresh
//! one from the aggregator (`<prefix>.md.req.<snapshot_word>.<group>`), else the copy in the
//! KV bucket (up to a snapshot interval old). Deltas that arrived meanwhile are applied on top or
//! skipped as already contained. A delta that builds on a version this replica has not seen (a
//! lost message, a restarted aggregator) makes it read the snapshot again, as the browser does.
//!
//! ```no_run
//! # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::aggregate::AggregateError> {
//! use langtian_core::aggregate::{FeedConfig, LiveGroup, LiveUpdate};
//! use langtian_core::proto::md::v1::Tick;
//! let mut shfe = LiveGroup::<Tick>::open(&bus, &FeedConfig::ticks(), "md_snapshots", "shfe").await?;
//! println!("{} instruments", shfe.replica().len());
//! loop {
//!     if let LiveUpdate::Applied { keys, .. } = shfe.next().await? {
//!         println!("{keys} instruments changed; rb2501 last {:?}", shfe.replica().get("shfe.rb2501").map(|t| t.last));
//!     }
//! }
//! # }
//! ```

use std::time::Duration;

use futures::StreamExt;

use super::records::{Cell, MdRecord, Row};
use super::replica::{DeltaApplied, Replica};
use super::{AggregateError, FeedConfig, GroupSnapshot};
use crate::bus::Bus;
use crate::proto::battery::v1::ChannelSample;
use crate::proto::md::v1::{Contract, Tick};

/// How long a fresh snapshot from the aggregator is waited for before the KV copy is read.
const FRESH_SNAPSHOT_WAIT: Duration = Duration::from_millis(500);

/// What [`LiveGroup::next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveUpdate {
    /// A delta was applied.
    Applied {
        /// Its shard.
        shard: u32,
        /// How many keys it changed.
        keys: usize,
    },
    /// A delta already contained in the replica (it predates the snapshot read) was skipped.
    Stale,
    /// A gap was found and the group rebuilt from a snapshot read again.
    Resynced {
        /// The version of the snapshot now applied.
        snapshot_version: u64,
    },
}

/// Counts of what a [`LiveGroup`] received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Deltas applied.
    pub applied: u64,
    /// Deltas skipped as already contained.
    pub stale: u64,
    /// Snapshots read after a gap.
    pub resyncs: u64,
    /// Messages on the delta subjects that were not a delta of this group (undecodable, or
    /// naming another group); each is logged as `live_delta_rejected` and skipped.
    pub rejected: u64,
}

/// One group followed live; see the [module](self) documentation.
#[derive(Debug)]
pub struct LiveGroup<R> {
    bus: Bus,
    feed: FeedConfig,
    kv_bucket: String,
    group: String,
    deltas: async_nats::Subscriber,
    replica: Replica<R>,
    stats: LiveStats,
}

impl<R: MdRecord> LiveGroup<R> {
    /// Subscribes to `group`'s deltas of `feed` and reads its snapshot (from the aggregator, else
    /// from `kv_bucket`, the aggregator's `kv_bucket`: `md_snapshots` by default). Fails when
    /// neither has one (no aggregator has seen the group yet) or the snapshot is undecodable,
    /// naming the group and the key.
    pub async fn open(
        bus: &Bus,
        feed: &FeedConfig,
        kv_bucket: &str,
        group: &str,
    ) -> Result<Self, AggregateError> {
        if group.is_empty() || group.contains(['.', '*', '>', ' ']) {
            return Err(AggregateError::Config {
                key: "group",
                reason: format!("`{group}` must be one subject token"),
            });
        }
        let subject = format!("{}.md.{}.{group}.*", feed.prefix, feed.delta_word);
        let deltas = bus
            .client()
            .subscribe(subject.clone())
            .await
            .map_err(|e| AggregateError::Nats {
                what: format!("subscribing to `{subject}`"),
                reason: e.to_string(),
            })?;
        // The subscription is registered at the server before the snapshot is read, so no
        // delta after the snapshot can be missed.
        bus.client().flush().await.map_err(|e| AggregateError::Nats {
            what: format!("subscribing to `{subject}`"),
            reason: e.to_string(),
        })?;
        let snapshot = read_snapshot(bus, feed, kv_bucket, group).await?;
        Ok(Self {
            bus: bus.clone(),
            feed: feed.clone(),
            kv_bucket: kv_bucket.to_owned(),
            group: group.to_owned(),
            deltas,
            replica: Replica::from_snapshot(snapshot),
            stats: LiveStats::default(),
        })
    }

    /// The group as rebuilt so far.
    pub fn replica(&self) -> &Replica<R> {
        &self.replica
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// What was received so far.
    pub fn stats(&self) -> LiveStats {
        self.stats
    }

    /// Waits for the group's next delta and applies it (a gap: the snapshot is read again).
    /// Messages on the delta subjects that are not this group's deltas are counted in
    /// [`LiveStats::rejected`] and skipped. Fails when the subscription ends (the connection
    /// closed) or a snapshot read after a gap fails.
    pub async fn next(&mut self) -> Result<LiveUpdate, AggregateError> {
        loop {
            let Some(m) = self.deltas.next().await else {
                return Err(AggregateError::Nats {
                    what: format!("following group `{}`", self.group),
                    reason: "the delta subscription ended (connection closed)".into(),
                });
            };
            let d = match R::decode_delta(&m.payload) {
                Ok((group, d, _)) if group == self.group => d,
                Ok((group, _, _)) => {
                    self.reject(&m.subject, &format!("a delta of group `{group}`"));
                    continue;
                }
                Err(e) => {
                    self.reject(&m.subject, &e.to_string());
                    continue;
                }
            };
            return Ok(match self.replica.apply_delta(&d) {
                DeltaApplied::Applied => {
                    self.stats.applied += 1;
                    LiveUpdate::Applied {
                        shard: d.shard,
                        keys: d.records.len(),
                    }
                }
                DeltaApplied::Stale => {
                    self.stats.stale += 1;
                    LiveUpdate::Stale
                }
                DeltaApplied::Gap { shard, have, base } => {
                    tracing::info!(code = "live_resync", group = %self.group, shard, have, base, "a delta builds on a version not seen here; reading the snapshot again");
                    let snapshot = read_snapshot(&self.bus, &self.feed, &self.kv_bucket, &self.group).await?;
                    self.replica = Replica::from_snapshot(snapshot);
                    self.stats.resyncs += 1;
                    LiveUpdate::Resynced {
                        snapshot_version: self.replica.snapshot_version(),
                    }
                }
            });
        }
    }

    fn reject(&mut self, subject: &str, why: &str) {
        self.stats.rejected += 1;
        tracing::warn!(code = "live_delta_rejected", %subject, group = %self.group, reason = why, "not a delta of this group; skipped");
    }
}

/// The group's snapshot: a fresh one from the aggregator, else the KV copy.
async fn read_snapshot<R: MdRecord>(
    bus: &Bus,
    feed: &FeedConfig,
    kv_bucket: &str,
    group: &str,
) -> Result<GroupSnapshot<R>, AggregateError> {
    let request = feed.snapshot_request_subject(group);
    let fresh = tokio::time::timeout(
        FRESH_SNAPSHOT_WAIT,
        bus.client().request(request, bytes::Bytes::new()),
    )
    .await;
    let key = feed.snapshot_subject(group);
    let payload = match fresh {
        Ok(Ok(m)) if !m.payload.is_empty() => m.payload,
        // No aggregator answered in time (or it has no such group yet): the KV copy.
        _ => {
            let kv = bus
                .jetstream()
                .get_key_value(kv_bucket)
                .await
                .map_err(|e| AggregateError::Nats {
                    what: format!("opening KV bucket `{}`", kv_bucket),
                    reason: e.to_string(),
                })?;
            kv.get(&key)
                .await
                .map_err(|e| AggregateError::Nats {
                    what: format!("reading `{key}` from KV `{}`", kv_bucket),
                    reason: e.to_string(),
                })?
                .ok_or_else(|| AggregateError::NoSnapshot {
                    group: group.to_owned(),
                    bucket: kv_bucket.to_owned(),
                    key: key.clone(),
                })?
        }
    };
    let (held, snapshot, _) = R::decode_snapshot(&payload).map_err(|e| AggregateError::Nats {
        what: format!("the snapshot `{key}`"),
        reason: e.to_string(),
    })?;
    if held != group {
        return Err(AggregateError::Nats {
            what: format!("the snapshot `{key}`"),
            reason: format!("it holds group `{held}`"),
        });
    }
    Ok(snapshot)
}

/// Which records a live group holds (the aggregator's feeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    /// Market ticks (`langtian.md.v1.Tick`); groups are venues in lower case.
    Ticks,
    /// Contracts, the reference data (`langtian.md.v1.Contract`); the same groups.
    Contracts,
    /// Battery channel samples (`langtian.battery.v1.ChannelSample`); group `cells`.
    Battery,
}

impl LiveKind {
    /// The feed's default subjects.
    pub fn feed(self) -> FeedConfig {
        match self {
            Self::Ticks => FeedConfig::ticks(),
            Self::Contracts => FeedConfig::contracts(),
            Self::Battery => FeedConfig::battery(),
        }
    }

    /// `ticks`, `contracts` or `battery`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ticks => "ticks",
            Self::Contracts => "contracts",
            Self::Battery => "battery",
        }
    }
}

impl std::str::FromStr for LiveKind {
    type Err = AggregateError;
    fn from_str(s: &str) -> Result<Self, AggregateError> {
        match s {
            "ticks" => Ok(Self::Ticks),
            "contracts" => Ok(Self::Contracts),
            "battery" => Ok(Self::Battery),
            other => Err(AggregateError::Config {
                key: "kind",
                reason: format!("`{other}` is not one of ticks, contracts, battery"),
            }),
        }
    }
}

/// A [`LiveGroup`] of any [`LiveKind`], its records as [`Row`]s: what the SDK bindings hold.
///
/// ```no_run
/// # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::aggregate::AggregateError> {
/// use langtian_core::aggregate::{AnyLiveGroup, LiveKind};
/// let mut cells = AnyLiveGroup::open(&bus, "battery".parse()?, "md_snapshots", "cells").await?;
/// cells.next().await?;
/// for row in cells.rows() { println!("{row:?}"); }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum AnyLiveGroup {
    /// Ticks.
    Ticks(LiveGroup<Tick>),
    /// Contracts.
    Contracts(LiveGroup<Contract>),
    /// Battery channel samples.
    Battery(LiveGroup<ChannelSample>),
}

/// Runs `$body` with the typed group inside.
macro_rules! with_group {
    ($any:expr, |$g:ident| $body:expr) => {
        match $any {
            AnyLiveGroup::Ticks($g) => $body,
            AnyLiveGroup::Contracts($g) => $body,
            AnyLiveGroup::Battery($g) => $body,
        }
    };
}

/// One record as its `(column, value)` pairs.
pub type RowCells = Vec<(&'static str, Cell)>;

impl AnyLiveGroup {
    /// [`LiveGroup::open`] with `kind`'s default feed.
    pub async fn open(
        bus: &Bus,
        kind: LiveKind,
        kv_bucket: &str,
        group: &str,
    ) -> Result<Self, AggregateError> {
        let feed = kind.feed();
        Ok(match kind {
            LiveKind::Ticks => Self::Ticks(LiveGroup::open(bus, &feed, kv_bucket, group).await?),
            LiveKind::Contracts => Self::Contracts(LiveGroup::open(bus, &feed, kv_bucket, group).await?),
            LiveKind::Battery => Self::Battery(LiveGroup::open(bus, &feed, kv_bucket, group).await?),
        })
    }

    /// The kind of records.
    pub fn kind(&self) -> LiveKind {
        match self {
            Self::Ticks(_) => LiveKind::Ticks,
            Self::Contracts(_) => LiveKind::Contracts,
            Self::Battery(_) => LiveKind::Battery,
        }
    }

    /// [`LiveGroup::next`].
    pub async fn next(&mut self) -> Result<LiveUpdate, AggregateError> {
        with_group!(self, |g| g.next().await)
    }

    /// Every record now, sorted by key.
    pub fn rows(&self) -> Vec<RowCells> {
        with_group!(self, |g| g.replica().records().map(Row::row).collect())
    }

    /// One record by key.
    pub fn row(&self, key: &str) -> Option<RowCells> {
        with_group!(self, |g| g.replica().get(key).map(Row::row))
    }

    /// How many records the group holds.
    pub fn len(&self) -> usize {
        with_group!(self, |g| g.replica().len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`LiveGroup::stats`].
    pub fn stats(&self) -> LiveStats {
        with_group!(self, |g| g.stats())
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        with_group!(self, |g| g.group())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_parse_and_name_their_feeds_and_unknown_ones_are_named() {
        for (name, kind, delta_subject) in [
            ("ticks", LiveKind::Ticks, "xy.md.tick.shfe.0"),
            ("contracts", LiveKind::Contracts, "xy.md.contract.shfe.0"),
            ("battery", LiveKind::Battery, "lt.md.delta.shfe.0"),
        ] {
            let k: LiveKind = name.parse().unwrap();
            assert_eq!((k, k.as_str()), (kind, name));
            assert_eq!(k.feed().delta_subject("shfe", 0), delta_subject);
        }
        let e = "bonds".parse::<LiveKind>().unwrap_err();
        assert!(matches!(&e, AggregateError::Config { key: "kind", .. }), "{e}");
        assert!(
            e.to_string()
                .contains("`bonds` is not one of ticks, contracts, battery")
        );
    }
}
