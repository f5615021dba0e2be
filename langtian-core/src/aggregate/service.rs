//! The aggregator as a running service: one task per feed ([`super::feed`]), counters, and the
//! snapshot bucket.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_nats::jetstream::kv;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::feed::{Decode, decode_contract, decode_sample, decode_tick, run_feed};
use super::records::MdRecord;
use super::{AggregateError, AggregatorConfig, FeedConfig};
use crate::bus::Bus;
use crate::proto::battery::v1::ChannelSample;
use crate::proto::md::v1::{Contract, Tick};

/// Counters of one feed (shared with status lines and tests; also exported as metrics with the
/// label `feed`).
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Source messages received (`src_ingest_total`).
    pub ingested: AtomicU64,
    /// Source messages that could not be decoded (`src_decode_errors`).
    pub decode_errors: AtomicU64,
    /// Duplicates dropped (`src_duplicates`).
    pub duplicates: AtomicU64,
    /// Records re-ordered (`reorder_count`).
    pub reordered: AtomicU64,
    /// Missing sequence numbers (`src_gap`).
    pub gap: AtomicU64,
    /// Deltas published (`deltas_out`).
    pub deltas_out: AtomicU64,
    /// Records in published deltas (`ticks_out`).
    pub ticks_out: AtomicU64,
    /// Snapshots published (`snapshots_out`).
    pub snapshots_out: AtomicU64,
    /// Snapshots that could not be published or stored (`snapshot_errors`).
    pub snapshot_errors: AtomicU64,
    /// Fresh snapshots served on request.
    pub snapshot_requests: AtomicU64,
    /// Keys with a value, over all groups (`md_keys`).
    pub keys: AtomicU64,
    /// Groups restored from KV at start.
    pub restored_groups: AtomicU64,
    /// Set once the feed's consumer is reading.
    pub ready: std::sync::atomic::AtomicBool,
}

/// Counters of every feed.
#[derive(Debug, Default)]
pub struct AggregatorStats {
    /// The tick feed.
    pub ticks: FeedStats,
    /// The battery feed.
    pub battery: FeedStats,
    /// The contract (reference data) feed.
    pub contracts: FeedStats,
}

/// Runs every configured feed until `shutdown` turns true; on the way out each feed publishes
/// a last delta and stores its snapshots.
pub async fn run_aggregator(
    bus: Bus,
    cfg: AggregatorConfig,
    stats: Arc<AggregatorStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AggregateError> {
    cfg.validate()?;
    let kv = snapshot_store(&bus, &cfg.kv_bucket).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let spawn = FeedSpawner {
        bus: &bus,
        cfg: &cfg,
        kv: &kv,
        stats: &stats,
        stop: &shutdown,
    };
    if let Some(f) = &cfg.ticks {
        spawn.feed::<Tick>(&mut tasks, "tick", decode_tick, f, |s| &s.ticks);
    }
    if let Some(f) = &cfg.contracts {
        spawn.feed::<Contract>(&mut tasks, "contract", decode_contract, f, |s| &s.contracts);
    }
    if let Some(f) = &cfg.battery {
        spawn.feed::<ChannelSample>(&mut tasks, "battery", decode_sample, f, |s| &s.battery);
    }
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| AggregateError::Nats {
            what: "aggregator feed task".into(),
            reason: e.to_string(),
        })?;
        if let Err(e) = r {
            tracing::error!(code = "feed_failed", error = %e, "aggregator feed failed");
            first_err.get_or_insert(e);
            tasks.abort_all();
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// What every feed task shares.
struct FeedSpawner<'a> {
    bus: &'a Bus,
    cfg: &'a AggregatorConfig,
    kv: &'a kv::Store,
    stats: &'a Arc<AggregatorStats>,
    stop: &'a watch::Receiver<bool>,
}

impl FeedSpawner<'_> {
    /// Runs feed `name` in `tasks`, counting in the stats `stats_of` picks.
    fn feed<R: MdRecord>(
        &self,
        tasks: &mut tokio::task::JoinSet<Result<(), AggregateError>>,
        name: &'static str,
        decode: Decode<R>,
        feed: &FeedConfig,
        stats_of: fn(&AggregatorStats) -> &FeedStats,
    ) {
        let (bus, cfg, kv, stats, stop, feed) = (
            self.bus.clone(),
            self.cfg.clone(),
            self.kv.clone(),
            self.stats.clone(),
            self.stop.clone(),
            feed.clone(),
        );
        // The span goes with the task (a guard held across awaits would nest the feeds' spans
        // into each other on a shared thread).
        let span =
            tracing::info_span!("aggregate", feed = name, stream = %feed.stream, filter = %feed.filter);
        tasks.spawn(
            async move { run_feed::<R>(name, decode, bus, cfg, feed, kv, stats_of(&stats), stop).await }
                .instrument(span),
        );
    }
}

/// Opens the snapshot bucket, creating it (history 1, file) when it does not exist.
async fn snapshot_store(bus: &Bus, bucket: &str) -> Result<kv::Store, AggregateError> {
    let js = bus.jetstream();
    if let Ok(s) = js.get_key_value(bucket).await {
        return Ok(s);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| AggregateError::Nats {
        what: format!("creating KV bucket `{bucket}`"),
        reason: e.to_string(),
    })
}

/// Options of [`run_aggregator_service`].
#[derive(Debug, Clone)]
pub struct AggregatorServiceOptions {
    /// Where to serve `/metrics` and `/healthz` (`None`: not served).
    pub ops_addr: Option<std::net::SocketAddr>,
    /// How often to print a status line on stderr (`None`: never).
    pub status_every: Option<std::time::Duration>,
    /// Register in KV discovery (`lt_nodes`) with this node id (`None`: do not register).
    pub node_id: Option<String>,
}

/// One status line.
pub fn status_line(s: &AggregatorStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let f = |n: &str, f: &FeedStats| {
        format!(
            "{n}: in {} keys {} deltas {} snapshots {} dup {} reordered {} gap {} bad {}",
            f.ingested.load(Relaxed),
            f.keys.load(Relaxed),
            f.deltas_out.load(Relaxed),
            f.snapshots_out.load(Relaxed),
            f.duplicates.load(Relaxed),
            f.reordered.load(Relaxed),
            f.gap.load(Relaxed),
            f.decode_errors.load(Relaxed),
        )
    };
    format!(
        "{} | {} | {}",
        f("ticks", &s.ticks),
        f("contracts", &s.contracts),
        f("battery", &s.battery)
    )
}

/// Runs the aggregator as a service: `/metrics` + `/healthz` (ready once NATS is connected and
/// every feed reads), node registration, status lines; stops when `shutdown` resolves.
pub async fn run_aggregator_service(
    bus: Bus,
    cfg: AggregatorConfig,
    opts: AggregatorServiceOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Arc<AggregatorStats>, AggregateError> {
    use std::sync::atomic::Ordering::Relaxed;
    cfg.validate()?;
    let stats = Arc::new(AggregatorStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(addr) = opts.ops_addr {
        use crate::obs::{self, Health};
        let handle = obs::prometheus().map_err(|e| AggregateError::Config {
            key: "metrics",
            reason: e.to_string(),
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AggregateError::Config {
                key: "metrics_addr",
                reason: format!("binding {addr}: {e}"),
            })?;
        let (s, b) = (stats.clone(), bus.clone());
        let want = (
            cfg.ticks.is_some(),
            cfg.contracts.is_some(),
            cfg.battery.is_some(),
        );
        let probe: obs::HealthProbe = Arc::new(move || {
            let connected = b.client().connection_state() == async_nats::connection::State::Connected;
            let ticks = !want.0 || s.ticks.ready.load(Relaxed);
            let contracts = !want.1 || s.contracts.ready.load(Relaxed);
            let battery = !want.2 || s.battery.ready.load(Relaxed);
            let details = serde_json::json!({
                "nats_connected": connected,
                "ticks_ready": ticks,
                "contracts_ready": contracts,
                "battery_ready": battery,
            });
            if connected && ticks && contracts && battery {
                Health::ok(details)
            } else {
                Health::not_ready(details)
            }
        });
        let rx = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = obs::serve(listener, handle, probe, rx).await {
                tracing::error!(code = "ops_endpoint_stopped", error = %e, "ops endpoint stopped");
            }
        });
    }
    let node = match &opts.node_id {
        Some(id) => {
            let registry = crate::discovery::Registry::open_or_provision(
                &bus,
                crate::discovery::DiscoveryConfig::default(),
            )
            .await
            .map_err(|e| AggregateError::Nats {
                what: "node discovery".into(),
                reason: e.to_string(),
            })?;
            let mut info = crate::discovery::NodeInfo::new(id.clone(), "aggregator");
            if let Some(a) = opts.ops_addr {
                info.endpoints
                    .insert("metrics".into(), format!("http://{a}/metrics"));
            }
            let node = registry.register(info).await.map_err(|e| AggregateError::Nats {
                what: format!("registering node `{id}`"),
                reason: e.to_string(),
            })?;
            let hb = node.spawn_heartbeat();
            Some((node, hb))
        }
        None => None,
    };
    let mut run = tokio::spawn(run_aggregator(bus.clone(), cfg, stats.clone(), stop_rx));
    let every = opts.status_every.unwrap_or(std::time::Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                break (&mut run).await;
            }
            _ = tick.tick(), if opts.status_every.is_some() => {
                crate::console::say(&format!("lt-aggregator: {}", status_line(&stats)));
            }
        }
    };
    if let Some((node, hb)) = node {
        hb.abort();
        let _ = node.unregister().await;
    }
    let _ = bus.flush_on_exit(crate::bus::EXIT_FLUSH).await;
    result.map_err(|e| AggregateError::Nats {
        what: "aggregator task".into(),
        reason: e.to_string(),
    })??;
    Ok(stats)
}
