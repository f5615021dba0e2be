//! sql-flow's invariants for the runner against a real nats-server, real DuckLake, real Parquet
//! files (local and on an S3-compatible server): partial batches on time, drain on cancel, no
//! hollow sink success, the `nats` column with headers, the jsonl source, parquet and nats sinks,
//! and the Prometheus names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use langtian_core::async_nats::HeaderMap;
use langtian_core::async_nats::jetstream::consumer::pull::Config as PullConfig;
use langtian_core::bus::{Bus, Consumer, ConsumerSpec, OutgoingMessage, Publisher, PublisherConfig, Qos};
use langtian_core::flow::config::PipelineFile;
use langtian_core::flow::runner::{RunError, RunStats, drain_within, run_pipeline};
use langtian_core::lake::{Lake, LakeConfig};
use tokio::sync::watch;

/// A pipeline over stream `EV` (subjects `ev.>`, raw JSON payloads) with the given knobs.
fn pipeline(url: &str, batch: usize, flush: f64, sink: &str, sql: &str) -> PipelineFile {
    let text = format!(
        r#"
pipeline:
  name: p1
  batch_size: {batch}
  flush_interval_seconds: {flush}
  drain_deadline_seconds: 10
  source:
    type: nats
    nats:
      servers: ["{url}"]
      stream: EV
      consumer: p1
      ack_wait: {ack_wait}s
      payload: raw
  handler:
    type: handlers.InferredMemBatch
    sql: "{sql}"
  sink:
{sink}
"#,
        ack_wait = (flush * 2.0).max(5.0).ceil()
    );
    PipelineFile::from_str("test.yml", &text, &BTreeMap::new()).unwrap()
}

fn lake_sink(dir: &Path) -> String {
    format!(
        "    type: ducklake\n    ducklake:\n      catalog: \"{d}/meta.ducklake\"\n      data_path: \"{d}/data\"\n      table: t\n",
        d = dir.display()
    )
}

async fn publish_raw(bus: &Bus, n: u64, headers: bool) {
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let mut w = p.window();
    for i in 1..=n {
        let mut m = OutgoingMessage::new(
            format!("ev.k{}", i % 3),
            format!("{{\"k\":{i},\"v\":{}.5}}", i * 10),
        );
        if headers {
            let mut h = HeaderMap::new();
            h.insert("X-Trace", format!("trace-{i}").as_str());
            m = m.with_headers(h);
        }
        w.send(m).await.unwrap();
    }
    w.drain().await.unwrap();
}

async fn consumer_info(bus: &Bus, name: &str) -> langtian_core::async_nats::jetstream::consumer::Info {
    try_consumer_info(bus, name).await.expect("consumer exists")
}

/// `None` while the pipeline has not created its durable consumer yet.
async fn try_consumer_info(
    bus: &Bus,
    name: &str,
) -> Option<langtian_core::async_nats::jetstream::consumer::Info> {
    let mut c = bus
        .jetstream()
        .get_stream("EV")
        .await
        .ok()?
        .get_consumer::<PullConfig>(name)
        .await
        .ok()?;
    c.info().await.ok().cloned()
}

fn lake_query(dir: &Path, sql: &str) -> Vec<String> {
    let lake = Lake::open(LakeConfig::local(dir)).unwrap();
    let mut stmt = lake.connection().prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn start(
    p: PipelineFile,
) -> (
    Arc<RunStats>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), RunError>>,
) {
    let stats = Arc::new(RunStats::default());
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(run_pipeline(p, stats.clone(), rx));
    (stats, tx, h)
}

/// Runs `p` until `seq` is committed (panics after `within`), then stops it and waits for the
/// drain.
async fn run_until_committed(p: PipelineFile, seq: u64, within: Duration) -> Arc<RunStats> {
    let (stats, tx, mut h) = start(p);
    common::wait_until(within, &format!("sequence {seq} committed"), || {
        let s = stats.clone();
        async move { s.committed_seq.load(Ordering::Relaxed) >= seq }
    })
    .await;
    tx.send(true).unwrap();
    drain_within(&mut h, Duration::from_secs(10)).await.unwrap();
    stats
}

/// pipeline.batch.timeout: a partial batch runs when flush_interval_seconds have passed since
/// its first message, as ONE batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batch_runs_when_the_flush_interval_elapses() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["ev.>"]).await;
    let lake = tempfile::tempdir().unwrap();
    let p = pipeline(
        &srv.url(),
        1000,
        0.5,
        &lake_sink(lake.path()),
        "SELECT k, v FROM batch",
    );
    let (stats, tx, mut h) = start(p);
    publish_raw(&bus, 3, false).await;
    let t = Instant::now();
    common::wait_until(Duration::from_secs(20), "3 rows committed", || {
        let s = stats.clone();
        async move { s.committed_seq.load(Ordering::Relaxed) >= 3 }
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    tx.send(true).unwrap();
    drain_within(&mut h, Duration::from_secs(10)).await.unwrap();
    let offsets = lake_query(
        lake.path(),
        "SELECT format('{} {} {}', first_seq, last_seq, rows) FROM lake.ingest_offsets",
    );
    assert_eq!(offsets, vec!["1 3 3".to_owned()], "one partial batch of 3");
}

/// lifecycle.drain.on_cancel: messages in a batch that is still filling are processed, committed
/// and acked on shutdown — without waiting for the flush interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_batch_being_collected() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["ev.>"]).await;
    let lake = tempfile::tempdir().unwrap();
    // A 60 s flush interval: only the drain can commit these five messages in time.
    let p = pipeline(
        &srv.url(),
        1000,
        60.0,
        &lake_sink(lake.path()),
        "SELECT k, v FROM batch",
    );
    let (stats, tx, mut h) = start(p);
    publish_raw(&bus, 5, false).await;
    common::wait_until(
        Duration::from_secs(20),
        "5 messages delivered to the pipeline",
        || {
            let b = bus.clone();
            async move {
                try_consumer_info(&b, "p1")
                    .await
                    .is_some_and(|i| i.num_ack_pending == 5)
            }
        },
    )
    .await;
    assert_eq!(
        stats.committed_seq.load(Ordering::Relaxed),
        0,
        "not committed before the drain"
    );
    tx.send(true).unwrap();
    let t = Instant::now();
    drain_within(&mut h, Duration::from_secs(10)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        t.elapsed()
    );
    assert_eq!(stats.committed_seq.load(Ordering::Relaxed), 5);
    assert_eq!(
        lake_query(lake.path(), "SELECT count(*)::VARCHAR FROM lake.t"),
        vec!["5"]
    );
    let i = consumer_info(&bus, "p1").await;
    assert_eq!(i.ack_floor.stream_sequence, 5, "all five acked");
    assert_eq!(i.num_ack_pending, 0);
}

/// A task that does not finish within the drain deadline is abandoned with DrainTimeout (exit 15).
#[tokio::test]
async fn drain_deadline_is_enforced() {
    let mut h = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<(), RunError>(())
    });
    let e = drain_within(&mut h, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, RunError::DrainTimeout(_)), "{e}");
    assert_eq!(e.exit_code(), 15);
}

/// sink.flush.no_hollow_success + pipeline.commit.nothing_on_failure: when the sink cannot take
/// the rows (a `nats` sink whose subject no stream captures), the run fails with a sink error,
/// and nothing is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_acks_nothing() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["ev.>"]).await;
    let sink = "    type: nats\n    nats:\n      subject: nowhere.rows\n";
    let p = pipeline(&srv.url(), 10, 0.2, sink, "SELECT k, v FROM batch");
    publish_raw(&bus, 10, false).await;
    let (stats, _tx, h) = start(p);
    let e = tokio::time::timeout(Duration::from_secs(30), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, RunError::Sink(_)), "{e}");
    assert!(e.to_string().contains("nowhere.rows"), "{e}");
    assert_eq!(e.exit_code(), 12);
    assert_eq!(stats.committed_seq.load(Ordering::Relaxed), 0);
    let i = consumer_info(&bus, "p1").await;
    assert_eq!(i.ack_floor.stream_sequence, 0, "nothing acked");
}

/// The `nats` sink publishes one JSON object per row with QoS 1; the `nats` column carries
/// subject, sequence, deliveries and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_sink_publishes_rows_and_the_nats_column_has_headers() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["ev.>"]).await;
    common::stream(&bus, "OUT", &["out.>"]).await;
    let sink = "    type: nats\n    nats:\n      subject: out.rows\n";
    let sql = "SELECT k, nats.subject AS subject, nats.stream_seq AS seq, nats.deliveries AS deliveries, nats.headers['X-Trace'] AS trace, epoch_ms(nats.timestamp) > 0 AS has_ts FROM batch";
    let p = pipeline(&srv.url(), 50, 0.2, sink, sql);
    publish_raw(&bus, 20, true).await;
    run_until_committed(p, 20, Duration::from_secs(20)).await;
    assert_eq!(common::stream_len(&bus, "OUT").await, 20);
    langtian_core::bus::ensure_consumer(&bus, &ConsumerSpec::new("OUT", "check"))
        .await
        .unwrap();
    let mut c = Consumer::bind(&bus, ConsumerSpec::new("OUT", "check"))
        .await
        .unwrap();
    let b = c.next_batch(20, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.len(), 20);
    let rows: Vec<serde_json::Value> = b
        .messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let r7 = rows.iter().find(|r| r["k"] == 7).unwrap();
    assert_eq!(r7["subject"], "ev.k1");
    assert_eq!(r7["seq"], 7);
    assert_eq!(r7["deliveries"], 1);
    assert_eq!(r7["trace"], "trace-7");
    assert_eq!(r7["has_ts"], true);
    assert!(
        b.messages[0]
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .is_some()
    );
}

/// The parquet sink writes one file per batch (temp + rename), every row read back; locally and
/// on an S3-compatible server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sink_local_and_s3() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["ev.>"]).await;
    publish_raw(&bus, 100, false).await;
    let out = tempfile::tempdir().unwrap();
    let sink = format!(
        "    type: parquet\n    parquet:\n      path: \"{}/pq\"\n",
        out.path().display()
    );
    let p = pipeline(&srv.url(), 40, 0.2, &sink, "SELECT k, v FROM batch");
    run_until_committed(p, 100, Duration::from_secs(20)).await;
    let mut names: Vec<String> = std::fs::read_dir(out.path().join("pq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("p1-") && n.ends_with(".parquet")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "no temp file left: {names:?}"
    );
    let conn = langtian_core::lake::open_duckdb(None, &[]).unwrap();
    let (n, distinct): (i64, i64) = conn
        .query_row(
            &format!(
                "SELECT count(*), count(DISTINCT k) FROM read_parquet('{}/pq/*.parquet')",
                out.path().display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, distinct), (100, 100));

    // The same on S3 (s3s-fs): objects appear in the bucket, read back through httpfs.
    let s3 = langtian_core::testkit::TestS3::start("pqbucket").await.unwrap();
    let sink = format!(
        "    type: parquet\n    parquet:\n      path: s3://pqbucket/out\n      s3:\n        key_id: {}\n        secret: {}\n        endpoint: \"{}\"\n        url_style: path\n        use_ssl: false\n",
        langtian_core::testkit::TestS3::KEY_ID,
        langtian_core::testkit::TestS3::SECRET,
        s3.endpoint()
    );
    let mut p = pipeline(&srv.url(), 40, 0.2, &sink, "SELECT k, v FROM batch");
    p.pipeline.source.nats.as_mut().unwrap().consumer = "p1s3".into();
    let stats = run_until_committed(p, 100, Duration::from_secs(30)).await;
    let files: Vec<_> = std::fs::read_dir(s3.root().join("pqbucket/out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(stats.rows_out.load(Ordering::Relaxed), 100);
}

/// The jsonl source replays a file into DuckLake once; a second run over the same file commits
/// nothing new (exactly once from the recorded line numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_source_backfills_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 1..=250 {
        text.push_str(&format!("{{\"k\":{i},\"name\":\"n{i}\"}}\n"));
    }
    std::fs::write(&f, text).unwrap();
    let yaml = format!(
        r#"
pipeline:
  name: backfill
  batch_size: 100
  flush_interval_seconds: 1
  source:
    type: jsonl
    jsonl: {{ path: "{f}" }}
  handler:
    type: handlers.InferredMemBatch
    sql: SELECT k, name, nats.stream_seq AS line FROM batch
  sink:
{sink}
"#,
        f = f.display(),
        sink = lake_sink(dir.path())
    );
    for round in 0..2 {
        let p = PipelineFile::from_str("b.yml", &yaml, &BTreeMap::new()).unwrap();
        let stats = Arc::new(RunStats::default());
        let (_tx, rx) = watch::channel(false);
        tokio::time::timeout(Duration::from_secs(30), run_pipeline(p, stats.clone(), rx))
            .await
            .unwrap()
            .unwrap();
        let expect = if round == 0 { 250 } else { 0 };
        assert_eq!(stats.rows_out.load(Ordering::Relaxed), expect, "round {round}");
    }
    assert_eq!(
        lake_query(
            dir.path(),
            "SELECT format('{} {}', count(*), count(DISTINCT line)) FROM lake.t"
        ),
        vec!["250 250".to_owned()]
    );
}

/// `/metrics` exposes sql-flow's names with the pipeline label; `/healthz` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_sqlflow_names() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["ev.>"]).await;
    let handle = langtian_core::obs::prometheus().unwrap();
    let port = langtian_core::natsd::free_port().unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (ops_tx, ops_rx) = watch::channel(false);
    let probe: langtian_core::obs::HealthProbe =
        Arc::new(|| langtian_core::obs::Health::ok(serde_json::json!({"pipeline_running": true})));
    tokio::spawn(langtian_core::obs::serve(listener, handle, probe, ops_rx));
    publish_raw(&bus, 30, false).await;
    // Message 30 is not an object: one decode error under IGNORE.
    bus.client().publish("ev.bad", "[1,2]".into()).await.unwrap();
    bus.client().flush().await.unwrap();
    let mut p = pipeline(&srv.url(), 100, 0.2, "    type: noop\n", "SELECT k FROM batch");
    p.pipeline.name = Some("metered".into());
    p.pipeline.on_error.policy = langtian_core::flow::config::Policy::IGNORE;
    run_until_committed(p, 31, Duration::from_secs(20)).await;
    let (code, body) = langtian_core::natsd::http_get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let has = |needle: &str| body.lines().any(|l| l.starts_with(needle));
    assert!(
        body.lines().any(|l| l.starts_with("message_count{")
            && l.contains("pipeline=\"metered\"")
            && l.ends_with(" 31")),
        "{body}"
    );
    assert!(
        body.lines().any(|l| l.starts_with("error_count{")
            && l.contains("pipeline=\"metered\"")
            && l.contains("phase=\"source.decode\"")
            && l.ends_with(" 1")),
        "{body}"
    );
    assert!(has("batch_processing_latency_bucket{"), "{body}");
    assert!(has("sink_flush_latency_bucket{"), "{body}");
    assert!(has("consumer_lag{"), "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("committed_sequence{") && l.contains("metered") && l.ends_with(" 31")),
        "{body}"
    );
    let (code, health) = langtian_core::natsd::http_get(port, "/healthz").await.unwrap();
    assert_eq!(code, 200);
    assert!(health.contains("\"ready\":true"), "{health}");
    ops_tx.send(true).unwrap();
}
