//! Durable pull consumers with native acks, and dead letters from advisories, on a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use langtian_core::bus::{
    AckMode, Bus, BusError, Consumer, ConsumerSpec, DeadLetter, DeadLetterForwarder, DlqConfig, HandlerError,
    OutgoingMessage, Publisher, PublisherConfig, Qos, Topology, ensure_consumer,
};

async fn publish_n(bus: &Bus, subject: &str, n: u32) {
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let mut w = p.window();
    for i in 0..n {
        w.send(OutgoingMessage::new(subject, format!("m{i}")))
            .await
            .unwrap();
    }
    w.drain().await.unwrap();
}

fn spec(stream: &str, durable: &str) -> ConsumerSpec {
    let mut s = ConsumerSpec::new(stream, durable);
    s.fetch_batch = 50;
    s.max_ack_pending = 1000;
    s.heartbeat = Duration::from_secs(1);
    s
}

/// Provisions the DLQ streams + forwarder consumer and starts the forwarder.
async fn start_dlq(bus: &Bus) -> (tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let topo = Topology {
        dlq: Some(DlqConfig::default()),
        ..Default::default()
    };
    topo.apply(bus).await.unwrap();
    let mut reader = ConsumerSpec::new("LT_DLQ", "test-reader");
    reader.fetch_batch = 10;
    ensure_consumer(bus, &reader).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fwd = DeadLetterForwarder::new(bus.clone(), DlqConfig::default());
    let h = tokio::spawn(async move {
        fwd.run(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (h, tx)
}

async fn read_dead_letters(bus: &Bus, want: usize) -> Vec<DeadLetter> {
    let mut reader = ConsumerSpec::new("LT_DLQ", "test-reader");
    reader.fetch_batch = 10;
    let mut c = Consumer::bind(bus, reader).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < want && tokio::time::Instant::now() < deadline {
        let b = c
            .next_batch(want - out.len(), Duration::from_millis(500))
            .await
            .unwrap();
        for m in &b.messages {
            out.push(
                DeadLetter::from_parts(m.headers.as_ref(), m.payload.clone()).expect("provenance headers"),
            );
        }
        b.ack_all().await.unwrap();
    }
    assert_eq!(out.len(), want, "dead letters received");
    out
}

#[tokio::test]
async fn batch_api_acks_naks_and_redelivers() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "C1", &["c1.>"]).await;
    ensure_consumer(&bus, &spec("C1", "d")).await.unwrap();
    publish_n(&bus, "c1.x", 10).await;

    let mut c = Consumer::bind(&bus, spec("C1", "d")).await.unwrap();
    let b = c.next_batch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.len(), 10);
    assert_eq!(b.sequence_range(), Some((1, 10)));
    assert!(b.messages.iter().all(|m| m.deliveries == 1));
    // Ack 1..=9, NAK the last with a short delay: it must come back as delivery 2.
    for m in &b.messages[..9] {
        m.ack().await.unwrap();
    }
    b.messages[9].nak(Some(Duration::from_millis(100))).await.unwrap();
    let again = c.next_batch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again.messages[0].stream_sequence, 10);
    assert_eq!(again.messages[0].deliveries, 2);
    again.ack_all().await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 10);
    assert_eq!(info.num_ack_pending, 0);
    // Nothing else is pending.
    assert!(
        c.next_batch(5, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ack_all_consumer_acks_a_batch_with_its_last_message() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "CA", &["ca.>"]).await;
    let mut all = spec("CA", "cum");
    all.ack_policy = AckMode::All;
    ensure_consumer(&bus, &all).await.unwrap();
    publish_n(&bus, "ca.x", 10).await;

    // Bound with an explicit spec: the server's policy wins.
    let mut c = Consumer::bind(&bus, spec("CA", "cum")).await.unwrap();
    assert_eq!(c.ack_mode(), AckMode::All);
    let b = c.next_batch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.len(), 10);
    assert!(b.cumulative_ack);
    // One ack of message 5 acknowledges 1..=5 on the server.
    b.messages[4].ack_sync().await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 5);
    assert_eq!(info.num_ack_pending, 5);
    b.ack_all().await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 10);
    assert_eq!(info.num_ack_pending, 0);

    // run() NAKs single messages, which AckAll would silently ack later: refused.
    let err = c
        .run(|_d| async { Ok(()) }, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ack_policy"), "{err}");

    // The policy of an existing consumer cannot change in place: a clear error.
    let err = ensure_consumer(&bus, &spec("CA", "cum")).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("ack policy") && text.contains("cum"), "{text}");
}

#[tokio::test]
async fn progress_keeps_a_slow_message_from_redelivery() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "C2", &["c2.>"]).await;
    let mut s = spec("C2", "slow");
    s.ack_wait = Duration::from_secs(1);
    ensure_consumer(&bus, &s).await.unwrap();
    publish_n(&bus, "c2.x", 1).await;
    let mut c = Consumer::bind(&bus, s).await.unwrap();
    let b = c.next_batch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.len(), 1);
    // "Work" for 2.5 ack_waits while reporting progress: no redelivery may happen.
    for _ in 0..6 {
        b.progress_all().await.unwrap();
        let extra = c.next_batch(1, Duration::from_millis(400)).await.unwrap();
        assert!(extra.is_empty(), "redelivered despite progress acks");
    }
    b.ack_all().await.unwrap();
    assert_eq!(c.info().await.unwrap().num_redelivered, 0);
}

#[tokio::test]
async fn consumer_killed_mid_batch_resumes_without_loss() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "C3", &["c3.>"]).await;
    let mut s = spec("C3", "worker");
    s.ack_wait = Duration::from_secs(1);
    ensure_consumer(&bus, &s).await.unwrap();
    publish_n(&bus, "c3.x", 200).await;

    let mut acked = BTreeSet::new();
    {
        // First worker: its own connection; takes a batch, acks part of it, then dies.
        let bus1 = common::bus(&srv.url()).await;
        let mut c = Consumer::bind(&bus1, s.clone()).await.unwrap();
        let b = c.next_batch(80, Duration::from_secs(5)).await.unwrap();
        assert_eq!(b.len(), 80);
        for m in &b.messages[..30] {
            m.ack_sync().await.unwrap();
            acked.insert(m.stream_sequence);
        }
        drop(c);
        drop(b);
        drop(bus1); // connection closed mid-batch: 50 delivered but never acked
    }
    let mut c = Consumer::bind(&bus, s).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.len() < 200 && tokio::time::Instant::now() < deadline {
        let b = c.next_batch(100, Duration::from_millis(500)).await.unwrap();
        for m in &b.messages {
            acked.insert(m.stream_sequence);
        }
        b.ack_all().await.unwrap();
    }
    assert_eq!(
        acked,
        (1..=200).collect::<BTreeSet<u64>>(),
        "every message processed"
    );
}

#[tokio::test]
async fn handler_errors_end_in_dead_letters_with_provenance() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "C4", &["c4.>"]).await;
    let (_fwd, stop_fwd) = start_dlq(&bus).await;
    let mut s = spec("C4", "handler");
    s.max_deliver = 3;
    s.backoff = vec![Duration::from_millis(50)];
    ensure_consumer(&bus, &s).await.unwrap();
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    p.publish(OutgoingMessage::new("c4.ok", "fine-1")).await.unwrap();
    p.publish(OutgoingMessage::new("c4.poison", "poison-body"))
        .await
        .unwrap();
    p.publish(OutgoingMessage::new("c4.ok", "fine-2")).await.unwrap();
    p.publish(OutgoingMessage::new("c4.fatal", "bad-schema-body"))
        .await
        .unwrap();

    let poison_calls = Arc::new(AtomicU32::new(0));
    let calls = poison_calls.clone();
    let mut c = Consumer::bind(&bus, s).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        c.run(
            move |d| {
                let calls = calls.clone();
                async move {
                    match d.subject.as_str() {
                        "c4.poison" => {
                            calls.fetch_add(1, Ordering::SeqCst);
                            Err(HandlerError::Retryable("sink unavailable".into()))
                        }
                        "c4.fatal" => Err(HandlerError::Fatal("schema 7.0 unknown".into())),
                        _ => Ok(()),
                    }
                }
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    let mut letters = read_dead_letters(&bus, 2).await;
    letters.sort_by_key(|l| l.stream_seq);
    let _ = stop_tx.send(());
    let stats = run.await.unwrap().unwrap();
    let _ = stop_fwd.send(());
    // The fatal one is terminated at its first delivery, with the handler's reason.
    let f = &letters[1];
    assert_eq!(
        (f.subject.as_str(), f.stream_seq, f.deliveries),
        ("c4.fatal", 4, 1)
    );
    assert_eq!(f.reason, "terminated: schema 7.0 unknown");
    assert_eq!(&f.payload[..], b"bad-schema-body");
    let l = &letters[0];
    assert_eq!(l.stream, "C4");
    assert_eq!(l.consumer, "handler");
    assert_eq!(l.subject, "c4.poison");
    assert_eq!(l.stream_seq, 2);
    assert_eq!(l.deliveries, 3);
    assert_eq!(l.reason, "max_deliveries");
    assert_eq!(&l.payload[..], b"poison-body");
    assert!(!l.original_missing);
    assert_eq!(
        poison_calls.load(Ordering::SeqCst),
        3,
        "delivered exactly max_deliver times"
    );
    assert_eq!(stats.acked, 2);
    assert_eq!(stats.naked, 3);
    assert_eq!(stats.terminated, 1);
}

#[tokio::test]
async fn term_dead_letters_at_once_with_the_reason() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "C5", &["c5.>"]).await;
    let (_fwd, stop_fwd) = start_dlq(&bus).await;
    let mut s = spec("C5", "strict");
    s.max_deliver = 10;
    ensure_consumer(&bus, &s).await.unwrap();
    publish_n(&bus, "c5.x", 1).await;
    let mut c = Consumer::bind(&bus, s).await.unwrap();
    let b = c.next_batch(1, Duration::from_secs(5)).await.unwrap();
    b.messages[0].term(Some("schema 9.0 unsupported")).await.unwrap();
    let letters = read_dead_letters(&bus, 1).await;
    let _ = stop_fwd.send(());
    assert_eq!(letters[0].reason, "terminated: schema 9.0 unsupported");
    assert_eq!(letters[0].deliveries, 1);
    assert_eq!(letters[0].stream_seq, 1);
    assert_eq!(&letters[0].payload[..], b"m0");
    // Never redelivered.
    assert!(
        c.next_batch(1, Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn binding_unknown_streams_and_consumers_is_a_typed_error() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let err = Consumer::bind(&bus, spec("NOPE", "d")).await.unwrap_err();
    assert!(
        matches!(&err, BusError::UnknownStream { stream } if stream == "NOPE"),
        "{err}"
    );
    common::stream(&bus, "C6", &["c6.>"]).await;
    let err = Consumer::bind(&bus, spec("C6", "ghost")).await.unwrap_err();
    assert!(
        matches!(&err, BusError::UnknownConsumer { consumer, .. } if consumer == "ghost"),
        "{err}"
    );
    let err = ensure_consumer(&bus, &spec("NOPE", "d")).await.unwrap_err();
    assert!(matches!(err, BusError::UnknownStream { .. }), "{err}");
}

/// JetStream's own state on `/metrics`: a stream's count and sequences, a durable consumer's
/// pending, ack-pending and redelivered messages as the server counts them; ephemeral consumers
/// left out; a deleted consumer's series gone at the next reading; and when the server cannot
/// be read, the failure counted and no stale numbers shown.
#[tokio::test]
async fn jetstream_state_reaches_metrics_and_goes_when_it_cannot_be_read() {
    use langtian_core::bus::{ConsumerState, JetStreamState};
    use langtian_core::obs;

    let mut srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "JSSTATE", &["jsstate.>"]).await;
    publish_n(&bus, "jsstate.x", 10).await;
    let stream = bus.jetstream().get_stream("JSSTATE").await.unwrap();
    // A durable pull consumer without a backoff schedule, so a NAK redelivers at once.
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("reader".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // An ephemeral consumer: in the stream's consumer count, not among the series.
    let _ephemeral = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();

    // Plain pull requests, so that the server's view is exact: deliver 1..=4, ack 1, NAK 2 and
    // fetch until 2 comes again (the server may hand out newer messages before it has applied
    // the NAK): 2 is redelivered, everything delivered but 1 awaits an ack.
    use async_nats::jetstream::AckKind;
    use futures::StreamExt as _;
    let reader: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("reader").await.unwrap();
    let fetch = |n: usize| {
        let reader = reader.clone();
        async move {
            let batch = reader.fetch().max_messages(n).messages().await.unwrap();
            batch.map(Result::unwrap).collect::<Vec<_>>().await
        }
    };
    let first = fetch(4).await;
    let seqs: Vec<u64> = first.iter().map(|m| m.info().unwrap().stream_sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    first[0].double_ack().await.unwrap();
    first[1].ack_with(AckKind::Nak(None)).await.unwrap();
    let mut delivered = 4u64;
    let mut held = Vec::new();
    loop {
        let m = fetch(1).await.pop().expect("a message: 2 again, or a newer one");
        let info = m.info().unwrap();
        if info.stream_sequence == 2 {
            assert_eq!(info.delivered, 2);
            break;
        }
        assert_eq!(info.stream_sequence, delivered + 1, "new messages in order");
        delivered = info.stream_sequence;
        held.push(m);
    }
    let awaiting_ack = delivered - 1;

    let state = JetStreamState::read(&bus).await.unwrap();
    let s = state.streams.iter().find(|s| s.name == "JSSTATE").unwrap();
    assert_eq!((s.messages, s.first_seq, s.last_seq, s.consumers), (10, 1, 10, 2));
    assert!(s.bytes > 0);
    assert_eq!(
        state.consumers,
        vec![ConsumerState {
            stream: "JSSTATE".into(),
            name: "reader".into(),
            num_pending: 10 - delivered,
            num_ack_pending: awaiting_ack,
            num_redelivered: 1,
            num_waiting: 0,
            delivered_stream_seq: delivered,
            ack_floor_stream_seq: 1,
        }]
    );

    // The exporter serves the same on /metrics.
    let handle = obs::prometheus().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let exporter = tokio::spawn(obs::export_jetstream_state(
        bus.clone(),
        Duration::from_millis(200),
        stop_rx,
    ));
    let pending = format!(
        "jetstream_consumer_num_pending{{stream_name=\"JSSTATE\",consumer_name=\"reader\"}} {}",
        10 - delivered
    );
    common::wait_until(
        Duration::from_secs(10),
        "the consumer's series on /metrics",
        || {
            let text = obs::render(&handle);
            let pending = pending.clone();
            async move { text.lines().any(|l| l == pending) }
        },
    )
    .await;
    let text = obs::render(&handle);
    assert!(
        text.lines()
            .any(|l| l == "jetstream_stream_total_messages{stream_name=\"JSSTATE\"} 10"),
        "{text}"
    );
    assert_eq!(
        text.matches("consumer_name=").count(),
        6,
        "one consumer, six series: {text}"
    );

    // A deleted consumer's series go at the next reading.
    stream.delete_consumer("reader").await.unwrap();
    common::wait_until(Duration::from_secs(10), "the deleted consumer's series gone", || {
        let text = obs::render(&handle);
        async move { !text.contains("consumer_name=\"reader\"") && text.contains("stream_name=\"JSSTATE\"") }
    })
    .await;

    // No server: the failure is counted and nothing stale is shown.
    srv.kill().await.unwrap();
    common::wait_until(Duration::from_secs(15), "the series taken off", || {
        let text = obs::render(&handle);
        async move { !text.contains("jetstream_stream_total_messages") }
    })
    .await;
    let text = obs::render(&handle);
    let errors = text
        .lines()
        .find_map(|l| l.strip_prefix("jetstream_state_errors "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{text}");

    stop_tx.send(true).unwrap();
    exporter.await.unwrap();
}
