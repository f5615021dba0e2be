//! The collector as a service (`lt-collector`): connect, register in discovery, serve
//! `/metrics` + `/healthz`, print status lines, stop and drain on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::{Collector, CollectorConfig, CollectorError, CollectorReport, CollectorSnapshot};
use crate::bus::{Bus, BusOptions};
use crate::discovery::{DiscoveryConfig, NodeInfo, Registry};

/// Options of [`run_collector_service`].
#[derive(Debug, Clone)]
pub struct CollectorServiceOptions {
    /// Where to serve `/metrics` and `/healthz` (`None`: not served).
    pub ops_addr: Option<SocketAddr>,
    /// How often to print a status line on stderr (`None`: never).
    pub status_every: Option<Duration>,
    /// Register in KV discovery (`lt_nodes`) with this node id (`None`: do not register).
    pub node_id: Option<String>,
}

impl Default for CollectorServiceOptions {
    fn default() -> Self {
        Self {
            ops_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9465))),
            status_every: Some(Duration::from_secs(10)),
            node_id: None,
        }
    }
}

/// One status line.
pub fn status_line(s: &CollectorSnapshot) -> String {
    format!(
        "datagrams {} | records {} | published {} | duplicates {} | backlog {} | malformed {} | dropped {} | kernel drops {} | nats {}",
        s.datagrams,
        s.records,
        s.published,
        s.duplicates,
        s.backlog,
        s.malformed,
        s.dropped,
        s.kernel_drops,
        if s.connected { "up" } else { "DOWN" }
    )
}

/// Runs a collector until `shutdown` resolves, then publishes its backlog (within the drain
/// timeout) and returns the totals.
pub async fn run_collector_service(
    cfg: CollectorConfig,
    mut bus_opts: BusOptions,
    opts: CollectorServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<CollectorReport, CollectorError> {
    if bus_opts.name.is_none() {
        bus_opts.name = Some("lt-collector".into());
    }
    // Start even when NATS is not up yet: the buffer holds what arrives meanwhile.
    bus_opts.retry_on_initial_connect = true;
    let bus = Bus::connect(&bus_opts).await?;
    let collector = Collector::bind(cfg).await?;
    let local = collector.local_addr();
    let stats = collector.stats();
    tracing::info!(%local, recv_buffer = collector.recv_buffer_bytes(), "collector listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    #[cfg(feature = "obs")]
    if let Some(addr) = opts.ops_addr {
        use crate::obs::{self, Health};
        let handle = obs::prometheus().map_err(|e| CollectorError::Config(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CollectorError::Config(format!("binding the metrics/health address {addr}: {e}")))?;
        let s = stats.clone();
        let probe: obs::HealthProbe = std::sync::Arc::new(move || {
            let snap = s.snapshot();
            let details = serde_json::json!({
                "nats_connected": snap.connected,
                "backlog": snap.backlog,
                "udp": local.to_string(),
            });
            if snap.connected {
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
    // Register in the background once connected (and keep trying), so collecting never waits
    // for NATS.
    type Registered = (crate::discovery::NodeHandle, tokio::task::JoinHandle<()>);
    let registered: std::sync::Arc<tokio::sync::Mutex<Option<Registered>>> = Default::default();
    let registrar = opts.node_id.clone().map(|id| {
        let (bus, slot, ops) = (bus.clone(), registered.clone(), opts.ops_addr);
        tokio::spawn(async move {
            loop {
                if bus.client().connection_state() == async_nats::connection::State::Connected {
                    match register(&bus, &id, local, ops).await {
                        Ok(r) => {
                            tracing::info!(node = %id, "registered in node discovery");
                            *slot.lock().await = Some(r);
                            return;
                        }
                        Err(e) => tracing::warn!(code = "registration_failed", error = %e, "node registration failed; retrying"),
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });
    let mut run = tokio::spawn(collector.run(bus.clone(), stop_rx));
    let mut tick = tokio::time::interval(opts.status_every.unwrap_or(Duration::from_secs(3600)));
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
                crate::console::say(&format!("lt-collector: {}", status_line(&stats.snapshot())));
            }
        }
    };
    if let Some(r) = registrar {
        r.abort();
    }
    if let Some((node, hb)) = registered.lock().await.take() {
        hb.abort();
        let _ = node.unregister().await;
    }
    let _ = bus.flush_on_exit(crate::bus::EXIT_FLUSH).await;
    result.map_err(|e| CollectorError::Config(format!("collector task: {e}")))?
}

async fn register(
    bus: &Bus,
    id: &str,
    local: SocketAddr,
    ops: Option<SocketAddr>,
) -> Result<(crate::discovery::NodeHandle, tokio::task::JoinHandle<()>), crate::discovery::DiscoveryError> {
    let registry = Registry::open_or_provision(bus, DiscoveryConfig::default()).await?;
    let mut info = NodeInfo::new(id.to_owned(), "collector");
    info.endpoints.insert("udp".into(), format!("udp://{local}"));
    if let Some(a) = ops {
        info.endpoints
            .insert("metrics".into(), format!("http://{a}/metrics"));
    }
    let node = registry.register(info).await?;
    let hb = node.spawn_heartbeat();
    Ok((node, hb))
}
