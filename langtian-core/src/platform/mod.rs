//! `lt up`: the whole platform in one process (apart from nats-server).
//!
//! It runs: an embedded nats-server (store under the data dir) unless a URL is given, the
//! default topology (streams, consumers, KV, dead-letter streams), node registration with
//! heartbeats, the dead-letter forwarder, the UDP collector, the battery simulator sending
//! datagrams to it, the default flow (battery samples → DuckLake under `<data_dir>/lake`,
//! exactly once), the query service on `lt.query.v1` (so `lt query` reads the lake this
//! process writes), `/metrics` + `/healthz`, and the live path ([`live`]): the market-tick
//! simulator, the aggregator and the WebSocket gateway serving the UI. Ctrl-C stops the
//! simulators, lets the collector publish its backlog, lets the flow commit its last batch, then
//! stops the rest.

pub mod access;
#[cfg(all(feature = "aggregate", feature = "gateway"))]
pub mod live;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bus::{Bus, BusError, BusOptions, DeadLetterForwarder, Topology};
use crate::collector::{Collector, CollectorConfig, CollectorError, CollectorStats};
use crate::discovery::{DiscoveryConfig, DiscoveryError, NodeInfo, Registry};
use crate::natsd::{NatsServer, NatsServerConfig, NatsdError};
use crate::sim::udp::{BatteryUdpConfig, send_battery_udp};
use access::{NatsAuth, PlatformAccess, PlatformNames};

/// Subjects the UI token may subscribe to: market data, battery channels, analysis tables, the
/// execution health feed and the discovery heartbeats (KV `lt_nodes`, for the system view).
pub const UI_SUBJECTS: [&str; 5] = [
    "xy.md.>",
    "lt.md.>",
    "lt.analysis.>",
    "xy.exec.health",
    "$KV.lt_nodes.>",
];

/// Errors that stop `lt up`.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Starting the embedded server failed.
    #[error("embedded nats-server: {0}")]
    Natsd(#[from] NatsdError),
    /// Bus or provisioning failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Discovery failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The collector could not start.
    #[error(transparent)]
    Collector(#[from] CollectorError),
    /// A simulator setting cannot work (`--rate 0`, `--devices 0`, …).
    #[error(transparent)]
    Sim(#[from] crate::sim::SimConfigError),
    /// The data dir, the flow or the ops endpoint cannot be set up.
    #[error("{what}: {reason}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A setting cannot work (the aggregator's `--delta-interval`, …); names it.
    #[error("{what}: {reason}")]
    Config {
        /// Which setting.
        what: String,
        /// Why it cannot work.
        reason: String,
    },
}

impl UpError {
    /// Whether the settings are wrong (a flag, the topology file) rather than something while
    /// running: `lt up` exits with [`EXIT_CONFIG`](crate::cli::EXIT_CONFIG) for these, as the
    /// services do.
    ///
    /// ```
    /// use langtian_core::bus::BusError;
    /// use langtian_core::platform::UpError;
    /// let bad_file = UpError::Bus(BusError::Topology { file: "t.yaml".into(), reason: "…".into() });
    /// assert!(bad_file.is_config());
    /// assert!(!UpError::Setup { what: "data dir".into(), reason: "read-only".into() }.is_config());
    /// ```
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Sim(_) | Self::Config { .. } | Self::Bus(BusError::Topology { .. })
        )
    }
}

/// Settings of `lt up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Where the embedded server keeps its store and the flow its lake (`<data_dir>/lake`).
    pub data_dir: PathBuf,
    /// Use this NATS (URLs, auth, TLS) instead of starting one.
    pub connect: Option<BusOptions>,
    /// How the embedded nats-server authenticates: every service as its own NKey user with
    /// least-privilege permissions, plus a limited `local` user for clients without credentials
    /// (the default); NKeys only; or open. Not used with `connect`.
    pub nats_auth: NatsAuth,
    /// Require TLS on the embedded server (a local CA under `<data_dir>/nats/tls`; clients need
    /// `--tls-ca <data_dir>/nats/tls/ca.pem`). Not used with `connect`.
    pub nats_tls: bool,
    /// Client port of the embedded server.
    pub nats_port: u16,
    /// Monitoring port of the embedded server.
    pub nats_http_port: u16,
    /// Topology file (default: the built-in one).
    pub topology: Option<PathBuf>,
    /// UDP address of the collector.
    pub udp_listen: SocketAddr,
    /// Run the battery simulator (sending UDP to the collector).
    pub sim: bool,
    /// Simulated samples per second.
    pub rate: u64,
    /// Simulated cyclers.
    pub devices: usize,
    /// Channels per cycler.
    pub channels: u32,
    /// Run the default flow (battery samples → DuckLake under `<data_dir>/lake`).
    pub flow: bool,
    /// Serve `lt.query.v1` on the lake (needs the flow's lake).
    pub query: bool,
    /// Where to serve `/metrics` and `/healthz` (`None`: not served).
    pub ops_addr: Option<SocketAddr>,
    /// Run the live path: aggregator, gateway, and (with `sim`) the tick simulator.
    pub live: bool,
    /// Simulated market ticks per second (0: none).
    pub tick_rate: f64,
    /// The aggregator's delta interval (16–100 ms; the seed's 33 ms by default).
    pub delta_interval: std::time::Duration,
    /// Address of the WebSocket gateway and the UI.
    pub gateway_addr: SocketAddr,
    /// The built UI (served when it holds an `index.html`).
    pub ui_dir: Option<PathBuf>,
    /// Serve the UI cross-origin isolated (COOP + COEP; see `GatewayConfig::cross_origin_isolation`).
    pub cross_origin_isolation: bool,
    /// How often JetStream's state of every stream and durable consumer is read for `/metrics`
    /// (`jetstream_stream_*`, `jetstream_consumer_*`); `None`: not at all.
    pub jetstream_state_every: Option<Duration>,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".langtian"),
            connect: None,
            nats_auth: NatsAuth::Local,
            nats_tls: false,
            nats_port: 14222,
            nats_http_port: 18222,
            topology: None,
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 14250)),
            sim: true,
            rate: 1000,
            devices: 4,
            channels: 16,
            flow: true,
            query: true,
            ops_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            live: true,
            tick_rate: 500.0,
            delta_interval: std::time::Duration::from_millis(33),
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ui_dir: Some(PathBuf::from("ui/dist")),
            cross_origin_isolation: true,
            jetstream_state_every: Some(Duration::from_secs(5)),
        }
    }
}

/// A status snapshot, reported about once a second.
#[derive(Debug, Clone, Default)]
pub struct UpStatus {
    /// Seconds since start.
    pub uptime_s: f64,
    /// Records the collector received per second over the last interval.
    pub events_in_per_s: f64,
    /// Datagrams the collector read.
    pub datagrams: u64,
    /// Envelopes the collector published (confirmed by the server).
    pub published: u64,
    /// Envelopes waiting in the collector (buffer + in flight).
    pub backlog: u64,
    /// Messages in `LT_EVENTS`.
    pub stream_messages: u64,
    /// Rows the default flow committed to the lake since start.
    pub lake_rows: u64,
    /// Messages the flow's consumer still has to process.
    pub lag: u64,
    /// Dead letters in `LT_DLQ`.
    pub dead_letters: u64,
    /// Live nodes in discovery.
    pub nodes: usize,
    /// Malformed records + buffer drops + kernel drops + flow errors.
    pub errors: u64,
    /// Keys (instruments + channels) the aggregator holds.
    pub live_keys: u64,
    /// WebSocket clients of the gateway.
    pub ws_clients: u64,
    /// Operations nats-server refused because the service's user lacks the permission (0
    /// when every service stays within its grant).
    pub nats_denied: u64,
}

impl UpStatus {
    /// One terminal line.
    pub fn line(&self) -> String {
        format!(
            "up {:>5.0}s | in {:>7.0} ev/s | published {:>9} | backlog {:>6} | lake rows {:>9} | lag {:>6} | dlq {:>4} | live keys {:>5} | ws {} | nodes {} | errors {} | denied {}",
            self.uptime_s,
            self.events_in_per_s,
            self.published,
            self.backlog,
            self.lake_rows,
            self.lag,
            self.dead_letters,
            self.live_keys,
            self.ws_clients,
            self.nodes,
            self.errors,
            self.nats_denied
        )
    }
}

/// What `lt up` did, returned after a clean stop.
#[derive(Debug, Clone)]
pub struct UpSummary {
    /// Final status.
    pub status: UpStatus,
    /// The NATS URL it used.
    pub nats_url: String,
    /// The collector's UDP address.
    pub udp: SocketAddr,
}

/// The default flow's counters, read where they are kept (no copies to go stale).
#[derive(Debug, Default)]
struct FlowCounters {
    #[cfg(feature = "flow")]
    stats: Arc<crate::flow::runner::RunStats>,
    /// 1 when the flow task stopped with an error.
    failed: AtomicU64,
}

impl FlowCounters {
    fn rows(&self) -> u64 {
        #[cfg(feature = "flow")]
        return self.stats.rows_out.load(Ordering::Relaxed);
        #[cfg(not(feature = "flow"))]
        0
    }
    fn lag(&self) -> u64 {
        #[cfg(feature = "flow")]
        return self.stats.lag.load(Ordering::Relaxed);
        #[cfg(not(feature = "flow"))]
        0
    }
    fn errors(&self) -> u64 {
        let failed = self.failed.load(Ordering::Relaxed);
        #[cfg(feature = "flow")]
        return failed + self.stats.errors.load(Ordering::Relaxed);
        #[cfg(not(feature = "flow"))]
        failed
    }
}

/// Runs the platform until `shutdown` resolves. `on_line` receives start-up messages,
/// `on_status` a status snapshot every second.
/// The battery simulator's settings for `cfg`, sending to `udp`.
fn battery_sim_config(cfg: &UpConfig, udp: SocketAddr) -> BatteryUdpConfig {
    BatteryUdpConfig {
        devices: cfg.devices,
        channels: cfg.channels,
        rate: cfg.rate as f64,
        ..BatteryUdpConfig::new(udp)
    }
}

pub async fn run_up(
    cfg: UpConfig,
    shutdown: impl Future<Output = ()>,
    mut on_line: impl FnMut(&str),
    mut on_status: impl FnMut(&UpStatus),
) -> Result<UpSummary, UpError> {
    let started = Instant::now();
    // Settings that cannot work are refused before anything starts.
    if cfg.sim {
        battery_sim_config(&cfg, cfg.udp_listen).validate()?;
    }
    if cfg.live && cfg.sim && cfg.tick_rate > 0.0 {
        live::tick_run(&cfg).validate()?;
    }
    if cfg.live {
        live::aggregator_config(&cfg)?;
    }
    // The metrics recorder first: handles created before it exists would record nowhere.
    #[cfg(feature = "obs")]
    if cfg.ops_addr.is_some() {
        crate::obs::prometheus().map_err(|e| UpError::Setup {
            what: "metrics recorder".into(),
            reason: e.to_string(),
        })?;
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| UpError::Setup {
        what: format!("data dir {}", cfg.data_dir.display()),
        reason: e.to_string(),
    })?;
    let topology = match &cfg.topology {
        Some(p) => Topology::from_file(p)?,
        None => Topology::default_topology()?,
    };
    let mode = if cfg.connect.is_some() {
        NatsAuth::Open
    } else {
        cfg.nats_auth
    };
    let access =
        PlatformAccess::open(&cfg.data_dir, mode, PlatformNames::for_topology(&topology)).map_err(|e| {
            UpError::Setup {
                what: "NATS identities".into(),
                reason: e.to_string(),
            }
        })?;
    let local_tls = if cfg.nats_tls && cfg.connect.is_none() {
        Some(
            tls::LocalTls::load_or_create(&cfg.data_dir.join("nats").join("tls")).map_err(|e| {
                UpError::Setup {
                    what: "NATS TLS".into(),
                    reason: e.to_string(),
                }
            })?,
        )
    } else {
        None
    };
    let mut server = None;
    let url = match &cfg.connect {
        Some(o) => o.urls.join(","),
        None => {
            let mut sc = NatsServerConfig::new(cfg.data_dir.join("nats"));
            sc.port = cfg.nats_port;
            sc.http_port = cfg.nats_http_port;
            sc.extra_config = access.server_config();
            if let Some(t) = &local_tls {
                let mut extra = sc.extra_config.take().unwrap_or_default();
                extra.push_str(&t.server_config());
                sc.extra_config = Some(extra);
            }
            let s = NatsServer::start(sc).await?;
            on_line(&format!(
                "nats-server running: {} (monitoring {}; store {})",
                s.client_url(),
                s.monitor_url(),
                cfg.data_dir.join("nats").display()
            ));
            if let Some(t) = &local_tls {
                on_line(&format!(
                    "NATS TLS: required; clients trust the CA {} (`lt --tls-ca {}`)",
                    t.ca_file.display(),
                    t.ca_file.display()
                ));
            }
            let url = s.client_url();
            server = Some(s);
            url
        }
    };
    match mode {
        NatsAuth::Open if cfg.connect.is_none() => on_line("NATS auth: open (every client may do anything)"),
        NatsAuth::Open => {}
        m => on_line(&format!(
            "NATS auth: each service is its own NKey user with least-privilege permissions (keys in {}); {}",
            access.keys_dir.display(),
            if m == NatsAuth::Local {
                "clients without credentials get the limited `local` user"
            } else {
                "every client needs a key"
            }
        )),
    }
    // One connection per service, each as its own NATS user (with `connect`: the given options).
    let options = |name: &str| match &cfg.connect {
        Some(o) => {
            let mut o = o.clone();
            o.name = Some(format!("lt-up:{name}"));
            o
        }
        None => {
            let mut o = access.options(&url, name);
            if let Some(t) = &local_tls {
                o.tls.ca_file = Some(t.ca_file.clone());
                o.tls.required = true;
            }
            o
        }
    };
    let bus = Bus::connect(&options("admin")).await?;
    let mut buses = vec![bus.clone()];

    for line in topology.apply(&bus).await? {
        on_line(&format!("provisioned: {line}"));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let flow = Arc::new(FlowCounters::default());

    #[cfg(feature = "obs")]
    if let Some(every) = cfg.jetstream_state_every {
        use tracing::Instrument as _;
        let state = crate::obs::export_jetstream_state(bus.clone(), every, stop_rx.clone());
        tasks.push(tokio::spawn(
            state.instrument(tracing::info_span!("jetstream_state")),
        ));
        on_line(&format!(
            "/metrics: JetStream's state of every stream and durable consumer, read every {every:?}"
        ));
    }

    // The collector first, so the simulator has somewhere to send.
    let collector = Collector::bind(CollectorConfig::new(cfg.udp_listen)).await?;
    let udp = collector.local_addr();
    let cstats = collector.stats();
    on_line(&format!(
        "collector listening on udp://{udp} (receive buffer {} KiB) → lt.evt.<type>.<source> (QoS 1)",
        collector.recv_buffer_bytes() / 1024
    ));
    let (col_stop_tx, col_stop_rx) = watch::channel(false);
    let collector_bus = Bus::connect(&options("collector")).await?;
    buses.push(collector_bus.clone());
    let collector_task = {
        let bus = collector_bus;
        tokio::spawn(async move {
            match collector.run(bus, col_stop_rx).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(code = "collector_stopped", error = %e, "collector stopped");
                    None
                }
            }
        })
    };

    let disc_cfg = discovery_config(&topology);
    let registry = Registry::open(&bus, disc_cfg).await?;
    let node_id = node_id();
    let mut info = NodeInfo::new(node_id.clone(), "lt-up");
    info.endpoints.insert("nats".into(), url.clone());
    info.endpoints.insert("udp".into(), format!("udp://{udp}"));
    if let Some(a) = cfg.ops_addr {
        info.endpoints
            .insert("metrics".into(), format!("http://{a}/metrics"));
    }
    let node = registry.register(info).await?;
    let heartbeat = node.spawn_heartbeat();
    // The status line's node count, from one open watch rather than a listing every second.
    let live_nodes = registry.live_count();
    on_line(&format!(
        "registered node `{node_id}` in KV `{}`",
        registry.config().bucket
    ));

    if let Some(dlq) = topology.dlq.clone() {
        let fwd = DeadLetterForwarder::new(bus.clone(), dlq);
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = fwd
                .run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
            {
                tracing::error!(code = "dead_letter_forwarder_stopped", error = %e, "dead-letter forwarder stopped");
            }
        }));
    }
    #[cfg(feature = "flow")]
    if cfg.flow {
        tasks.push(start_flow(
            &cfg,
            &options("flow"),
            flow.clone(),
            stop_rx.clone(),
            &mut on_line,
        )?);
        if cfg.query {
            let query_bus = Bus::connect(&options("query")).await?;
            buses.push(query_bus.clone());
            tasks.push(start_query(&cfg, &query_bus, stop_rx.clone(), &mut on_line)?);
        }
    }
    #[cfg(feature = "obs")]
    if let Some(addr) = cfg.ops_addr {
        start_ops(addr, cstats.clone(), flow.clone(), cfg.flow, stop_rx.clone()).await?;
        on_line(&format!(
            "metrics: http://{addr}/metrics · health: http://{addr}/healthz"
        ));
    }

    #[cfg(all(feature = "aggregate", feature = "gateway"))]
    let live = if cfg.live {
        let live_buses = live::LiveBuses {
            aggregator: Bus::connect(&options("aggregator")).await?,
            gateway: Bus::connect(&options("gateway")).await?,
            ticks: Bus::connect(&options("ticks")).await?,
        };
        buses.extend([
            live_buses.aggregator.clone(),
            live_buses.gateway.clone(),
            live_buses.ticks.clone(),
        ]);
        Some(live::start_live(&cfg, live_buses, stop_rx.clone(), &mut on_line).await?)
    } else {
        None
    };
    #[cfg(all(feature = "aggregate", feature = "gateway"))]
    let live_stats = live.as_ref().map(|l| (l.aggregator.clone(), l.gateway.clone()));
    #[cfg(all(feature = "aggregate", feature = "gateway"))]
    let live_counts = move |s: &mut UpStatus| {
        if let Some((agg, gw)) = &live_stats {
            s.live_keys = agg.ticks.keys.load(Ordering::Relaxed) + agg.battery.keys.load(Ordering::Relaxed);
            s.ws_clients = gw.active.load(Ordering::Relaxed);
        }
    };
    #[cfg(not(all(feature = "aggregate", feature = "gateway")))]
    let live_counts = |_: &mut UpStatus| {};

    let (sim_stop_tx, sim_stop_rx) = watch::channel(false);
    let mut sim_task = None;
    if cfg.sim {
        let sc = battery_sim_config(&cfg, udp);
        on_line(&format!(
            "battery simulator: {} cyclers × {} channels, {} samples/s, {} per datagram → udp://{udp}",
            sc.devices, sc.channels, cfg.rate, sc.per_datagram
        ));
        sim_task = Some(tokio::spawn(async move {
            if let Err(e) = send_battery_udp(&sc, sim_stop_rx, |_| {}).await {
                tracing::error!(code = "battery_sim_stopped", error = %e, "battery simulator stopped");
            }
        }));
    } else {
        on_line(&format!("no simulator: send datagrams to udp://{udp}"));
    }

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_records = 0u64;
    let mut last_t = Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let records = cstats.snapshot().records;
                let dt = last_t.elapsed().as_secs_f64().max(1e-3);
                let mut status = collect_status(&bus, &live_nodes, &cstats, &flow, started).await;
                status.events_in_per_s = (records - last_records) as f64 / dt;
                live_counts(&mut status);
                status.nats_denied = buses.iter().map(Bus::permission_denials).sum();
                last_records = records;
                last_t = Instant::now();
                on_status(&status);
            }
        }
    }
    on_line("stopping: simulator, then the collector's backlog, then the flow's last batch");
    let _ = sim_stop_tx.send(true);
    if let Some(t) = sim_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    #[cfg(all(feature = "aggregate", feature = "gateway"))]
    if let Some(l) = live {
        let _ = l.sim_stop.send(true);
        if let Some(t) = l.sim_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        tasks.extend(l.tasks);
    }
    let _ = col_stop_tx.send(true);
    if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(20), collector_task).await
        && r.unpublished_at_stop > 0
    {
        on_line(&format!(
            "collector: {} envelopes could not be published before the drain timeout",
            r.unpublished_at_stop
        ));
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    heartbeat.abort();
    let _ = node.unregister().await;
    let mut status = collect_status(&bus, &live_nodes, &cstats, &flow, started).await;
    live_counts(&mut status);
    status.nats_denied = buses.iter().map(Bus::permission_denials).sum();
    let _ = bus.flush_on_exit(crate::bus::EXIT_FLUSH).await;
    drop(buses);
    drop(bus);
    if let Some(mut s) = server {
        s.stop().await?;
        on_line("nats-server stopped (store and lake kept for the next `lt up`)");
    }
    Ok(UpSummary {
        status,
        nats_url: url,
        udp,
    })
}

fn node_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!("lt-up-{host}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The lake `lt up`'s default flow writes: `<data_dir>/lake`.
pub fn lake_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("lake")
}

#[cfg(feature = "flow")]
fn start_flow(
    cfg: &UpConfig,
    nats: &BusOptions,
    counters: Arc<FlowCounters>,
    stop: watch::Receiver<bool>,
    on_line: &mut impl FnMut(&str),
) -> Result<tokio::task::JoinHandle<()>, UpError> {
    let lake = lake_dir(&cfg.data_dir);
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("SQLFLOW_NATS_URL".to_owned(), nats.urls.join(","));
    vars.insert("SQLFLOW_LAKE_DIR".to_owned(), lake.display().to_string());
    let mut file = crate::flow::config::PipelineFile::from_str(
        "config/pipelines/battery-to-lake.yml (built in)",
        crate::flow::EXAMPLE_PIPELINE,
        &vars,
    )
    .map_err(|e| UpError::Setup {
        what: e.file.clone(),
        reason: e.message,
    })?;
    // The flow connects as its own NATS user (or with the options given to `lt up`).
    if let Some(n) = file.pipeline.source.nats.as_mut() {
        crate::flow::source::connect_as(n, nats);
    }
    on_line(&format!(
        "flow `battery-to-lake`: lt.evt.battery.> → SQL → DuckLake {} table battery_samples (exactly once)",
        lake.display()
    ));
    let stats = counters.stats.clone();
    Ok(tokio::spawn(async move {
        if let Err(e) = Box::pin(crate::flow::runner::run_pipeline(file, stats, stop)).await {
            counters.failed.store(1, Ordering::Relaxed);
            tracing::error!(code = "flow_stopped", error = %e, "flow battery-to-lake stopped");
        }
    }))
}

#[cfg(feature = "flow")]
fn start_query(
    cfg: &UpConfig,
    bus: &Bus,
    stop: watch::Receiver<bool>,
    on_line: &mut impl FnMut(&str),
) -> Result<tokio::task::JoinHandle<()>, UpError> {
    let lake = crate::lake::LakeConfig::local(&lake_dir(&cfg.data_dir));
    let service =
        crate::query::QueryService::new(bus.clone(), lake, crate::query::QueryServiceConfig::default());
    on_line(&format!(
        "query service on `{}`: try `lt query \"SELECT count(*) FROM lake.battery_samples\"`",
        crate::query::QUERY_SUBJECT
    ));
    Ok(tokio::spawn(async move {
        if let Err(e) = service.run(stop).await {
            tracing::error!(code = "query_service_stopped", error = %e, "query service stopped");
        }
    }))
}

#[cfg(feature = "obs")]
async fn start_ops(
    addr: SocketAddr,
    cstats: Arc<CollectorStats>,
    flow: Arc<FlowCounters>,
    flow_on: bool,
    stop: watch::Receiver<bool>,
) -> Result<(), UpError> {
    use crate::obs::{self, Health};
    let setup = |reason: String| UpError::Setup {
        what: format!("metrics/health endpoint {addr}"),
        reason,
    };
    let handle = obs::prometheus().map_err(|e| setup(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        setup(format!(
            "{e} (another `lt up` or lt-flow running? use --metrics-addr)"
        ))
    })?;
    let probe: obs::HealthProbe = Arc::new(move || {
        let c = cstats.snapshot();
        let details = serde_json::json!({
            "nats_connected": c.connected,
            "collector_backlog": c.backlog,
            "lake_rows": flow.rows(),
            "flow_lag": flow.lag(),
            "flow": flow_on,
        });
        if c.connected {
            Health::ok(details)
        } else {
            Health::not_ready(details)
        }
    });
    tokio::spawn(async move {
        if let Err(e) = obs::serve(listener, handle, probe, stop).await {
            tracing::error!(code = "ops_endpoint_stopped", error = %e, "ops endpoint stopped");
        }
    });
    Ok(())
}

fn discovery_config(t: &Topology) -> DiscoveryConfig {
    let mut d = DiscoveryConfig::default();
    if let Some(k) = t.kv.iter().find(|k| k.bucket == d.bucket) {
        d.ttl = k.max_age;
        d.history = k.history;
        d.replicas = k.replicas;
    }
    d
}

async fn collect_status(
    bus: &Bus,
    nodes: &crate::discovery::LiveNodes,
    c: &CollectorStats,
    flow: &FlowCounters,
    started: Instant,
) -> UpStatus {
    let js = bus.jetstream();
    let stream_messages = match js.get_stream("LT_EVENTS").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    };
    let dead_letters = match js.get_stream("LT_DLQ").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    };
    let nodes = nodes.count();
    let s = c.snapshot();
    UpStatus {
        uptime_s: started.elapsed().as_secs_f64(),
        events_in_per_s: 0.0,
        datagrams: s.datagrams,
        published: s.published,
        backlog: s.backlog,
        stream_messages,
        lake_rows: flow.rows(),
        lag: flow.lag(),
        dead_letters,
        nodes,
        errors: s.malformed + s.dropped + s.kernel_drops + flow.errors(),
        live_keys: 0,
        ws_clients: 0,
        nats_denied: 0,
    }
}
