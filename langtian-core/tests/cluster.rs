//! A 3-node JetStream cluster from the test kit: R3 streams keep accepting QoS 1 publishes and
//! keep consumer state while one node is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use langtian_core::bus::{
    Bus, BusOptions, Consumer, ConsumerSpec, OutgoingMessage, Publisher, PublisherConfig, Qos, StreamSpec,
    ensure_consumer, ensure_stream,
};
use langtian_core::testkit::TestCluster;

#[tokio::test]
async fn r3_stream_survives_a_killed_node() {
    let mut cluster = TestCluster::start(3).await.unwrap();
    let mut o = BusOptions::new(&cluster.urls().join(","));
    o.request_timeout = Duration::from_secs(5);
    let bus = Bus::connect(&o).await.unwrap();

    let mut s = StreamSpec::new("EV3", vec!["ev3.>".into()]);
    s.replicas = 3;
    // Stream creation right after start-up can race the meta leader's first assignments.
    let mut created = false;
    for _ in 0..20 {
        if ensure_stream(&bus, &s).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(created, "R3 stream created");
    let mut c = ConsumerSpec::new("EV3", "r3worker");
    c.fetch_batch = 100;
    c.replicas = 3;
    ensure_consumer(&bus, &c).await.unwrap();

    let mut cfg = PublisherConfig::new(Qos::AtLeastOnce);
    cfg.ack_timeout = Duration::from_secs(2);
    cfg.max_attempts = 12; // pauses double to 4 s: ~30 s covers a stream leader election
    let p = Publisher::new(bus.clone(), cfg);
    for i in 0..50 {
        p.publish(OutgoingMessage::new("ev3.a", format!("{i}")))
            .await
            .unwrap();
    }
    let mut consumer = Consumer::bind(&bus, c.clone()).await.unwrap();
    let b = consumer.next_batch(50, Duration::from_secs(10)).await.unwrap();
    assert_eq!(b.len(), 50);
    b.ack_all().await.unwrap();

    cluster.kill(0).await.unwrap();
    for i in 50..100 {
        let r = p
            .publish(OutgoingMessage::new("ev3.a", format!("{i}")))
            .await
            .unwrap();
        assert_eq!(r.sequence, Some(i + 1));
    }
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got < 50 && tokio::time::Instant::now() < deadline {
        let b = consumer
            .next_batch(50 - got, Duration::from_secs(1))
            .await
            .unwrap();
        for m in &b.messages {
            assert!(
                m.stream_sequence > 50,
                "acked messages must not come back (seq {})",
                m.stream_sequence
            );
        }
        got += b.len();
        b.ack_all().await.unwrap();
    }
    assert_eq!(got, 50, "the second half was delivered with one node down");

    cluster.restart(0).await.unwrap();
    assert_eq!(common::stream_len(&bus, "EV3").await, 100);
}
