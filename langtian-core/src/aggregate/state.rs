//! Keyed latest state with per-key de-duplication and re-ordering by sequence, and the shard
//! versions that deltas and snapshots carry. Pure logic: no NATS, no clock of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A record the aggregator keeps the latest of: one instrument's tick, one channel's sample.
pub trait Keyed: Clone {
    /// The key within a group (`<venue>.<symbol>`, `<device>/<channel>`).
    fn key(&self) -> String;
    /// The source's per-key sequence number.
    fn seq(&self) -> u64;
    /// The source's timestamp (0 when it has none): a record behind in sequence but newer in
    /// time than the key's latest means the source restarted its sequence.
    fn ts(&self) -> i64 {
        0
    }
}

/// What happened to one record offered to [`GroupState::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The next expected sequence (or a new key): applied now.
    Applied,
    /// Ahead of the next expected sequence: held until the gap fills or the window passes.
    Held,
    /// Already applied or already held: dropped.
    Duplicate,
    /// Behind the key's position but newer in time (or far behind): a restarted source; applied,
    /// position reset.
    SourceReset,
}

/// Counters of a group (or of a whole aggregator when summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records applied to the state.
    pub applied: u64,
    /// Duplicates (and records older than the key's position) dropped.
    pub duplicates: u64,
    /// Records that arrived ahead of a missing sequence and were applied in order later.
    pub reordered: u64,
    /// Sequence numbers that never arrived within the reorder window (summed gap sizes).
    pub gap: u64,
    /// Keys whose source restarted (sequence far behind).
    pub source_resets: u64,
}

/// Settings of the de-duplication and re-ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderPolicy {
    /// How long a record ahead of a missing sequence is held before the gap is given up.
    pub window: Duration,
    /// At most this many records held per key (more: the gap is given up at once).
    pub max_held: usize,
    /// A sequence this far behind the key's position means the source restarted.
    pub reset_distance: u64,
}

impl Default for ReorderPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(20),
            max_held: 64,
            reset_distance: 100_000,
        }
    }
}

#[derive(Debug, Clone)]
struct KeyState<R> {
    latest: Option<R>,
    /// Sequence expected next (0 until the first record is applied).
    next: u64,
    held: BTreeMap<u64, (R, Instant)>,
}

impl<R> KeyState<R> {
    fn empty() -> Self {
        Self {
            latest: None,
            next: 0,
            held: BTreeMap::new(),
        }
    }
}

/// The state of one group: latest record per key, the keys changed since the last delta, and the
/// version of every shard.
#[derive(Debug, Clone)]
pub struct GroupState<R> {
    keys: HashMap<String, KeyState<R>>,
    dirty: BTreeMap<u32, BTreeSet<String>>,
    shard_versions: Vec<u64>,
    snapshot_version: u64,
    policy: ReorderPolicy,
    counts: Counts,
}

/// One shard's changes, ready to encode as a delta.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardDelta<R> {
    /// Shard number.
    pub shard: u32,
    /// The version this delta produces.
    pub version: u64,
    /// The version it applies on top of.
    pub base_version: u64,
    /// The latest record of every changed key, by key.
    pub records: Vec<R>,
}

/// A whole group's state, ready to encode as a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSnapshot<R> {
    /// Snapshot number.
    pub version: u64,
    /// Every key's latest record, by key.
    pub records: Vec<R>,
    /// The last delta version of each shard contained in `records`.
    pub shard_versions: Vec<u64>,
}

/// The shard of `key` among `shards`: FNV-1a of the key's bytes, so every language computes the
/// same shard.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

impl<R: Keyed> GroupState<R> {
    /// An empty group with `shards` shards.
    pub fn new(shards: u32, policy: ReorderPolicy) -> Self {
        Self {
            keys: HashMap::new(),
            dirty: BTreeMap::new(),
            shard_versions: vec![0; shards.max(1) as usize],
            snapshot_version: 0,
            policy,
            counts: Counts::default(),
        }
    }

    /// A group rebuilt from a snapshot it published earlier (after a restart): the keys' positions
    /// continue after the snapshot's records and the versions continue from the snapshot's.
    pub fn restore(snapshot: GroupSnapshot<R>, policy: ReorderPolicy) -> Self {
        let shards = snapshot.shard_versions.len().max(1) as u32;
        let mut g = Self::new(shards, policy);
        for (i, v) in snapshot.shard_versions.iter().enumerate() {
            g.shard_versions[i] = *v;
        }
        g.snapshot_version = snapshot.version;
        for r in snapshot.records {
            let next = r.seq().saturating_add(1);
            g.keys.insert(
                r.key(),
                KeyState {
                    latest: Some(r),
                    next,
                    held: BTreeMap::new(),
                },
            );
        }
        g
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shard_versions.len() as u32
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.keys.values().filter(|k| k.latest.is_some()).count()
    }

    /// Whether no key has a value yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The latest record of `key`.
    pub fn get(&self, key: &str) -> Option<&R> {
        self.keys.get(key)?.latest.as_ref()
    }

    /// Offers one record received at `now`.
    pub fn offer(&mut self, r: R, now: Instant) -> Offer {
        let key = r.key();
        let seq = r.seq();
        let ks = self.keys.entry(key.clone()).or_insert_with(KeyState::empty);
        if ks.latest.is_none() && ks.held.is_empty() && ks.next == 0 {
            // A new key: nothing to order against yet.
            apply(ks, r, &mut self.counts);
            mark(&mut self.dirty, &key, self.shard_versions.len() as u32);
            return Offer::Applied;
        }
        if seq < ks.next {
            let newer = ks.latest.as_ref().is_some_and(|l| r.ts() > l.ts() && l.ts() > 0);
            if newer || ks.next - seq >= self.policy.reset_distance {
                ks.held.clear();
                apply(ks, r, &mut self.counts);
                self.counts.source_resets += 1;
                mark(&mut self.dirty, &key, self.shard_versions.len() as u32);
                return Offer::SourceReset;
            }
            self.counts.duplicates += 1;
            return Offer::Duplicate;
        }
        if seq == ks.next {
            apply(ks, r, &mut self.counts);
            release_contiguous(ks, &mut self.counts);
            mark(&mut self.dirty, &key, self.shard_versions.len() as u32);
            return Offer::Applied;
        }
        if ks.held.contains_key(&seq) {
            self.counts.duplicates += 1;
            return Offer::Duplicate;
        }
        ks.held.insert(seq, (r, now));
        if ks.held.len() > self.policy.max_held {
            give_up_gap(ks, &mut self.counts);
            mark(&mut self.dirty, &key, self.shard_versions.len() as u32);
            return Offer::Applied;
        }
        Offer::Held
    }

    /// Gives up the gaps whose held records waited longer than the window (call before
    /// [`GroupState::take_deltas`]).
    pub fn expire_held(&mut self, now: Instant) {
        let window = self.policy.window;
        let shards = self.shard_versions.len() as u32;
        for (key, ks) in self.keys.iter_mut() {
            let expired = ks
                .held
                .values()
                .next()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= window);
            if expired {
                give_up_gap(ks, &mut self.counts);
                mark(&mut self.dirty, key, shards);
            }
        }
    }

    /// The changed keys of every shard since the last call, each shard's version advanced by one.
    pub fn take_deltas(&mut self) -> Vec<ShardDelta<R>> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::with_capacity(dirty.len());
        for (shard, keys) in dirty {
            let records: Vec<R> = keys
                .iter()
                .filter_map(|k| self.keys.get(k).and_then(|s| s.latest.clone()))
                .collect();
            if records.is_empty() {
                continue;
            }
            let Some(v) = self.shard_versions.get_mut(shard as usize) else {
                continue;
            };
            *v += 1;
            out.push(ShardDelta {
                shard,
                version: *v,
                base_version: *v - 1,
                records,
            });
        }
        out
    }

    /// The whole state (call right after [`GroupState::take_deltas`] so that it holds exactly the
    /// deltas published so far).
    pub fn snapshot(&mut self) -> GroupSnapshot<R> {
        self.snapshot_version += 1;
        self.current()
    }

    /// The whole state now, under the last snapshot number (for on-demand requests). Records
    /// changed since the last delta are included with their newer values; the next delta repeats
    /// them, which a replica applies idempotently.
    pub fn current(&self) -> GroupSnapshot<R> {
        let mut records: Vec<(&String, &R)> = self
            .keys
            .iter()
            .filter_map(|(k, s)| s.latest.as_ref().map(|r| (k, r)))
            .collect();
        records.sort_by(|a, b| a.0.cmp(b.0));
        GroupSnapshot {
            version: self.snapshot_version,
            records: records.into_iter().map(|(_, r)| r.clone()).collect(),
            shard_versions: self.shard_versions.clone(),
        }
    }
}

fn apply<R: Keyed>(ks: &mut KeyState<R>, r: R, counts: &mut Counts) {
    ks.next = r.seq().saturating_add(1);
    ks.latest = Some(r);
    counts.applied += 1;
}

fn release_contiguous<R: Keyed>(ks: &mut KeyState<R>, counts: &mut Counts) {
    while let Some(entry) = ks.held.first_entry() {
        if *entry.key() != ks.next {
            break;
        }
        let (r, _) = entry.remove();
        apply(ks, r, counts);
        counts.reordered += 1;
    }
}

/// Applies every held record in order, counting the sequences that never came.
fn give_up_gap<R: Keyed>(ks: &mut KeyState<R>, counts: &mut Counts) {
    let held = std::mem::take(&mut ks.held);
    for (seq, (r, _)) in held {
        if seq > ks.next {
            counts.gap += seq - ks.next;
        }
        apply(ks, r, counts);
        counts.reordered += 1;
    }
}

fn mark(dirty: &mut BTreeMap<u32, BTreeSet<String>>, key: &str, shards: u32) {
    dirty
        .entry(shard_of(key, shards))
        .or_default()
        .insert(key.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::replica::{DeltaApplied, Replica};
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Rec {
        key: String,
        seq: u64,
        ts: i64,
    }
    impl Keyed for Rec {
        fn key(&self) -> String {
            self.key.clone()
        }
        fn seq(&self) -> u64 {
            self.seq
        }
        fn ts(&self) -> i64 {
            self.ts
        }
    }
    fn rec(key: &str, seq: u64) -> Rec {
        Rec {
            key: key.into(),
            seq,
            ts: 0,
        }
    }

    #[test]
    fn a_sequence_restarted_with_newer_timestamps_is_followed() {
        let t0 = Instant::now();
        let mut g = GroupState::new(1, ReorderPolicy::default());
        let at = |seq, ts| Rec {
            key: "a".into(),
            seq,
            ts,
        };
        g.offer(at(500, 1_000), t0);
        assert_eq!(g.offer(at(499, 900), t0), Offer::Duplicate, "late and older");
        assert_eq!(g.offer(at(500, 1_000), t0), Offer::Duplicate, "a copy");
        assert_eq!(g.offer(at(1, 2_000), t0), Offer::SourceReset, "restarted feed");
        assert_eq!(g.offer(at(2, 2_001), t0), Offer::Applied);
        assert_eq!(g.counts().source_resets, 1);
    }

    #[test]
    fn reorders_within_the_window_and_drops_duplicates() {
        let t0 = Instant::now();
        let mut g = GroupState::new(2, ReorderPolicy::default());
        assert_eq!(g.offer(rec("a", 1), t0), Offer::Applied);
        assert_eq!(g.offer(rec("a", 3), t0), Offer::Held);
        assert_eq!(g.offer(rec("a", 3), t0), Offer::Duplicate);
        assert_eq!(g.get("a").map(|r| r.seq), Some(1));
        assert_eq!(g.offer(rec("a", 2), t0), Offer::Applied);
        assert_eq!(g.get("a").map(|r| r.seq), Some(3), "2 then the held 3");
        assert_eq!(g.offer(rec("a", 2), t0), Offer::Duplicate);
        let c = g.counts();
        assert_eq!((c.applied, c.duplicates, c.reordered, c.gap), (3, 2, 1, 0));
    }

    #[test]
    fn a_gap_is_given_up_after_the_window_and_counted() {
        let t0 = Instant::now();
        let p = ReorderPolicy::default();
        let mut g = GroupState::new(1, p);
        g.offer(rec("a", 1), t0);
        g.offer(rec("a", 5), t0);
        g.offer(rec("a", 6), t0);
        g.expire_held(t0 + p.window / 2);
        assert_eq!(g.get("a").map(|r| r.seq), Some(1), "still waiting for 2..4");
        g.expire_held(t0 + p.window);
        assert_eq!(g.get("a").map(|r| r.seq), Some(6));
        assert_eq!(g.counts().gap, 3);
        // A late 3 is now behind the position: dropped.
        assert_eq!(g.offer(rec("a", 3), t0), Offer::Duplicate);
        // A restarted source (far behind) is followed.
        assert_eq!(g.offer(rec("a", 0), t0), Offer::Duplicate);
        let mut r = GroupState::new(
            1,
            ReorderPolicy {
                reset_distance: 4,
                ..p
            },
        );
        r.offer(rec("a", 10), t0);
        assert_eq!(r.offer(rec("a", 1), t0), Offer::SourceReset);
        assert_eq!(r.offer(rec("a", 2), t0), Offer::Applied);
    }

    #[test]
    fn deltas_carry_only_changed_keys_and_chain_versions() {
        let t0 = Instant::now();
        let mut g = GroupState::new(4, ReorderPolicy::default());
        for k in ["a", "b", "c", "d", "e"] {
            g.offer(rec(k, 1), t0);
        }
        let first = g.take_deltas();
        assert_eq!(first.iter().map(|d| d.records.len()).sum::<usize>(), 5);
        assert!(first.iter().all(|d| d.version == 1 && d.base_version == 0));
        assert!(g.take_deltas().is_empty(), "nothing changed");
        g.offer(rec("c", 2), t0);
        let second = g.take_deltas();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].shard, shard_of("c", 4));
        assert_eq!(second[0].records, vec![rec("c", 2)]);
        assert_eq!(second[0].version, 2);
        let snap = g.snapshot();
        assert_eq!(snap.records.len(), 5);
        assert_eq!(snap.shard_versions[shard_of("c", 4) as usize], 2);
        // A restored group continues positions and versions.
        let mut back = GroupState::restore(snap, ReorderPolicy::default());
        assert_eq!(back.offer(rec("c", 2), t0), Offer::Duplicate);
        assert_eq!(back.offer(rec("c", 3), t0), Offer::Applied);
        assert_eq!(back.take_deltas()[0].version, 3);
    }

    #[test]
    fn shard_of_is_fnv1a() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            shard_of("a", 1 << 16),
            (0xaf63_dc4c_8601_ec8c_u64 % (1 << 16)) as u32
        );
        assert_eq!(shard_of("x", 0), 0);
    }

    proptest! {
        /// A stream with duplicates and local re-ordering, cut by deltas at random points and one
        /// snapshot: the snapshot plus the later deltas rebuild exactly the aggregator's state,
        /// every key ends at its highest sequence, and no gap is reported (nothing was missing).
        #[test]
        fn snapshot_plus_deltas_rebuild_the_state(
            keys in 1usize..12,
            per_key in 1u64..40,
            swaps in proptest::collection::vec((0usize..10_000, 1usize..4), 0..200),
            dups in proptest::collection::vec(0usize..10_000, 0..60),
            cuts in proptest::collection::vec(0usize..10_000, 1..30),
            snap_at in 0usize..10_000,
            shards in 1u32..6,
        ) {
            let mut stream: Vec<Rec> = Vec::new();
            for s in 1..=per_key {
                for k in 0..keys {
                    stream.push(rec(&format!("k{k}"), s));
                }
            }
            // Keys' first records stay first, so each key starts at sequence 1.
            let protected = keys;
            for (at, by) in swaps {
                let n = stream.len();
                if n <= protected + 1 {
                    break;
                }
                let i = protected + at % (n - protected);
                let j = (i + by).min(n - 1);
                stream.swap(i, j);
            }
            let n_dups = dups.len();
            for d in dups {
                let i = d % stream.len();
                let copy = stream[i].clone();
                stream.insert((i + 1).min(stream.len()), copy);
            }
            let t0 = Instant::now();
            let mut g = GroupState::new(shards, ReorderPolicy::default());
            let cut_points: BTreeSet<usize> = cuts.iter().map(|c| c % stream.len()).collect();
            let snap_point = snap_at % stream.len();
            let mut replica: Option<Replica<Rec>> = None;
            for (i, r) in stream.into_iter().enumerate() {
                // 1 µs per record: nothing waits out the window.
                let now = t0 + Duration::from_micros(i as u64);
                g.offer(r, now);
                if cut_points.contains(&i) || i == snap_point {
                    g.expire_held(now);
                    for d in g.take_deltas() {
                        if let Some(rep) = replica.as_mut() {
                            prop_assert_eq!(rep.apply_delta(&d), DeltaApplied::Applied);
                        }
                    }
                }
                if i == snap_point {
                    replica = Some(Replica::from_snapshot(g.snapshot()));
                }
            }
            g.expire_held(t0 + Duration::from_secs(1));
            let mut rep = replica.unwrap();
            for d in g.take_deltas() {
                prop_assert_eq!(rep.apply_delta(&d), DeltaApplied::Applied);
            }
            let final_snap = g.snapshot();
            prop_assert_eq!(rep.records().cloned().collect::<Vec<_>>(), final_snap.records.clone());
            prop_assert_eq!(rep.shard_versions(), &final_snap.shard_versions[..]);
            prop_assert_eq!(final_snap.records.len(), keys);
            prop_assert!(final_snap.records.iter().all(|r| r.seq == per_key));
            let c = g.counts();
            prop_assert_eq!(c.gap, 0);
            prop_assert_eq!(c.duplicates as usize, n_dups);
            prop_assert_eq!(c.applied, keys as u64 * per_key);
        }
    }
}
