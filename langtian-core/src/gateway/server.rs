//! The HTTP side: `/ws` (token, origin, upgrade), `/healthz`, `/livez`, `/metrics`,
//! `/admin/feature-flags`, the UI's static files; plain or TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::auth::{AuthError, Claims, Verifier};
use super::tls::{TlsListener, acceptor, tune};
use super::{GatewayConfig, GatewayError, GatewayStats, conn};
use crate::bus::Bus;
use crate::envelope::now_nanos;

/// What every connection and handler shares.
pub(super) struct Shared {
    pub(super) bus: Bus,
    slots: Arc<super::slots::Slots>,
    pub(super) cfg: Arc<GatewayConfig>,
    pub(super) stats: Arc<GatewayStats>,
    pub(super) verifier: Verifier,
    pub(super) snapshots: kv::Store,
    flags: kv::Store,
}

enum Bound {
    Plain(TcpListener),
    Tls(TlsListener),
}

/// A bound gateway, ready to [`Gateway::run`].
///
/// ```no_run
/// # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::gateway::GatewayError> {
/// use langtian_core::gateway::{Gateway, GatewayConfig, GatewayStats, auth::JwtConfig};
/// let cfg = GatewayConfig::new("127.0.0.1:8080".parse().unwrap(), JwtConfig::hs256(b"0123456789abcdef".to_vec()));
/// let gw = Gateway::bind(cfg).await?;
/// println!("WebSocket at {}", gw.ws_url());
/// let (_stop, rx) = tokio::sync::watch::channel(false);
/// gw.run(bus, std::sync::Arc::new(GatewayStats::default()), rx).await?;
/// # Ok(()) }
/// ```
pub struct Gateway {
    bound: Bound,
    local: SocketAddr,
    cfg: GatewayConfig,
    verifier: Verifier,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("local", &self.local).finish()
    }
}

impl Gateway {
    /// Checks the settings and binds the listen address.
    pub async fn bind(cfg: GatewayConfig) -> Result<Self, GatewayError> {
        let verifier =
            Verifier::new(&cfg.jwt).map_err(|reason| GatewayError::Config { key: "jwt", reason })?;
        cfg.degrade.validate().map_err(|reason| GatewayError::Config {
            key: "degrade",
            reason,
        })?;
        for (key, v) in [
            ("max_connections", cfg.max_connections),
            ("max_connections_per_user", cfg.max_connections_per_user),
            ("max_subscriptions", cfg.max_subscriptions),
        ] {
            if v == 0 {
                return Err(GatewayError::Config {
                    key,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if let Some(dir) = &cfg.static_dir
            && !dir.is_dir()
        {
            return Err(GatewayError::Config {
                key: "static_dir",
                reason: format!("{} is not a directory", dir.display()),
            });
        }
        let tcp = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| GatewayError::Serve {
                addr: cfg.listen.to_string(),
                reason: e.to_string(),
            })?;
        let local = tcp.local_addr().map_err(|e| GatewayError::Serve {
            addr: cfg.listen.to_string(),
            reason: e.to_string(),
        })?;
        let bound = match &cfg.tls {
            Some((cert, key)) => {
                let acc = acceptor(cert, key)?;
                Bound::Tls(TlsListener::new(tcp, acc, cfg.send_buffer_bytes).map_err(|e| {
                    GatewayError::Serve {
                        addr: local.to_string(),
                        reason: e.to_string(),
                    }
                })?)
            }
            None => Bound::Plain(tcp),
        };
        Ok(Self {
            bound,
            local,
            cfg,
            verifier,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `http(s)://<addr>` of the UI.
    pub fn http_url(&self) -> String {
        let s = if self.cfg.tls.is_some() { "https" } else { "http" };
        format!("{s}://{}", self.local)
    }

    /// `ws(s)://<addr>/ws`.
    pub fn ws_url(&self) -> String {
        let s = if self.cfg.tls.is_some() { "wss" } else { "ws" };
        format!("{s}://{}/ws", self.local)
    }

    /// Serves until `shutdown` turns true. Creates the snapshot and flag buckets and the audit
    /// stream (`LT_AUDIT` on `<audit_prefix>.>`) when they are missing.
    pub async fn run(
        self,
        bus: Bus,
        stats: Arc<GatewayStats>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), GatewayError> {
        let snapshots = bucket(&bus, &self.cfg.snapshot_bucket, 1).await?;
        let flags = bucket(&bus, &self.cfg.flags_bucket, 10).await?;
        audit_stream(&bus, &self.cfg.audit_prefix).await?;
        let metrics = crate::obs::prometheus().map_err(|e| GatewayError::Config {
            key: "metrics",
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            bus,
            slots: super::slots::Slots::new(self.cfg.max_connections, self.cfg.max_connections_per_user),
            cfg: Arc::new(self.cfg),
            stats,
            verifier: self.verifier,
            snapshots,
            flags,
        });
        let mut app = Router::new()
            .route("/ws", get(ws_upgrade))
            .route("/healthz", get(healthz))
            .route("/livez", get(|| async { "ok" }))
            .route("/metrics", crate::obs::metrics_route(metrics))
            .route(
                "/openapi.yaml",
                get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }),
            )
            .route("/admin/feature-flags", get(flags_list).put(flags_set))
            .route("/admin/feature-flags/{flag}", delete(flags_delete));
        app = match &shared.cfg.static_dir {
            Some(dir) => app.fallback_service(
                tower_http::services::ServeDir::new(dir)
                    .fallback(tower_http::services::ServeFile::new(dir.join("index.html"))),
            ),
            None => app.fallback(get(no_ui)),
        };
        let app = app.with_state(shared.clone());
        let app = if shared.cfg.cross_origin_isolation {
            app.layer(axum::middleware::map_response(cross_origin_isolated))
        } else {
            app
        };
        let ticker = tokio::spawn(metrics_loop(shared.stats.clone()));
        let stop = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        let addr = self.local.to_string();
        tracing::info!(%addr, tls = shared.cfg.tls.is_some(), "gateway listening");
        let r = match self.bound {
            Bound::Plain(l) => {
                use axum::serve::ListenerExt;
                let send_buffer = shared.cfg.send_buffer_bytes;
                let l = l.tap_io(move |s| tune(s, send_buffer));
                axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stop)
                    .await
            }
            Bound::Tls(l) => {
                use axum::serve::ListenerExt;
                // TapIo gives the peer address as ConnectInfo<SocketAddr>.
                let l = l.tap_io(|_| {});
                axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        ticker.abort();
        r.map_err(|e| GatewayError::Serve {
            addr,
            reason: e.to_string(),
        })
    }
}

async fn bucket(bus: &Bus, name: &str, history: i64) -> Result<kv::Store, GatewayError> {
    let js = bus.jetstream();
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| GatewayError::Nats {
        what: format!("creating KV bucket `{name}`"),
        reason: e.to_string(),
    })
}

async fn audit_stream(bus: &Bus, prefix: &str) -> Result<(), GatewayError> {
    let js = bus.jetstream();
    let subject = format!("{prefix}.>");
    if let Ok(mut s) = js.get_stream("LT_AUDIT").await {
        let covered = s
            .info()
            .await
            .map(|i| i.config.subjects.iter().any(|x| super::acl::covers(x, &subject)))
            .unwrap_or(false);
        if covered {
            return Ok(());
        }
        return Err(GatewayError::Nats {
            what: "stream LT_AUDIT".into(),
            reason: format!("exists but does not capture `{subject}`"),
        });
    }
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LT_AUDIT".into(),
        subjects: vec![subject],
        storage: async_nats::jetstream::stream::StorageType::File,
        max_age: Duration::from_secs(365 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| GatewayError::Nats {
        what: "creating stream LT_AUDIT".into(),
        reason: e.to_string(),
    })
}

/// The token of a request: `?token=`, `Authorization: Bearer`, or the `lt_token` cookie.
fn token_of<'a>(q: &'a TokenQuery, headers: &'a HeaderMap) -> Option<String> {
    if let Some(t) = &q.token {
        return Some(t.clone());
    }
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("lt_token=").map(str::to_owned))
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn authenticate(shared: &Shared, q: &TokenQuery, headers: &HeaderMap) -> Result<Claims, AuthError> {
    let token = token_of(q, headers).ok_or(AuthError::Missing)?;
    shared.verifier.verify(&token)
}

/// The OpenAPI 3.0 document of these endpoints (`docs/openapi/gateway.yaml`), served at
/// `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi/gateway.yaml");

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn origin_allowed(cfg: &GatewayConfig, headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if cfg.allowed_origins.iter().any(|o| o == "*" || o == origin) {
        return Ok(());
    }
    if cfg.allowed_origins.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let authority = origin.split("://").nth(1).unwrap_or("");
        if !host.is_empty() && authority == host {
            return Ok(());
        }
    }
    Err(format!("origin `{origin}` is not allowed"))
}

async fn ws_upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(m) = origin_allowed(&shared.cfg, &headers) {
        metrics::counter!("ws_origin_refused").increment(1);
        tracing::warn!(code = "origin_refused", %peer, reason = %m, "WebSocket refused");
        return refuse(StatusCode::FORBIDDEN, m);
    }
    let claims = match authenticate(&shared, &q, &headers) {
        Ok(c) => c,
        Err(e) => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ws_auth_failures", "reason" => e.kind()).increment(1);
            tracing::warn!(target: "audit", code = e.code(), %peer, reason = %e, "WebSocket authentication failed");
            return refuse(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    // A slot is held from before the upgrade until the connection ends (dropped with the closure
    // if the upgrade fails), so a burst of upgrades cannot overshoot the limits.
    let slot = match shared.slots.try_take(&claims.sub) {
        Ok(s) => s,
        Err(e) => {
            let (status, scope, code) = match e {
                super::slots::SlotError::Total { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "total", "capacity_total")
                }
                super::slots::SlotError::User { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "user", "capacity_user")
                }
            };
            metrics::counter!("ws_capacity_refused", "scope" => scope).increment(1);
            tracing::warn!(code, %peer, user = %claims.sub, reason = %e, "WebSocket refused");
            return refuse(status, e.to_string());
        }
    };
    let max = shared.cfg.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| conn::serve(socket, claims, peer.to_string(), shared, slot))
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let connected = shared.bus.client().connection_state() == async_nats::connection::State::Connected;
    let body = serde_json::json!({
        "status": if connected { "ok" } else { "not_ready" },
        "nats_connected": connected,
        "ws_active": shared.stats.active.load(Ordering::Relaxed),
        "degrade_level": shared.stats.max_level(),
    });
    let code = if connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// Every response carries COOP `same-origin` and COEP `require-corp` (unless
/// `GatewayConfig::cross_origin_isolation` is off): the UI (same-origin files only) runs
/// cross-origin isolated, so its pages and SharedWorker get 5 µs timers instead of
/// 0.1 ms ones (the frame and latency figures of the browser benchmark need them).
async fn cross_origin_isolated(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-embedder-policy",
        HeaderValue::from_static("require-corp"),
    );
    res
}

async fn no_ui() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Langtian gateway</title><h1>Langtian gateway</h1>\
         <p>The web UI is not built here (run <code>scripts/setup.sh</code>, or pass <code>--ui-dir</code>).</p>\
         <p>WebSocket: <code>/ws?token=…</code> · <a href=\"/healthz\">/healthz</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/openapi.yaml\">/openapi.yaml</a></p>",
    )
}

/// A refused admin request: status and message.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

fn admin(shared: &Shared, q: &TokenQuery, headers: &HeaderMap) -> Result<Claims, Refusal> {
    let r =
        authenticate(shared, q, headers).and_then(|c| if c.admin { Ok(c) } else { Err(AuthError::NotAdmin) });
    r.map_err(|e| {
        metrics::counter!("admin_auth_failures", "reason" => e.kind()).increment(1);
        tracing::warn!(target: "audit", code = e.code(), reason = %e, "admin request refused");
        let code = if matches!(e, AuthError::NotAdmin) {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        Refusal(code, e.to_string())
    })
}

fn flag_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
}

async fn flag_value(flags: &kv::Store, name: &str) -> serde_json::Value {
    match flags.get(name).await {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        _ => serde_json::Value::Null,
    }
}

async fn flags_list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&shared, &q, &headers) {
        return r.into_response();
    }
    let mut out = serde_json::Map::new();
    match shared.flags.keys().await {
        Ok(mut keys) => {
            while let Some(k) = keys.next().await {
                // A broken listing is an error, never a silently shorter list.
                let k = match k {
                    Ok(k) => k,
                    Err(e) => {
                        return refuse(StatusCode::SERVICE_UNAVAILABLE, format!("listing the flags: {e}"));
                    }
                };
                let v = flag_value(&shared.flags, &k).await;
                out.insert(k, v);
            }
        }
        Err(e) => {
            let text = e.to_string();
            // An empty bucket has no keys; anything else is a failure.
            if !text.contains("no keys") {
                return refuse(StatusCode::SERVICE_UNAVAILABLE, text);
            }
        }
    }
    axum::Json(serde_json::Value::Object(out)).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagChange {
    flag: String,
    value: serde_json::Value,
}

/// Publishes an audit record and waits for JetStream to store it.
async fn audit(shared: &Shared, record: serde_json::Value) -> Result<(), Refusal> {
    let subject = format!("{}.feature_flags", shared.cfg.audit_prefix);
    let js = shared.bus.jetstream();
    let stored = match js.publish(subject, record.to_string().into()).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    stored.map_err(|e| {
        tracing::error!(code = "audit_store_failed", error = %e, "audit record not stored; change refused");
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("audit record not stored: {e}"),
        )
    })
}

async fn flags_set(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let who = match admin(&shared, &q, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let change: FlagChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"flag\": name, \"value\": JSON}}: {e}"),
            );
        }
    };
    if !flag_name_ok(&change.flag) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("flag name `{}` must be 1–64 of [A-Za-z0-9_.-]", change.flag),
        );
    }
    let old = flag_value(&shared.flags, &change.flag).await;
    let record = serde_json::json!({
        "ts": now_nanos(), "actor": who.sub, "action": "set",
        "flag": change.flag, "old": old, "new": change.value,
    });
    if let Err(r) = audit(&shared, record).await {
        return r.into_response();
    }
    match shared
        .flags
        .put(&change.flag, change.value.to_string().into())
        .await
    {
        Ok(rev) => {
            tracing::info!(target: "audit", user = %who.sub, flag = %change.flag, "feature flag set");
            axum::Json(serde_json::json!({ "flag": change.flag, "value": change.value, "revision": rev }))
                .into_response()
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn flags_delete(
    State(shared): State<Arc<Shared>>,
    Path(flag): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&shared, &q, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if !flag_name_ok(&flag) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("flag name `{flag}` is not valid"),
        );
    }
    let old = flag_value(&shared.flags, &flag).await;
    let record = serde_json::json!({
        "ts": now_nanos(), "actor": who.sub, "action": "delete", "flag": flag, "old": old, "new": null,
    });
    if let Err(r) = audit(&shared, record).await {
        return r.into_response();
    }
    match shared.flags.delete(&flag).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Exports the counters every second and computes `ws_msgs_rate`.
async fn metrics_loop(stats: Arc<GatewayStats>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (std::time::Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let fwd = stats.forwarded.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        metrics::gauge!("ws_msgs_rate").set((fwd - last.1) as f64 / dt);
        last = (now, fwd);
        metrics::gauge!("ws_active").set(stats.active.load(Ordering::Relaxed) as f64);
        metrics::counter!("ws_msgs_forwarded_total").absolute(fwd);
        // The same count under seed 002's name (its Prometheus minimum field set).
        metrics::counter!("xy_ws_messages_forwarded_total").absolute(fwd);
        metrics::gauge!("slow_consumers").set(stats.slow_consumers() as f64);
        metrics::gauge!("degrade_level").set(f64::from(stats.max_level()));
        metrics::counter!("backpressure_events").absolute(stats.backpressure_events.load(Ordering::Relaxed));
    }
}
