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
}

fn ports() -> Ports {
    let p = langtian_core::natsd::free_ports(3).unwrap();
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
        "--duration",
        duration,
        "--rate",
        "2000",
    ]
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

    // First run, in the background, watched line by line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(up_args(data, &p, "12s"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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

    // The ops endpoint.
    let rt = tokio::runtime::Runtime::new().unwrap();
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

    // Second run resumes the same store and lake.
    let o = lt(&up_args(data, &p, "4s"));
    let second = text(&o);
    assert!(o.status.success(), "{second}");
    assert!(second.contains("updated stream `LT_EVENTS`"), "{second}");
    let published2 = field(&second, "published");
    assert_eq!(field(&second, "lake rows"), published2, "{second}");

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
