//! A pipeline as a service: signals, drain deadline, `/metrics` + `/healthz`, a status line.
//! Used by `lt flow run` and the `lt-flow` binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::config::PipelineFile;
use super::runner::{RunError, RunStats, drain_within, run_pipeline};
use crate::obs::{self, Health};

/// Options of [`run_service`].
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Where to serve `/metrics` and `/healthz` (`None`: not served).
    pub ops_addr: Option<SocketAddr>,
    /// How often to print a status line on stderr (`None`: never).
    pub status_every: Option<Duration>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            ops_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            status_every: Some(Duration::from_secs(5)),
        }
    }
}

/// One status line.
pub fn status_line(stats: &RunStats) -> String {
    format!(
        "messages {} | rows out {} | batches {} | committed seq {} | lag {} | duplicates dropped {} | errors {} | dead letters {}",
        stats.messages.load(Ordering::Relaxed),
        stats.rows_out.load(Ordering::Relaxed),
        stats.batches.load(Ordering::Relaxed),
        stats.committed_seq.load(Ordering::Relaxed),
        stats.lag.load(Ordering::Relaxed),
        stats.duplicates_dropped.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed)
    )
}

/// Runs `file` until it ends (jsonl), fails, or SIGTERM/SIGINT arrives; then drains within the
/// pipeline's `drain_deadline_seconds`.
pub async fn run_service(file: PipelineFile, opts: &ServiceOptions) -> Result<Arc<RunStats>, RunError> {
    let deadline = file.pipeline.drain_deadline();
    let stats = Arc::new(RunStats::default());
    // Install the signal handlers before anything else, so an early SIGTERM drains too.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| RunError::Config(format!("installing the SIGTERM handler: {e}")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| RunError::Config(format!("installing the SIGINT handler: {e}")))?;
    let (ops_stop_tx, ops_stop_rx) = watch::channel(false);
    if let Some(addr) = opts.ops_addr {
        let handle = obs::prometheus().map_err(|e| RunError::Config(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Config(format!("binding the metrics/health address {addr}: {e}")))?;
        let s = stats.clone();
        let probe: obs::HealthProbe = Arc::new(move || {
            let details = serde_json::json!({
                "pipeline_running": s.running.load(Ordering::Relaxed) == 1,
                "committed_seq": s.committed_seq.load(Ordering::Relaxed),
                "lag": s.lag.load(Ordering::Relaxed),
                "expired": s.expired.load(Ordering::Relaxed),
            });
            if s.running.load(Ordering::Relaxed) == 1 {
                Health::ok(details)
            } else {
                Health::not_ready(details)
            }
        });
        tracing::info!(%addr, "serving /metrics and /healthz");
        tokio::spawn(async move {
            if let Err(e) = obs::serve(listener, handle, probe, ops_stop_rx).await {
                tracing::error!(code = "ops_endpoint_stopped", error = %e, "ops endpoint stopped");
            }
        });
    }
    let (tx, rx) = watch::channel(false);
    let mut run = tokio::spawn(run_pipeline(file, stats.clone(), rx));
    let mut tick = tokio::time::interval(opts.status_every.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut run => break r.map_err(|e| RunError::Task(e.to_string())).and_then(|r| r),
            _ = term.recv() => {
                crate::console::say(&format!("lt-flow: SIGTERM — draining (deadline {deadline:?})…"));
                let _ = tx.send(true);
                break drain_within(&mut run, deadline).await;
            }
            _ = int.recv() => {
                crate::console::say(&format!("lt-flow: interrupted — draining (deadline {deadline:?})…"));
                let _ = tx.send(true);
                break drain_within(&mut run, deadline).await;
            }
            _ = tick.tick(), if opts.status_every.is_some() => crate::console::say(&format!("lt-flow: {}", status_line(&stats))),
        }
    };
    let _ = ops_stop_tx.send(true);
    result.map(|()| stats)
}
