//! The client side of deltas and snapshots: rebuild a group from its latest snapshot, apply the
//! deltas that follow, and notice a gap (then read the snapshot again).
//!
//! ```
//! use langtian_core::aggregate::{GroupSnapshot, Replica, ShardDelta, DeltaApplied};
//! use langtian_core::proto::md::v1::Tick;
//! let tick = |seq| Tick { venue: "SHFE".into(), symbol: "rb2501".into(), seq, ..Default::default() };
//! let snap = GroupSnapshot { version: 1, records: vec![tick(1)], shard_versions: vec![7] };
//! let mut r = Replica::from_snapshot(snap);
//! let d = ShardDelta { shard: 0, version: 8, base_version: 7, records: vec![tick(2)] };
//! assert_eq!(r.apply_delta(&d), DeltaApplied::Applied);
//! assert_eq!(r.get("SHFE.rb2501").map(|t| t.seq), Some(2));
//! let late = ShardDelta { shard: 0, version: 10, base_version: 9, records: vec![] };
//! assert!(matches!(r.apply_delta(&late), DeltaApplied::Gap { .. }));
//! ```

use std::collections::BTreeMap;

use super::state::{GroupSnapshot, Keyed, ShardDelta};

/// What [`Replica::apply_delta`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaApplied {
    /// Applied; the shard is now at the delta's version.
    Applied,
    /// Already contained (version at or below the shard's): ignored.
    Stale,
    /// The delta builds on a version the replica has not seen: read the snapshot again.
    Gap {
        /// Shard.
        shard: u32,
        /// The shard's version here.
        have: u64,
        /// The version the delta applies on top of.
        base: u64,
    },
}

/// A group rebuilt from a snapshot and deltas.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica<R> {
    records: BTreeMap<String, R>,
    shard_versions: Vec<u64>,
    snapshot_version: u64,
}

impl<R: Keyed> Replica<R> {
    /// Starts from a snapshot.
    pub fn from_snapshot(s: GroupSnapshot<R>) -> Self {
        Self {
            records: s.records.into_iter().map(|r| (r.key(), r)).collect(),
            shard_versions: s.shard_versions,
            snapshot_version: s.version,
        }
    }

    /// Applies a delta of this group.
    pub fn apply_delta(&mut self, d: &ShardDelta<R>) -> DeltaApplied {
        let Some(have) = self.shard_versions.get(d.shard as usize).copied() else {
            return DeltaApplied::Gap {
                shard: d.shard,
                have: 0,
                base: d.base_version,
            };
        };
        if d.version <= have {
            return DeltaApplied::Stale;
        }
        if d.base_version > have {
            return DeltaApplied::Gap {
                shard: d.shard,
                have,
                base: d.base_version,
            };
        }
        for r in &d.records {
            self.records.insert(r.key(), r.clone());
        }
        self.shard_versions[d.shard as usize] = d.version;
        DeltaApplied::Applied
    }

    /// The latest record of `key`.
    pub fn get(&self, key: &str) -> Option<&R> {
        self.records.get(key)
    }

    /// Every record, by key.
    pub fn records(&self) -> impl Iterator<Item = &R> {
        self.records.values()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The version of every shard.
    pub fn shard_versions(&self) -> &[u64] {
        &self.shard_versions
    }

    /// The snapshot this replica started from.
    pub fn snapshot_version(&self) -> u64 {
        self.snapshot_version
    }
}
