//! Publisher QoS 0/1/2 against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use langtian_core::bus::{
    BusError, OutgoingMessage, Publisher, PublisherConfig, Qos, StreamSpec, ensure_stream,
};
use langtian_core::envelope::EnvelopeBuilder;
use langtian_core::testkit::TestServer;

#[tokio::test]
async fn qos0_is_a_core_publish() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let mut sub = bus.client().subscribe("q0.x").await.unwrap();
    bus.flush().await.unwrap();
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtMostOnce));
    let r = p.publish(OutgoingMessage::new("q0.x", "hi")).await.unwrap();
    assert_eq!((r.stream, r.sequence), (None, None));
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.payload[..], b"hi");
}

#[tokio::test]
async fn qos1_reports_stream_and_sequence() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "Q1", &["q1.>"]).await;
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let a = p.publish(OutgoingMessage::new("q1.a", "1")).await.unwrap();
    let b = p.publish(OutgoingMessage::new("q1.b", "2")).await.unwrap();
    assert_eq!(a.stream.as_deref(), Some("Q1"));
    assert_eq!((a.sequence, b.sequence), (Some(1), Some(2)));
    assert!(!a.duplicate && !b.duplicate);
    assert!(a.msg_id.is_some(), "QoS 1 assigns a message id for retries");
    assert_eq!(common::stream_len(&bus, "Q1").await, 2);
}

#[tokio::test]
async fn republished_message_id_is_a_duplicate_stored_once() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "Q2", &["lt.evt.>"]).await;
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::ExactlyOnce));
    let env = EnvelopeBuilder::new("battery.sample", "dev-1")
        .event_id("dev-1:42")
        .payload(&b"{}"[..], "application/json")
        .build()
        .unwrap();
    let first = p
        .publish(OutgoingMessage::from_envelope("lt.evt", &env))
        .await
        .unwrap();
    let second = p
        .publish(OutgoingMessage::from_envelope("lt.evt", &env))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the server must report the re-publication as duplicate"
    );
    assert_eq!(second.sequence, first.sequence);
    assert_eq!(common::stream_len(&bus, "Q2").await, 1);
}

#[tokio::test]
async fn qos2_needs_a_message_id_and_a_long_enough_window() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let mut short = StreamSpec::new("SHORT", vec!["short.>".into()]);
    short.duplicate_window = Duration::from_secs(1);
    ensure_stream(&bus, &short).await.unwrap();
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::ExactlyOnce));
    let err = p
        .publish(OutgoingMessage::new("short.a", "x").with_msg_id("a:1"))
        .await
        .unwrap_err();
    match err {
        BusError::DuplicateWindowTooShort {
            stream,
            window,
            horizon,
        } => {
            assert_eq!(stream, "SHORT");
            assert_eq!(window, Duration::from_secs(1));
            assert!(horizon > window);
        }
        other => panic!("expected DuplicateWindowTooShort, got {other}"),
    }
    assert_eq!(
        common::stream_len(&bus, "SHORT").await,
        0,
        "nothing may be published"
    );
    let err = p.publish(OutgoingMessage::new("short.a", "x")).await.unwrap_err();
    assert!(matches!(err, BusError::MissingMessageId { .. }), "{err}");
}

#[tokio::test]
async fn window_publishes_in_order_with_receipts() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "W", &["w.>"]).await;
    let mut cfg = PublisherConfig::new(Qos::AtLeastOnce);
    cfg.window = 64;
    let p = Publisher::new(bus.clone(), cfg);
    let mut w = p.window();
    let mut receipts = Vec::new();
    for i in 0..2000u32 {
        if let Some(r) = w.send(OutgoingMessage::new("w.x", i.to_string())).await.unwrap() {
            receipts.push(r);
        }
        assert!(w.in_flight() <= 64);
    }
    receipts.extend(w.drain().await.unwrap());
    let seqs: Vec<u64> = receipts.iter().map(|r| r.sequence.unwrap()).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<u64>>());
    assert_eq!(common::stream_len(&bus, "W").await, 2000);
}

#[tokio::test]
async fn qos1_retries_with_the_same_id_across_a_server_restart() {
    let mut srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "R", &["r.>"]).await;
    let mut cfg = PublisherConfig::new(Qos::AtLeastOnce);
    cfg.ack_timeout = Duration::from_millis(300);
    cfg.retry_backoff = Duration::from_millis(200);
    cfg.max_retry_backoff = Duration::from_millis(500);
    cfg.max_attempts = 100;
    srv.stop().await.unwrap();
    let bus2 = bus.clone();
    let publish = tokio::spawn(async move {
        let p = Publisher::new(bus2, cfg);
        p.publish(OutgoingMessage::new("r.x", "payload").with_msg_id("fixed-1"))
            .await
    });
    // Let at least one attempt time out while the server is down.
    tokio::time::sleep(Duration::from_millis(800)).await;
    srv.restart().await.unwrap();
    let receipt = tokio::time::timeout(Duration::from_secs(30), publish)
        .await
        .expect("publish finished")
        .unwrap()
        .expect("publish succeeded after restart");
    assert!(receipt.attempts > 1, "expected retries, got {}", receipt.attempts);
    assert_eq!(receipt.msg_id.as_deref(), Some("fixed-1"));
    assert_eq!(
        common::stream_len(&bus, "R").await,
        1,
        "retries must be de-duplicated"
    );
}

#[tokio::test]
async fn bad_input_gives_typed_errors() {
    let srv = TestServer::start_with(|c| c.max_payload = Some(4096))
        .await
        .unwrap();
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "B", &["b.>"]).await;
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));

    let err = p
        .publish(OutgoingMessage::new("b.x", vec![0u8; 8192]))
        .await
        .unwrap_err();
    match err {
        BusError::PayloadTooLarge { subject, size, max } => {
            assert_eq!(subject, "b.x");
            assert!(size >= 8192);
            assert_eq!(max, 4096);
        }
        other => panic!("expected PayloadTooLarge, got {other}"),
    }
    let err = p
        .publish(OutgoingMessage::new("nowhere.x", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::StreamNotFound { subject } if subject == "nowhere.x"),
        "{err}"
    );
    // The failed publishes lost nothing else: a good one still lands.
    let ok = p.publish(OutgoingMessage::new("b.y", "fine")).await.unwrap();
    assert_eq!(ok.sequence, Some(1));
}

#[tokio::test]
async fn qos1_without_jetstream_fails_at_once_with_a_clear_error() {
    let srv = TestServer::start_with(|c| c.jetstream = false).await.unwrap();
    let bus = common::bus(&srv.url()).await;
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let started = std::time::Instant::now();
    let err = p
        .publish(OutgoingMessage::new("core.only", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::JetStreamDisabled { subject } if subject == "core.only"),
        "{err}"
    );
    // No retries against a server that can never answer (the ack timeout is 5 s).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // QoS 0 still works on such a server.
    let q0 = Publisher::new(bus, PublisherConfig::new(Qos::AtMostOnce));
    q0.publish(OutgoingMessage::new("core.only", "2")).await.unwrap();
}
