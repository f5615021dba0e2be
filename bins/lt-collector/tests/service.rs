//! The `lt-collector` binary against a real nats-server: datagrams in, envelopes stored,
//! registered in KV discovery, /metrics and /healthz, SIGTERM drains and exits 0; bad
//! settings exit 10.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use langtian_core::bus::{Bus, BusOptions, StreamSpec, ensure_stream};
use langtian_core::discovery::{DiscoveryConfig, Registry};
use langtian_core::proto::battery::v1::{ChannelSample, ChannelSampleBatch};
use langtian_core::testkit::{ChildGuard, TestServer};
use prost::Message as _;

async fn until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collects_registers_serves_metrics_and_drains_on_sigterm() {
    let srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    let mut s = StreamSpec::new("LT_EVENTS", vec!["lt.evt.>".into()]);
    s.duplicate_window = Duration::from_secs(120);
    ensure_stream(&bus, &s).await.unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_port = langtian_core::natsd::free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lt-collector"))
        .args([
            "--listen",
            &udp.to_string(),
            "--nats-url",
            &srv.url(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--node-id",
            "collector-test",
            "--status-every",
            "0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);

    let registry = Registry::provision(&bus, DiscoveryConfig::default())
        .await
        .unwrap();
    until("the collector in KV discovery", || {
        let r = &registry;
        async move {
            r.nodes()
                .await
                .map(|n| {
                    n.iter()
                        .any(|n| n.node_id == "collector-test" && n.role == "collector")
                })
                .unwrap_or(false)
        }
    })
    .await;

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let batch = ChannelSampleBatch {
        samples: (1..=10)
            .map(|seq| ChannelSample {
                device_id: "cyc-1".into(),
                seq,
                voltage: 3.6,
                ..Default::default()
            })
            .collect(),
    };
    sender.send_to(&batch.encode_to_vec(), udp).unwrap();
    sender.send_to(b"{not json", udp).unwrap();
    let js = bus.jetstream().clone();
    until("10 envelopes stored", || {
        let js = js.clone();
        async move {
            match js.get_stream("LT_EVENTS").await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages == 10).unwrap_or(false),
                Err(_) => false,
            }
        }
    })
    .await;
    until("metrics exported", || async move {
        match langtian_core::natsd::http_get(metrics_port, "/metrics").await {
            Some((200, m)) => {
                m.contains("collector_records_published 10")
                    && m.contains("collector_malformed{reason=\"json\"} 1")
            }
            _ => false,
        }
    })
    .await;
    let (code, health) = langtian_core::natsd::http_get(metrics_port, "/healthz")
        .await
        .unwrap();
    assert_eq!(code, 200, "{health}");

    let child = guard.take().unwrap();
    langtian_core::testkit::sigterm(&child).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("stopped cleanly") && err.contains("published 10"),
        "{err}"
    );
    until("the collector left discovery", || {
        let r = &registry;
        async move {
            r.nodes()
                .await
                .map(|n| !n.iter().any(|n| n.node_id == "collector-test"))
                .unwrap_or(false)
        }
    })
    .await;
}

#[test]
fn bad_settings_exit_10() {
    let o = Command::new(env!("CARGO_BIN_EXE_lt-collector"))
        .args(["--metrics-addr", "nowhere", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--metrics-addr `nowhere`"));
    let o = Command::new(env!("CARGO_BIN_EXE_lt-collector"))
        .args(["--format", "xml"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown datagram format `xml`"));
}

/// A duration flag beyond a year is refused at parse time, naming the flag. It used to be
/// accepted and panic the drain on SIGTERM ("overflow when adding duration to instant").
#[test]
fn a_drain_timeout_beyond_a_year_is_refused_not_panicked_on() {
    let child = Command::new(env!("CARGO_BIN_EXE_lt-collector"))
        .args(["--listen", "127.0.0.1:0", "--drain-timeout", "500000000000years"])
        .args(["--nats-url", "nats://127.0.0.1:1", "--node-id", "off"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = langtian_core::testkit::output_within(child, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("lt-collector with a 500000000000-year drain timeout: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--drain-timeout") && err.contains("longer than the limit of 365days (one year)"),
        "{err}"
    );
}

/// SIGTERM while NATS is unreachable: the collector keeps its drain timeout and exits 15 naming
/// what it could not publish. It used to hang for good: its last flush waited for a reconnect.
/// Meanwhile it warns that no server answers at the URL (it used to say nothing above INFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_exits_after_the_drain_timeout() {
    // A port nothing listens on: the collector starts anyway and buffers.
    let dead = format!("nats://127.0.0.1:{}", langtian_core::natsd::free_port().unwrap());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_port = langtian_core::natsd::free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lt-collector"))
        .args(["--listen", &udp.to_string(), "--nats-url", &dead])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--drain-timeout", "1s", "--status-every", "0", "--node-id", "off"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let batch = ChannelSampleBatch {
        samples: (1..=5)
            .map(|seq| ChannelSample {
                device_id: "cyc-outage".into(),
                seq,
                ..Default::default()
            })
            .collect(),
    };
    // Until the collector listens and holds the records in its backlog (/healthz says so).
    until("5 records in the backlog", || {
        sender.send_to(&batch.encode_to_vec(), udp).unwrap();
        async move {
            matches!(
                langtian_core::natsd::http_get(metrics_port, "/healthz").await,
                Some((503, h)) if h.contains("\"backlog\":") && !h.contains("\"backlog\":0")
            )
        }
    })
    .await;

    let child = guard.take().unwrap();
    langtian_core::testkit::sigterm(&child).unwrap();
    let out = langtian_core::testkit::output_within(child, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("lt-collector after SIGTERM with a 1 s drain timeout: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(15), "{err}");
    assert!(err.contains("envelopes unpublished"), "{err}");
    // The operator was told, once (the process lived about a second: well under the 30 s repeat),
    // that no server answers at the URL given.
    let warnings = err
        .lines()
        .filter(|l| l.contains("nats_unreachable"))
        .collect::<Vec<_>>();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&dead) && warnings[0].contains("WARN"),
        "{err}"
    );
}
