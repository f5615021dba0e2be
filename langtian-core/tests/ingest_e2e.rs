//! Issue 4 item 5, end to end with real parts: battery simulator → UDP → collector → JetStream
//! → flow (the built-in battery-to-lake pipeline, 1 s flush) → DuckLake. Every sample sent is a
//! row in the lake, once; receipt → committed row latency p95 ≤ 2 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use langtian_core::bus::Topology;
use langtian_core::collector::{Collector, CollectorConfig};
use langtian_core::flow::config::PipelineFile;
use langtian_core::flow::runner::{RunStats, drain_within, run_pipeline};
use langtian_core::lake::{Lake, LakeConfig};
use langtian_core::sim::udp::{BatteryUdpConfig, send_battery_udp};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_to_lake_every_sample_once_with_p95_latency_under_2s() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let lake_dir = tempfile::tempdir().unwrap();

    // The collector.
    let collector = Collector::bind(CollectorConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let udp = collector.local_addr();
    let (col_stop, col_rx) = watch::channel(false);
    let col_task = tokio::spawn(collector.run(bus.clone(), col_rx));

    // The flow, exactly as `lt up` runs it.
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("SQLFLOW_NATS_URL".to_owned(), srv.url());
    vars.insert(
        "SQLFLOW_LAKE_DIR".to_owned(),
        lake_dir.path().display().to_string(),
    );
    let file = PipelineFile::from_str(
        "battery-to-lake.yml",
        langtian_core::flow::EXAMPLE_PIPELINE,
        &vars,
    )
    .unwrap();
    let stats = Arc::new(RunStats::default());
    let (flow_stop, flow_rx) = watch::channel(false);
    let mut flow_task = tokio::spawn(run_pipeline(file, stats.clone(), flow_rx));

    // Watch commits: (highest committed stream sequence, wall clock ns) every 10 ms.
    let commits: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let (watch_stop, mut watch_rx) = watch::channel(false);
    let watcher = {
        let (stats, commits) = (stats.clone(), commits.clone());
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                let seq = stats.committed_seq.load(Ordering::Relaxed);
                if seq > last {
                    commits
                        .lock()
                        .unwrap()
                        .push((seq, langtian_core::envelope::now_nanos()));
                    last = seq;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = watch_rx.changed() => break,
                }
            }
        })
    };

    // 30,000 samples at 5,000/s, 10 per datagram.
    let mut sc = BatteryUdpConfig::new(udp);
    sc.rate = 5_000.0;
    sc.count = Some(30_000);
    let (_sim_stop, sim_rx) = watch::channel(false);
    let sent = send_battery_udp(&sc, sim_rx, |_| {}).await.unwrap();
    assert_eq!(sent.samples, 30_000);

    common::wait_until(Duration::from_secs(60), "30,000 rows committed", || {
        let s = stats.clone();
        async move { s.rows_out.load(Ordering::Relaxed) >= 30_000 }
    })
    .await;
    // Stream sequences are 1..=30,000 (a fresh stream): wait until the watcher saw the last one.
    common::wait_until(Duration::from_secs(10), "the last commit observed", || {
        let c = commits.clone();
        async move { c.lock().unwrap().last().is_some_and(|(s, _)| *s >= 30_000) }
    })
    .await;
    let _ = watch_stop.send(true);
    watcher.await.unwrap();
    let _ = col_stop.send(true);
    let report = col_task.await.unwrap().unwrap();
    assert_eq!(report.stats.datagrams, sent.datagrams, "{:?}", report.stats);
    assert_eq!(
        (
            report.stats.published,
            report.stats.dropped,
            report.stats.malformed
        ),
        (30_000, 0, 0)
    );
    flow_stop.send(true).unwrap();
    drain_within(&mut flow_task, Duration::from_secs(10))
        .await
        .unwrap();

    // The lake: one row per sample sent, each once.
    let lake = Lake::open(LakeConfig::local(lake_dir.path())).unwrap();
    let (rows, distinct): (i64, i64) = lake
        .connection()
        .query_row(
            "SELECT count(*), count(DISTINCT (device_id, channel, seq)) FROM lake.battery_samples",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, distinct), (30_000, 30_000));

    // Latency: from the collector's receipt (ts_received) to the first moment the row's stream
    // sequence was seen committed.
    let commits = commits.lock().unwrap().clone();
    let mut st = lake
        .connection()
        .prepare("SELECT stream_seq, epoch_us(ts_received) FROM lake.battery_samples")
        .unwrap();
    let mut lat_ms: Vec<f64> = st
        .query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(|r| {
            let (seq, recv_us) = r.unwrap();
            let i = commits.partition_point(|(c, _)| *c < seq);
            let (_, at_ns) = commits.get(i).copied().expect("every row's commit was observed");
            (at_ns / 1000 - recv_us) as f64 / 1000.0
        })
        .collect();
    lat_ms.sort_by(f64::total_cmp);
    let p = |q: f64| lat_ms[((lat_ms.len() - 1) as f64 * q) as usize];
    eprintln!(
        "receipt → committed row: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        p(0.5),
        p(0.95),
        p(0.99),
        p(1.0)
    );
    assert!(lat_ms[0] >= 0.0, "a row committed before it was received?");
    assert!(p(0.95) <= 2_000.0, "p95 {:.0} ms", p(0.95));
}
