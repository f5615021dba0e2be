//! The pipeline runner end to end: real nats-server → handler SQL → real DuckLake, exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use langtian_core::bus::{
    Bus, Consumer, ConsumerSpec, OutgoingMessage, Publisher, PublisherConfig, Qos, StreamSpec,
    ensure_consumer, ensure_stream,
};
use langtian_core::envelope::EnvelopeBuilder;
use langtian_core::flow::config::PipelineFile;
use langtian_core::flow::runner::{RunError, RunStats, run_pipeline};
use langtian_core::flow::source::SourceError;
use langtian_core::lake::{Lake, LakeConfig};
use tokio::sync::watch;

fn pipeline(url: &str, lake: &Path, policy: &str) -> PipelineFile {
    let text = r#"
pipeline:
  name: lakewriter
  batch_size: 300
  flush_interval_seconds: 0.2
  on_error:
    policy: {{ POLICY }}
    dlq:
      type: nats
      nats:
        subject: lt.dlq.lakewriter
  source:
    type: nats
    nats:
      servers: ["{{ URL }}"]
      stream: LT_EVENTS
      consumer: lake-writer
      ack_wait: 5s
      max_deliver: 3
  handler:
    type: handlers.InferredMemBatch
    sql: |
      SELECT nats.stream_seq AS seq, device, v FROM batch
  sink:
    type: ducklake
    ducklake:
      catalog: "{{ LAKE }}/meta.ducklake"
      data_path: "{{ LAKE }}/data"
      table: readings
"#;
    let mut vars = BTreeMap::new();
    vars.insert("URL".into(), url.to_owned());
    vars.insert("LAKE".into(), lake.display().to_string());
    vars.insert("POLICY".into(), policy.to_owned());
    PipelineFile::from_str("test.yml", text, &vars).unwrap()
}

async fn publish(bus: &Bus, from: u64, to: u64, poison: Option<u64>) {
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let mut w = p.window();
    for i in from..=to {
        let body = if Some(i) == poison {
            b"{not json".to_vec()
        } else {
            format!("{{\"device\":\"d{}\",\"v\":{i}}}", i % 7).into_bytes()
        };
        let env = EnvelopeBuilder::new("reading", "sim")
            .event_id(format!("sim:{i}"))
            .payload(body, "application/json")
            .build()
            .unwrap();
        w.send(OutgoingMessage::from_envelope("lt.evt", &env))
            .await
            .unwrap();
    }
    w.drain().await.unwrap();
}

/// Runs the pipeline until `done(stats)` holds, then stops it and returns its result.
async fn run_until(
    p: PipelineFile,
    done: impl Fn(&RunStats) -> bool,
) -> (Arc<RunStats>, Result<(), RunError>) {
    let stats = Arc::new(RunStats::default());
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(run_pipeline(p, stats.clone(), rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&stats) && !h.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.send(true);
    let r = h.await.unwrap();
    (stats, r)
}

fn lake_count(dir: &Path, sql: &str) -> i64 {
    let lake = Lake::open(LakeConfig::local(dir)).unwrap();
    lake.connection()
        .query_row(sql, [], |r| r.get::<_, i64>(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_into_the_lake_and_redeliveries_are_dropped() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "LT_EVENTS", &["lt.evt.>"]).await;
    let lake = tempfile::tempdir().unwrap();
    publish(&bus, 1, 2000, None).await;

    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |s| {
        s.committed_seq.load(Ordering::Relaxed) >= 2000
    })
    .await;
    r.unwrap();
    assert_eq!(stats.rows_out.load(Ordering::Relaxed), 2000);
    assert_eq!(
        lake_count(lake.path(), "SELECT count(*) FROM lake.readings"),
        2000
    );
    assert_eq!(
        lake_count(lake.path(), "SELECT count(DISTINCT seq) FROM lake.readings"),
        2000
    );

    // The flow's consumer acks cumulatively (the default `ack_policy: all`): one ack per batch
    // and everything is acknowledged once the last commit is acked.
    let info = common::retry_until(Duration::from_secs(10), || async {
        let mut c = bus
            .jetstream()
            .get_stream("LT_EVENTS")
            .await
            .unwrap()
            .get_consumer::<langtian_core::async_nats::jetstream::consumer::pull::Config>("lake-writer")
            .await
            .unwrap();
        let info = c.info().await.unwrap().clone();
        if info.ack_floor.stream_sequence == 2000 {
            Ok(info)
        } else {
            Err(format!("ack floor at {}", info.ack_floor.stream_sequence))
        }
    })
    .await;
    assert_eq!(
        info.config.ack_policy,
        langtian_core::async_nats::jetstream::consumer::AckPolicy::All
    );
    assert_eq!(info.num_ack_pending, 0);

    // Replay everything: delete the consumer; the runner recreates it (deliver all) and must not
    // write anything at or below the committed position again, then take the new ones.
    bus.jetstream()
        .get_stream("LT_EVENTS")
        .await
        .unwrap()
        .delete_consumer("lake-writer")
        .await
        .unwrap();
    publish(&bus, 2001, 2500, None).await;
    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |s| {
        s.committed_seq.load(Ordering::Relaxed) >= 2500
    })
    .await;
    r.unwrap();
    // On start the runner resets the consumer to the lake's position + 1, so the replayed
    // 2000 never reach the handler; only the 500 new ones are written.
    assert_eq!(stats.messages.load(Ordering::Relaxed), 500);
    assert_eq!(stats.rows_out.load(Ordering::Relaxed), 500);
    assert_eq!(
        lake_count(lake.path(), "SELECT count(*) FROM lake.readings"),
        2500
    );
    assert_eq!(
        lake_count(lake.path(), "SELECT count(DISTINCT seq) FROM lake.readings"),
        2500
    );
    assert_eq!(
        lake_count(
            lake.path(),
            "SELECT max(last_seq)::BIGINT FROM lake.ingest_offsets"
        ),
        2500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_goes_to_the_dlq_and_the_pipeline_keeps_going() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "LT_EVENTS", &["lt.evt.>"]).await;
    common::stream(&bus, "DLQ", &["lt.dlq.>"]).await;
    ensure_consumer(&bus, &ConsumerSpec::new("DLQ", "reader"))
        .await
        .unwrap();
    let lake = tempfile::tempdir().unwrap();
    publish(&bus, 1, 100, Some(42)).await;
    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "DLQ"), |s| {
        s.committed_seq.load(Ordering::Relaxed) >= 100
    })
    .await;
    r.unwrap();
    assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    assert_eq!(lake_count(lake.path(), "SELECT count(*) FROM lake.readings"), 99);
    let mut c = Consumer::bind(&bus, ConsumerSpec::new("DLQ", "reader"))
        .await
        .unwrap();
    let b = c.next_batch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.len(), 1);
    let h = b.messages[0].headers.as_ref().unwrap();
    assert_eq!(h.get("Lt-Dlq-Stream-Seq").unwrap().as_str(), "42");
    assert_eq!(h.get("Lt-Dlq-Phase").unwrap().as_str(), "source.decode");
    assert_eq!(h.get("Lt-Dlq-Stream").unwrap().as_str(), "LT_EVENTS");
    assert!(h.get("Lt-Dlq-Error").unwrap().as_str().contains("not JSON"));
    assert_eq!(h.get("Lt-Dlq-Subject").unwrap().as_str(), "lt.evt.reading.sim");
    assert!(h.get("Lt-Dlq-Timestamp").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_stops_without_committing_or_acking() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "LT_EVENTS", &["lt.evt.>"]).await;
    let lake = tempfile::tempdir().unwrap();
    publish(&bus, 1, 10, Some(5)).await;
    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |_| false).await;
    let err = r.unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Raise {
                seq: 5,
                phase: "source.decode",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(stats.committed_seq.load(Ordering::Relaxed), 0);
    assert_eq!(
        lake_count(lake.path(), "SELECT count(*) FROM lake.ingest_offsets"),
        0
    );
    let info = bus
        .jetstream()
        .get_stream("LT_EVENTS")
        .await
        .unwrap()
        .get_consumer::<langtian_core::async_nats::jetstream::consumer::pull::Config>("lake-writer")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.ack_floor.stream_sequence, 0, "nothing acked");
}

/// A stream deleted and created again restarts its sequences at 1 while the lake still holds the
/// old position. Resuming after that position would skip every new message up to it without a
/// word; the pipeline must refuse to start and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_stream_is_refused_instead_of_skipped() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "LT_EVENTS", &["lt.evt.>"]).await;
    let lake = tempfile::tempdir().unwrap();
    publish(&bus, 1, 50, None).await;
    let (_, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |s| {
        s.committed_seq.load(Ordering::Relaxed) >= 50
    })
    .await;
    r.unwrap();

    bus.jetstream().delete_stream("LT_EVENTS").await.unwrap();
    common::stream(&bus, "LT_EVENTS", &["lt.evt.>"]).await;
    publish(&bus, 51, 60, None).await;
    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |_| false).await;
    let err = r.unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Source(SourceError::PositionAheadOfStream { stream, consumer, committed: 50, last: 10 })
                if stream == "LT_EVENTS" && consumer == "lake-writer"
        ),
        "{err}"
    );
    assert!(err.to_string().contains("re-created"), "{err}");
    assert_eq!(stats.messages.load(Ordering::Relaxed), 0);
    assert_eq!(lake_count(lake.path(), "SELECT count(*) FROM lake.readings"), 50);
}

/// Messages the stream's retention removed before the pipeline read them cannot be written; the
/// pipeline counts them when it starts and goes on with what the stream still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_removed_by_retention_before_they_were_read_are_counted() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let mut spec = StreamSpec::new("LT_EVENTS", vec!["lt.evt.>".into()]);
    spec.duplicate_window = Duration::from_secs(120);
    spec.max_msgs = 20;
    ensure_stream(&bus, &spec).await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    publish(&bus, 1, 10, None).await;
    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |s| {
        s.committed_seq.load(Ordering::Relaxed) >= 10
    })
    .await;
    r.unwrap();
    assert_eq!(stats.expired.load(Ordering::Relaxed), 0);

    // While the pipeline is stopped, 30 more arrive; the stream keeps the last 20 (21..=40).
    publish(&bus, 11, 40, None).await;
    let (stats, r) = run_until(pipeline(&srv.url(), lake.path(), "RAISE"), |s| {
        s.committed_seq.load(Ordering::Relaxed) >= 40
    })
    .await;
    r.unwrap();
    assert_eq!(
        stats.expired.load(Ordering::Relaxed),
        10,
        "sequences 11..=20 were removed"
    );
    assert_eq!(stats.rows_out.load(Ordering::Relaxed), 20);
    assert_eq!(lake_count(lake.path(), "SELECT count(*) FROM lake.readings"), 30);
}
