//! The UDP collector against a real nats-server: outage buffering with replay and counted
//! drops, malformed datagrams, and QoS 2 refusing a stream whose duplicate window is too short.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use langtian_core::bus::{
    Bus, BusError, Consumer, ConsumerSpec, Qos, StreamSpec, ensure_consumer, ensure_stream,
};
use langtian_core::collector::{Collector, CollectorConfig, CollectorError, CollectorReport, CollectorStats};
use langtian_core::envelope::EnvelopeBuilder;
use langtian_core::proto::battery::v1::{ChannelSample, ChannelSampleBatch};
use prost::Message as _;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Ten samples of one channel, sequence numbers `first..first+10`.
fn datagram(first: u64) -> Vec<u8> {
    ChannelSampleBatch {
        samples: (first..first + 10)
            .map(|seq| ChannelSample {
                device_id: "cyc-7".into(),
                channel: 3,
                seq,
                voltage: 3.7,
                ts_device: 1_700_000_000_000_000_000,
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

struct Running {
    addr: SocketAddr,
    stats: Arc<CollectorStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<CollectorReport, CollectorError>>,
}

async fn start(bus: &Bus, cfg: CollectorConfig) -> Running {
    let c = Collector::bind(cfg).await.unwrap();
    let (stop, rx) = watch::channel(false);
    let addr = c.local_addr();
    let stats = c.stats();
    let task = tokio::spawn(c.run(bus.clone(), rx));
    Running {
        addr,
        stats,
        stop,
        task,
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn sender(to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(to).await.unwrap();
    s
}

/// Reads every message of `stream` and returns the sequence numbers (from the message ids
/// `cyc-7/3/<seq>/<ts>`) in stream order.
async fn stored_seqs(bus: &Bus, stream: &str, expect: usize) -> Vec<u64> {
    let mut spec = ConsumerSpec::new(stream, "reader");
    spec.fetch_batch = 1000;
    ensure_consumer(bus, &spec).await.unwrap();
    let mut c = Consumer::bind(bus, spec).await.unwrap();
    let mut out = Vec::new();
    while out.len() < expect {
        let b = c.next_batch(1000, Duration::from_secs(2)).await.unwrap();
        if b.is_empty() {
            break;
        }
        for m in &b.messages {
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap();
            out.push(id.split('/').nth(2).unwrap().parse().unwrap());
        }
        b.ack_all().await.unwrap();
    }
    out
}

/// Issue 4 item 1: NATS is cut for 10 s. What arrives meanwhile waits in the bounded buffer and
/// is published in order after the reconnect; what does not fit is dropped and counted; nothing
/// that was accepted is lost and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_buffered_replayed_in_order_and_overflow_is_counted() {
    let mut srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["lt.evt.>"]).await;
    let mut cfg = CollectorConfig::new(local());
    cfg.buffer_records = 3_000;
    cfg.ack_timeout = Duration::from_secs(1);
    let c = start(&bus, cfg).await;
    let tx = sender(c.addr).await;

    // Before the outage: 100 datagrams × 10 samples, all published.
    for d in 0..100u64 {
        tx.send(&datagram(1 + d * 10)).await.unwrap();
    }
    let stats = c.stats.clone();
    common::wait_until(Duration::from_secs(20), "1,000 published", || {
        let s = stats.clone();
        async move { s.snapshot().published == 1_000 }
    })
    .await;

    // Cut NATS.
    let cut = tokio::time::Instant::now();
    srv.stop().await.unwrap();
    common::wait_until(Duration::from_secs(10), "collector sees the disconnect", || {
        let s = stats.clone();
        async move { !s.snapshot().connected }
    })
    .await;
    // 500 datagrams = 5,000 samples while NATS is away: 3,000 fit the buffer.
    for d in 100..600u64 {
        tx.send(&datagram(1 + d * 10)).await.unwrap();
        if d % 50 == 0 {
            // Let the reader keep up (the kernel buffer is not under test here).
            tokio::task::yield_now().await;
        }
    }
    common::wait_until(Duration::from_secs(10), "all 6,000 records read", || {
        let s = stats.clone();
        async move { s.snapshot().records == 6_000 }
    })
    .await;
    let during = c.stats.snapshot();
    assert!(
        during.backlog >= 3_000,
        "backlog reported during the outage: {during:?}"
    );
    assert!(during.dropped > 0 && during.dropped <= 2_000, "{during:?}");
    assert_eq!(during.kernel_drops, 0, "the kernel dropped datagrams: {during:?}");
    assert_eq!(during.published, 1_000);

    let elapsed = cut.elapsed();
    if elapsed < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_secs(10) - elapsed).await;
    }
    srv.restart().await.unwrap();
    common::wait_until(
        Duration::from_secs(60),
        "backlog published after the reconnect",
        || {
            let s = stats.clone();
            async move {
                let s = s.snapshot();
                s.backlog == 0 && s.published + s.dropped == 6_000
            }
        },
    )
    .await;
    let _ = c.stop.send(true);
    let report = c.task.await.unwrap().unwrap();
    assert_eq!(report.unpublished_at_stop, 0);
    let s = report.stats;
    assert_eq!(s.records, 6_000);
    assert_eq!(s.malformed, 0);

    // What the stream holds: every pre-outage sample, then the outage samples that fit the
    // buffer — an unbroken run from the first one (drops are the newest) — each exactly once.
    let stored_count = common::stream_len(&bus, "EV").await;
    assert_eq!(stored_count, 6_000 - s.dropped, "{s:?}");
    let seqs = stored_seqs(&bus, "EV", stored_count as usize).await;
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), seqs.len(), "a sample was stored twice");
    let expected: BTreeSet<u64> = (1..=stored_count).collect();
    let got: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(got, expected, "stored samples are not the first {stored_count}");
    // In order, apart from the few the window re-sent after the reconnect.
    let out_of_order = seqs.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(out_of_order <= 2, "{out_of_order} places out of order");
}

/// Bad datagrams are counted by reason and never take good records with them.
#[tokio::test]
async fn malformed_datagrams_are_counted_and_good_records_published() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    common::stream(&bus, "EV", &["lt.evt.>"]).await;
    let c = start(&bus, CollectorConfig::new(local())).await;
    let tx = sender(c.addr).await;
    let env = EnvelopeBuilder::new("demo.ping", "tester")
        .event_id("ping-1")
        .payload(&b"{}"[..], "application/json")
        .build()
        .unwrap();
    tx.send(&env.encode()).await.unwrap();
    tx.send(&[0xde, 0xad, 0xbe, 0xef]).await.unwrap();
    tx.send(b"").await.unwrap();
    tx.send(b"{\"source\":\"s1\",\"seq\":1,\"t\":20.5}\n{broken\n{\"source\":\"s1\",\"seq\":2}\n")
        .await
        .unwrap();
    tx.send(&datagram(1)).await.unwrap();
    // The same datagram again: the server keeps one copy (deterministic ids).
    tx.send(&datagram(1)).await.unwrap();
    let stats = c.stats.clone();
    common::wait_until(Duration::from_secs(20), "all records handled", || {
        let s = stats.clone();
        async move {
            let s = s.snapshot();
            s.published == 23 && s.malformed == 3
        }
    })
    .await;
    let _ = c.stop.send(true);
    let s = c.task.await.unwrap().unwrap().stats;
    assert_eq!(s.datagrams, 6);
    assert_eq!(s.duplicates, 10, "{s:?}");
    assert_eq!(common::stream_len(&bus, "EV").await, 13);
    let sub = bus.jetstream().get_stream("EV").await.unwrap();
    let last = sub
        .get_last_raw_message_by_subject("lt.evt.telemetry.s1")
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&last.payload).contains("\"seq\":2"));
}

/// QoS 2 needs a duplicate window that covers the retry horizon; the collector refuses to run
/// on a stream whose window is shorter and says which stream.
#[tokio::test]
async fn qos2_refuses_a_short_duplicate_window() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let mut spec = StreamSpec::new("SHORT", vec!["lt.evt.>".into()]);
    spec.duplicate_window = Duration::from_secs(1);
    ensure_stream(&bus, &spec).await.unwrap();
    let mut cfg = CollectorConfig::new(local());
    cfg.qos = Qos::ExactlyOnce;
    let c = start(&bus, cfg).await;
    sender(c.addr).await.send(&datagram(1)).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), c.task)
        .await
        .expect("the collector stops")
        .unwrap()
        .unwrap_err();
    match err {
        CollectorError::Bus(BusError::DuplicateWindowTooShort { stream, .. }) => assert_eq!(stream, "SHORT"),
        other => panic!("unexpected: {other}"),
    }
}
