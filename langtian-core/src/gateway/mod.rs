//! The browser gateway (seed 002): one WebSocket per browser, authenticated with a JWT whose
//! claims list the subjects it may subscribe to; NATS messages forwarded in binary batches every
//! 16 ms (`langtian.gateway.v1` frames); three levels of slow-consumer degradation per connection
//! ([`degrade`]); `/healthz`, `/metrics`, `/admin/feature-flags` (admin JWT, audited to
//! JetStream), the UI's static files, optional TLS.
//!
//! Each connection has its own queue ([`degrade::Outbox`]) filled by its NATS subscriptions
//! without ever waiting on the socket, and its own writer: a client that stops reading degrades
//! (and in the end is disconnected) alone, the others are not slowed.

pub mod acl;
pub mod auth;
pub mod client_stats;
mod conn;
pub mod degrade;
mod server;
pub mod slots;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub use server::{Gateway, OPENAPI};

use crate::proto::gateway::v1 as pb;

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// HTTP/WebSocket listen address.
    pub listen: SocketAddr,
    /// Token checking.
    pub jwt: auth::JwtConfig,
    /// Degradation thresholds and batch intervals.
    pub degrade: degrade::DegradePolicy,
    /// Origins allowed to open a WebSocket (`*` = any). Empty: the Origin must match the Host
    /// (same origin); requests without an Origin (non-browser clients) are allowed.
    pub allowed_origins: Vec<String>,
    /// Directory of the UI's built files (`index.html` for unknown paths); `None`: a short page.
    pub static_dir: Option<PathBuf>,
    /// Every response carries COOP `same-origin` + COEP `require-corp` (default `true`): the UI
    /// runs cross-origin isolated, with 5 µs timers and its SharedWorker in its own process.
    /// Turn it off when the UI must load cross-origin resources without CORP/CORS headers, be
    /// opened by or open cross-origin windows it talks to, or be framed by a page that is not
    /// isolated itself.
    pub cross_origin_isolation: bool,
    /// TLS certificate chain and private key (PEM); `None`: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Kernel send buffer of each connection's socket (`None`: the kernel's autotuning, up to
    /// `net.ipv4.tcp_wmem`'s maximum). Smaller buffers notice a slow client sooner.
    pub send_buffer_bytes: Option<usize>,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// WebSocket connections the gateway holds at most (more → HTTP 503).
    pub max_connections: usize,
    /// Connections one token subject (`sub`) may hold at most (more → HTTP 429).
    pub max_connections_per_user: usize,
    /// Largest client frame accepted (bytes); larger ones close the connection (1009).
    pub max_frame_bytes: usize,
    /// KV bucket of the aggregator's snapshots (`GetSnapshot`).
    pub snapshot_bucket: String,
    /// KV bucket of the feature flags.
    pub flags_bucket: String,
    /// Subject prefix of audit records (stream `LT_AUDIT` captures `lt.audit.>`).
    pub audit_prefix: String,
}

impl GatewayConfig {
    /// Defaults on `listen` with `jwt`.
    pub fn new(listen: SocketAddr, jwt: auth::JwtConfig) -> Self {
        Self {
            listen,
            jwt,
            degrade: degrade::DegradePolicy::default(),
            allowed_origins: Vec::new(),
            static_dir: None,
            cross_origin_isolation: true,
            tls: None,
            send_buffer_bytes: None,
            max_subscriptions: 256,
            max_connections: 10_000,
            max_connections_per_user: 32,
            max_frame_bytes: 64 << 10,
            snapshot_bucket: "md_snapshots".into(),
            flags_bucket: "lt_feature_flags".into(),
            audit_prefix: "lt.audit".into(),
        }
    }
}

/// Gateway failures (startup; per-connection problems are counted and logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A setting that cannot work; names the setting.
    #[error("gateway setting `{key}`: {reason}")]
    Config {
        /// Which setting.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Binding or serving.
    #[error("gateway on {addr}: {reason}")]
    Serve {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A JetStream or KV call at startup.
    #[error("{what}: {reason}")]
    Nats {
        /// What was being done.
        what: String,
        /// The answer.
        reason: String,
    },
}

/// Counters of a running gateway (also exported as metrics).
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Open WebSocket connections (`ws_active`).
    pub active: AtomicU64,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
    /// Messages forwarded to clients (`ws_msgs_forwarded_total`; `ws_msgs_rate` per second).
    pub forwarded: AtomicU64,
    /// Batches sent.
    pub batches: AtomicU64,
    /// Subscriptions refused by the ACL (`ws_denied_subscriptions`).
    pub denied: AtomicU64,
    /// Upgrades refused for a missing/bad/expired token (`ws_auth_failures`).
    pub auth_failures: AtomicU64,
    /// Malformed client frames (`ws_bad_frames`); each closes its connection.
    pub bad_frames: AtomicU64,
    /// Level increases (`backpressure_events`).
    pub backpressure_events: AtomicU64,
    /// Connections at level 1, 2, 3 now (`slow_consumers` is their sum).
    pub at_level: [AtomicU64; 3],
    /// Connections closed for being too slow (`ws_slow_disconnects`).
    pub slow_disconnects: AtomicU64,
    /// Clients' end-to-end reports recorded (`ui_stats_reports`).
    pub client_reports: AtomicU64,
    /// Source → paint samples in those reports (`ui_tick_to_paint_latency_count`).
    pub client_paint_samples: AtomicU64,
    /// Animation-frame intervals in those reports (`ui_frame_interval_count`).
    pub client_frame_samples: AtomicU64,
    /// Reports refused as out of range (`ws_bad_client_stats`; answered with `ERROR_CODE_BAD_STATS`).
    pub bad_client_stats: AtomicU64,
}

impl GatewayStats {
    /// Connections above level 0.
    pub fn slow_consumers(&self) -> u64 {
        self.at_level.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// The highest level of any connection.
    pub fn max_level(&self) -> u8 {
        (0..3)
            .rev()
            .find(|i| self.at_level[*i].load(Ordering::Relaxed) > 0)
            .map_or(0, |i| i as u8 + 1)
    }
}

/// Encodes a server frame.
pub fn encode_server(kind: pb::server_frame::Kind) -> bytes::Bytes {
    prost::Message::encode_to_vec(&pb::ServerFrame { kind: Some(kind) }).into()
}

/// Decodes a client frame; `Err` names what is wrong.
pub fn decode_client(bytes: &[u8]) -> Result<pb::client_frame::Kind, String> {
    let f: pb::ClientFrame =
        prost::Message::decode(bytes).map_err(|e| format!("not a langtian.gateway.v1.ClientFrame: {e}"))?;
    f.kind.ok_or_else(|| "empty ClientFrame (no kind set)".to_owned())
}
