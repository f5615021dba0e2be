//! The `lt-aggregator` binary against a real nats-server: ticks in, deltas out, snapshot in KV,
//! registered in discovery, /healthz ready, SIGTERM stops it cleanly (exit 0); a setting out of
//! range exits 10 naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use langtian_core::bus::{Bus, BusOptions, Topology};
use langtian_core::proto::md::v1::{Delta, Tick};
use langtian_core::testkit::{ChildGuard, TestServer, wait_for_http_status};
use prost::Message as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_serves_health_and_stops_on_sigterm() {
    let srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    aggregate_and_stop(&srv, &bus, &[]).await;
}

/// The same run on a server with `lt nats-access`'s users: the aggregator connects as its own
/// NKey user and does its whole job (ordered consumer, deltas, KV snapshots, node registration)
/// without one refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_its_own_nats_user() {
    use langtian_core::platform::access::{NatsAuth, PlatformAccess, PlatformNames};
    let dir = tempfile::tempdir().unwrap();
    let mut names = PlatformNames::for_topology(&Topology::default_topology().unwrap());
    names.standalone = true;
    let access = PlatformAccess::open_keys(dir.path(), NatsAuth::Keys, names).unwrap();
    let conf = access.server_config();
    let srv = TestServer::start_with(|c| c.extra_config = conf).await.unwrap();
    let admin = Bus::connect(&access.options(&srv.url(), "admin")).await.unwrap();
    let seed = access
        .seed_file("aggregator")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let metrics = aggregate_and_stop(
        &srv,
        &admin,
        &["--nkey-seed-file", &seed, "--inbox-prefix", "_LT.aggregator"],
    )
    .await;
    assert!(!metrics.contains("nats_permission_violations"), "{metrics}");
}

/// Runs lt-aggregator (with `extra` arguments) through one tick, checks its delta, metrics, node
/// registration, clean stop and last snapshot; returns its last /metrics page. `bus` may do
/// anything (provisions, publishes the tick, reads the results).
async fn aggregate_and_stop(srv: &TestServer, bus: &Bus, extra: &[&str]) -> String {
    Topology::default_topology().unwrap().apply(bus).await.unwrap();
    let port = langtian_core::natsd::free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lt-aggregator"))
        .args([
            "--nats-url",
            &srv.url(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            "agg-test",
            "--status-every",
            "1",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    wait_for_http_status(port, "/healthz", 200, Duration::from_secs(20))
        .await
        .unwrap();
    let mut deltas = bus.client().subscribe("xy.md.tick.shfe.>").await.unwrap();
    bus.client().flush().await.unwrap();
    let tick = Tick {
        venue: "shfe".into(),
        symbol: "rb2501".into(),
        seq: 1,
        last: 3500.0,
        ts_exchange: langtian_core::envelope::now_nanos(),
        ..Default::default()
    };
    bus.jetstream()
        .publish("xy.src.tick.shfe.rb2501", tick.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), deltas.next())
        .await
        .unwrap()
        .unwrap();
    let d = Delta::decode(m.payload.as_ref()).unwrap();
    assert_eq!(d.ticks.len(), 1);
    assert_eq!(d.ticks[0].last, 3500.0);
    let (code, metrics) = langtian_core::natsd::http_get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for name in ["src_ingest_total", "ticks_out", "src_gap", "reorder_count"] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let nodes = bus.jetstream().get_key_value("lt_nodes").await.unwrap();
    assert!(
        nodes.get("agg-test").await.unwrap().is_some(),
        "registered in discovery"
    );
    let child = guard.take().unwrap();
    langtian_core::testkit::sigterm(&child).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stopped cleanly"), "{err}");
    // The last snapshot was stored on the way out.
    let kv = bus.jetstream().get_key_value("md_snapshots").await.unwrap();
    assert!(kv.get("xy.md.snapshot.shfe").await.unwrap().is_some());
    metrics
}

#[test]
fn settings_out_of_range_exit_10() {
    let out = Command::new(env!("CARGO_BIN_EXE_lt-aggregator"))
        .args(["--delta-interval", "5ms", "--metrics-addr", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("delta_interval"));
    let out = Command::new(env!("CARGO_BIN_EXE_lt-aggregator"))
        .args(["--feeds", "ticks,options", "--metrics-addr", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("options"));
}

/// SIGTERM while nats-server is down: the aggregator gives up its last delta, snapshot and
/// flush in bounded time and exits. Its last flush used to wait for a reconnect that never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_nats_is_down_still_stops() {
    let mut srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let port = langtian_core::natsd::free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lt-aggregator"))
        .args([
            "--nats-url",
            &srv.url(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--node-id", "off", "--status-every", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    wait_for_http_status(port, "/healthz", 200, Duration::from_secs(20))
        .await
        .unwrap();
    srv.stop().await.unwrap();
    // Down, as the aggregator sees it.
    wait_for_http_status(port, "/healthz", 503, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("NATS down not reported: {e}"));
    let child = guard.take().unwrap();
    langtian_core::testkit::sigterm(&child).unwrap();
    let out = langtian_core::testkit::output_within(child, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("lt-aggregator after SIGTERM with nats-server down: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopping"), "{err}");
    assert!(out.status.code().is_some(), "killed by a signal: {err}");
}
