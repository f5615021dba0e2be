//! The aggregator against a real nats-server: deltas + snapshots replayed by a client equal the
//! aggregator's state; a client rebuilds from KV + deltas at once; a restart continues from KV.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use langtian_core::aggregate::service::{AggregatorStats, run_aggregator};
use langtian_core::aggregate::{AggregatorConfig, DeltaApplied, FeedConfig, MdRecord, Replica};
use langtian_core::bus::{Bus, OutgoingMessage, Publisher, PublisherConfig, Qos, Topology};
use langtian_core::envelope::EnvelopeBuilder;
use langtian_core::proto::battery::v1::ChannelSample;
use langtian_core::proto::md::v1::{Contract, Tick};
use langtian_core::sim::ticks::publish_contracts;
use langtian_core::sim::{TickSim, TickSimConfig};
use prost::Message as _;
use tokio::sync::watch;

fn ticks_only() -> AggregatorConfig {
    AggregatorConfig {
        battery: None,
        contracts: None,
        ..AggregatorConfig::default()
    }
}

async fn start(
    bus: &Bus,
    cfg: AggregatorConfig,
) -> (
    Arc<AggregatorStats>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), langtian_core::aggregate::AggregateError>>,
) {
    let stats = Arc::new(AggregatorStats::default());
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(run_aggregator(bus.clone(), cfg, stats.clone(), rx));
    let s = stats.clone();
    common::wait_until(Duration::from_secs(10), "aggregator feeds reading", || {
        let s = s.clone();
        async move {
            [&s.ticks, &s.battery, &s.contracts]
                .iter()
                .any(|f| f.ready.load(Ordering::Relaxed))
        }
    })
    .await;
    (stats, tx, h)
}

async fn publish_all(bus: &Bus, msgs: Vec<OutgoingMessage>) {
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let mut w = p.window();
    for m in msgs {
        w.send(m).await.unwrap();
    }
    w.drain().await.unwrap();
}

fn tick_messages(ticks: &[Tick]) -> Vec<OutgoingMessage> {
    ticks
        .iter()
        .map(|t| OutgoingMessage::new(TickSim::subject("xy.src.tick", t), t.encode_to_vec()))
        .collect()
}

/// The latest (highest-sequence) tick of every instrument, by `<venue>.<symbol>`.
fn expected_latest(ticks: &[Tick]) -> BTreeMap<String, Tick> {
    let mut m: BTreeMap<String, Tick> = BTreeMap::new();
    for t in ticks {
        let k = format!("{}.{}", t.venue, t.symbol);
        if m.get(&k).is_none_or(|o| o.seq < t.seq) {
            m.insert(k, t.clone());
        }
    }
    m
}

fn without_arrival(t: &Tick) -> Tick {
    Tick {
        ts_arrival: 0,
        ..t.clone()
    }
}

async fn kv_snapshot<R: MdRecord>(
    bus: &Bus,
    key: &str,
) -> Option<(langtian_core::aggregate::GroupSnapshot<R>, i64)> {
    let kv = bus.jetstream().get_key_value("md_snapshots").await.unwrap();
    let bytes = kv.get(key).await.unwrap()?;
    let (_, s, ts) = R::decode_snapshot(&bytes).unwrap();
    Some((s, ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_deltas_equal_the_aggregator_state_despite_duplicates_and_reordering() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let (stats, stop, task) = start(&bus, ticks_only()).await;

    // The client subscribes to every delta and snapshot of venue shfe before anything flows.
    let mut deltas = bus.client().subscribe("xy.md.tick.shfe.>").await.unwrap();
    let mut snaps = bus.client().subscribe("xy.md.snapshot.shfe").await.unwrap();
    bus.client().flush().await.unwrap();

    let mut sim = TickSim::new(TickSimConfig {
        venues: 2,
        symbols_per_venue: 20,
        duplicate_rate: 0.05,
        out_of_order_rate: 0.05,
        seed: 11,
    });
    let mut sent = Vec::new();
    // Five rounds of 2,000 ticks over ~4 s, so that snapshots (every 3 s) fall between deltas.
    for _ in 0..5 {
        let batch = sim.next_ticks(2_000);
        publish_all(&bus, tick_messages(&batch)).await;
        sent.extend(batch);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    common::wait_until(Duration::from_secs(10), "all 10,000 ticks ingested", || {
        let s = stats.clone();
        async move { s.ticks.ingested.load(Ordering::Relaxed) == 10_000 }
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();

    // Replay: the first snapshot seen, then every delta after it.
    let first_snapshot = tokio::time::timeout(Duration::from_secs(5), snaps.next())
        .await
        .unwrap()
        .unwrap();
    let (_, snap, _) = Tick::decode_snapshot(&first_snapshot.payload).unwrap();
    let mut replica = Replica::from_snapshot(snap);
    let mut applied = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), deltas.next()).await {
        let (group, d, _) = Tick::decode_delta(&m.payload).unwrap();
        assert_eq!(group, "shfe");
        assert_eq!(m.subject.as_str(), format!("xy.md.tick.shfe.{}", d.shard));
        match replica.apply_delta(&d) {
            DeltaApplied::Applied => applied += 1,
            DeltaApplied::Stale => {}
            gap @ DeltaApplied::Gap { .. } => panic!("no delta is lost on a local server: {gap:?}"),
        }
    }
    assert!(applied > 0, "deltas after the first snapshot");

    // The aggregator's final state (its last snapshot, stored in KV on shutdown) …
    let (last, _) = kv_snapshot::<Tick>(&bus, "xy.md.snapshot.shfe").await.unwrap();
    let last_records: Vec<Tick> = last.records.iter().map(without_arrival).collect();
    let replayed: Vec<Tick> = replica.records().map(without_arrival).collect();
    assert_eq!(replayed, last_records, "snapshot + deltas = aggregator state");
    assert_eq!(replica.shard_versions(), &last.shard_versions[..]);
    // … is the highest-sequence tick of every shfe instrument that was sent.
    let want: Vec<Tick> = expected_latest(&sent)
        .into_iter()
        .filter(|(k, _)| k.starts_with("shfe."))
        .map(|(_, t)| without_arrival(&t))
        .collect();
    assert_eq!(replayed.len(), 20);
    assert_eq!(replayed, want);
    let s = &stats.ticks;
    assert!(
        s.duplicates.load(Ordering::Relaxed) > 0,
        "the feed's duplicates were dropped"
    );
    assert!(
        s.reordered.load(Ordering::Relaxed) > 0,
        "late ticks were re-ordered"
    );
    assert!(s.ticks_out.load(Ordering::Relaxed) > 0);
    assert!(s.snapshots_out.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_rebuilds_from_kv_and_deltas_within_a_second_and_restarts_continue() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let (stats, stop, task) = start(&bus, ticks_only()).await;
    let sim = TickSim::new(TickSimConfig {
        venues: 1,
        symbols_per_venue: 30,
        duplicate_rate: 0.0,
        out_of_order_rate: 0.0,
        seed: 5,
    });
    // A steady feed in the background.
    let feeder = {
        let bus = bus.clone();
        let mut sim = sim.clone();
        tokio::spawn(async move {
            loop {
                publish_all(&bus, tick_messages(&sim.next_ticks(100))).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let kv = bus.jetstream().get_key_value("md_snapshots").await.unwrap();
    common::wait_until(Duration::from_secs(10), "a stored snapshot", || {
        let kv = kv.clone();
        async move { kv.get("xy.md.snapshot.shfe").await.unwrap().is_some() }
    })
    .await;

    // Let the copy in KV fall behind the live deltas (the usual case: it is rewritten only every
    // snapshot interval), as a delta that builds on a newer version shows.
    let (stale, _) = kv_snapshot::<Tick>(&bus, "xy.md.snapshot.shfe").await.unwrap();
    let mut watch_deltas = bus.client().subscribe("xy.md.tick.shfe.>").await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), watch_deltas.next())
            .await
            .unwrap()
            .unwrap();
        let (_, d, _) = Tick::decode_delta(&m.payload).unwrap();
        if d.base_version > stale.shard_versions[d.shard as usize] {
            // From the stale copy alone this delta is a gap: deltas in between were missed.
            assert!(matches!(
                Replica::from_snapshot(stale.clone()).apply_delta(&d),
                DeltaApplied::Gap { .. }
            ));
            break;
        }
    }
    drop(watch_deltas);

    // A (re)connecting client: subscribe, ask the aggregator for a fresh snapshot, apply what follows.
    let t0 = Instant::now();
    let mut deltas = bus.client().subscribe("xy.md.tick.shfe.>").await.unwrap();
    bus.client().flush().await.unwrap();
    let reply = bus
        .client()
        .request(
            FeedConfig::ticks().snapshot_request_subject("shfe"),
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    let (_, snap, _) = Tick::decode_snapshot(&reply.payload).unwrap();
    let mut replica = Replica::from_snapshot(snap);
    let mut applied = 0;
    let mut rebuilt = None;
    while applied < 10 {
        let m = tokio::time::timeout(Duration::from_secs(2), deltas.next())
            .await
            .unwrap()
            .unwrap();
        let (_, d, _) = Tick::decode_delta(&m.payload).unwrap();
        match replica.apply_delta(&d) {
            DeltaApplied::Applied => {
                rebuilt.get_or_insert(t0.elapsed());
                applied += 1;
            }
            DeltaApplied::Stale => continue,
            gap => panic!("{gap:?}"),
        }
    }
    let rebuilt = rebuilt.unwrap();
    assert_eq!(replica.len(), 30);
    assert!(rebuilt < Duration::from_secs(1), "rebuilt in {rebuilt:?}");
    // An unknown group gets an empty answer.
    let none = bus
        .client()
        .request(
            FeedConfig::ticks().snapshot_request_subject("nowhere"),
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert!(none.payload.is_empty());

    // Restart: the new aggregator continues the shard versions from KV, so the client above keeps
    // applying deltas without a gap.
    feeder.abort();
    let _ = feeder.await;
    let total = common::stream_len(&bus, "XY_SRC").await;
    common::wait_until(Duration::from_secs(10), "every tick ingested", || {
        let s = stats.clone();
        async move { s.ticks.ingested.load(Ordering::Relaxed) == total }
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let (before, _) = kv_snapshot::<Tick>(&bus, "xy.md.snapshot.shfe").await.unwrap();
    let mut after = bus.client().subscribe("xy.md.tick.shfe.>").await.unwrap();
    bus.client().flush().await.unwrap();
    let (stats2, stop2, task2) = start(&bus, ticks_only()).await;
    assert_eq!(stats2.ticks.restored_groups.load(Ordering::Relaxed), 1);
    // Every instrument ticks once more after what the stored snapshot holds.
    let next: Vec<Tick> = before
        .records
        .iter()
        .map(|t| Tick {
            seq: t.seq + 1,
            last: t.last + 1.0,
            ..t.clone()
        })
        .collect();
    publish_all(&bus, tick_messages(&next)).await;
    let mut first_base: BTreeMap<u32, u64> = BTreeMap::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    while seen.len() < 30 || seen.values().any(|s| *s == 0) {
        let m = tokio::time::timeout(Duration::from_secs(5), after.next())
            .await
            .unwrap()
            .unwrap();
        let (_, d, _) = Tick::decode_delta(&m.payload).unwrap();
        first_base.entry(d.shard).or_insert(d.base_version);
        for t in d.records {
            let done = next.iter().any(|n| n.symbol == t.symbol && n.seq == t.seq);
            seen.insert(t.symbol.clone(), if done { t.seq } else { 0 });
        }
    }
    for (shard, base) in first_base {
        assert_eq!(
            base, before.shard_versions[shard as usize],
            "shard {shard}: versions continue after the restart"
        );
    }
    let _ = stop2.send(true);
    task2.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_samples_become_channel_deltas_and_gaps_are_counted() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let cfg = AggregatorConfig {
        ticks: None,
        contracts: None,
        battery: Some(FeedConfig {
            start: langtian_core::aggregate::FeedStart::New,
            ..FeedConfig::battery()
        }),
        ..AggregatorConfig::default()
    };
    let (stats, stop, task) = start(&bus, cfg).await;
    let mut deltas = bus.client().subscribe("lt.md.delta.cells.>").await.unwrap();
    bus.client().flush().await.unwrap();
    let sample = |ch: u32, seq: u64| {
        let s = ChannelSample {
            device_id: "cycler-1".into(),
            channel: ch,
            seq,
            voltage: 3.0 + seq as f64 / 100.0,
            ..Default::default()
        };
        let env = EnvelopeBuilder::new("battery", "test")
            .event_id(format!("cycler-1/{ch}/{seq}"))
            .payload(s.encode_to_vec(), "application/x-protobuf")
            .build()
            .unwrap();
        OutgoingMessage::from_envelope("lt.evt", &env)
    };
    // Channel 0: 1..=10 without 5..=7 (a gap of 3); channel 1: 1..=10 plus a bad message.
    let mut msgs: Vec<OutgoingMessage> = (1..=10u64)
        .filter(|s| !(5..=7).contains(s))
        .map(|s| sample(0, s))
        .collect();
    msgs.extend((1..=10u64).map(|s| sample(1, s)));
    msgs.push(OutgoingMessage::new(
        "lt.evt.battery.test",
        &b"not an envelope"[..],
    ));
    publish_all(&bus, msgs).await;
    let mut latest: BTreeMap<u32, u64> = BTreeMap::new();
    while latest.get(&0) != Some(&10) || latest.get(&1) != Some(&10) {
        let m = tokio::time::timeout(Duration::from_secs(5), deltas.next())
            .await
            .unwrap()
            .unwrap();
        let (group, d, _) = ChannelSample::decode_delta(&m.payload).unwrap();
        assert_eq!(group, "cells");
        for s in d.records {
            latest.insert(s.channel, s.seq);
        }
    }
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let b = &stats.battery;
    assert_eq!(b.gap.load(Ordering::Relaxed), 3);
    assert_eq!(b.decode_errors.load(Ordering::Relaxed), 1);
    assert_eq!(b.keys.load(Ordering::Relaxed), 2);
    let (snap, _) = kv_snapshot::<ChannelSample>(&bus, "lt.md.snapshot.cells")
        .await
        .unwrap();
    let seqs: Vec<(u32, u64)> = snap.records.iter().map(|s| (s.channel, s.seq)).collect();
    assert_eq!(seqs, vec![(0, 10), (1, 10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_from_xy_ref_become_deltas_and_snapshots_of_their_own_and_survive_a_restart() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let contracts_only = || AggregatorConfig {
        ticks: None,
        battery: None,
        ..AggregatorConfig::default()
    };
    let (stats, stop, task) = start(&bus, contracts_only()).await;
    let mut deltas = bus.client().subscribe("xy.md.contract.>").await.unwrap();
    bus.client().flush().await.unwrap();
    let sim = TickSim::new(TickSimConfig {
        venues: 2,
        symbols_per_venue: 3,
        ..TickSimConfig::default()
    });
    assert_eq!(publish_contracts(&bus, &sim, "xy.ref.contract").await.unwrap(), 6);
    // A second run of the simulator publishes the same versions: JetStream's duplicate window
    // drops them (same message ids), so the stream still holds one message per instrument.
    publish_contracts(&bus, &sim, "xy.ref.contract").await.unwrap();
    // A new version of one contract, and one the aggregator must refuse (multiplier 0).
    let mut changed = sim.contracts()[0].clone();
    changed.seq = 2;
    changed.multiplier *= 2.0;
    let mut bad = sim.contracts()[1].clone();
    bad.seq = 3;
    bad.multiplier = 0.0;
    let subject = |c: &Contract| format!("xy.ref.contract.{}.{}", c.venue, c.symbol);
    publish_all(
        &bus,
        vec![
            OutgoingMessage::new(subject(&changed), changed.encode_to_vec()),
            OutgoingMessage::new(subject(&bad), bad.encode_to_vec()),
        ],
    )
    .await;

    // Deltas on xy.md.contract.<venue>.<shard> carry every contract, the changed one last.
    let mut seen: BTreeMap<String, Contract> = BTreeMap::new();
    while seen.len() < 6 || seen[&format!("{}.{}", changed.venue, changed.symbol)].seq < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), deltas.next())
            .await
            .expect("contract deltas")
            .unwrap();
        let (group, d, _) = Contract::decode_delta(&m.payload).unwrap();
        assert!(
            m.subject
                .as_str()
                .starts_with(&format!("xy.md.contract.{group}.")),
            "{}",
            m.subject
        );
        for c in d.records {
            assert_eq!(c.venue, group);
            seen.insert(format!("{}.{}", c.venue, c.symbol), c);
        }
    }
    assert_eq!(seen[&format!("{}.{}", changed.venue, changed.symbol)], changed);
    let c = &stats.contracts;
    common::wait_until(Duration::from_secs(5), "the bad contract counted", || async {
        c.decode_errors.load(Ordering::Relaxed) == 1
    })
    .await;
    // The stream keeps only the latest contract per instrument (max_msgs_per_subject: 1): the
    // refused one replaced its predecessor there, which the aggregator still holds.
    let mut xy_ref = bus.jetstream().get_stream("XY_REF").await.unwrap();
    assert_eq!(xy_ref.info().await.unwrap().state.messages, 6);
    let _ = stop.send(true);
    task.await.unwrap().unwrap();

    // The snapshot (KV key xy.md.contracts.<venue>) holds the venue's contracts, the new version
    // included; the tick snapshots' keys (xy.md.snapshot.*) are untouched.
    let venue = changed.venue.clone();
    let (snap, _) = kv_snapshot::<Contract>(&bus, &format!("xy.md.contracts.{venue}"))
        .await
        .expect("contract snapshot in KV");
    let expected: Vec<Contract> = seen.values().filter(|c| c.venue == venue).cloned().collect();
    assert_eq!(snap.records, expected);
    assert!(
        kv_snapshot::<Tick>(&bus, &format!("xy.md.snapshot.{venue}"))
            .await
            .is_none()
    );

    // A restarted aggregator restores them from KV and answers a fresh-snapshot request.
    let (stats2, stop2, task2) = start(&bus, contracts_only()).await;
    assert_eq!(stats2.contracts.restored_groups.load(Ordering::Relaxed), 2);
    let reply = bus
        .client()
        .request(format!("xy.md.req.contracts.{venue}"), bytes::Bytes::new())
        .await
        .unwrap();
    let (group, fresh, _) = Contract::decode_snapshot(&reply.payload).unwrap();
    assert_eq!((group, fresh.records), (venue, expected));
    let _ = stop2.send(true);
    task2.await.unwrap().unwrap();
}

#[test]
fn settings_out_of_range_are_named() {
    let mut c = AggregatorConfig {
        delta_interval: Duration::from_millis(5),
        ..AggregatorConfig::default()
    };
    assert!(c.validate().unwrap_err().to_string().contains("delta_interval"));
    c.delta_interval = Duration::from_millis(33);
    c.snapshot_interval = Duration::from_secs(10);
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("snapshot_interval")
    );
    c.snapshot_interval = Duration::from_secs(3);
    c.shards = 0;
    assert!(c.validate().unwrap_err().to_string().contains("shards"));
    c.shards = 4;
    assert!(c.validate().is_ok());
    // Contracts stored under the ticks' snapshot keys would restore as ticks.
    c.contracts = Some(FeedConfig {
        snapshot_word: "snapshot".into(),
        ..FeedConfig::contracts()
    });
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("snapshot_word") && e.contains("xy.md.snapshot."),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_group_follows_the_aggregator_resyncs_after_a_gap_and_falls_back_to_kv() {
    use langtian_core::aggregate::{LiveGroup, LiveUpdate, ShardDelta};
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let (stats, stop, task) = start(&bus, ticks_only()).await;
    let feed = FeedConfig::ticks();
    let mut sim = TickSim::new(TickSimConfig {
        venues: 2,
        symbols_per_venue: 20,
        duplicate_rate: 0.0,
        out_of_order_rate: 0.0,
        seed: 5,
    });
    let mut sent = sim.next_ticks(1_000);
    publish_all(&bus, tick_messages(&sent)).await;
    common::wait_until(Duration::from_secs(10), "1,000 ticks ingested", || {
        let s = stats.clone();
        async move { s.ticks.ingested.load(Ordering::Relaxed) == 1_000 }
    })
    .await;
    let shfe = |sent: &[Tick]| -> Vec<Tick> {
        expected_latest(sent)
            .into_iter()
            .filter(|(k, _)| k.starts_with("shfe."))
            .map(|(_, t)| without_arrival(&t))
            .collect()
    };
    let held =
        |live: &LiveGroup<Tick>| -> Vec<Tick> { live.replica().records().map(without_arrival).collect() };

    // A group nobody has seen is named in the error; a bad group name is refused.
    let err = LiveGroup::<Tick>::open(&bus, &feed, "md_snapshots", "nowhere")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, langtian_core::aggregate::AggregateError::NoSnapshot { group, key, .. }
            if group == "nowhere" && key == "xy.md.snapshot.nowhere"),
        "{err}"
    );
    let err = LiveGroup::<Tick>::open(&bus, &feed, "md_snapshots", "a.b")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`a.b` must be one subject token"), "{err}");

    // Opened from the aggregator's fresh snapshot: every shfe instrument at once.
    let mut live = LiveGroup::<Tick>::open(&bus, &feed, "md_snapshots", "shfe")
        .await
        .unwrap();
    assert_eq!(live.group(), "shfe");
    assert_eq!(held(&live), shfe(&sent));

    // New ticks arrive as deltas and the replica follows them.
    let more = sim.next_ticks(2_000);
    publish_all(&bus, tick_messages(&more)).await;
    sent.extend(more);
    let want = shfe(&sent);
    tokio::time::timeout(Duration::from_secs(10), async {
        while held(&live) != want {
            live.next().await.unwrap();
        }
    })
    .await
    .expect("the live group reaches the state of every tick sent");
    assert!(live.stats().applied > 0, "{:?}", live.stats());

    // A forged delta that applies (it builds on shard 0's version) puts a record into the
    // replica that the aggregator never had: only reading the snapshot again removes it.
    let v0 = live.replica().shard_versions()[0];
    let bogus = Tick {
        venue: "shfe".into(),
        symbol: "bogus".into(),
        seq: 1,
        ..Tick::default()
    };
    let corrupting = ShardDelta::<Tick> {
        shard: 0,
        version: v0 + 1,
        base_version: v0,
        records: vec![bogus],
    };
    bus.client()
        .publish(
            "xy.md.tick.shfe.0",
            Tick::encode_delta("shfe", &corrupting, 0).into(),
        )
        .await
        .unwrap();
    let applied = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied, LiveUpdate::Applied { shard: 0, keys: 1 });
    assert!(live.replica().get("shfe.bogus").is_some());

    // Something that is not a delta of shfe on its subjects is counted and skipped; a delta
    // building on a version never seen (a lost message) makes it read the snapshot again.
    bus.client()
        .publish("xy.md.tick.shfe.1", "not a delta".into())
        .await
        .unwrap();
    let forged = ShardDelta::<Tick> {
        shard: 0,
        version: 1_000_000,
        base_version: 999_999,
        records: vec![],
    };
    bus.client()
        .publish("xy.md.tick.shfe.0", Tick::encode_delta("shfe", &forged, 0).into())
        .await
        .unwrap();
    let resynced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let LiveUpdate::Resynced { snapshot_version } = live.next().await.unwrap() {
                return snapshot_version;
            }
        }
    })
    .await
    .expect("a resync after the gap");
    assert_eq!(resynced, live.replica().snapshot_version());
    assert!(
        live.replica().shard_versions()[0] < 999_999,
        "the aggregator's versions, not the forged one: {:?}",
        live.replica().shard_versions()
    );
    assert_eq!(live.stats().rejected, 1, "{:?}", live.stats());
    assert_eq!(live.stats().resyncs, 1, "{:?}", live.stats());
    assert_eq!(
        held(&live),
        want,
        "rebuilt from the snapshot: the forged record is gone"
    );
    assert!(live.replica().get("shfe.bogus").is_none());

    // With the aggregator stopped, a new live group rebuilds from the snapshot kept in KV.
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let from_kv = LiveGroup::<Tick>::open(&bus, &feed, "md_snapshots", "shfe")
        .await
        .unwrap();
    assert_eq!(held(&from_kv), want);
}
