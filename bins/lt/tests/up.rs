//! `lt up`, the main job, as a user runs it: simulator → UDP → collector → JetStream → flow →
//! DuckLake; `lt query` through the running platform and on the lake file; /metrics and
//! /healthz; a second `lt up` resumes the same store and lake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The number after `label` in the last status line that has it.
fn field(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no `{label}` in: {out}"));
    let after = line.split(label).nth(1).unwrap();
    after.split('|').next().unwrap().trim().parse().unwrap()
}

struct Ports {
    nats: String,
    http: String,
    udp: String,
    metrics: String,
    metrics_port: u16,
    gateway: String,
    gateway_port: u16,
}

fn ports() -> Ports {
    let p = langtian_core::natsd::free_ports(4).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    Ports {
        nats: p[0].to_string(),
        http: p[1].to_string(),
        udp: udp.to_string(),
        metrics: format!("127.0.0.1:{}", p[2]),
        metrics_port: p[2],
        gateway: format!("127.0.0.1:{}", p[3]),
        gateway_port: p[3],
    }
}

fn up_args<'a>(data: &'a str, p: &'a Ports, duration: &'a str) -> Vec<&'a str> {
    vec![
        "up",
        "--data-dir",
        data,
        "--nats-port",
        &p.nats,
        "--nats-http-port",
        &p.http,
        "--udp",
        &p.udp,
        "--metrics-addr",
        &p.metrics,
        "--gateway-addr",
        &p.gateway,
        "--duration",
        duration,
        "--rate",
        "2000",
    ]
}

/// The status line and headers of the UI's `index.html` (asserting it is served).
fn index_head(rt: &tokio::runtime::Runtime, port: u16) -> String {
    let index = rt
        .block_on(langtian_core::natsd::http_get_response(port, "/index.html"))
        .unwrap();
    assert_eq!(index.status, 200, "{index:?}");
    index.head
}

/// Reads a child's stdout on a thread: lines as they come, and all of it at the end.
fn watch(child: &mut std::process::Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, reader)
}

/// Starts `lt up` (`up_args` plus `extra`) with its output watched line by line.
fn start_up(
    data: &str,
    p: &Ports,
    duration: &str,
    extra: &[&str],
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<String>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(up_args(data, p, duration))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (rx, reader) = watch(&mut child);
    (child, rx, reader)
}

/// Reads `lt up`'s lines until its query service is up (60 s at most).
fn wait_for_query_service(rx: &mpsc::Receiver<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rx
        .recv_timeout(Duration::from_secs(1))
        .is_ok_and(|l| l.contains("query service on"))
    {
        assert!(Instant::now() < deadline, "lt up did not start its query service");
    }
}

fn lt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn up_lands_udp_in_the_lake_serves_queries_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let lake = format!("{data}/lake");
    let p = ports();
    let url = format!("nats://127.0.0.1:{}", p.nats);
    // A UI to serve (the gateway serves a directory holding an index.html).
    let ui = dir.path().join("ui");
    std::fs::create_dir_all(&ui).unwrap();
    std::fs::write(ui.join("index.html"), "<!doctype html><title>ui</title>").unwrap();
    let ui = ui.to_str().unwrap();

    // First run, in the background, watched line by line.
    let (mut child, rx, reader) = start_up(data, &p, "12s", &["--ui-dir", ui]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    // Wait until rows reach the lake (status lines are printed once a second).
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            seen.push_str(&l);
            seen.push('\n');
            if l.contains("lake rows") && field(&l, "lake rows") > 1000 {
                break;
            }
        }
    }
    assert!(seen.contains("collector listening on udp://"), "{seen}");
    assert!(seen.contains("query service on `lt.query.v1`"), "{seen}");
    assert!(
        seen.contains(&format!("gateway: ws://{}/ws", p.gateway)),
        "{seen}"
    );
    let token = seen
        .lines()
        .find_map(|l| l.split("?token=").nth(1))
        .unwrap_or_else(|| panic!("no UI URL with a token: {seen}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // The live path: a WebSocket client with the printed token gets tick deltas and the battery
    // channels' snapshot through the gateway, and is refused what the token does not allow.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(live_check(&p.gateway, &token));
    // The UI is served cross-origin isolated by default.
    let head = index_head(&rt, p.gateway_port);
    assert!(head.contains("cross-origin-opener-policy: same-origin"), "{head}");
    assert!(
        head.contains("cross-origin-embedder-policy: require-corp"),
        "{head}"
    );

    // lt query through the running platform (the lake file is held by lt up).
    let q = lt(&[
        "--nats-url",
        &url,
        "query",
        "SELECT count(*) AS n, count(DISTINCT stream_seq) AS d FROM lake.battery_samples",
        "--format",
        "json",
    ]);
    let out = text(&q);
    assert!(q.status.success(), "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(v["n"].as_u64().unwrap() > 1000, "{out}");
    assert_eq!(v["n"], v["d"], "{out}");
    let bad = lt(&["--nats-url", &url, "query", "DROP TABLE lake.battery_samples"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("not_read_only"), "{}", text(&bad));
    let bad = lt(&[
        "--nats-url",
        &url,
        "query",
        "SELECT nope FROM lake.battery_samples",
    ]);
    assert!(
        text(&bad).contains("execution") && text(&bad).contains("nope"),
        "{}",
        text(&bad)
    );

    // The ops endpoints.
    let (code, gw_metrics) = rt
        .block_on(langtian_core::natsd::http_get(p.gateway_port, "/metrics"))
        .unwrap();
    assert_eq!(code, 200);
    for name in [
        "ws_active",
        "ws_msgs_rate",
        "ticks_out",
        "snapshots_out",
        "src_ingest_rate",
    ] {
        assert!(
            gw_metrics.contains(name),
            "{name} missing from the gateway's /metrics"
        );
    }
    let (code, metrics) = rt
        .block_on(langtian_core::natsd::http_get(p.metrics_port, "/metrics"))
        .unwrap();
    assert_eq!(code, 200);
    for name in [
        "collector_records_published",
        "collector_backlog",
        "message_count",
        "sink_rows_written",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // JetStream's own state, on both endpoints: the events stream holds what the collector
    // published, and the flow's durable consumer is there (read every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exposition = String::new();
    for port in [p.metrics_port, p.gateway_port] {
        loop {
            let (_, m) = rt
                .block_on(langtian_core::natsd::http_get(port, "/metrics"))
                .unwrap();
            let stored = m
                .lines()
                .find_map(|l| l.strip_prefix("jetstream_stream_total_messages{stream_name=\"LT_EVENTS\"} "))
                .and_then(|v| v.parse::<u64>().ok());
            let consumer = m.contains(
                "jetstream_consumer_num_ack_pending{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"}",
            );
            if stored.is_some_and(|n| n > 0) && consumer {
                exposition = m;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "JetStream's state missing from :{port}/metrics: {m}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    // The same state from the CLI, as the credential-less `local` user: each durable consumer
    // under its stream; as JSON too.
    let streams = lt(&["--nats-url", &url, "streams"]);
    let out = text(&streams);
    assert!(streams.status.success(), "{out}");
    let events = out
        .lines()
        .position(|l| l.starts_with("LT_EVENTS "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        out.lines()
            .nth(events + 1)
            .is_some_and(|l| l.contains("└ lake-writer: ")),
        "{out}"
    );
    let json = lt(&["--nats-url", &url, "streams", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&json)));
    let held = v["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "LT_EVENTS"))
        .and_then(|s| s["messages"].as_u64());
    assert!(held.is_some_and(|n| n > 0), "{v}");
    assert!(
        v["consumers"].as_array().is_some_and(|a| a
            .iter()
            .any(|c| c["name"] == "lake-writer" && c["stream"] == "LT_EVENTS")),
        "{v}"
    );
    // Prometheus itself parses the whole exposition, the appended JetStream series included
    // (a second HELP or TYPE for a name, a bad label or value is a parsing error). Its naming
    // lints (counters without `_total`: the seeds' names) are not errors here.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs Debian's prometheus)");
    {
        use std::io::Write as _;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(exposition.as_bytes()).unwrap();
    }
    let checked = promtool.wait_with_output().unwrap();
    let said = text(&checked);
    assert!(
        !said.contains("error while linting") && !said.contains("parsing error"),
        "promtool could not parse /metrics: {said}"
    );
    let (code, health) = rt
        .block_on(langtian_core::natsd::http_get(p.metrics_port, "/healthz"))
        .unwrap();
    assert_eq!(code, 200, "{health}");
    assert!(health.contains("\"nats_connected\":true"), "{health}");

    let status = child.wait().unwrap();
    let first = reader.join().unwrap();
    assert!(status.success(), "{first}");
    assert!(first.contains("stopped cleanly"), "{first}");
    // After the drain, everything the collector published is in the lake.
    let published1 = field(&first, "published");
    assert_eq!(field(&first, "lake rows"), published1, "{first}");
    assert!(published1 >= 10_000, "{first}");
    // Every service ran as its own NATS user, and nats-server refused none of their operations
    // (a missing permission shows up here as `denied N` and a `nats_permission_denied` line).
    assert!(first.contains("least-privilege permissions"), "{first}");
    assert_eq!(field(&first, "denied"), 0, "{first}");
    // The status line counts the nodes in discovery (here lt up's own) from one open KV watch.
    let most_nodes = first
        .lines()
        .filter(|l| l.contains("| nodes "))
        .map(|l| field(l, "| nodes "))
        .max();
    assert_eq!(most_nodes, Some(1), "{first}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = std::path::Path::new(data).join("nats/keys/gateway.nk");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Second run resumes the same store and lake, serving the UI without isolation.
    let (mut child, rx, reader) = start_up(data, &p, "6s", &["--ui-dir", ui, "--no-cross-origin-isolation"]);
    let gateway_line = format!("gateway: ws://{}/ws", p.gateway);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served = false;
    while !served && Instant::now() < deadline {
        served = rx
            .recv_timeout(Duration::from_secs(1))
            .is_ok_and(|l| l.contains(&gateway_line));
    }
    assert!(served, "the second run never printed `{gateway_line}`");
    let head = index_head(&rt, p.gateway_port);
    assert!(!head.contains("cross-origin-opener-policy"), "{head}");
    assert!(!head.contains("cross-origin-embedder-policy"), "{head}");
    let status = child.wait().unwrap();
    let second = reader.join().unwrap();
    assert!(status.success(), "{second}");
    assert!(second.contains("updated stream `LT_EVENTS`"), "{second}");
    let published2 = field(&second, "published");
    assert_eq!(field(&second, "lake rows"), published2, "{second}");
    assert_eq!(field(&second, "denied"), 0, "{second}");

    // With lt up stopped, lt query opens the lake file itself: every sample of both runs, once.
    let q = lt(&[
        "query",
        "--local",
        "--lake",
        &lake,
        "SELECT count(*) AS n, count(DISTINCT stream_seq) AS d, count(DISTINCT (device_id, channel, seq, ts_device)) AS k FROM lake.battery_samples",
        "--format",
        "csv",
    ]);
    let out = text(&q);
    assert!(q.status.success(), "{out}");
    let total = published1 + published2;
    assert!(
        out.contains(&format!("{total},{total},{total}")),
        "expected {total} rows: {out}"
    );
    // A table by default.
    let q = lt(&[
        "query",
        "--local",
        "--lake",
        &lake,
        "SELECT step, count(*) FROM lake.battery_samples GROUP BY ALL ORDER BY 1",
    ]);
    let out = text(&q);
    assert!(out.contains("| step") && out.contains("cc_charge"), "{out}");
}

async fn live_check(gateway: &str, token: &str) {
    use futures::{SinkExt, StreamExt};
    use langtian_core::proto::gateway::v1 as pb;
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{gateway}/ws?token={token}"))
        .await
        .unwrap();
    let send =
        |k: pb::client_frame::Kind| Message::Binary(pb::ClientFrame { kind: Some(k) }.encode_to_vec().into());
    ws.send(send(pb::client_frame::Kind::Subscribe(pb::Subscribe {
        id: 1,
        subject: "xy.md.tick.>".into(),
        priority: false,
    })))
    .await
    .unwrap();
    ws.send(send(pb::client_frame::Kind::Subscribe(pb::Subscribe {
        id: 2,
        subject: "lt.evt.>".into(),
        priority: false,
    })))
    .await
    .unwrap();
    let (mut ticks, mut denied, mut channels) = (0usize, false, 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next_ask = Instant::now();
    while Instant::now() < deadline && (ticks == 0 || !denied || channels == 0) {
        if channels == 0 && Instant::now() >= next_ask {
            next_ask = Instant::now() + Duration::from_millis(500);
            ws.send(send(pb::client_frame::Kind::GetSnapshot(pb::GetSnapshot {
                request_id: 9,
                key: "lt.md.snapshot.cells".into(),
            })))
            .await
            .unwrap();
        }
        let Ok(Some(Ok(Message::Binary(b)))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await
        else {
            continue;
        };
        match pb::ServerFrame::decode(b.as_ref()).unwrap().kind.unwrap() {
            pb::server_frame::Kind::Batch(batch) => {
                for m in batch.messages {
                    let d = langtian_core::proto::md::v1::Delta::decode(m.payload.as_ref()).unwrap();
                    ticks += d.ticks.len();
                }
            }
            pb::server_frame::Kind::Error(e) if e.id == 2 && e.code == pb::ErrorCode::Forbidden as i32 => {
                denied = true;
            }
            pb::server_frame::Kind::Snapshot(s) => {
                let snap =
                    langtian_core::proto::battery::v1::ChannelSnapshot::decode(s.payload.as_ref()).unwrap();
                channels = snap.samples.len();
            }
            _ => {}
        }
    }
    assert!(ticks > 0, "tick deltas through the gateway");
    assert!(denied, "lt.evt.> is not in the UI token");
    assert_eq!(
        channels,
        4 * 16,
        "every simulated channel in the battery snapshot"
    );
}

/// `lt up --nats-auth keys`: a client without a key is refused at the door (with a hint), the
/// admin key's query is answered by the query service, and the services ran with no refusal.
#[test]
fn keys_mode_refuses_clients_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let p = ports();
    let url = format!("nats://127.0.0.1:{}", p.nats);
    let (mut child, rx, reader) = start_up(data, &p, "8s", &["--nats-auth", "keys", "--no-live"]);
    wait_for_query_service(&rx);
    let sql = "SELECT 42 AS answer";
    let anonymous = lt(&["--nats-url", &url, "query", sql]);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    assert!(
        text(&anonymous).contains("authorization violation"),
        "{}",
        text(&anonymous)
    );
    let admin = format!("{data}/nats/keys/admin.nk");
    let q = lt(&["--nats-url", &url, "--nkey-seed-file", &admin, "query", sql]);
    assert!(q.status.success() && text(&q).contains("42"), "{}", text(&q));
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("every client needs a key"), "{out}");
    assert_eq!(field(&out, "denied"), 0, "{out}");
}

/// `lt up --nats-tls`: the embedded nats-server requires TLS. Every service (collector, flow,
/// query, aggregator, gateway, tick simulator) connects over TLS trusting the local CA and does
/// its job; a client without the CA is refused; with `--tls-ca` it queries the lake.
#[test]
fn tls_mode_requires_tls_and_every_service_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let p = ports();
    let url = format!("nats://127.0.0.1:{}", p.nats);
    let (mut child, rx, reader) = start_up(data, &p, "10s", &["--nats-tls"]);
    wait_for_query_service(&rx);
    let ca = format!("{data}/nats/tls/ca.pem");
    let sql = "SELECT count(*) AS n FROM lake.battery_samples";
    let untrusted = lt(&["--nats-url", &url, "query", sql]);
    assert!(!untrusted.status.success(), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains("UnknownIssuer") && text(&untrusted).contains("--tls-ca"),
        "refused for the certificate, with a hint naming --tls-ca: {}",
        text(&untrusted)
    );
    // With the CA: the flow lands rows over TLS, and the query service answers over TLS.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = lt(&["--nats-url", &url, "--tls-ca", &ca, "query", sql, "-f", "csv"]);
        // Until the flow's first commit the table does not exist yet: the query service still
        // answered, over TLS.
        assert!(
            q.status.success() || text(&q).contains("battery_samples does not exist"),
            "{}",
            text(&q)
        );
        let rows: u64 = String::from_utf8_lossy(&q.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        if rows > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rows in the lake over TLS: {}",
            text(&q)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("NATS TLS: required"), "{out}");
    assert!(field(&out, "lake rows") > 0, "{out}");
    assert!(
        field(&out, "live keys") > 0,
        "the aggregator and tick simulator over TLS: {out}"
    );
    assert_eq!(field(&out, "errors"), 0, "{out}");
    assert_eq!(field(&out, "denied"), 0, "{out}");
}
