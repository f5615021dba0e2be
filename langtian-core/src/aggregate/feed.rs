//! One feed's loop: read the source with a JetStream ordered consumer, keep [`GroupState`]s,
//! publish deltas every interval and snapshots (core NATS + KV) every snapshot interval; on
//! start, rebuild from the snapshots stored in KV and replay from just before them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::records::MdRecord;
use super::service::FeedStats;
use super::state::GroupState;
use super::{AggregateError, AggregatorConfig, FeedConfig, FeedStart, venue_group};
use crate::bus::Bus;
use crate::envelope::{Envelope, now_nanos};
use crate::proto::battery::v1::ChannelSample;
use crate::proto::md::v1::{Contract, Tick};

pub(super) type Decode<R> = fn(&FeedConfig, &[u8]) -> Result<(String, R), String>;

pub(super) fn decode_tick(f: &FeedConfig, payload: &[u8]) -> Result<(String, Tick), String> {
    let mut t = Tick::decode(payload).map_err(|e| format!("not a langtian.md.v1.Tick: {e}"))?;
    if t.symbol.is_empty() {
        return Err("tick without a symbol".into());
    }
    if t.ts_arrival == 0 {
        t.ts_arrival = now_nanos();
    }
    let group = f.group.clone().unwrap_or_else(|| venue_group(&t.venue));
    Ok((group, t))
}

pub(super) fn decode_contract(f: &FeedConfig, payload: &[u8]) -> Result<(String, Contract), String> {
    let c = Contract::decode(payload).map_err(|e| format!("not a langtian.md.v1.Contract: {e}"))?;
    if c.symbol.is_empty() || c.venue.is_empty() {
        return Err("contract without a symbol or venue".into());
    }
    if !(c.tick_size.is_finite() && c.tick_size > 0.0 && c.multiplier.is_finite() && c.multiplier > 0.0) {
        return Err(format!(
            "contract {}.{}: tick_size ({}) and multiplier ({}) must be positive numbers",
            c.venue, c.symbol, c.tick_size, c.multiplier
        ));
    }
    let group = f.group.clone().unwrap_or_else(|| venue_group(&c.venue));
    Ok((group, c))
}

pub(super) fn decode_sample(f: &FeedConfig, payload: &[u8]) -> Result<(String, ChannelSample), String> {
    let env = Envelope::decode(payload).map_err(|e| format!("not an envelope: {e}"))?;
    let s = ChannelSample::decode(env.payload().as_ref())
        .map_err(|e| format!("envelope payload is not a langtian.battery.v1.ChannelSample: {e}"))?;
    if s.device_id.is_empty() {
        return Err("sample without a device_id".into());
    }
    let group = f.group.clone().unwrap_or_else(|| venue_group(&s.device_id));
    Ok((group, s))
}

/// Reads the stored snapshots of a feed: `(group → state, oldest snapshot time)`.
async fn restore<R: MdRecord>(
    kv: &kv::Store,
    feed: &FeedConfig,
    cfg: &AggregatorConfig,
) -> Result<(BTreeMap<String, GroupState<R>>, Option<i64>), AggregateError> {
    let prefix = feed.snapshot_subject("");
    let mut keys = kv.keys().await.map_err(|e| AggregateError::Nats {
        what: format!("listing KV `{}`", cfg.kv_bucket),
        reason: e.to_string(),
    })?;
    // A key listing is a live consumer: a snapshot stored while it runs lists its key again.
    let mut names = std::collections::BTreeSet::new();
    while let Some(k) = keys.next().await {
        match k {
            Ok(k) if k.starts_with(&prefix) => {
                names.insert(k);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(AggregateError::Nats {
                    what: format!("listing KV `{}`", cfg.kv_bucket),
                    reason: e.to_string(),
                });
            }
        }
    }
    let mut groups = BTreeMap::new();
    let mut oldest: Option<i64> = None;
    for key in names {
        let Ok(Some(bytes)) = kv.get(&key).await else {
            continue;
        };
        match R::decode_snapshot(&bytes) {
            Ok((group, snap, ts)) if snap.shard_versions.len() as u32 == cfg.shards => {
                oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
                groups.insert(group, GroupState::restore(snap, cfg.reorder));
            }
            Ok((group, snap, _)) => {
                tracing::warn!(code = "snapshot_shards_changed", %key, %group, stored = snap.shard_versions.len(), configured = cfg.shards, "stored snapshot has another shard count; starting the group afresh")
            }
            Err(e) => {
                tracing::warn!(code = "snapshot_undecodable", %key, error = %e, "ignoring an undecodable stored snapshot")
            }
        }
    }
    Ok((groups, oldest))
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_feed<R: MdRecord>(
    name: &'static str,
    decode: Decode<R>,
    bus: Bus,
    cfg: AggregatorConfig,
    feed: FeedConfig,
    kv: kv::Store,
    stats: &FeedStats,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AggregateError> {
    let (mut groups, oldest) = restore::<R>(&kv, &feed, &cfg).await?;
    stats
        .restored_groups
        .store(groups.len() as u64, Ordering::Relaxed);
    let deliver_policy = match (oldest, feed.start) {
        // Replay from a little before the oldest stored snapshot: what is older is dropped as a
        // duplicate by sequence, what is newer rebuilds the state exactly.
        (Some(ts), _) => DeliverPolicy::ByStartTime {
            start_time: time_of(ts - 2_000_000_000),
        },
        (None, FeedStart::LastPerSubject) => DeliverPolicy::LastPerSubject,
        (None, FeedStart::New) => DeliverPolicy::New,
        (None, FeedStart::Since(d)) => DeliverPolicy::ByStartTime {
            start_time: time_of(now_nanos() - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        },
    };
    tracing::info!(
        restored = groups.len(),
        ?deliver_policy,
        "aggregator feed starting"
    );
    let stream = bus
        .jetstream()
        .get_stream(&feed.stream)
        .await
        .map_err(|e| AggregateError::Nats {
            what: format!("reading stream `{}`", feed.stream),
            reason: e.to_string(),
        })?;
    let subjects = &stream.cached_info().config.subjects;
    if is_filtered_read(&feed.filter, subjects) {
        tracing::info!(
            code = "feed_filtered_read",
            stream = %feed.stream,
            ?subjects,
            filter = %feed.filter,
            "the feed's filter is not its stream's only subject: the server matches every message \
             against it, which costs CPU per message at high rates (give a high-rate feed a stream \
             whose only subject is its filter)"
        );
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: feed.filter.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| AggregateError::Nats {
            what: format!(
                "creating an ordered consumer on `{}` ({})",
                feed.stream, feed.filter
            ),
            reason: e.to_string(),
        })?;
    let mut messages = consumer.messages().await.map_err(|e| AggregateError::Nats {
        what: format!("reading `{}` ({})", feed.stream, feed.filter),
        reason: e.to_string(),
    })?;
    // Fresh snapshots on request: a joining client gets the state as of the last delta, so the
    // deltas it has buffered since subscribing apply without a gap (KV's copy can be seconds old).
    let request_subject = feed.snapshot_request_subject("*");
    let mut requests = bus
        .client()
        .subscribe(request_subject.clone())
        .await
        .map_err(|e| AggregateError::Nats {
            what: format!("subscribing to `{request_subject}`"),
            reason: e.to_string(),
        })?;
    stats.ready.store(true, Ordering::Relaxed);

    let max_payload = bus.client().server_info().max_payload;
    let (snap_tx, snap_rx) = mpsc::channel::<(String, Bytes)>(64);
    let writer = tokio::spawn(store_snapshots(kv, snap_rx));
    let mut ticker = tokio::time::interval(cfg.delta_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_snapshot = Instant::now() + cfg.snapshot_interval;
    let mut rate = RateMeter::new(name);
    let emit = Emitter {
        bus: &bus,
        feed: &feed,
        stats,
        name,
        max_payload,
    };
    loop {
        tokio::select! {
            biased;
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                emit.deltas(&mut groups, now).await;
                if now >= next_snapshot {
                    emit.snapshots(&mut groups, &snap_tx).await;
                    next_snapshot = now + cfg.snapshot_interval;
                }
                publish_counts(name, stats, &groups);
                rate.observe(stats.ingested.load(Ordering::Relaxed), now);
            }
            Some(req) = requests.next() => {
                let group = req.subject.as_str().rsplit('.').next().unwrap_or_default().to_owned();
                let body = match groups.get(&group) {
                    Some(g) => Bytes::from(R::encode_snapshot(&group, &g.current(), now_nanos())),
                    None => Bytes::new(),
                };
                if let Some(reply) = req.reply {
                    if let Err(e) = bus.client().publish(reply, body).await {
                        tracing::debug!(%group, error = %e, "answering a snapshot request failed");
                    }
                    stats.snapshot_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
            m = messages.next() => match m {
                Some(Ok(m)) => {
                    stats.ingested.fetch_add(1, Ordering::Relaxed);
                    match decode(&feed, &m.payload) {
                        Ok((group, rec)) => {
                            let g = groups
                                .entry(group)
                                .or_insert_with(|| GroupState::new(cfg.shards, cfg.reorder));
                            g.offer(rec, Instant::now());
                        }
                        Err(reason) => {
                            stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("src_decode_errors", "feed" => name).increment(1);
                            tracing::debug!(subject = %m.subject, %reason, "undecodable source message");
                        }
                    }
                }
                // The ordered consumer recreates itself after gaps and server restarts.
                Some(Err(e)) => tracing::warn!(code = "source_read_error", error = %e, "source read error (the ordered consumer recovers)"),
                None => {
                    return Err(AggregateError::Nats {
                        what: format!("reading `{}`", feed.stream),
                        reason: "the ordered consumer ended".into(),
                    });
                }
            }
        }
    }
    // Drain: everything applied so far goes out as a last delta and snapshot.
    emit.deltas(&mut groups, Instant::now() + cfg.reorder.window)
        .await;
    emit.snapshots(&mut groups, &snap_tx).await;
    drop(snap_tx);
    let _ = writer.await;
    let _ = bus.flush_on_exit(crate::bus::EXIT_FLUSH).await;
    publish_counts(name, stats, &groups);
    tracing::info!("aggregator feed stopped");
    Ok(())
}

struct Emitter<'a> {
    bus: &'a Bus,
    feed: &'a FeedConfig,
    stats: &'a FeedStats,
    name: &'static str,
    max_payload: usize,
}

impl Emitter<'_> {
    async fn deltas<R: MdRecord>(&self, groups: &mut BTreeMap<String, GroupState<R>>, now: Instant) {
        let ts = now_nanos();
        for (group, g) in groups.iter_mut() {
            g.expire_held(now);
            for d in g.take_deltas() {
                let body = R::encode_delta(group, &d, ts);
                let subject = self.feed.delta_subject(group, d.shard);
                if let Err(e) = self.bus.client().publish(subject.clone(), body.into()).await {
                    tracing::warn!(code = "publish_failed", %subject, error = %e, "publishing a delta failed");
                    continue;
                }
                self.stats.deltas_out.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .ticks_out
                    .fetch_add(d.records.len() as u64, Ordering::Relaxed);
            }
        }
    }

    async fn snapshots<R: MdRecord>(
        &self,
        groups: &mut BTreeMap<String, GroupState<R>>,
        store: &mpsc::Sender<(String, Bytes)>,
    ) {
        let ts = now_nanos();
        for (group, g) in groups.iter_mut() {
            let snap = g.snapshot();
            let body = Bytes::from(R::encode_snapshot(group, &snap, ts));
            let subject = self.feed.snapshot_subject(group);
            if body.len() > self.max_payload {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("snapshot_errors", "feed" => self.name).increment(1);
                tracing::error!(code = "snapshot_too_large", %subject, bytes = body.len(), max_payload = self.max_payload, keys = snap.records.len(), "snapshot larger than the server's max_payload; raise max_payload or split the group");
                continue;
            }
            if let Err(e) = self.bus.client().publish(subject.clone(), body.clone()).await {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(code = "publish_failed", %subject, error = %e, "publishing a snapshot failed");
                continue;
            }
            if store.send((subject, body)).await.is_err() {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.snapshots_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stores snapshots in KV in the order they were taken.
async fn store_snapshots(kv: kv::Store, mut rx: mpsc::Receiver<(String, Bytes)>) {
    while let Some((key, body)) = rx.recv().await {
        if let Err(e) = kv.put(&key, body).await {
            metrics::counter!("snapshot_errors", "feed" => "kv").increment(1);
            tracing::warn!(code = "kv_store_failed", %key, error = %e, "storing a snapshot in KV failed");
        }
    }
}

fn publish_counts<R: MdRecord>(
    name: &'static str,
    stats: &FeedStats,
    groups: &BTreeMap<String, GroupState<R>>,
) {
    let mut c = super::Counts::default();
    let mut keys = 0u64;
    for g in groups.values() {
        let gc = g.counts();
        c.duplicates += gc.duplicates;
        c.reordered += gc.reordered;
        c.gap += gc.gap;
        c.source_resets += gc.source_resets;
        keys += g.len() as u64;
    }
    stats.duplicates.store(c.duplicates, Ordering::Relaxed);
    stats.reordered.store(c.reordered, Ordering::Relaxed);
    stats.gap.store(c.gap, Ordering::Relaxed);
    stats.keys.store(keys, Ordering::Relaxed);
    metrics::counter!("src_ingest_total", "feed" => name).absolute(stats.ingested.load(Ordering::Relaxed));
    metrics::counter!("src_duplicates", "feed" => name).absolute(c.duplicates);
    metrics::counter!("reorder_count", "feed" => name).absolute(c.reordered);
    metrics::counter!("src_gap", "feed" => name).absolute(c.gap);
    metrics::counter!("src_source_resets", "feed" => name).absolute(c.source_resets);
    metrics::counter!("deltas_out", "feed" => name).absolute(stats.deltas_out.load(Ordering::Relaxed));
    metrics::counter!("ticks_out", "feed" => name).absolute(stats.ticks_out.load(Ordering::Relaxed));
    metrics::counter!("snapshots_out", "feed" => name).absolute(stats.snapshots_out.load(Ordering::Relaxed));
    metrics::gauge!("md_keys", "feed" => name).set(keys as f64);
}

/// `src_ingest_rate`: messages per second over the last second.
struct RateMeter {
    name: &'static str,
    since: Instant,
    at: u64,
}

impl RateMeter {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            since: Instant::now(),
            at: 0,
        }
    }
    fn observe(&mut self, total: u64, now: Instant) {
        let dt = now.saturating_duration_since(self.since);
        if dt >= Duration::from_secs(1) {
            let rate = (total - self.at) as f64 / dt.as_secs_f64();
            metrics::gauge!("src_ingest_rate", "feed" => self.name).set(rate);
            self.since = now;
            self.at = total;
        }
    }
}

fn time_of(nanos: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos.max(0)))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Whether JetStream reads a consumer with `filter` on a stream with `subjects` as a filtered
/// one: it is not when the filter is the stream's only subject (nats-server's
/// `consumer.isFiltered`); otherwise the server matches each stored message against the filter
/// on the way to the consumer.
fn is_filtered_read(filter: &str, subjects: &[String]) -> bool {
    !(filter.is_empty() || matches!(subjects, [only] if only == filter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::FeedConfig;
    use crate::bus::Topology;

    #[test]
    fn a_filter_is_unfiltered_only_as_the_streams_only_subject() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(!is_filtered_read("xy.src.tick.>", &s(&["xy.src.tick.>"])));
        assert!(!is_filtered_read("", &s(&["a.>", "b.>"])));
        assert!(is_filtered_read("xy.src.tick.>", &s(&["xy.src.>"])));
        assert!(is_filtered_read(
            "xy.src.tick.>",
            &s(&["xy.src.tick.>", "xy.ref.>"])
        ));
    }

    /// The tick feed runs at up to tens of thousands of messages per second: the default
    /// topology gives it a stream of its own (`lt bench live` at 40k ticks/s: p99 seconds behind
    /// with ticks and reference data in one stream, ~55 ms with this).
    #[test]
    fn the_default_topology_reads_the_tick_feed_unfiltered() {
        let topology = Topology::default_topology().unwrap();
        let feed = FeedConfig::ticks();
        let stream = topology.streams.iter().find(|s| s.name == feed.stream).unwrap();
        assert!(
            !is_filtered_read(&feed.filter, &stream.subjects),
            "{:?}",
            stream.subjects
        );
    }
}
