//! One WebSocket connection: the reader (client frames), one forwarder per subscription (NATS →
//! the connection's outbox, never waiting on the socket), the writer (a batch every interval,
//! control frames at once) and the monitor (degradation level, hard limits, token expiry).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::Notify;

use super::acl::{allowed_by, check_literal, check_subject};
use super::auth::Claims;
use super::degrade::{Outbox, Pending, Pressure, trim};
use super::server::Shared;
use super::{decode_client, encode_server, pb};
use crate::envelope::now_nanos;

use pb::client_frame::Kind as In;
use pb::server_frame::Kind as Out;

/// Close codes.
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_INVALID: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_TOKEN_EXPIRED: u16 = 4001;
const CLOSE_SLOW: u16 = 4008;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the tasks of one connection.
struct Conn {
    outbox: Mutex<Outbox>,
    control: Mutex<Vec<Bytes>>,
    wake: Notify,
    /// Notified when the outbox goes from empty to non-empty.
    data: Notify,
    /// When the current socket write started, and its size.
    in_flight: Mutex<Option<(Instant, usize)>>,
    level: AtomicU8,
    /// Subscriptions paused at level 3.
    paused: Mutex<BTreeSet<u32>>,
    /// Subscriptions that are not priority (paused at level 3).
    normal: Mutex<BTreeSet<u32>>,
    /// Set when the connection must close: (code, reason).
    close: Mutex<Option<(u16, String)>>,
    closed: Notify,
}

impl Conn {
    fn control(&self, kind: Out) {
        lock(&self.control).push(encode_server(kind));
        self.wake.notify_one();
    }
    fn error(&self, code: pb::ErrorCode, message: impl Into<String>, id: u32) {
        self.control(Out::Error(pb::Error {
            code: code as i32,
            message: message.into(),
            id,
        }));
    }
    fn request_close(&self, code: u16, reason: impl Into<String>) {
        let mut c = lock(&self.close);
        if c.is_none() {
            *c = Some((code, reason.into()));
        }
        drop(c);
        self.wake.notify_one();
        self.closed.notify_waiters();
    }
    fn closing(&self) -> bool {
        lock(&self.close).is_some()
    }
}

struct Sub {
    task: tokio::task::JoinHandle<()>,
}

/// Serves one upgraded connection until either side closes.
pub(super) async fn serve(
    socket: WebSocket,
    claims: Claims,
    peer: String,
    shared: Arc<Shared>,
    slot: super::slots::Slot,
) {
    let stats = shared.stats.clone();
    stats.active.fetch_add(1, Ordering::Relaxed);
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("ws", %peer, user = %claims.sub);
    async move {
    tracing::info!("connected");
    let conn = Arc::new(Conn {
        outbox: Mutex::new(Outbox::default()),
        control: Mutex::new(Vec::new()),
        wake: Notify::new(),
        data: Notify::new(),
        in_flight: Mutex::new(None),
        level: AtomicU8::new(0),
        paused: Mutex::new(BTreeSet::new()),
        normal: Mutex::new(BTreeSet::new()),
        close: Mutex::new(None),
        closed: Notify::new(),
    });
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, conn.clone(), shared.clone()));
    let monitor = tokio::spawn(monitor_loop(conn.clone(), shared.clone(), claims.clone()));
    let mut subs: HashMap<u32, Sub> = HashMap::new();
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = conn.closed.notified() => break,
        };
        let Some(msg) = msg else { break };
        match msg {
            Ok(Message::Binary(b)) => match decode_client(&b) {
                Ok(frame) => on_frame(frame, &conn, &shared, &claims, &mut subs).await,
                Err(reason) => {
                    bad_frame(&shared, "undecodable");
                    tracing::warn!(code = "malformed_frame", close_code = CLOSE_INVALID, %reason, "malformed frame; closing");
                    conn.request_close(CLOSE_INVALID, truncate(&reason));
                    break;
                }
            },
            Ok(Message::Text(_)) => {
                bad_frame(&shared, "text");
                conn.request_close(CLOSE_UNSUPPORTED, "binary langtian.gateway.v1 frames only");
                break;
            }
            Ok(Message::Close(_)) => break,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Err(e) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                    bad_frame(&shared, "too_large");
                    conn.request_close(CLOSE_TOO_BIG, "frame larger than the gateway accepts");
                } else {
                    tracing::debug!(error = %text, "read error");
                }
                break;
            }
        }
        if conn.closing() {
            break;
        }
    }
    for (_, s) in subs.drain() {
        s.task.abort();
    }
    // Let the writer send a pending close frame, then stop everything.
    conn.request_close(1000, "bye");
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    monitor.abort();
    let level = conn.level.load(Ordering::Relaxed);
    if level > 0 {
        stats.at_level[usize::from(level - 1)].fetch_sub(1, Ordering::Relaxed);
    }
    // The slot comes back before `ws_active` drops: whoever sees the lower count can connect.
    drop(slot);
    stats.active.fetch_sub(1, Ordering::Relaxed);
    tracing::info!("disconnected");
    }
    .instrument(span)
    .await
}

fn truncate(s: &str) -> String {
    // Close reasons are limited to 123 bytes.
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > 120 {
            break;
        }
        out.push(c);
    }
    out
}

fn bad_frame(shared: &Shared, reason: &'static str) {
    shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("ws_bad_frames", "reason" => reason).increment(1);
}

async fn on_frame(
    frame: In,
    conn: &Arc<Conn>,
    shared: &Arc<Shared>,
    claims: &Claims,
    subs: &mut HashMap<u32, Sub>,
) {
    match frame {
        In::Ping(p) => conn.control(Out::Pong(pb::Pong {
            nonce: p.nonce,
            client_ts: p.client_ts,
            server_ts: now_nanos(),
        })),
        In::Subscribe(s) => subscribe(s, conn, shared, claims, subs).await,
        In::Stats(s) => match super::client_stats::check(&s) {
            Ok(c) => {
                super::client_stats::record(&s);
                shared.stats.client_reports.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .client_paint_samples
                    .fetch_add(c.paint_samples, Ordering::Relaxed);
                shared
                    .stats
                    .client_frame_samples
                    .fetch_add(c.frame_samples, Ordering::Relaxed);
            }
            Err(e) => {
                shared.stats.bad_client_stats.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ws_bad_client_stats").increment(1);
                tracing::warn!(code = "bad_client_stats", reason = %e, "client stats refused");
                conn.error(pb::ErrorCode::BadStats, e.to_string(), 0);
            }
        },
        In::Unsubscribe(u) => match subs.remove(&u.id) {
            Some(s) => {
                s.task.abort();
                lock(&conn.outbox).drop_sub(u.id);
                lock(&conn.paused).remove(&u.id);
                lock(&conn.normal).remove(&u.id);
            }
            None => conn.error(pb::ErrorCode::BadId, format!("no subscription {}", u.id), u.id),
        },
        In::GetSnapshot(g) => {
            if let Err(e) = check_literal(&g.key) {
                return conn.error(pb::ErrorCode::BadSubject, e.to_string(), g.request_id);
            }
            if !allowed_by(&claims.subs, &g.key) {
                deny(shared, claims, &g.key, "snapshot");
                return conn.error(
                    pb::ErrorCode::Forbidden,
                    format!("the token does not allow `{}`", g.key),
                    g.request_id,
                );
            }
            let (conn, shared) = (conn.clone(), shared.clone());
            tokio::spawn(async move {
                // A fresh snapshot from the aggregator first (consistent with the live deltas);
                // the copy in KV (up to a snapshot interval old) when no aggregator answers.
                if let Some(subject) = fresh_snapshot_subject(&g.key) {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(
                        Duration::from_millis(500),
                        shared.bus.client().request(subject, bytes::Bytes::new()),
                    )
                    .await;
                    metrics::histogram!("nats_req_latency", "op" => "snapshot_request")
                        .record(t0.elapsed().as_secs_f64());
                    if let Ok(Ok(m)) = r
                        && !m.payload.is_empty()
                    {
                        return conn.control(Out::Snapshot(pb::SnapshotReply {
                            request_id: g.request_id,
                            key: g.key,
                            payload: m.payload,
                            revision: 0,
                        }));
                    }
                }
                let t0 = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(2), shared.snapshots.entry(&g.key)).await;
                metrics::histogram!("nats_req_latency", "op" => "kv_get").record(t0.elapsed().as_secs_f64());
                match r {
                    Ok(Ok(Some(e))) if e.operation == async_nats::jetstream::kv::Operation::Put => conn
                        .control(Out::Snapshot(pb::SnapshotReply {
                            request_id: g.request_id,
                            key: g.key,
                            payload: e.value,
                            revision: e.revision,
                        })),
                    Ok(Ok(_)) => conn.error(
                        pb::ErrorCode::NotFound,
                        format!("no snapshot under `{}`", g.key),
                        g.request_id,
                    ),
                    Ok(Err(e)) => conn.error(pb::ErrorCode::Unavailable, e.to_string(), g.request_id),
                    Err(_) => conn.error(
                        pb::ErrorCode::Unavailable,
                        "NATS did not answer within 2 s",
                        g.request_id,
                    ),
                }
            });
        }
    }
}

/// A snapshot key `<p>.md.<word>.<group>` (`xy.md.snapshot.shfe`, `xy.md.contracts.shfe`) →
/// `<p>.md.req.<word>.<group>`, where the aggregator answers.
fn fresh_snapshot_subject(key: &str) -> Option<String> {
    let (prefix, rest) = key.split_once(".md.")?;
    let (word, group) = rest.split_once('.')?;
    let tokens_ok = [prefix, word, group].iter().all(|t| !t.is_empty());
    (tokens_ok && word != "req" && !group.contains('.')).then(|| format!("{prefix}.md.req.{word}.{group}"))
}

fn deny(shared: &Shared, claims: &Claims, subject: &str, what: &'static str) {
    shared.stats.denied.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("ws_denied_subscriptions", "what" => what).increment(1);
    tracing::warn!(target: "audit", code = "forbidden", user = %claims.sub, %subject, what, "denied by the token's subject ACL");
    let record = serde_json::json!({
        "ts": now_nanos(),
        "actor": claims.sub,
        "action": "denied",
        "what": what,
        "subject": subject,
    });
    let (client, subj) = (
        shared.bus.client().clone(),
        format!("{}.acl.denied", shared.cfg.audit_prefix),
    );
    tokio::spawn(async move {
        let _ = client.publish(subj, record.to_string().into()).await;
    });
}

async fn subscribe(
    s: pb::Subscribe,
    conn: &Arc<Conn>,
    shared: &Arc<Shared>,
    claims: &Claims,
    subs: &mut HashMap<u32, Sub>,
) {
    if s.id == 0 || subs.contains_key(&s.id) {
        return conn.error(
            pb::ErrorCode::BadId,
            format!("subscription id {} is 0 or in use", s.id),
            s.id,
        );
    }
    if subs.len() >= shared.cfg.max_subscriptions {
        return conn.error(
            pb::ErrorCode::TooManySubscriptions,
            format!(
                "at most {} subscriptions per connection",
                shared.cfg.max_subscriptions
            ),
            s.id,
        );
    }
    if let Err(e) = check_subject(&s.subject) {
        return conn.error(pb::ErrorCode::BadSubject, e.to_string(), s.id);
    }
    if !allowed_by(&claims.subs, &s.subject) {
        deny(shared, claims, &s.subject, "subscribe");
        return conn.error(
            pb::ErrorCode::Forbidden,
            format!("the token does not allow `{}`", s.subject),
            s.id,
        );
    }
    let t0 = Instant::now();
    let sub = match shared.bus.client().subscribe(s.subject.clone()).await {
        Ok(sub) => sub,
        Err(e) => return conn.error(pb::ErrorCode::Unavailable, e.to_string(), s.id),
    };
    // The subscription is live on the server once a round trip has passed.
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.bus.client().flush()).await;
    metrics::histogram!("nats_req_latency", "op" => "subscribe").record(t0.elapsed().as_secs_f64());
    let (id, priority, c) = (s.id, s.priority, conn.clone());
    let task = tokio::spawn(async move {
        let mut sub = sub;
        while let Some(m) = sub.next().await {
            if !priority && c.level.load(Ordering::Relaxed) >= 3 {
                lock(&c.paused).insert(id);
                continue;
            }
            let mut outbox = lock(&c.outbox);
            outbox.push(Pending {
                sub_id: id,
                subject: m.subject.to_string(),
                payload: m.payload,
                ts_received: now_nanos(),
            });
            let first = outbox.len() == 1;
            drop(outbox);
            if first {
                c.data.notify_one();
            }
        }
    });
    subs.insert(id, Sub { task });
    if !priority {
        lock(&conn.normal).insert(id);
    }
    conn.control(Out::Subscribed(pb::Subscribed {
        id,
        subject: s.subject,
    }));
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, conn: &Conn, frame: Bytes) -> bool {
    metrics::counter!("ws_bytes_sent").increment(frame.len() as u64);
    *lock(&conn.in_flight) = Some((Instant::now(), frame.len()));
    let ok = sink.send(Message::Binary(frame)).await.is_ok();
    *lock(&conn.in_flight) = None;
    ok
}

async fn write_loop(mut sink: Sink, conn: Arc<Conn>, shared: Arc<Shared>) {
    use tokio::time::Instant as TInstant;
    let policy = &shared.cfg.degrade;
    let mut seq = 0u64;
    // A batch goes out `linger` after its first message, but never sooner than the batch
    // interval (less the linger) after the previous one: about one batch per interval at most,
    // a burst (the aggregator's deltas of one tick) is not held for a whole interval, and a
    // source that publishes every interval keeps its phase (timers round up to the next ms).
    let mut last_flush = TInstant::now();
    let mut deadline: Option<TInstant> = None;
    let interval_now = |conn: &Conn| {
        if conn.level.load(Ordering::Relaxed) >= 1 {
            policy.sample_interval
        } else {
            policy.batch_interval
        }
    };
    loop {
        let due = tokio::select! {
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => true,
            () = conn.data.notified(), if deadline.is_none() => {
                let at = (last_flush + interval_now(&conn).saturating_sub(policy.linger)).max(TInstant::now() + policy.linger);
                deadline = Some(at);
                false
            }
            () = conn.wake.notified() => false,
        };
        let control = std::mem::take(&mut *lock(&conn.control));
        for f in control {
            if !send(&mut sink, &conn, f).await {
                return;
            }
        }
        let close = lock(&conn.close).clone();
        if let Some((code, reason)) = close {
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
            let _ = sink.close().await;
            return;
        }
        if !due {
            continue;
        }
        deadline = None;
        let level = conn.level.load(Ordering::Relaxed);
        let interval = interval_now(&conn);
        let (msgs, resync) = lock(&conn.outbox).take();
        if msgs.is_empty() && resync.is_empty() {
            // A stale wake-up: nothing was sent, so the interval does not restart.
            continue;
        }
        last_flush = TInstant::now();
        if !resync.is_empty() {
            let f = encode_server(Out::Status(pb::Status {
                level: u32::from(level),
                reason: "some deltas could not be merged; re-read the snapshots".into(),
                paused: Vec::new(),
                resync: resync.into_iter().collect(),
                batch_interval_ms: interval.as_millis() as u32,
            }));
            if !send(&mut sink, &conn, f).await {
                return;
            }
        }
        if msgs.is_empty() {
            continue;
        }
        seq += 1;
        let n = msgs.len() as u64;
        let messages = msgs
            .into_iter()
            .map(|p| pb::Forward {
                sub_id: p.sub_id,
                payload: if level >= 2 {
                    trim(&p.subject, &p.payload, policy)
                } else {
                    p.payload
                },
                subject: p.subject,
                ts_received: p.ts_received,
            })
            .collect();
        let frame = encode_server(Out::Batch(pb::Batch {
            seq,
            ts: now_nanos(),
            messages,
        }));
        if !send(&mut sink, &conn, frame).await {
            return;
        }
        shared.stats.forwarded.fetch_add(n, Ordering::Relaxed);
        shared.stats.batches.fetch_add(1, Ordering::Relaxed);
        // Messages that arrived while this batch was written wait for the next one.
        if !lock(&conn.outbox).is_empty() {
            deadline = Some(
                (last_flush + interval_now(&conn).saturating_sub(policy.linger))
                    .max(TInstant::now() + policy.linger),
            );
        }
    }
}

async fn monitor_loop(conn: Arc<Conn>, shared: Arc<Shared>, claims: Claims) {
    let policy = &shared.cfg.degrade;
    let stats = &shared.stats;
    let mut pressure = Pressure::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let expires_at = Instant::now() + claims.remaining();
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= expires_at {
            conn.error(pb::ErrorCode::TokenExpired, "the token expired", 0);
            conn.request_close(CLOSE_TOKEN_EXPIRED, "token expired");
            return;
        }
        let (stalled, in_flight) = lock(&conn.in_flight).map_or((Duration::ZERO, 0), |(t, n)| (now - t, n));
        let queued = lock(&conn.outbox).bytes() + in_flight;
        if queued > policy.hard_limit_bytes || stalled > policy.max_stall {
            stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ws_slow_disconnects").increment(1);
            tracing::warn!(
                code = "slow_consumer",
                close_code = CLOSE_SLOW,
                queued,
                ?stalled,
                "slow consumer beyond the hard limits; closing"
            );
            conn.request_close(CLOSE_SLOW, "slow consumer: too far behind");
            return;
        }
        let Some(change) = pressure.update(policy, now, queued, stalled) else {
            continue;
        };
        conn.level.store(change.to, Ordering::Relaxed);
        if change.from > 0 {
            stats.at_level[usize::from(change.from - 1)].fetch_sub(1, Ordering::Relaxed);
        }
        if change.to > 0 {
            stats.at_level[usize::from(change.to - 1)].fetch_add(1, Ordering::Relaxed);
        }
        if change.to > change.from {
            stats.backpressure_events.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            code = "degrade_level",
            from = change.from,
            to = change.to,
            queued,
            ?stalled,
            "degradation level changed"
        );
        lock(&conn.outbox).set_conflate(change.to >= 1);
        let mut resync = Vec::new();
        let mut paused = Vec::new();
        if change.to >= 3 {
            // Queued messages of paused subscriptions go now; they re-snapshot on resume.
            let ids: Vec<u32> = lock(&conn.normal).iter().copied().collect();
            let mut outbox = lock(&conn.outbox);
            for id in &ids {
                outbox.drop_sub(*id);
            }
            drop(outbox);
            lock(&conn.paused).extend(ids.iter().copied());
            paused = ids;
        } else if change.from >= 3 {
            resync = std::mem::take(&mut *lock(&conn.paused)).into_iter().collect();
        }
        let interval = if change.to >= 1 {
            policy.sample_interval
        } else {
            policy.batch_interval
        };
        let reason = match change.to {
            0 => "normal: the client keeps up again",
            1 => "sampled: the client is behind; latest value per key",
            2 => "trimmed: the client is far behind; minimal fields only",
            _ => "paused: non-priority subscriptions stopped until the client catches up",
        };
        conn.control(Out::Status(pb::Status {
            level: u32::from(change.to),
            reason: reason.into(),
            paused,
            resync,
            batch_interval_ms: interval.as_millis() as u32,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::fresh_snapshot_subject;

    #[test]
    fn snapshot_keys_map_to_the_aggregators_request_subjects() {
        let f = |k: &str| fresh_snapshot_subject(k);
        assert_eq!(
            f("xy.md.snapshot.shfe").as_deref(),
            Some("xy.md.req.snapshot.shfe")
        );
        assert_eq!(
            f("xy.md.contracts.shfe").as_deref(),
            Some("xy.md.req.contracts.shfe")
        );
        assert_eq!(
            f("lt.md.snapshot.cells").as_deref(),
            Some("lt.md.req.snapshot.cells")
        );
        // Not snapshot keys: a delta subject, a request subject, no prefix.
        for k in [
            "xy.md.tick.shfe.0",
            "xy.md.req.snapshot.shfe",
            "md.snapshot.shfe",
            "xy.md.snapshot",
        ] {
            assert_eq!(f(k), None, "{k}");
        }
    }
}
