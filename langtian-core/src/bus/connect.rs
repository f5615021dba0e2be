use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::Deserialize;

use super::BusError;
use super::reachability::{Reachability, redact_url};

/// How long a stopping service waits for the server to confirm its last publishes
/// ([`Bus::flush_on_exit`]).
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// TLS settings for the NATS connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Require TLS even if the URL says `nats://`.
    #[serde(default)]
    pub required: bool,
    /// CA certificate(s) (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Do the TLS handshake before the server's INFO (`handshake_first` on the server).
    #[serde(default)]
    pub handshake_first: bool,
}

/// How to reach NATS: URLs plus one of token, user/password, NKey seed or creds file, and TLS.
///
/// ```
/// use langtian_core::bus::BusOptions;
/// let mut o = BusOptions::new("nats://n1:4222,nats://n2:4222");
/// o.user = Some("svc".into());
/// o.password = Some("secret".into());
/// assert_eq!(o.urls.len(), 2);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusOptions {
    /// Server URLs (`nats://`, `tls://`, `ws://`).
    pub urls: Vec<String>,
    /// Client name shown in the server's connection list.
    #[serde(default)]
    pub name: Option<String>,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<String>,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`).
    #[serde(default)]
    pub password: Option<String>,
    /// NKey seed (`SU...`).
    #[serde(default)]
    pub nkey_seed: Option<String>,
    /// File holding an NKey seed (read when connecting; `lt up` keeps its services' seeds in
    /// `<data dir>/nats/keys/<service>.nk`).
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// Credentials file (user JWT + NKey seed) for operator mode.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// TLS.
    #[serde(default)]
    pub tls: TlsOptions,
    /// Timeout for JetStream API requests and PubAcks.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Keep retrying the first connection instead of failing at once.
    #[serde(default)]
    pub retry_on_initial_connect: bool,
    /// Max outstanding PubAcks per connection (JetStream context semaphore).
    #[serde(default = "default_max_ack_inflight")]
    pub max_ack_inflight: usize,
    /// Inbox prefix instead of `_INBOX` (an identity whose NATS permissions give it its own
    /// inbox subjects: see [`access::inbox_prefix`](super::access::inbox_prefix)).
    #[serde(default)]
    pub inbox_prefix: Option<String>,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The range `request_timeout` may take: below it every JetStream request would time out on a
/// busy server, above it a lost PubAck holds a publisher for longer than any caller waits.
pub const REQUEST_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(600);
fn default_max_ack_inflight() -> usize {
    8192
}

impl BusOptions {
    /// Options for a comma-separated URL list, no auth.
    pub fn new(urls: &str) -> Self {
        Self {
            urls: urls
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            name: None,
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            nkey_seed_file: None,
            creds_file: None,
            tls: TlsOptions::default(),
            request_timeout: default_request_timeout(),
            retry_on_initial_connect: false,
            max_ack_inflight: default_max_ack_inflight(),
            inbox_prefix: None,
        }
    }

    /// Checks the settings that need no server: the URL list and the ranges of the timeouts and
    /// limits ([`Bus::connect`] calls it first).
    pub fn validate(&self) -> Result<(), BusError> {
        if self.urls.is_empty() {
            return Err(BusError::Options("no server URL given".into()));
        }
        if !REQUEST_TIMEOUT_RANGE.contains(&self.request_timeout) {
            return Err(BusError::Options(format!(
                "request_timeout {} is out of range: {} – {}",
                humantime::format_duration(self.request_timeout),
                humantime::format_duration(*REQUEST_TIMEOUT_RANGE.start()),
                humantime::format_duration(*REQUEST_TIMEOUT_RANGE.end()),
            )));
        }
        if !(1..=1_000_000).contains(&self.max_ack_inflight) {
            return Err(BusError::Options(format!(
                "max_ack_inflight {} is out of range: 1 – 1000000",
                self.max_ack_inflight
            )));
        }
        Ok(())
    }

    async fn to_async_nats(&self, denials: Arc<Denials>) -> Result<async_nats::ConnectOptions, BusError> {
        let name = self.name.clone().unwrap_or_default();
        let urls = self
            .urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let reach = Arc::new(Mutex::new(Reachability::new(Instant::now())));
        let mut o = async_nats::ConnectOptions::new()
            .request_timeout(Some(self.request_timeout))
            .subscription_capacity(256 * 1024)
            .event_callback(move |ev| {
                let (denials, name, urls, reach) = (denials.clone(), name.clone(), urls.clone(), reach.clone());
                async move {
                    match ev {
                        async_nats::Event::ClientError(async_nats::ClientError::Other(reason)) => {
                            let warn = reach.lock().map(|mut r| r.on_failure(Instant::now())).ok().flatten();
                            match warn {
                                Some(w) => tracing::warn!(
                                    code = "nats_unreachable",
                                    client = %name,
                                    urls = %urls,
                                    down_s = w.down_for.as_secs(),
                                    attempts = w.attempts,
                                    reason = %reason,
                                    "no NATS server answers at these URLs; still trying (check --nats-url and that the server runs)"
                                ),
                                None => tracing::debug!(reason = %reason, "nats connection attempt failed"),
                            }
                        }
                        async_nats::Event::Disconnected => {
                            if let Ok(mut r) = reach.lock() {
                                r.on_disconnected(Instant::now());
                            }
                            tracing::debug!("nats connection lost");
                        }
                        async_nats::Event::Connected => {
                            let outage = reach.lock().map(|mut r| r.on_connected(Instant::now())).ok().flatten();
                            if let Some(d) = outage {
                                tracing::info!(
                                    code = "nats_reachable",
                                    client = %name,
                                    urls = %urls,
                                    down_s = d.as_secs(),
                                    "connected to NATS again"
                                );
                            }
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            tracing::warn!(
                                code = "client_slow_consumer",
                                sid,
                                "slow consumer: the client dropped messages"
                            )
                        }
                        async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                            if is_permission_violation(&text) =>
                        {
                            denials.record(&text);
                            #[cfg(feature = "obs")]
                            metrics::counter!("nats_permission_violations", "client" => name.clone())
                                .increment(1);
                            tracing::warn!(
                                target: "audit",
                                code = "nats_permission_denied",
                                client = %name,
                                reason = %text,
                                "nats-server refused an operation this connection's user is not allowed"
                            )
                        }
                        other => tracing::debug!(event = %other, "nats connection event"),
                    }
                }
            });
        if let Some(n) = &self.name {
            o = o.name(n);
        }
        if let Some(p) = &self.inbox_prefix {
            o = o.custom_inbox_prefix(p.clone());
        }
        let auth_count = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey_seed.is_some() || self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if auth_count > 1 || (self.nkey_seed.is_some() && self.nkey_seed_file.is_some()) {
            return Err(BusError::Options(
                "choose one of token, user/password, nkey_seed, nkey_seed_file, creds_file".into(),
            ));
        }
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => o = o.user_and_password(u.clone(), p.clone()),
            (None, None) => {}
            _ => {
                return Err(BusError::Options(
                    "user and password must be given together".into(),
                ));
            }
        }
        let from_file = match &self.nkey_seed_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| BusError::Options(format!("nkey seed file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        if let Some(seed) = self.nkey_seed.as_ref().or(from_file.as_ref()) {
            if !seed.starts_with("SU") {
                return Err(BusError::Options(
                    "nkey_seed must be a user seed starting with `SU`".into(),
                ));
            }
            o = o.nkey(seed.clone());
        }
        if let Some(path) = &self.creds_file {
            o = o
                .credentials_file(path)
                .await
                .map_err(|e| BusError::Options(format!("creds file {}: {e}", path.display())))?;
        }
        if self.tls.required {
            o = o.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => o = o.add_client_certificate(c.clone(), k.clone()),
            (None, None) => {}
            _ => {
                return Err(BusError::Options(
                    "tls.cert_file and tls.key_file must be given together".into(),
                ));
            }
        }
        if self.tls.handshake_first {
            o = o.tls_first();
        }
        if self.retry_on_initial_connect {
            o = o.retry_on_initial_connect();
        }
        Ok(o)
    }
}

/// A connection to NATS with its JetStream context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    denials: Arc<Denials>,
}

/// The permission violations the server reported on one connection: how many, the recently
/// refused publish subjects (so a publish waiting for its PubAck can fail at once with
/// [`BusError::PermissionDenied`] instead of timing out), and a wake-up for those waiting.
#[derive(Debug, Default)]
pub(crate) struct Denials {
    /// The connection's inbox prefix (`_INBOX` unless set).
    inbox_prefix: String,
    /// Set when the server refused the subscription to the connection's own inbox: no reply
    /// (PubAck, JetStream answer) can reach it.
    inbox_refused: std::sync::atomic::AtomicBool,
    count: AtomicU64,
    recent: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, String)>>,
    changed: tokio::sync::Notify,
}

impl Denials {
    const RECENT: usize = 64;

    fn new(inbox_prefix: Option<&str>) -> Self {
        Self {
            inbox_prefix: inbox_prefix.unwrap_or("_INBOX").to_owned(),
            ..Self::default()
        }
    }

    fn record(&self, text: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if refused_subscription(text).is_some_and(|s| s.starts_with(&format!("{}.", self.inbox_prefix))) {
            self.inbox_refused.store(true, Ordering::Relaxed);
        }
        if let Some(subject) = refused_publish_subject(text)
            && let Ok(mut r) = self.recent.lock()
        {
            if r.len() == Self::RECENT {
                r.pop_front();
            }
            r.push_back((std::time::Instant::now(), subject.to_owned()));
        }
        self.changed.notify_waiters();
    }

    /// The inbox prefix, when the server refused this connection's subscription to its inbox.
    pub(crate) fn inbox_refused(&self) -> Option<&str> {
        self.inbox_refused
            .load(Ordering::Relaxed)
            .then_some(self.inbox_prefix.as_str())
    }

    /// Whether a publish to `subject` was refused at or after `since`.
    pub(crate) fn refused_since(&self, subject: &str, since: std::time::Instant) -> bool {
        self.recent
            .lock()
            .map(|r| r.iter().any(|(t, s)| *t >= since && s == subject))
            .unwrap_or(false)
    }

    /// Resolves with the reason when a publish to `subject` made at or after `since` cannot
    /// be confirmed: the server refused the publish, or refused the connection's inbox (where
    /// the PubAck would arrive).
    pub(crate) async fn refused(&self, subject: &str, since: std::time::Instant) -> BusError {
        loop {
            let wake = self.changed.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if self.refused_since(subject, since) {
                return BusError::PermissionDenied {
                    subject: subject.to_owned(),
                };
            }
            if let Some(prefix) = self.inbox_refused() {
                return BusError::InboxDenied {
                    inbox_prefix: prefix.to_owned(),
                };
            }
            wake.await;
        }
    }
}

/// The subject of `Permissions Violation for Publish to "<subject>"`.
fn refused_publish_subject(text: &str) -> Option<&str> {
    quoted_after(text, "for publish to ")
}

/// The subject of `Permissions Violation for Subscription to "<subject>"`.
fn refused_subscription(text: &str) -> Option<&str> {
    quoted_after(text, "for subscription to ")
}

fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find(marker)? + marker.len();
    let rest = text.get(at..)?.trim();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    Some(rest.split('"').next().unwrap_or(rest).trim())
}

/// Whether a server error is a permissions violation (`Permissions Violation for Publish to …`,
/// `… for Subscription to …`).
fn is_permission_violation(text: &str) -> bool {
    text.to_ascii_lowercase().contains("permissions violation")
}

impl Bus {
    /// Connects with the given options.
    pub async fn connect(opts: &BusOptions) -> Result<Self, BusError> {
        opts.validate()?;
        let denials = Arc::new(Denials::new(opts.inbox_prefix.as_deref()));
        let o = opts.to_async_nats(denials.clone()).await?;
        let client = o
            .connect(opts.urls.clone())
            .await
            .map_err(|e| BusError::Connect {
                urls: opts.urls.join(","),
                reason: e.to_string(),
            })?;
        let mut bus = Self::from_client(client, opts);
        bus.denials = denials;
        Ok(bus)
    }

    /// [`connect`](Self::connect), giving up after `limit` with [`BusError::Connect`]
    /// ("no NATS server answered within … ms") — what the SDKs' `connect` does.
    pub async fn connect_within(opts: &BusOptions, limit: std::time::Duration) -> Result<Self, BusError> {
        match tokio::time::timeout(limit, Self::connect(opts)).await {
            Ok(r) => r,
            Err(_) => Err(BusError::Connect {
                urls: opts.urls.join(","),
                reason: format!("no NATS server answered within {} ms", limit.as_millis()),
            }),
        }
    }

    /// Wraps an existing client.
    pub fn from_client(client: async_nats::Client, opts: &BusOptions) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(opts.request_timeout)
            .max_ack_inflight(opts.max_ack_inflight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Self {
            client,
            js,
            denials: Arc::default(),
        }
    }

    /// How many operations nats-server refused on this connection because its user lacks the
    /// permission (each is also logged with code `nats_permission_denied` and counted in
    /// `nats_permission_violations`). Counted only on connections made by [`connect`](Self::connect).
    pub fn permission_denials(&self) -> u64 {
        self.denials.count.load(Ordering::Relaxed)
    }

    pub(crate) fn denials(&self) -> &Denials {
        &self.denials
    }

    /// Resolves when the server refuses a publish to `subject` made at or after `since`
    /// ([`BusError::PermissionDenied`]), or this connection's inbox ([`BusError::InboxDenied`]):
    /// race it against a request, which would otherwise wait for its timeout.
    pub async fn refusal(&self, subject: &str, since: std::time::Instant) -> BusError {
        self.denials.refused(subject, since).await
    }

    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The server's `max_payload` in bytes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Flushes buffered core publishes to the socket.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| BusError::Api {
            what: "flushing the connection".into(),
            reason: e.to_string(),
        })
    }

    /// Flushes for a process on its way out: at once an error when the connection is down, and
    /// at most `limit` otherwise. [`flush`](Self::flush) waits for the server's answer, and
    /// while async-nats is reconnecting that answer only comes after the next reconnect — a
    /// service stopped during an outage would never exit.
    ///
    /// ```no_run
    /// # async fn f(bus: langtian_core::bus::Bus) {
    /// let _ = bus.flush_on_exit(std::time::Duration::from_secs(2)).await;
    /// # }
    /// ```
    pub async fn flush_on_exit(&self, limit: Duration) -> Result<(), BusError> {
        let err = |reason: String| BusError::Api {
            what: "flushing the connection before exit".into(),
            reason,
        };
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(err("not connected; what was not sent is lost".into()));
        }
        match tokio::time::timeout(limit, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(err(format!("no answer from the server within {limit:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_out_of_range_are_refused_naming_the_setting() {
        let ok = BusOptions::new("nats://127.0.0.1:4222");
        assert!(ok.validate().is_ok());
        let err = |o: BusOptions| o.validate().unwrap_err().to_string();
        assert!(err(BusOptions::new(" , ")).contains("no server URL"));
        for bad in [Duration::ZERO, Duration::from_millis(9), Duration::from_secs(601)] {
            let o = BusOptions {
                request_timeout: bad,
                ..ok.clone()
            };
            let e = err(o);
            assert!(e.contains("request_timeout") && e.contains("out of range"), "{e}");
        }
        for good in [Duration::from_millis(10), Duration::from_secs(600)] {
            let o = BusOptions {
                request_timeout: good,
                ..ok.clone()
            };
            assert!(o.validate().is_ok());
        }
        let o = BusOptions {
            max_ack_inflight: 0,
            ..ok.clone()
        };
        assert!(err(o).contains("max_ack_inflight 0"));
    }

    #[test]
    fn the_refused_subject_is_read_from_the_servers_error() {
        assert_eq!(
            refused_publish_subject(r#"Permissions Violation for Publish to "xy.md.tick.shfe.0""#),
            Some("xy.md.tick.shfe.0")
        );
        assert_eq!(
            refused_publish_subject(r#"Permissions Violation for Subscription to "lt.evt.>""#),
            None
        );
        assert!(is_permission_violation(
            "permissions violation for publish to \"a\""
        ));
        assert!(!is_permission_violation("maximum payload exceeded"));
    }

    #[tokio::test]
    async fn a_waiting_publish_learns_of_its_refusal() {
        let d = Arc::new(Denials::new(None));
        let since = std::time::Instant::now();
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.refused("a.b", since).await })
        };
        d.record(r#"Permissions Violation for Publish to "other""#);
        d.record(r#"Permissions Violation for Publish to "a.b""#);
        let why = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(why, BusError::PermissionDenied { subject } if subject == "a.b"));
        assert_eq!(d.count.load(Ordering::Relaxed), 2);
        // A refusal from before the publish does not count against it.
        assert!(!d.refused_since("a.b", std::time::Instant::now()));
        // A refused inbox means no PubAck can arrive: that ends the wait too, naming the prefix.
        let d = Denials::new(Some("_LT.x"));
        d.record(r#"Permissions Violation for Subscription to "_INBOX.abc.*""#);
        assert_eq!(d.inbox_refused(), None, "not this connection's inbox");
        d.record(r#"Permissions Violation for Subscription to "_LT.x.abc.*""#);
        let why = tokio::time::timeout(
            Duration::from_secs(5),
            d.refused("a.b", std::time::Instant::now()),
        )
        .await
        .unwrap();
        assert!(matches!(why, BusError::InboxDenied { inbox_prefix } if inbox_prefix == "_LT.x"));
    }
}
