//! UDP ingestion: datagrams → envelopes → JetStream.
//!
//! One task reads the socket and decodes (see [`Decoder`]); it never waits for the network: it
//! hands each envelope to a bounded buffer and, when the buffer is full, drops it and counts
//! the drop. A second task publishes from the buffer with QoS 1 (or 2) through a
//! [`PublishWindow`](crate::bus::PublishWindow). When NATS is unreachable the publisher stops
//! taking from the buffer, so the backlog grows while the reader keeps reading; after the
//! client reconnects, the messages the window still held are sent again first (same
//! `Nats-Msg-Id`, so the server stores each once) and the backlog follows in arrival order.
//!
//! Durable store-and-forward across a collector restart is not this buffer's job: for that, run
//! a leaf-node nats-server next to the collector and let the hub's stream source from it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use langtian_core::bus::{Bus, BusOptions};
//! use langtian_core::collector::{Collector, CollectorConfig};
//! let bus = Bus::connect(&BusOptions::new("nats://127.0.0.1:14222")).await?;
//! let collector = Collector::bind(CollectorConfig::new("127.0.0.1:14250".parse()?)).await?;
//! let stats = collector.stats();
//! let (_stop_tx, stop) = tokio::sync::watch::channel(false);
//! let report = collector.run(bus, stop).await?;
//! println!("{} published, {} dropped", report.published, stats.snapshot().dropped);
//! # Ok(()) }
//! ```

mod decode;
mod forward;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

pub use decode::{
    BATTERY_SAMPLE_CONTENT_TYPE, BATTERY_SAMPLE_EVENT_TYPE, DatagramFormat, DecodeError, Decoded, Decoder,
    JsonDefaults,
};

use crate::bus::{Bus, BusError, Qos};

/// Settings of a collector.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Address to bind (`0.0.0.0:14250` for every interface).
    pub listen: SocketAddr,
    /// Requested socket receive buffer (`SO_RCVBUF`), bytes; the kernel caps it at
    /// `net.core.rmem_max`, and the effective size is reported.
    pub recv_buffer_bytes: usize,
    /// What the datagrams hold.
    pub format: DatagramFormat,
    /// Subject prefix: events go to `<prefix>.<event_type>.<source>`.
    pub subject_prefix: String,
    /// 1 (PubAck, retried with the same id) or 2 (also checks the stream's duplicate window).
    pub qos: Qos,
    /// Envelopes the buffer holds while the publisher is behind or NATS is away.
    pub buffer_records: usize,
    /// PubAcks in flight.
    pub publish_window: usize,
    /// How long to wait for a PubAck before re-sending.
    pub ack_timeout: Duration,
    /// JSON record defaults.
    pub json: JsonDefaults,
    /// On stop, how long to keep publishing the backlog (NATS may be away) before giving up
    /// and reporting what was left.
    pub drain_timeout: Duration,
}

impl CollectorConfig {
    /// Defaults for `listen`: 8 MiB receive buffer, auto format, `lt.evt`, QoS 1, 200k buffer,
    /// window 1024, ack timeout 5 s, drain 10 s.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            recv_buffer_bytes: 8 << 20,
            format: DatagramFormat::Auto,
            subject_prefix: "lt.evt".into(),
            qos: Qos::AtLeastOnce,
            buffer_records: 200_000,
            publish_window: 1024,
            ack_timeout: Duration::from_secs(5),
            json: JsonDefaults::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors that stop a collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The socket could not be set up.
    #[error("UDP socket {addr}: {source}")]
    Socket {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("collector config: {0}")]
    Config(String),
    /// Publishing cannot work with this server/stream setup (e.g. QoS 2 on a stream whose
    /// duplicate window is too short, or no stream for the subjects).
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Live counters, shared with whoever wants to watch (status lines, metrics, tests).
#[derive(Debug, Default)]
pub struct CollectorStats {
    datagrams: AtomicU64,
    records: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    publish_errors: AtomicU64,
    /// Envelopes put into the buffer / taken out by the publisher.
    queued: AtomicU64,
    dequeued: AtomicU64,
    /// Envelopes the publisher holds (queued again + awaiting PubAck).
    held: AtomicU64,
    connected: AtomicBool,
    kernel_drops: AtomicU64,
}

/// A point-in-time copy of [`CollectorStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectorSnapshot {
    /// Datagrams read from the socket.
    pub datagrams: u64,
    /// Records decoded into envelopes.
    pub records: u64,
    /// Envelopes the server confirmed (duplicates included).
    pub published: u64,
    /// Of those, ones the server already had (same `Nats-Msg-Id` within its window).
    pub duplicates: u64,
    /// Records or datagrams rejected by the decoder.
    pub malformed: u64,
    /// Envelopes dropped because the buffer was full.
    pub dropped: u64,
    /// Publish attempts that failed and were queued again.
    pub publish_errors: u64,
    /// Envelopes waiting: buffered, queued again or awaiting their PubAck.
    pub backlog: u64,
    /// Whether the NATS connection is up.
    pub connected: bool,
    /// Datagrams the kernel dropped on this socket because its receive buffer was full
    /// (Linux `/proc/net/udp`; 0 elsewhere).
    pub kernel_drops: u64,
}

impl CollectorStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> CollectorSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CollectorSnapshot {
            datagrams: l(&self.datagrams),
            records: l(&self.records),
            published: l(&self.published),
            duplicates: l(&self.duplicates),
            malformed: l(&self.malformed),
            dropped: l(&self.dropped),
            publish_errors: l(&self.publish_errors),
            backlog: l(&self.queued).saturating_sub(l(&self.dequeued)) + l(&self.held),
            connected: self.connected.load(Ordering::Relaxed),
            kernel_drops: l(&self.kernel_drops),
        }
    }
}

/// What a collector did, returned when it stops.
#[derive(Debug, Clone)]
pub struct CollectorReport {
    /// Final counters.
    pub stats: CollectorSnapshot,
    /// Envelopes confirmed by the server.
    pub published: u64,
    /// Envelopes still unpublished when the drain timeout ran out (NATS away at shutdown).
    pub unpublished_at_stop: u64,
}

/// A bound collector socket.
#[derive(Debug)]
pub struct Collector {
    socket: UdpSocket,
    cfg: CollectorConfig,
    stats: Arc<CollectorStats>,
    local: SocketAddr,
    recv_buffer: usize,
}

impl Collector {
    /// Binds the socket (with the requested receive buffer).
    pub async fn bind(cfg: CollectorConfig) -> Result<Self, CollectorError> {
        if cfg.buffer_records == 0 || cfg.publish_window == 0 {
            return Err(CollectorError::Config(
                "buffer_records and publish_window must be at least 1".into(),
            ));
        }
        if cfg.qos == Qos::AtMostOnce {
            return Err(CollectorError::Config(
                "the collector publishes with QoS 1 or 2 (QoS 0 would lose data silently)".into(),
            ));
        }
        let sock_err = |source| CollectorError::Socket {
            addr: cfg.listen.to_string(),
            source,
        };
        let domain = socket2::Domain::for_address(cfg.listen);
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
            .map_err(sock_err)?;
        // Best effort: the kernel caps it; what we got is reported below.
        let _ = s.set_recv_buffer_size(cfg.recv_buffer_bytes);
        s.set_nonblocking(true).map_err(sock_err)?;
        s.bind(&cfg.listen.into()).map_err(sock_err)?;
        let recv_buffer = s.recv_buffer_size().unwrap_or(0);
        let socket = UdpSocket::from_std(s.into()).map_err(sock_err)?;
        let local = socket.local_addr().map_err(sock_err)?;
        if recv_buffer < cfg.recv_buffer_bytes {
            tracing::warn!(
                code = "recv_buffer_capped",
                requested = cfg.recv_buffer_bytes,
                effective = recv_buffer,
                "UDP receive buffer capped by the kernel; raise net.core.rmem_max for bursty senders"
            );
        }
        Ok(Self {
            socket,
            cfg,
            stats: Arc::new(CollectorStats::default()),
            local,
            recv_buffer,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's effective receive buffer in bytes, as the kernel reports it.
    pub fn recv_buffer_bytes(&self) -> usize {
        self.recv_buffer
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<CollectorStats> {
        self.stats.clone()
    }

    /// Reads, decodes and publishes until `stop` turns true, then publishes the backlog (for
    /// at most `drain_timeout`) and returns the totals.
    pub async fn run(self, bus: Bus, stop: watch::Receiver<bool>) -> Result<CollectorReport, CollectorError> {
        let Collector {
            socket,
            cfg,
            stats,
            local,
            ..
        } = self;
        let (tx, rx) = mpsc::channel(cfg.buffer_records);
        // Not known before the first connection (the collector may start while NATS is away).
        let max = match bus.max_payload() {
            0 => 1 << 20,
            m => m,
        };
        // Room for the headers the envelope carries.
        let limit = max.saturating_sub(1024).max(1024);
        let decoder = Decoder::new(cfg.format, &cfg.subject_prefix)
            .with_json(cfg.json.clone())
            .with_max_message_bytes(limit);
        let span = tracing::info_span!("collector", listen = %local);
        let reader = tokio::spawn(
            read_loop(socket, decoder, tx, stats.clone(), stop.clone()).instrument(span.clone()),
        );
        let watcher = tokio::spawn(watch_loop(bus.clone(), local, stats.clone(), stop.clone()));
        let forwarded = forward::forward(bus, &cfg, rx, stats.clone(), stop)
            .instrument(span)
            .await;
        // Normally the reader has ended (stop); after a fatal publish error it is stopped here.
        reader.abort();
        let _ = reader.await;
        watcher.abort();
        let left = forwarded?;
        let snap = stats.snapshot();
        Ok(CollectorReport {
            stats: snap,
            published: snap.published,
            unpublished_at_stop: left,
        })
    }
}

async fn read_loop(
    socket: UdpSocket,
    mut decoder: Decoder,
    tx: mpsc::Sender<crate::bus::OutgoingMessage>,
    stats: Arc<CollectorStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut last_warn = Instant::now() - Duration::from_secs(10);
    let mut suppressed = 0u64;
    loop {
        let (n, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends and similar are per-datagram; keep reading.
                    tracing::debug!(error = %e, "recv_from failed");
                    continue;
                }
            },
        };
        stats.datagrams.fetch_add(1, Ordering::Relaxed);
        let decoded = decoder.decode(&buf[..n], peer.ip(), crate::envelope::now_nanos());
        if !decoded.errors.is_empty() {
            stats
                .malformed
                .fetch_add(decoded.errors.len() as u64, Ordering::Relaxed);
            #[cfg(feature = "obs")]
            for e in &decoded.errors {
                metrics::counter!("collector_malformed", "reason" => e.kind()).increment(1);
            }
            if last_warn.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(code = "malformed_datagram", %peer, error = %decoded.errors[0], also_suppressed = suppressed, "malformed datagram");
                last_warn = Instant::now();
                suppressed = 0;
            } else {
                suppressed += decoded.errors.len() as u64;
            }
        }
        stats
            .records
            .fetch_add(decoded.messages.len() as u64, Ordering::Relaxed);
        for m in decoded.messages {
            match tx.try_send(m) {
                Ok(()) => {
                    stats.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

/// Keeps `connected`, `kernel_drops` and the Prometheus counters current.
async fn watch_loop(
    bus: Bus,
    local: SocketAddr,
    stats: Arc<CollectorStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        let up = bus.client().connection_state() == async_nats::connection::State::Connected;
        stats.connected.store(up, Ordering::Relaxed);
        if let Some(d) = kernel_drops(local) {
            stats.kernel_drops.store(d, Ordering::Relaxed);
        }
        #[cfg(feature = "obs")]
        publish_metrics(&stats.snapshot());
    }
}

#[cfg(feature = "obs")]
fn publish_metrics(s: &CollectorSnapshot) {
    metrics::counter!("collector_datagrams_received").absolute(s.datagrams);
    metrics::counter!("collector_records_received").absolute(s.records);
    metrics::counter!("collector_records_published").absolute(s.published);
    metrics::counter!("collector_duplicates").absolute(s.duplicates);
    metrics::counter!("collector_dropped").absolute(s.dropped);
    metrics::counter!("collector_publish_errors").absolute(s.publish_errors);
    metrics::counter!("collector_kernel_drops").absolute(s.kernel_drops);
    metrics::gauge!("collector_backlog").set(s.backlog as f64);
    metrics::gauge!("collector_connected").set(if s.connected { 1.0 } else { 0.0 });
}

/// Datagrams the kernel dropped on the UDP socket bound to `local` (Linux `/proc/net/udp` and
/// `/proc/net/udp6`, column `drops`). `None` where that is not available.
pub fn kernel_drops(local: SocketAddr) -> Option<u64> {
    let file = if local.is_ipv4() {
        "/proc/net/udp"
    } else {
        "/proc/net/udp6"
    };
    let text = std::fs::read_to_string(file).ok()?;
    let port = format!(":{:04X}", local.port());
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_col = cols.get(1)?;
            if local_col.ends_with(&port) {
                cols.last()?.parse::<u64>().ok()
            } else {
                None
            }
        })
        .reduce(|a, b| a + b)
}
