//! The live path of `lt up`: the market-tick simulator, the aggregator (ticks and battery
//! channels → 33 ms deltas + snapshots) and the WebSocket gateway serving the UI.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{UpConfig, UpError};
use crate::aggregate::AggregatorConfig;
use crate::aggregate::service::{AggregatorStats, run_aggregator};
use crate::bus::Bus;
use crate::gateway::auth::{Claims, JwtConfig, sign_hs256};
use crate::gateway::{Gateway, GatewayConfig, GatewayStats};
use crate::sim::ticks::{TickRun, publish_contracts, publish_ticks};
use crate::sim::{TickSim, TickSimConfig};

pub use super::UI_SUBJECTS;

/// The connections of the live services, each as its own NATS user.
pub(super) struct LiveBuses {
    pub(super) aggregator: Bus,
    pub(super) gateway: Bus,
    pub(super) ticks: Bus,
}

/// The running live services.
pub(super) struct Live {
    pub(super) aggregator: Arc<AggregatorStats>,
    pub(super) gateway: Arc<GatewayStats>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) sim_stop: watch::Sender<bool>,
    pub(super) sim_task: Option<tokio::task::JoinHandle<()>>,
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> UpError {
    let what = what.into();
    move |reason| UpError::Setup { what, reason }
}

/// The gateway's HS256 secret, created once per data dir (mode 0600).
fn secret(data_dir: &Path) -> Result<Vec<u8>, UpError> {
    let path = data_dir.join("gateway.secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().as_bytes().to_vec();
        if s.len() >= 16 {
            return Ok(s);
        }
    }
    let s = format!("{}{}", nuid::next(), nuid::next());
    write_private(&path, &s)?;
    Ok(s.into_bytes())
}

fn write_private(path: &Path, text: &str) -> Result<(), UpError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| setup(path.display().to_string())(e.to_string()))
}

/// Starts the tick simulator, the aggregator and the gateway.
/// The tick simulator's run for `cfg` (`--tick-rate`, the default bursts).
pub(super) fn tick_run(cfg: &UpConfig) -> TickRun {
    TickRun {
        rate: cfg.tick_rate,
        ..TickRun::default()
    }
}

/// The aggregator's settings in `lt up` (every feed, `--delta-interval`), checked.
pub(super) fn aggregator_config(cfg: &UpConfig) -> Result<AggregatorConfig, UpError> {
    let agg = AggregatorConfig {
        delta_interval: cfg.delta_interval,
        ..AggregatorConfig::default()
    };
    agg.validate().map_err(|e| UpError::Config {
        what: "the aggregator (--delta-interval)".into(),
        reason: e.to_string(),
    })?;
    Ok(agg)
}

pub(super) async fn start_live(
    cfg: &UpConfig,
    buses: LiveBuses,
    stop: watch::Receiver<bool>,
    on_line: &mut impl FnMut(&str),
) -> Result<Live, UpError> {
    let mut tasks = Vec::new();
    let agg_cfg = aggregator_config(cfg)?;
    let aggregator = Arc::new(AggregatorStats::default());
    {
        let (bus, stats, stop) = (buses.aggregator, aggregator.clone(), stop.clone());
        let c = agg_cfg.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run_aggregator(bus, c, stats, stop).await {
                tracing::error!(code = "aggregator_stopped", error = %e, "aggregator stopped");
            }
        }));
    }
    on_line(&format!(
        "aggregator: ticks → xy.md.tick.<venue>.<shard>, battery → lt.md.delta.cells.<shard> every {} ms; snapshots every {} s in KV `{}`",
        agg_cfg.delta_interval.as_millis(),
        agg_cfg.snapshot_interval.as_secs(),
        agg_cfg.kv_bucket
    ));

    let key = secret(&cfg.data_dir)?;
    let mut gcfg = GatewayConfig::new(cfg.gateway_addr, JwtConfig::hs256(key.clone()));
    gcfg.static_dir = cfg.ui_dir.clone().filter(|d| d.join("index.html").is_file());
    gcfg.cross_origin_isolation = cfg.cross_origin_isolation;
    let has_ui = gcfg.static_dir.is_some();
    let gw = Gateway::bind(gcfg)
        .await
        .map_err(|e| setup("gateway")(e.to_string()))?;
    let (http, ws) = (gw.http_url(), gw.ws_url());
    let gateway = Arc::new(GatewayStats::default());
    {
        let (bus, stats, stop) = (buses.gateway, gateway.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = gw.run(bus, stats, stop).await {
                tracing::error!(code = "gateway_stopped", error = %e, "gateway stopped");
            }
        }));
    }
    let ttl = Duration::from_secs(12 * 3600);
    let ui = Claims::new(
        "lt-up-ui",
        UI_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        ttl,
    );
    let token = sign_hs256(&key, &ui).map_err(setup("UI token"))?;
    let mut admin = Claims::new("lt-up-admin", vec![">".into()], ttl);
    admin.admin = true;
    let admin_token = sign_hs256(&key, &admin).map_err(setup("admin token"))?;
    let admin_file = cfg.data_dir.join("admin.token");
    write_private(&admin_file, &admin_token)?;
    on_line(&format!(
        "gateway: {ws} (metrics {http}/metrics, health {http}/healthz)"
    ));
    on_line(&format!(
        "UI: {http}/?token={token}{}",
        if has_ui {
            ""
        } else {
            "  (UI not built: run scripts/setup.sh)"
        }
    ));
    on_line(&format!(
        "tokens valid 12 h; an admin token for {http}/admin/feature-flags is in {}",
        admin_file.display()
    ));

    let (sim_stop, sim_rx) = watch::channel(false);
    let mut sim_task = None;
    if cfg.sim && cfg.tick_rate > 0.0 {
        let run = tick_run(cfg);
        let mut sim = TickSim::new(TickSimConfig::default());
        on_line(&format!(
            "tick simulator: {} instruments (contracts → xy.ref.contract.<venue>.<symbol>), {} ticks/s (bursts ×{} every {} s) → xy.src.tick.<venue>.<symbol>",
            sim.instruments(),
            cfg.tick_rate,
            run.burst_factor,
            run.burst_every.as_secs()
        ));
        let bus = buses.ticks;
        sim_task = Some(tokio::spawn(async move {
            // Reference data first, so the grid names each instrument from its first tick.
            if let Err(e) = publish_contracts(&bus, &sim, "xy.ref.contract").await {
                tracing::error!(code = "contract_sim_failed", error = %e, "publishing the simulator's contracts failed");
            }
            if let Err(e) = publish_ticks(&bus, &mut sim, &run, sim_rx, |_| {}).await {
                tracing::error!(code = "tick_sim_stopped", error = %e, "tick simulator stopped");
            }
        }));
    }
    Ok(Live {
        aggregator,
        gateway,
        tasks,
        sim_stop,
        sim_task,
    })
}
