//! Crash test (issue 3, item 9): `lt flow run` is killed with SIGKILL at random moments, at least
//! 10 times, while 200k events stream into JetStream; afterwards the lake must hold every stream
//! sequence exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use langtian_core::bus::{
    Bus, BusOptions, OutgoingMessage, Publisher, PublisherConfig, Qos, StreamSpec, ensure_stream,
};
use langtian_core::envelope::EnvelopeBuilder;
use langtian_core::lake::{Lake, LakeConfig};
use langtian_core::testkit::TestServer;

const EVENTS: u64 = 200_000;
const KILLS: usize = 10;

fn spawn_flow(file: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["flow", "run", file, "--metrics-addr", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn pending(bus: &Bus) -> (u64, usize) {
    match bus
        .jetstream()
        .get_stream("LT_EVENTS")
        .await
        .unwrap()
        .get_consumer::<langtian_core::async_nats::jetstream::consumer::pull::Config>("crash-writer")
        .await
    {
        Ok(mut c) => {
            let i = c.info().await.unwrap();
            (i.num_pending, i.num_ack_pending)
        }
        Err(_) => (u64::MAX, usize::MAX),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_keeps_exactly_once() {
    let srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    let mut s = StreamSpec::new("LT_EVENTS", vec!["lt.evt.>".into()]);
    s.duplicate_window = Duration::from_secs(120);
    ensure_stream(&bus, &s).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let file = dir.path().join("crash.yml");
    std::fs::write(
        &file,
        format!(
            r#"pipeline:
  name: crash
  batch_size: 5000
  flush_interval_seconds: 0.5
  source:
    type: nats
    nats:
      servers: ["{url}"]
      stream: LT_EVENTS
      consumer: crash-writer
      ack_wait: 5s
      max_ack_pending: 20000
      max_deliver: -1
  handler:
    type: handlers.InferredMemBatch
    sql: SELECT nats.stream_seq AS seq, k, v FROM batch
  sink:
    type: ducklake
    ducklake:
      catalog: "{lake}/meta.ducklake"
      data_path: "{lake}/data"
      table: events
"#,
            url = srv.url(),
            lake = lake_dir.display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap().to_owned();

    // Producer: 200k events while the flow is being killed.
    let pbus = bus.clone();
    let producer = tokio::spawn(async move {
        let p = Publisher::new(pbus, PublisherConfig::new(Qos::AtLeastOnce));
        let mut w = p.window();
        for i in 1..=EVENTS {
            let env = EnvelopeBuilder::new("crash", "gen")
                .event_id(format!("gen:{i}"))
                .payload(
                    format!("{{\"k\":{},\"v\":{i}}}", i % 100).into_bytes(),
                    "application/json",
                )
                .build()
                .unwrap();
            w.send(OutgoingMessage::from_envelope("lt.evt", &env))
                .await
                .unwrap();
        }
        w.drain().await.unwrap();
    });

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = langtian_core::sim::Rng::new(seed);
    println!("crash test seed {seed}");
    for k in 0..KILLS {
        let mut child = spawn_flow(&f);
        let ms = 300 + (rng.unit() * 1700.0) as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await; // the random moment to kill at
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        println!("kill {} after {ms} ms, pending {:?}", k + 1, pending(&bus).await);
    }
    producer.await.unwrap();

    // A final run until everything is consumed and acked, then a clean stop.
    let ops_port = langtian_core::natsd::free_port().unwrap();
    let ops_addr = format!("127.0.0.1:{ops_port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["flow", "run", &f, "--metrics-addr", &ops_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(first.contains("lt flow: running"), "{first}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (p, a) = pending(&bus).await;
        if p == 0 && a == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow did not catch up: pending {p}, ack pending {a}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The service's ops endpoint: ready, and the committed sequence as a Prometheus gauge.
    // 503 while the pipeline starts, 200 once its loop runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some((200, body)) = langtian_core::natsd::http_get(ops_port, "/healthz").await {
            break body;
        }
        assert!(Instant::now() < deadline, "/healthz never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(health.contains("\"pipeline_running\":true"), "{health}");
    let (code, metrics) = langtian_core::natsd::http_get(ops_port, "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("committed_sequence{") && l.ends_with(&format!(" {EVENTS}"))),
        "{metrics}"
    );
    langtian_core::testkit::sigterm(&child).unwrap();
    assert!(child.wait().unwrap().success(), "clean stop after SIGTERM");

    let lake = Lake::open(LakeConfig::local(&lake_dir)).unwrap();
    let (rows, distinct, lo, hi): (i64, i64, i64, i64) = lake
        .connection()
        .query_row(
            "SELECT count(*), count(DISTINCT seq), min(seq)::BIGINT, max(seq)::BIGINT FROM lake.events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (rows, distinct, lo, hi),
        (EVENTS as i64, EVENTS as i64, 1, EVENTS as i64)
    );
    let committed = lake.committed_position("LT_EVENTS", "crash-writer", 0).unwrap();
    assert_eq!(committed, Some(EVENTS));
}
