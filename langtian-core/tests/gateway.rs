//! The WebSocket gateway against a real nats-server with real WebSocket clients
//! (tokio-tungstenite): auth, ACL, forwarding in batches, snapshots, admin flags with audit,
//! malformed frames, clients' end-to-end reports, and slow-consumer degradation that leaves other
//! clients unharmed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use langtian_core::bus::Bus;
use langtian_core::gateway::auth::{Claims, JwtConfig, sign_hs256};
use langtian_core::gateway::{Gateway, GatewayConfig, GatewayStats};
use langtian_core::proto::gateway::v1 as pb;
use pb::client_frame::Kind as In;
use pb::server_frame::Kind as Out;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &[u8] = b"test-secret-0123456789";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Gw {
    addr: std::net::SocketAddr,
    stats: Arc<GatewayStats>,
    _stop: watch::Sender<bool>,
}

async fn gateway(bus: &Bus, tweak: impl FnOnce(&mut GatewayConfig)) -> Gw {
    let mut cfg = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), JwtConfig::hs256(SECRET.to_vec()));
    tweak(&mut cfg);
    let gw = Gateway::bind(cfg).await.unwrap();
    let addr = gw.local_addr();
    let stats = Arc::new(GatewayStats::default());
    let (tx, rx) = watch::channel(false);
    let (b, s) = (bus.clone(), stats.clone());
    tokio::spawn(async move { gw.run(b, s, rx).await.unwrap() });
    // Ready once /healthz answers.
    common::retry_until(Duration::from_secs(10), || async move {
        TcpStream::connect(addr).await.map(|_| ())
    })
    .await;
    Gw {
        addr,
        stats,
        _stop: tx,
    }
}

fn token(subs: &[&str], ttl: Duration, admin: bool) -> String {
    let mut c = Claims::new("tester", subs.iter().map(|s| (*s).to_owned()).collect(), ttl);
    c.admin = admin;
    sign_hs256(SECRET, &c).unwrap()
}

async fn connect(gw: &Gw, token: &str) -> Ws {
    let url = format!("ws://{}/ws?token={token}", gw.addr);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, kind: In) {
    let f = pb::ClientFrame { kind: Some(kind) };
    ws.send(Message::Binary(f.encode_to_vec().into())).await.unwrap();
}

/// The next server frame (skipping WebSocket pings).
async fn recv(ws: &mut Ws) -> Out {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("open")
            .expect("ok");
        match m {
            Message::Binary(b) => return pb::ServerFrame::decode(b.as_ref()).unwrap().kind.unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads until the connection closes; returns the close code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) | None => return 0,
            Some(Ok(_)) => continue,
            Some(Err(_)) => return 0,
        }
    }
}

fn sub(id: u32, subject: &str, priority: bool) -> In {
    In::Subscribe(pb::Subscribe {
        id,
        subject: subject.into(),
        priority,
    })
}

/// The connection answers a ping with its nonce (it is still served).
async fn answers_ping(ws: &mut Ws, nonce: u64) {
    send(ws, In::Ping(pb::Ping { nonce, client_ts: 0 })).await;
    assert!(matches!(recv(ws).await, Out::Pong(p) if p.nonce == nonce));
}

/// Waits (5 s at most) until one of the gateway's counters reads `want`.
async fn until_stat(gw: &Gw, counter: fn(&GatewayStats) -> &std::sync::atomic::AtomicU64, want: u64) {
    let stats = gw.stats.clone();
    common::retry_until(Duration::from_secs(5), || {
        let stats = stats.clone();
        async move {
            let n = counter(&stats).load(Ordering::Relaxed);
            if n == want {
                Ok(())
            } else {
                Err(format!("the counter reads {n}, not {want}"))
            }
        }
    })
    .await;
}

fn error_code(o: &Out) -> pb::ErrorCode {
    match o {
        Out::Error(e) => pb::ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_in_batches_and_enforces_the_acl() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |_| {}).await;
    let mut ws = connect(&gw, &token(&["xy.md.>"], Duration::from_secs(600), false)).await;

    send(&mut ws, sub(1, "xy.md.tick.shfe.>", false)).await;
    assert!(matches!(recv(&mut ws).await, Out::Subscribed(s) if s.id == 1));
    for i in 0..100u32 {
        bus.client()
            .publish(
                format!("xy.md.tick.shfe.{}", i % 4),
                i.to_be_bytes().to_vec().into(),
            )
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let mut batches = 0;
    while got.len() < 100 {
        if let Out::Batch(b) = recv(&mut ws).await {
            batches += 1;
            for m in b.messages {
                assert_eq!(m.sub_id, 1);
                got.push(u32::from_be_bytes(m.payload.as_ref().try_into().unwrap()));
            }
        }
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "every message, in order");
    assert!(batches < 100, "batched ({batches} frames for 100 messages)");

    // Not covered by the token: refused, counted, audited to LT_AUDIT.
    send(&mut ws, sub(2, "lt.evt.>", false)).await;
    assert_eq!(error_code(&recv(&mut ws).await), pb::ErrorCode::Forbidden);
    send(&mut ws, sub(3, "xy.>", false)).await;
    assert_eq!(
        error_code(&recv(&mut ws).await),
        pb::ErrorCode::Forbidden,
        "wider than allowed"
    );
    assert_eq!(gw.stats.denied.load(Ordering::Relaxed), 2);
    common::wait_until(Duration::from_secs(5), "two audit records", || {
        let bus = bus.clone();
        async move { common::stream_len(&bus, "LT_AUDIT").await == 2 }
    })
    .await;
    send(&mut ws, sub(1, "xy.md.x", false)).await;
    assert_eq!(error_code(&recv(&mut ws).await), pb::ErrorCode::BadId);
    send(&mut ws, sub(4, "xy.md..x", false)).await;
    assert_eq!(error_code(&recv(&mut ws).await), pb::ErrorCode::BadSubject);

    // Ping → Pong with the nonce.
    send(
        &mut ws,
        In::Ping(pb::Ping {
            nonce: 42,
            client_ts: 7,
        }),
    )
    .await;
    assert!(
        matches!(recv(&mut ws).await, Out::Pong(p) if p.nonce == 42 && p.client_ts == 7 && p.server_ts > 0)
    );

    // Snapshots from KV: found, missing, forbidden.
    let kv = bus.jetstream().get_key_value("md_snapshots").await.unwrap();
    kv.put("xy.md.snapshot.shfe", b"snap".to_vec().into())
        .await
        .unwrap();
    let get = |id, key: &str| {
        In::GetSnapshot(pb::GetSnapshot {
            request_id: id,
            key: key.into(),
        })
    };
    send(&mut ws, get(10, "xy.md.snapshot.shfe")).await;
    assert!(
        matches!(recv(&mut ws).await, Out::Snapshot(s) if s.request_id == 10 && s.payload.as_ref() == b"snap")
    );
    send(&mut ws, get(11, "xy.md.snapshot.dce")).await;
    assert_eq!(error_code(&recv(&mut ws).await), pb::ErrorCode::NotFound);
    send(&mut ws, get(12, "lt.md.snapshot.cells")).await;
    assert_eq!(error_code(&recv(&mut ws).await), pb::ErrorCode::Forbidden);

    // Unsubscribe: nothing more arrives for id 1.
    send(&mut ws, In::Unsubscribe(pb::Unsubscribe { id: 1 })).await;
    send(
        &mut ws,
        In::Ping(pb::Ping {
            nonce: 1,
            client_ts: 0,
        }),
    )
    .await;
    assert!(matches!(recv(&mut ws).await, Out::Pong(_)));
    bus.client()
        .publish("xy.md.tick.shfe.0", "late".into())
        .await
        .unwrap();
    send(
        &mut ws,
        In::Ping(pb::Ping {
            nonce: 2,
            client_ts: 0,
        }),
    )
    .await;
    loop {
        match recv(&mut ws).await {
            Out::Pong(p) if p.nonce == 2 => break,
            Out::Batch(b) => panic!("forwarded after unsubscribe: {b:?}"),
            _ => {}
        }
    }
    assert_eq!(gw.stats.active.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_and_cross_origin_requests_are_refused() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |_| {}).await;
    let status = |r: Result<_, tungstenite::Error>| match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => 101,
        Err(e) => panic!("{e}"),
    };
    let base = format!("ws://{}/ws", gw.addr);
    assert_eq!(
        status(tokio_tungstenite::connect_async(&base).await.map(|_| ())),
        401,
        "no token"
    );
    let wrong = sign_hs256(
        b"another-secret-0123456",
        &Claims::new("x", vec![">".into()], Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(
        status(
            tokio_tungstenite::connect_async(format!("{base}?token={wrong}"))
                .await
                .map(|_| ())
        ),
        401
    );
    let mut old = Claims::new("x", vec![">".into()], Duration::from_secs(60));
    old.exp = 1_000_000;
    let old = sign_hs256(SECRET, &old).unwrap();
    assert_eq!(
        status(
            tokio_tungstenite::connect_async(format!("{base}?token={old}"))
                .await
                .map(|_| ())
        ),
        401
    );
    assert_eq!(gw.stats.auth_failures.load(Ordering::Relaxed), 3);

    // A browser page from another origin.
    let good = token(&["xy.>"], Duration::from_secs(60), false);
    let mut req = format!("{base}?token={good}").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    assert_eq!(
        status(tokio_tungstenite::connect_async(req).await.map(|_| ())),
        403
    );
    // Same origin is fine, and so is the Authorization header.
    let mut req = base.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", format!("http://{}", gw.addr).parse().unwrap());
    req.headers_mut()
        .insert("Authorization", format!("Bearer {good}").parse().unwrap());
    assert_eq!(
        status(tokio_tungstenite::connect_async(req).await.map(|_| ())),
        101
    );

    // A token that expires while connected: an error frame, then close code 4001.
    let short = token(&["xy.>"], Duration::from_secs(2), false);
    let mut ws = connect(&gw, &short).await;
    let t0 = Instant::now();
    assert_eq!(error_code(&recv(&mut ws).await), pb::ErrorCode::TokenExpired);
    assert_eq!(close_code(&mut ws).await, 4001);
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_with_a_code() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |_| {}).await;
    let t = token(&["xy.>"], Duration::from_secs(600), false);

    let mut ws = connect(&gw, &t).await;
    ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1007, "undecodable protobuf");

    let mut ws = connect(&gw, &t).await;
    ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1007, "empty frame");

    let mut ws = connect(&gw, &t).await;
    ws.send(Message::Text("{\"subscribe\": \"xy.>\"}".into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1003, "text frame");

    let mut ws = connect(&gw, &t).await;
    let _ = ws.send(Message::Binary(vec![0u8; 200 << 10].into())).await;
    let code = close_code(&mut ws).await;
    assert!(code == 1009 || code == 0, "oversized frame: {code}");

    assert!(gw.stats.bad_frames.load(Ordering::Relaxed) >= 3);
    // The gateway still serves.
    let mut ws = connect(&gw, &t).await;
    answers_ping(&mut ws, 9).await;
}

/// The HTTP status a refused WebSocket upgrade answered with.
async fn refused_status(gw: &Gw, token: &str) -> u16 {
    let url = format!("ws://{}/ws?token={token}", gw.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_per_user_and_in_total() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |c| {
        c.max_connections = 3;
        c.max_connections_per_user = 2;
    })
    .await;
    let claims = |sub: &str| {
        let c = Claims::new(sub, vec!["xy.>".to_owned()], Duration::from_secs(600));
        sign_hs256(SECRET, &c).unwrap()
    };
    let (alice, bob, carol) = (claims("alice"), claims("bob"), claims("carol"));
    let a1 = connect(&gw, &alice).await;
    let _a2 = connect(&gw, &alice).await;
    assert_eq!(refused_status(&gw, &alice).await, 429, "a third for alice");
    let _b1 = connect(&gw, &bob).await;
    assert_eq!(refused_status(&gw, &carol).await, 503, "the gateway is full");
    // A closed connection gives its slot back.
    drop(a1);
    until_stat(&gw, |s| &s.active, 2).await;
    let mut c1 = connect(&gw, &carol).await;
    answers_ping(&mut c1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stats_are_checked_then_recorded() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |_| {}).await;
    let t = token(&["xy.>"], Duration::from_secs(600), false);
    let mut ws = connect(&gw, &t).await;
    let lc = |ms, count| pb::LatencyCount { ms, count };
    send(
        &mut ws,
        In::Stats(pb::ClientStats {
            paint: vec![lc(31, 4), lc(48, 2)],
            receipt: vec![lc(12, 6)],
            rebuild_ms: vec![40],
            frame: vec![lc(16, 58), lc(33, 2)],
        }),
    )
    .await;
    until_stat(&gw, |s| &s.client_paint_samples, 6).await;
    assert_eq!(gw.stats.client_frame_samples.load(Ordering::Relaxed), 60);
    assert_eq!(gw.stats.client_reports.load(Ordering::Relaxed), 1);
    // Out of range: an error frame naming it, nothing recorded, and the connection stays.
    send(
        &mut ws,
        In::Stats(pb::ClientStats {
            paint: vec![lc(20, 1), lc(5_000, 1)],
            ..Default::default()
        }),
    )
    .await;
    let o = recv(&mut ws).await;
    assert_eq!(error_code(&o), pb::ErrorCode::BadStats);
    assert!(
        matches!(&o, Out::Error(e) if e.message.contains("paint: bucket 5000 ms")),
        "{o:?}"
    );
    assert_eq!(gw.stats.bad_client_stats.load(Ordering::Relaxed), 1);
    assert_eq!(gw.stats.client_paint_samples.load(Ordering::Relaxed), 6);
    assert_eq!(gw.stats.client_frame_samples.load(Ordering::Relaxed), 60);
    assert_eq!(gw.stats.client_reports.load(Ordering::Relaxed), 1);
    assert_eq!(
        gw.stats.bad_frames.load(Ordering::Relaxed),
        0,
        "not a malformed frame"
    );
    answers_ping(&mut ws, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_flags_need_an_admin_token_and_every_change_is_audited() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |_| {}).await;
    let http = |method: &str, path: &str, token: Option<&str>, body: &str| {
        let (method, path, token, body, addr) = (
            method.to_owned(),
            path.to_owned(),
            token.map(str::to_owned),
            body.to_owned(),
            gw.addr,
        );
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = TcpStream::connect(addr).await.unwrap();
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let code: u16 = out[9..12].parse().unwrap();
            let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
            (code, body)
        }
    };
    let user = token(&["xy.>"], Duration::from_secs(60), false);
    let root = token(&[], Duration::from_secs(60), true);
    assert_eq!(http("GET", "/admin/feature-flags", None, "").await.0, 401);
    assert_eq!(http("GET", "/admin/feature-flags", Some(&user), "").await.0, 403);
    let (code, body) = http(
        "PUT",
        "/admin/feature-flags",
        Some(&root),
        r#"{"flag":"ui.dark","value":true}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        http(
            "PUT",
            "/admin/feature-flags",
            Some(&root),
            r#"{"flag":"bad name","value":1}"#
        )
        .await
        .0,
        400
    );
    assert_eq!(
        http("PUT", "/admin/feature-flags", Some(&root), "not json")
            .await
            .0,
        400
    );
    let (code, body) = http("GET", "/admin/feature-flags", Some(&root), "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // chunked encoding: take the JSON line
        serde_json::from_str(body.lines().find(|l| l.starts_with('{')).unwrap()).unwrap()
    });
    assert_eq!(v["ui.dark"], serde_json::Value::Bool(true));
    assert_eq!(
        http("DELETE", "/admin/feature-flags/ui.dark", Some(&root), "")
            .await
            .0,
        204
    );
    // Two changes, two audit records with the actor and old/new values.
    let stream = bus.jetstream().get_stream("LT_AUDIT").await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(
        (
            rec["actor"].as_str(),
            rec["action"].as_str(),
            rec["new"].as_bool()
        ),
        (Some("tester"), Some("set"), Some(true))
    );
    let second: serde_json::Value =
        serde_json::from_slice(&stream.get_raw_message(2).await.unwrap().payload).unwrap();
    assert_eq!(
        (second["action"].as_str(), second["old"].as_bool()),
        (Some("delete"), Some(true))
    );
    assert_eq!(common::stream_len(&bus, "LT_AUDIT").await, 2);
    let (code, body) = http("GET", "/healthz", None, "").await;
    assert_eq!(code, 200, "{body}");
}

/// A client that stops reading walks up the levels (and back down once it reads again) while
/// another client on the same gateway keeps its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_degrades_alone_and_recovers() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |c| {
        let d = &mut c.degrade;
        d.sample_interval = Duration::from_millis(100);
        d.high_bytes = [64 << 10, 256 << 10, 1 << 20];
        d.low_bytes = [48 << 10, 128 << 10, 512 << 10];
        d.stall = [
            Duration::from_millis(200),
            Duration::from_millis(500),
            Duration::from_millis(1000),
        ];
        d.recover_after = Duration::from_millis(300);
        c.send_buffer_bytes = Some(32 << 10);
    })
    .await;
    let t = token(&["test.>"], Duration::from_secs(600), false);

    // The slow client: a tiny receive buffer, and it will stop reading.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(gw.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws?token={t}", gw.addr),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    send(&mut slow, sub(1, "test.big.*", false)).await;
    send(&mut slow, sub(2, "test.prio", true)).await;
    assert!(matches!(recv(&mut slow).await, Out::Subscribed(_)));
    assert!(matches!(recv(&mut slow).await, Out::Subscribed(_)));
    let mut fast = connect(&gw, &t).await;
    send(&mut fast, sub(1, "test.small", false)).await;
    assert!(matches!(recv(&mut fast).await, Out::Subscribed(_)));

    // Load: 50 subjects × 2 KiB at ~400 KB/s for the slow one, a timestamp every 5 ms for the fast one.
    let (stop_tx, stop_rx) = watch::channel(false);
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let big = vec![7u8; 2 << 10];
            let mut i = 0u64;
            while !*stop_rx.borrow() {
                let c = bus.client();
                c.publish(format!("test.big.{}", i % 50), big.clone().into())
                    .await
                    .unwrap();
                if i.is_multiple_of(10) {
                    c.publish("test.prio", "p".into()).await.unwrap();
                }
                c.publish(
                    "test.small",
                    langtian_core::envelope::now_nanos().to_be_bytes().to_vec().into(),
                )
                .await
                .unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // The fast client reads and measures while the slow one does not read at all.
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reached_3_at: Option<Instant> = None;
    while Instant::now() < deadline {
        if let Out::Batch(b) = recv(&mut fast).await {
            let now = langtian_core::envelope::now_nanos();
            for m in b.messages {
                let ts = i64::from_be_bytes(m.payload.as_ref().try_into().unwrap());
                latencies.push(Duration::from_nanos((now - ts).max(0) as u64));
            }
        }
        if reached_3_at.is_none() && gw.stats.at_level[2].load(Ordering::Relaxed) == 1 {
            reached_3_at = Some(Instant::now());
        }
        if reached_3_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
    }
    assert!(reached_3_at.is_some(), "the slow client reached level 3");
    assert_eq!(gw.stats.max_level(), 3);
    assert_eq!(gw.stats.slow_consumers(), 1, "only the slow client");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        latencies.len() > 100,
        "the fast client kept receiving ({})",
        latencies.len()
    );
    assert!(
        p99 < Duration::from_millis(100),
        "fast client p99 {p99:?} while the other is stuck"
    );

    // The slow client reads again: it sees its way up, then down to 0 with a resync of the
    // paused subscription; priority messages kept coming.
    let mut levels = Vec::new();
    let mut resync = Vec::new();
    let mut prio = 0;
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        match recv(&mut slow).await {
            Out::Status(s) => {
                levels.push(s.level);
                resync.extend(s.resync);
                if s.level == 0 {
                    break;
                }
            }
            Out::Batch(b) => prio += b.messages.iter().filter(|m| m.sub_id == 2).count(),
            _ => {}
        }
    }
    let _ = stop_tx.send(true);
    publisher.await.unwrap();
    assert!(levels.contains(&3), "levels seen: {levels:?}");
    assert_eq!(levels.last(), Some(&0), "back to normal: {levels:?}");
    let peak = levels.iter().position(|l| *l == 3).unwrap();
    assert!(
        levels[peak..].windows(2).all(|w| w[1] < w[0]),
        "down one step at a time: {levels:?}"
    );
    assert!(
        resync.contains(&1),
        "the paused subscription must re-snapshot: {resync:?}"
    );
    assert!(prio > 0, "priority messages kept flowing");
    assert!(gw.stats.backpressure_events.load(Ordering::Relaxed) >= 1);
    assert_eq!(gw.stats.slow_consumers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_when_a_certificate_is_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_pem, key_pem) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let gw = gateway(&bus, |c| c.tls = Some((cert_pem.clone(), key_pem.clone()))).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            gw.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"nats_connected\":true"), "{out}");
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = TcpStream::connect(gw.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

/// A browser-like client joining through the gateway while the aggregator runs: subscribe to the
/// deltas, read the snapshot from KV (GetSnapshot), apply the deltas that follow — current within
/// 1 s, and every later delta applies without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_rebuilds_from_snapshot_and_deltas_within_a_second() {
    use langtian_core::aggregate::service::{AggregatorStats, run_aggregator};
    use langtian_core::aggregate::{AggregatorConfig, DeltaApplied, MdRecord, Replica};
    use langtian_core::proto::md::v1::Tick;
    use langtian_core::sim::ticks::{TickRun, publish_ticks};
    use langtian_core::sim::{TickSim, TickSimConfig};
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    langtian_core::bus::Topology::default_topology()
        .unwrap()
        .apply(&bus)
        .await
        .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let agg_stats = Arc::new(AggregatorStats::default());
    let cfg = AggregatorConfig {
        battery: None,
        ..AggregatorConfig::default()
    };
    tokio::spawn(run_aggregator(
        bus.clone(),
        cfg,
        agg_stats.clone(),
        stop_rx.clone(),
    ));
    let feed = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut sim = TickSim::new(TickSimConfig {
                venues: 1,
                symbols_per_venue: 40,
                ..TickSimConfig::default()
            });
            let run = TickRun {
                rate: 2_000.0,
                ..TickRun::default()
            };
            let _ = publish_ticks(&bus, &mut sim, &run, stop_rx, |_| {}).await;
        })
    };
    let kv = bus.jetstream().get_key_value("md_snapshots").await.unwrap();
    common::wait_until(Duration::from_secs(10), "a stored snapshot", || {
        let kv = kv.clone();
        async move { kv.get("xy.md.snapshot.shfe").await.unwrap().is_some() }
    })
    .await;
    let gw = gateway(&bus, |_| {}).await;
    // Wait until the copy in KV is behind the live deltas (a delta builds on a newer version):
    // the gateway must still hand out a snapshot the deltas continue without a gap.
    let (_, stale, _) =
        Tick::decode_snapshot(&kv.get("xy.md.snapshot.shfe").await.unwrap().unwrap()).unwrap();
    let mut watch = bus.client().subscribe("xy.md.tick.shfe.>").await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap();
        let (_, d, _) = Tick::decode_delta(&m.payload).unwrap();
        if d.base_version > stale.shard_versions[d.shard as usize] {
            break;
        }
    }
    drop(watch);

    let t0 = Instant::now();
    let mut ws = connect(&gw, &token(&["xy.md.>"], Duration::from_secs(600), false)).await;
    send(&mut ws, sub(1, "xy.md.tick.shfe.>", false)).await;
    send(
        &mut ws,
        In::GetSnapshot(pb::GetSnapshot {
            request_id: 1,
            key: "xy.md.snapshot.shfe".into(),
        }),
    )
    .await;
    let mut buffered = Vec::new();
    let mut replica: Option<Replica<Tick>> = None;
    let mut rebuilt = None;
    let mut applied_after = 0;
    while applied_after < 20 {
        match recv(&mut ws).await {
            Out::Batch(b) => {
                for m in b.messages {
                    let (_, d, _) = Tick::decode_delta(&m.payload).unwrap();
                    match replica.as_mut() {
                        None => buffered.push(d),
                        Some(r) => match r.apply_delta(&d) {
                            DeltaApplied::Applied => {
                                rebuilt.get_or_insert(t0.elapsed());
                                applied_after += 1;
                            }
                            DeltaApplied::Stale => {}
                            gap => panic!("gap after the rebuild: {gap:?}"),
                        },
                    }
                }
            }
            Out::Snapshot(s) => {
                let (_, snap, _) = Tick::decode_snapshot(&s.payload).unwrap();
                let mut r = Replica::from_snapshot(snap);
                for d in buffered.drain(..) {
                    assert!(
                        !matches!(r.apply_delta(&d), DeltaApplied::Gap { .. }),
                        "buffered deltas fit the snapshot"
                    );
                }
                replica = Some(r);
            }
            _ => {}
        }
    }
    let rebuilt = rebuilt.unwrap();
    assert!(rebuilt < Duration::from_secs(1), "rebuilt in {rebuilt:?}");
    assert_eq!(replica.unwrap().len(), 40);
    let _ = stop_tx.send(true);
    let _ = feed.await;
}

/// The UI's files come with COOP `same-origin` + COEP `require-corp`: the pages and their
/// SharedWorker run cross-origin isolated (5 µs timers for the browser benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_ui_cross_origin_isolated() {
    use langtian_core::natsd::http_get_response;
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><p>langtian</p>").unwrap();
    let ui = dir.path().to_path_buf();
    let gw = gateway(&bus, |c| c.static_dir = Some(ui)).await;
    let out = http_get_response(gw.addr.port(), "/index.html").await.unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert!(out.body.contains("<p>langtian</p>"), "{out:?}");
    assert!(
        out.head.contains("cross-origin-opener-policy: same-origin"),
        "{out:?}"
    );
    assert!(
        out.head.contains("cross-origin-embedder-policy: require-corp"),
        "{out:?}"
    );

    // Switched off (`--no-cross-origin-isolation`): the same files, without the two headers.
    let ui = dir.path().to_path_buf();
    let plain = gateway(&bus, |c| {
        c.static_dir = Some(ui);
        c.cross_origin_isolation = false;
    })
    .await;
    let out = http_get_response(plain.addr.port(), "/index.html").await.unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert!(out.body.contains("<p>langtian</p>"), "{out:?}");
    assert!(!out.head.contains("cross-origin-opener-policy"), "{out:?}");
    assert!(!out.head.contains("cross-origin-embedder-policy"), "{out:?}");
}

/// A response read by [`request`].
#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 request on its own connection; reads the head and `Content-Length` bytes (or to
/// the end), so it also works for refused WebSocket upgrades, which keep the connection open.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        req.push_str("Connection: close\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                let status: u16 = head[9..12].parse().unwrap();
                if n == 0 || status == 101 || status == 204 || len.is_some_and(|l| rest.len() >= l) {
                    let content_type = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-type:")
                                .map(|v| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    return Resp {
                        status,
                        content_type,
                        body: rest.to_owned(),
                    };
                }
            }
            assert!(n > 0, "connection closed before a full response: {text}");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a serde_json::Value, v: &'a serde_json::Value) -> &'a serde_json::Value {
    match v.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("a local reference");
            resolve(
                spec,
                spec.pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling reference {r}")),
            )
        }
        None => v,
    }
}

/// Checks `value` against the subset of JSON Schema the document uses: type, required,
/// properties, additionalProperties: false, enum, minimum/maximum.
fn conforms(spec: &serde_json::Value, schema: &serde_json::Value, value: &serde_json::Value, at: &str) {
    let schema = resolve(spec, schema);
    if let Some(t) = schema.get("type").and_then(|t| t.as_str()) {
        let ok = match t {
            "object" => value.is_object(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            other => panic!("{at}: type {other} not handled"),
        };
        assert!(ok, "{at}: {value} is not a {t}");
    }
    if let Some(allowed) = schema.get("enum").and_then(|e| e.as_array()) {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    if let (Some(min), Some(v)) = (schema.get("minimum").and_then(|m| m.as_i64()), value.as_i64()) {
        assert!(v >= min, "{at}: {v} < {min}");
    }
    if let (Some(max), Some(v)) = (schema.get("maximum").and_then(|m| m.as_i64()), value.as_i64()) {
        assert!(v <= max, "{at}: {v} > {max}");
    }
    let Some(obj) = value.as_object() else { return };
    for key in schema
        .get("required")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let key = key.as_str().unwrap();
        assert!(obj.contains_key(key), "{at}: `{key}` is required: {value}");
    }
    let props = schema.get("properties").and_then(|p| p.as_object());
    for (k, v) in obj {
        match props.and_then(|p| p.get(k)) {
            Some(s) => conforms(spec, s, v, &format!("{at}.{k}")),
            None => assert!(
                schema.get("additionalProperties") != Some(&serde_json::Value::Bool(false)),
                "{at}: `{k}` is not documented"
            ),
        }
    }
}

/// The served OpenAPI document describes what the gateway really does: every route of the router
/// is documented and every documented operation is exercised here, each answer's status is one
/// the document lists for it, with the documented content type and a body that matches its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_surface_matches_its_openapi_document() {
    use std::collections::BTreeSet;
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let gw = gateway(&bus, |c| c.max_connections_per_user = 1).await;

    let served = request(gw.addr, "GET", "/openapi.yaml", &[], "").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.content_type, "application/yaml");
    assert_eq!(served.body, langtian_core::gateway::OPENAPI);
    let spec: serde_json::Value = serde_yaml_ng::from_str(&served.body).unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.0."),
        "OpenAPI 3.0"
    );

    // Every route the router declares is a documented path, and every documented path other
    // than the UI's fallback (`/`) is a route.
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/gateway/server.rs")).unwrap();
    let routes: BTreeSet<String> = source
        .split(".route(")
        .skip(1)
        .map(|rest| {
            let start = rest.find('"').unwrap() + 1;
            let len = rest[start..].find('"').unwrap();
            rest[start..start + len].to_owned()
        })
        .collect();
    let documented: BTreeSet<String> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| p.as_str() != "/")
        .cloned()
        .collect();
    assert_eq!(routes, documented, "router routes vs documented paths");

    let user = token(&["xy.>"], Duration::from_secs(60), false);
    let root = token(&[], Duration::from_secs(60), true);
    let expired = {
        let mut c = Claims::new("tester", vec![], Duration::from_secs(60));
        c.exp = 1;
        sign_hs256(SECRET, &c).unwrap()
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let (user_auth, root_auth, expired_auth) = (bearer(&user), bearer(&root), bearer(&expired));
    let upgrade: [(&str, &str); 4] = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        base.iter().chain(extra).copied().collect()
    }
    let ws_ok = format!("/ws?token={user}");

    let held = connect(&gw, &user).await; // holds the user's only slot for the 429 case
    /// (documented path, method, request path, headers, body, expected status)
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, &'a str, u16);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("/ws", "get", "/ws".into(), vec![], "", 400),
        ("/ws", "get", "/ws".into(), with(&upgrade, &[]), "", 401),
        ("/ws", "get", "/ws".into(), with(&upgrade, &[("Authorization", &expired_auth)]), "", 401),
        ("/ws", "get", ws_ok.clone(), with(&upgrade, &[("Origin", "http://evil.example")]), "", 403),
        ("/ws", "get", ws_ok.clone(), with(&upgrade, &[]), "", 429),
        ("/healthz", "get", "/healthz".into(), vec![], "", 200),
        ("/livez", "get", "/livez".into(), vec![], "", 200),
        ("/metrics", "get", "/metrics".into(), vec![], "", 200),
        ("/openapi.yaml", "get", "/openapi.yaml".into(), vec![], "", 200),
        ("/admin/feature-flags", "get", "/admin/feature-flags".into(), vec![], "", 401),
        ("/admin/feature-flags", "get", "/admin/feature-flags".into(), vec![("Authorization", &user_auth)], "", 403),
        ("/admin/feature-flags", "put", "/admin/feature-flags".into(), vec![("Authorization", &root_auth)], r#"{"flag":"ui.dark","value":true}"#, 200),
        ("/admin/feature-flags", "put", "/admin/feature-flags".into(), vec![("Authorization", &root_auth)], r#"{"flag":"ui..dark","value":true}"#, 400),
        ("/admin/feature-flags", "put", "/admin/feature-flags".into(), vec![("Authorization", &root_auth)], r#"{"flag":"ui.dark","value":1,"extra":2}"#, 400),
        ("/admin/feature-flags", "put", "/admin/feature-flags".into(), vec![("Authorization", &user_auth)], r#"{"flag":"ui.dark","value":true}"#, 403),
        ("/admin/feature-flags", "get", "/admin/feature-flags".into(), vec![("Authorization", &root_auth)], "", 200),
        ("/admin/feature-flags/{flag}", "delete", "/admin/feature-flags/ui.dark".into(), vec![("Authorization", &root_auth)], "", 204),
        ("/admin/feature-flags/{flag}", "delete", "/admin/feature-flags/.bad".into(), vec![("Authorization", &root_auth)], "", 400),
        ("/admin/feature-flags/{flag}", "delete", "/admin/feature-flags/ui.dark".into(), vec![], "", 401),
        ("/", "get", "/".into(), vec![], "", 200),
    ];
    let mut exercised = BTreeSet::new();
    for (doc_path, method, path, headers, body, want) in &cases {
        let r = request(gw.addr, &method.to_uppercase(), path, headers, body).await;
        let what = format!("{} {path} → {}", method.to_uppercase(), r.status);
        assert_eq!(r.status, *want, "{what}: {}", r.body);
        let op = &spec["paths"][doc_path][method];
        assert!(op.is_object(), "{method} {doc_path} is not documented");
        let doc = resolve(&spec, &op["responses"][r.status.to_string()]);
        assert!(
            doc.is_object(),
            "{what}: status not documented for {method} {doc_path}"
        );
        let content = doc.get("content").and_then(|c| c.as_object());
        match content {
            None => assert!(r.body.is_empty(), "{what}: undocumented body {}", r.body),
            Some(content) => {
                let media = r.content_type.split(';').next().unwrap_or("").trim();
                let entry = content.get(media).unwrap_or_else(|| {
                    panic!(
                        "{what}: content type `{media}` not documented ({:?})",
                        content.keys()
                    )
                });
                if media == "application/json" {
                    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                    conforms(&spec, &entry["schema"], &v, &what);
                }
            }
        }
        exercised.insert((doc_path.to_string(), method.to_string()));
    }
    // The upgrade itself: 101 and a working WebSocket (`connect` fails on anything else).
    drop(held);
    let stats = gw.stats.clone();
    common::wait_until(Duration::from_secs(5), "the held slot is free", move || {
        let stats = stats.clone();
        async move { stats.active.load(Ordering::Relaxed) == 0 }
    })
    .await;
    let mut ws = connect(&gw, &user).await;
    answers_ping(&mut ws, 1).await;
    assert!(spec["paths"]["/ws"]["get"]["responses"]["101"].is_object());

    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(exercised, operations, "every documented operation is exercised");
}
