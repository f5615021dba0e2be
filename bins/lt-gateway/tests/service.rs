//! The `lt-gateway` binary: a development token from the secret file, /healthz against a real
//! nats-server, a WebSocket subscription with that token, JSON log lines with error codes for a
//! refused token and a denied subscription; bad settings exit 10.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use langtian_core::proto::gateway::v1 as pb;
use langtian_core::testkit::{ChildGuard, JsonLog, TestServer, wait_for_http_status};
use prost::Message as _;

/// Subscribes to `subject` and returns the gateway's answer.
async fn subscribe<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    id: u32,
    subject: &str,
) -> pb::ServerFrame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let f = pb::ClientFrame {
        kind: Some(pb::client_frame::Kind::Subscribe(pb::Subscribe {
            id,
            subject: subject.into(),
            priority: false,
        })),
    };
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        f.encode_to_vec().into(),
    ))
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    pb::ServerFrame::decode(m.into_data().as_ref()).unwrap()
}

/// A secret file for HS256 tokens in `dir`.
fn write_secret(dir: &std::path::Path) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, "a-secret-of-enough-length\n").unwrap();
    secret.to_str().unwrap().to_owned()
}

/// `lt-gateway --dev-token`: a token for `subjects` signed with `secret`.
fn dev_token(secret: &str, subjects: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lt-gateway"))
        .args(["--jwt-secret-file", secret, "--dev-token", subjects])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts lt-gateway (JSON logs, `extra` arguments) on a free port against `nats_url` and waits
/// until /healthz is 200. Returns the port, the process and the thread collecting its log lines.
async fn start_gateway(
    secret: &str,
    nats_url: &str,
    extra: &[&str],
) -> (u16, ChildGuard, std::thread::JoinHandle<Vec<String>>) {
    let port = langtian_core::natsd::free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lt-gateway"))
        .args([
            "--jwt-secret-file",
            secret,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats-url",
            nats_url,
            "--log-format",
            "json",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let log_lines = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());
    let guard = ChildGuard::new(child);
    wait_for_http_status(port, "/healthz", 200, Duration::from_secs(20))
        .await
        .unwrap();
    (port, guard, log_lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_websocket_clients_with_a_dev_token() {
    let srv = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path());
    let token = dev_token(&secret, "xy.md.>");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let (port, mut guard, log_lines) = start_gateway(&secret, &srv.url(), &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token={token}"))
        .await
        .unwrap();
    let frame = subscribe(&mut ws, 1, "xy.md.tick.>").await;
    assert!(
        matches!(frame.kind, Some(pb::server_frame::Kind::Subscribed(_))),
        "{frame:?}"
    );
    let (code, page) = langtian_core::natsd::http_get(port, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("Langtian gateway"), "the no-UI page");

    // A subject the token does not allow: an error frame, and an audit line with its code.
    let frame = subscribe(&mut ws, 2, "lt.secret.>").await;
    assert!(
        matches!(frame.kind, Some(pb::server_frame::Kind::Error(_))),
        "{frame:?}"
    );
    // A token that is not a JWT: refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token=not-a-jwt")).await;
    assert!(refused.is_err(), "a bad token is refused");

    // Every log line is one JSON object; the two refusals carry their codes.
    let mut child = guard.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = log_lines.join().unwrap();
    let log = JsonLog::parse(lines.iter().map(String::as_str)).unwrap();
    let with_code = |code: &str| {
        log.with_code(code)
            .unwrap_or_else(|| panic!("no log line with code {code} in {lines:#?}"))
    };
    let denied = with_code("forbidden");
    assert_eq!(
        (denied["target"].as_str(), denied["level"].as_str()),
        (Some("audit"), Some("WARN"))
    );
    assert_eq!(denied["fields"]["subject"], "lt.secret.>");
    let bad_token = with_code("auth_invalid");
    assert_eq!(bad_token["target"], "audit");
    assert!(
        bad_token["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid token"),
        "{bad_token}"
    );
    assert!(
        log.events
            .iter()
            .any(|e| e["fields"]["message"] == "gateway listening"),
        "info lines too"
    );
}

#[test]
fn bad_settings_exit_10() {
    for args in [
        vec!["--metrics-addr-does-not-exist"],
        vec![],
        vec!["--jwt-secret-file", "/nonexistent/secret"],
        vec!["--jwt-secret-file", "/etc/hostname", "--jwt-alg", "RS256"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lt-gateway"))
            .args(&args)
            .output()
            .unwrap();
        let code = out.status.code();
        assert!(
            code == Some(10) || code == Some(2),
            "{args:?}: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// With `--log-format json`, the error a service stops with is a JSON event too (code, error),
/// so a log pipeline reads nothing but JSON; with text logs it is the plain `error:` line.
#[test]
fn the_stopping_error_is_json_when_logs_are() {
    let missing = "/nonexistent/secret";
    let json = Command::new(env!("CARGO_BIN_EXE_lt-gateway"))
        .args(["--jwt-secret-file", missing, "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&json.stderr);
    let log = JsonLog::parse(stderr.lines()).unwrap();
    let failed = log
        .with_code("config_invalid")
        .unwrap_or_else(|| panic!("no config_invalid event in {stderr}"));
    assert_eq!(failed["level"], "ERROR");
    assert!(
        failed["fields"]["error"].as_str().unwrap().contains(missing),
        "{failed}"
    );

    let text = Command::new(env!("CARGO_BIN_EXE_lt-gateway"))
        .args(["--jwt-secret-file", missing])
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.starts_with("lt-gateway: error: /nonexistent/secret"),
        "{stderr}"
    );
}

/// Deployed as `lt up` deploys it: the gateway connects as its own NKey user
/// (`--nkey-seed-file`, `--inbox-prefix`) on a server that enforces the platform's grants. What a
/// browser's token allows but the gateway's NATS user may not read is refused by nats-server
/// too, and logged with code `nats_permission_denied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_its_own_nats_user() {
    use langtian_core::bus::{Bus, Topology};
    use langtian_core::platform::access::{NatsAuth, PlatformAccess, PlatformNames};
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::default_topology().unwrap();
    let access =
        PlatformAccess::open(dir.path(), NatsAuth::Keys, PlatformNames::for_topology(&topology)).unwrap();
    let conf = access.server_config();
    let srv = TestServer::start_with(|c| c.extra_config = conf).await.unwrap();
    let admin = Bus::connect(&access.options(&srv.url(), "admin")).await.unwrap();
    topology.apply(&admin).await.unwrap();

    let secret = write_secret(dir.path());
    let token = dev_token(&secret, ">");
    let seed = access.seed_file("gateway").unwrap().to_str().unwrap().to_owned();
    let (port, mut guard, log_lines) = start_gateway(
        &secret,
        &srv.url(),
        &["--nkey-seed-file", &seed, "--inbox-prefix", "_LT.gateway"],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token={token}"))
        .await
        .unwrap();
    // Market data flows: the aggregator's delta reaches the browser through the gateway's user.
    let frame = subscribe(&mut ws, 1, "xy.md.tick.>").await;
    assert!(
        matches!(frame.kind, Some(pb::server_frame::Kind::Subscribed(_))),
        "{frame:?}"
    );
    let aggregator = Bus::connect(&access.options(&srv.url(), "aggregator"))
        .await
        .unwrap();
    let got = async {
        loop {
            aggregator
                .client()
                .publish("xy.md.tick.shfe.0", "d".into())
                .await
                .unwrap();
            aggregator.flush().await.unwrap();
            if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await
                && let Ok(f) = pb::ServerFrame::decode(m.into_data().as_ref())
                && let Some(pb::server_frame::Kind::Batch(b)) = f.kind
                && b.messages.iter().any(|m| m.subject == "xy.md.tick.shfe.0")
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), got)
        .await
        .expect("a delta through the gateway");
    // The token allows `>`, but raw events are not the gateway user's to read: nats-server refuses.
    let _ = subscribe(&mut ws, 2, "lt.evt.>").await;
    let mut child = guard.take().unwrap();
    let wait_log = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, m) = langtian_core::natsd::http_get(port, "/metrics").await.unwrap();
        if m.contains("nats_permission_violations") || Instant::now() > wait_log {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics.contains("nats_permission_violations{client=\"lt-gateway\"} 1"),
        "{metrics}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = log_lines.join().unwrap();
    let log = JsonLog::parse(lines.iter().map(String::as_str)).unwrap();
    let refused = log
        .with_code("nats_permission_denied")
        .unwrap_or_else(|| panic!("no nats_permission_denied line in {lines:#?}"));
    assert_eq!(refused["target"], "audit");
    assert!(
        refused["fields"]["reason"].as_str().unwrap().contains("lt.evt.>"),
        "{refused}"
    );
}

/// Limits of 0 would refuse every client or subscription, and a dev token with a lifetime of 0
/// would be refused by every gateway: each is a configuration error (exit 10) naming the
/// setting, found before NATS is contacted (nothing listens on port 1).
#[test]
fn limits_that_refuse_everything_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path());
    for (extra, want) in [
        (&["--max-subscriptions", "0"][..], "max_subscriptions"),
        (&["--max-connections", "0"][..], "max_connections"),
        (
            &["--max-connections-per-user", "0"][..],
            "max_connections_per_user",
        ),
        (
            &["--dev-token", "xy.md.>", "--dev-token-ttl", "0s"][..],
            "--dev-token-ttl",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lt-gateway"))
            .args(["--jwt-secret-file", &secret, "--nats-url", "nats://127.0.0.1:1"])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: `{want}` not named in: {err}");
        assert!(out.stdout.is_empty(), "{extra:?} printed a token");
    }
}
