//! `lt up`: the whole platform in one process (apart from nats-server).
//!
//! Today it runs: an embedded nats-server (store under the data dir) unless a URL is given, the
//! default topology (streams, consumers, KV, dead-letter streams), node registration with
//! heartbeats, the dead-letter forwarder, a battery demo producer (QoS 1 envelopes on
//! `lt.evt.battery.sample.<device>`) and a tail consumer that decodes and acks what arrives.
//! Later services (collector, flow into DuckLake, aggregator, gateway) join here.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::watch;

use crate::bus::{
    Bus, BusError, BusOptions, Consumer, ConsumerSpec, DeadLetterForwarder, OutgoingMessage, Publisher,
    PublisherConfig, Qos, Topology, ensure_consumer,
};
use crate::discovery::{DiscoveryConfig, DiscoveryError, NodeInfo, Registry};
use crate::envelope::EnvelopeBuilder;
use crate::natsd::{NatsServer, NatsServerConfig, NatsdError};
use crate::sim::BatterySim;

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
    /// The data dir cannot be used.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Settings of `lt up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Where the embedded server keeps its store (and later the lake).
    pub data_dir: PathBuf,
    /// Use this NATS (URLs, auth, TLS) instead of starting one.
    pub connect: Option<BusOptions>,
    /// Client port of the embedded server.
    pub nats_port: u16,
    /// Monitoring port of the embedded server.
    pub nats_http_port: u16,
    /// Topology file (default: the built-in one).
    pub topology: Option<PathBuf>,
    /// Run the battery demo producer.
    pub sim: bool,
    /// Demo events per second.
    pub rate: u64,
    /// Demo devices × channels.
    pub devices: usize,
    /// Channels per device.
    pub channels: u32,
    /// Run the default flow (battery samples → DuckLake under `<data_dir>/lake`).
    pub flow: bool,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".langtian"),
            connect: None,
            nats_port: 14222,
            nats_http_port: 18222,
            topology: None,
            sim: true,
            rate: 1000,
            devices: 4,
            channels: 16,
            flow: true,
        }
    }
}

/// A status snapshot, reported about once a second.
#[derive(Debug, Clone, Default)]
pub struct UpStatus {
    /// Seconds since start.
    pub uptime_s: f64,
    /// Events published per second over the last interval.
    pub events_in_per_s: f64,
    /// Events published in total.
    pub published: u64,
    /// Events consumed and acked in total.
    pub consumed: u64,
    /// Messages in `LT_EVENTS`.
    pub stream_messages: u64,
    /// Messages not yet delivered to the tail consumer.
    pub lag: u64,
    /// Dead letters in `LT_DLQ`.
    pub dead_letters: u64,
    /// Live nodes in discovery.
    pub nodes: usize,
    /// Errors so far (publish failures, undecodable envelopes, flow errors).
    pub errors: u64,
    /// Rows the default flow committed to the lake.
    pub lake_rows: u64,
}

impl UpStatus {
    /// One terminal line.
    pub fn line(&self) -> String {
        format!(
            "up {:>6.0}s | in {:>7.0} ev/s | published {:>9} | consumed {:>9} | stored {:>9} | lag {:>6} | lake rows {:>9} | dlq {:>4} | nodes {} | errors {}",
            self.uptime_s,
            self.events_in_per_s,
            self.published,
            self.consumed,
            self.stream_messages,
            self.lag,
            self.lake_rows,
            self.dead_letters,
            self.nodes,
            self.errors
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
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    consumed: AtomicU64,
    errors: AtomicU64,
}

const TAIL: &str = "lt-up-tail";

/// Runs the platform until `shutdown` resolves. `on_line` receives start-up messages,
/// `on_status` a status snapshot every second.
pub async fn run_up(
    cfg: UpConfig,
    shutdown: impl Future<Output = ()>,
    mut on_line: impl FnMut(&str),
    mut on_status: impl FnMut(&UpStatus),
) -> Result<UpSummary, UpError> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| UpError::DataDir {
        path: cfg.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut server = None;
    let mut opts = match &cfg.connect {
        Some(o) => o.clone(),
        None => {
            let mut sc = NatsServerConfig::new(cfg.data_dir.join("nats"));
            sc.port = cfg.nats_port;
            sc.http_port = cfg.nats_http_port;
            let s = NatsServer::start(sc).await?;
            on_line(&format!(
                "nats-server running: {} (monitoring {}; store {})",
                s.client_url(),
                s.monitor_url(),
                cfg.data_dir.join("nats").display()
            ));
            let url = s.client_url();
            server = Some(s);
            BusOptions::new(&url)
        }
    };
    let url = opts.urls.join(",");
    opts.name = Some("lt-up".into());
    let bus = Bus::connect(&opts).await?;

    let topology = match &cfg.topology {
        Some(p) => Topology::from_file(p)?,
        None => Topology::default_topology()?,
    };
    for line in topology.apply(&bus).await? {
        on_line(&format!("provisioned: {line}"));
    }
    let mut tail = ConsumerSpec::new("LT_EVENTS", TAIL);
    tail.fetch_batch = 1000;
    tail.deliver_new = true;
    ensure_consumer(&bus, &tail).await?;

    let disc_cfg = discovery_config(&topology);
    let registry = Registry::open(&bus, disc_cfg).await?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let node_id: String = format!("lt-up-{host}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut info = NodeInfo::new(node_id.clone(), "lt-up");
    info.endpoints.insert("nats".into(), url.clone());
    let node = registry.register(info).await?;
    let heartbeat = node.spawn_heartbeat();
    on_line(&format!(
        "registered node `{node_id}` in KV `{}`",
        registry.config().bucket
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();

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
                tracing::error!(error = %e, "dead-letter forwarder stopped");
            }
        }));
    }
    {
        let bus = bus.clone();
        let counters = counters.clone();
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = tail_loop(bus, tail, counters, &mut rx).await {
                tracing::error!(error = %e, "tail consumer stopped");
            }
        }));
    }
    #[cfg(feature = "flow")]
    let flow_stats = std::sync::Arc::new(crate::flow::runner::RunStats::default());
    #[cfg(feature = "flow")]
    if cfg.flow {
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("SQLFLOW_NATS_URL".to_owned(), url.clone());
        vars.insert(
            "SQLFLOW_LAKE_DIR".to_owned(),
            cfg.data_dir.join("lake").display().to_string(),
        );
        let file = crate::flow::config::PipelineFile::from_str(
            "config/pipelines/battery-to-lake.yml (built in)",
            crate::flow::EXAMPLE_PIPELINE,
            &vars,
        )
        .map_err(|e| UpError::DataDir {
            path: e.file.clone(),
            reason: e.message,
        })?;
        on_line(&format!(
            "flow `battery-to-lake`: lt.evt.battery.> → SQL → DuckLake {} (exactly once)",
            cfg.data_dir.join("lake").display()
        ));
        let stats = flow_stats.clone();
        let rx = stop_rx.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = Box::pin(crate::flow::runner::run_pipeline(file, stats, rx)).await {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "flow battery-to-lake stopped");
            }
        }));
    }
    let lake_rows = || {
        #[cfg(feature = "flow")]
        {
            flow_stats.rows_out.load(Ordering::Relaxed)
        }
        #[cfg(not(feature = "flow"))]
        {
            0
        }
    };
    let (sim_stop_tx, sim_stop_rx) = watch::channel(false);
    let mut producers = Vec::new();
    if cfg.sim {
        on_line(&format!(
            "battery demo producer: {} devices × {} channels, {} events/s (QoS 1) → lt.evt.battery.sample.*",
            cfg.devices, cfg.channels, cfg.rate
        ));
        let bus = bus.clone();
        let counters = counters.clone();
        let c = cfg.clone();
        producers.push(tokio::spawn(async move {
            sim_loop(bus, c, counters, sim_stop_rx).await;
        }));
    }

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_pub = 0u64;
    let mut last_t = Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let published = counters.published.load(Ordering::Relaxed);
                let dt = last_t.elapsed().as_secs_f64().max(1e-3);
                let mut status = collect_status(&bus, &registry, &counters, started).await;
                status.lake_rows = lake_rows();
                status.events_in_per_s = (published - last_pub) as f64 / dt;
                last_pub = published;
                last_t = Instant::now();
                on_status(&status);
            }
        }
    }
    on_line("stopping: draining producers, then consumers");
    let _ = sim_stop_tx.send(true);
    for t in producers {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    heartbeat.abort();
    let _ = node.unregister().await;
    let mut status = collect_status(&bus, &registry, &counters, started).await;
    status.lake_rows = lake_rows();
    let _ = bus.flush().await;
    drop(bus);
    if let Some(mut s) = server {
        s.stop().await?;
        on_line("nats-server stopped (store kept for the next `lt up`)");
    }
    Ok(UpSummary {
        status,
        nats_url: url,
    })
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

async fn collect_status(bus: &Bus, registry: &Registry, c: &Counters, started: Instant) -> UpStatus {
    let js = bus.jetstream();
    let stream_messages = match js.get_stream("LT_EVENTS").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    };
    let lag = match js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(TAIL, "LT_EVENTS")
        .await
    {
        Ok(mut cons) => cons.info().await.map(|i| i.num_pending).unwrap_or(0),
        Err(_) => 0,
    };
    let dead_letters = match js.get_stream("LT_DLQ").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    };
    let nodes = registry.nodes().await.map(|n| n.len()).unwrap_or(0);
    UpStatus {
        uptime_s: started.elapsed().as_secs_f64(),
        events_in_per_s: 0.0,
        published: c.published.load(Ordering::Relaxed),
        consumed: c.consumed.load(Ordering::Relaxed),
        stream_messages,
        lag,
        dead_letters,
        nodes,
        errors: c.errors.load(Ordering::Relaxed),
        lake_rows: 0,
    }
}

async fn tail_loop(
    bus: Bus,
    spec: ConsumerSpec,
    counters: Arc<Counters>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BusError> {
    let mut consumer = Consumer::bind(&bus, spec).await?;
    // `next_batch` is not cancelled on stop (that would strand a half-taken batch until
    // ack_wait); the stop flag is checked between batches instead.
    while !*stop.borrow() {
        let batch = consumer.next_batch(1000, Duration::from_millis(250)).await?;
        for m in &batch.messages {
            if m.envelope().is_err() {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        batch.ack_all().await?;
        counters.consumed.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    // Drain what the producers stored before they stopped.
    loop {
        let batch = consumer.next_batch(1000, Duration::from_millis(300)).await?;
        if batch.is_empty() {
            return Ok(());
        }
        batch.ack_all().await?;
        counters.consumed.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

async fn sim_loop(bus: Bus, cfg: UpConfig, counters: Arc<Counters>, stop: watch::Receiver<bool>) {
    let publisher = Publisher::new(bus, PublisherConfig::new(Qos::AtLeastOnce));
    let mut window = publisher.window();
    let mut sim = BatterySim::new(cfg.devices.max(1), cfg.channels.max(1), 7);
    let run = crate::envelope::now_nanos();
    let ticks_per_s = 10u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / ticks_per_s));
    let mut budget = 0f64;
    let mut pending: Vec<crate::proto::battery::v1::ChannelSample> = Vec::new();
    while !*stop.borrow() {
        tick.tick().await;
        budget += cfg.rate as f64 / ticks_per_s as f64;
        while budget >= 1.0 {
            if pending.is_empty() {
                pending = sim.step(1_000_000_000);
                pending.reverse();
            }
            let Some(s) = pending.pop() else { break };
            budget -= 1.0;
            let source = s.device_id.clone();
            let env = EnvelopeBuilder::new("battery.sample", source.clone())
                .event_id(format!("{source}/{}/{run}/{}", s.channel, s.seq))
                .event_timestamp(s.ts_device)
                .partition_key(format!("{source}/{}", s.channel))
                .payload(
                    s.encode_to_vec(),
                    "application/x-protobuf; messageType=langtian.battery.v1.ChannelSample",
                )
                .build();
            let msg = match env {
                Ok(e) => OutgoingMessage::from_envelope("lt.evt", &e),
                Err(e) => {
                    tracing::warn!(error = %e, "demo envelope rejected");
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            match window.send(msg).await {
                Ok(Some(_)) => {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "demo publish failed");
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Keep the status honest: count acked messages promptly at low rates too.
        if window.in_flight() > 0 && budget < 1.0 {
            match window.drain().await {
                Ok(r) => {
                    counters.published.fetch_add(r.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "demo publish failed");
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Ok(r) = window.drain().await {
        counters.published.fetch_add(r.len() as u64, Ordering::Relaxed);
    }
}
