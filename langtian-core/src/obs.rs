//! Observability: the process-wide Prometheus recorder and the ops HTTP endpoint
//! (`GET /metrics`, `GET /healthz`) of every Langtian service.
//!
//! ```no_run
//! # async fn demo() -> Result<(), langtian_core::obs::ObsError> {
//! use langtian_core::obs::{self, Health};
//! let handle = obs::prometheus()?;
//! metrics::counter!("message_count", "pipeline" => "demo").increment(1);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await.map_err(obs::ObsError::Bind)?;
//! let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
//! obs::serve(listener, handle, std::sync::Arc::new(|| Health::ok(serde_json::json!({}))), stop_rx).await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// Observability errors.
#[derive(Debug, thiserror::Error)]
pub enum ObsError {
    /// Installing the recorder.
    #[error("installing the Prometheus recorder: {0}")]
    Recorder(String),
    /// Binding the ops listener.
    #[error("binding the metrics/health listener: {0}")]
    Bind(std::io::Error),
    /// Serving.
    #[error("serving /metrics and /healthz: {0}")]
    Serve(std::io::Error),
}

/// Latency histogram buckets in seconds (1 ms … 60 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder on first use and returns its handle. Metrics
/// whose names end in `latency` are histograms with [`LATENCY_BUCKETS`].
pub fn prometheus() -> Result<PrometheusHandle, ObsError> {
    HANDLE
        .get_or_init(|| {
            let h = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("latency".into()), LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            // Histograms are drained into their buckets by the upkeep task.
            let up = h.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        up.run_upkeep();
                    }
                });
            }
            Ok(h)
        })
        .clone()
        .map_err(ObsError::Recorder)
}

/// What `/healthz` reports.
#[derive(Debug, Clone)]
pub struct Health {
    /// Ready to do its job (HTTP 200); otherwise 503.
    pub ready: bool,
    /// Details shown as JSON (`{"ready": …, …details}`).
    pub details: serde_json::Value,
}

impl Health {
    /// Ready, with details.
    pub fn ok(details: serde_json::Value) -> Self {
        Self { ready: true, details }
    }

    /// Not ready, with details.
    pub fn not_ready(details: serde_json::Value) -> Self {
        Self {
            ready: false,
            details,
        }
    }
}

/// A health probe, called on every `/healthz` request.
pub type HealthProbe = Arc<dyn Fn() -> Health + Send + Sync>;

/// Serves `GET /metrics` (Prometheus text format) and `GET /healthz` (JSON; 200 when ready, 503
/// when not) on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    health: HealthProbe,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ObsError> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let h = handle.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let probe = health.clone();
                async move {
                    let h = probe();
                    let mut body = serde_json::json!({ "ready": h.ready });
                    if let (Some(b), serde_json::Value::Object(d)) = (body.as_object_mut(), h.details) {
                        b.extend(d);
                    }
                    let code = if h.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(body)).into_response()
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .map_err(ObsError::Serve)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every metric the library records is in docs/metrics.md, the field dictionary (seed 002:
    /// Prometheus scrape plus a field dictionary).
    #[test]
    fn every_metric_is_in_the_field_dictionary() {
        use std::path::Path;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dictionary = std::fs::read_to_string(root.join("../docs/metrics.md")).unwrap();
        let files = crate::source_scan::library_sources();
        let mut names = std::collections::BTreeSet::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for mac in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(mac) {
                    let rest = text[at + mac.len()..].trim_start();
                    // (This test's own list of macro names is not a metric.)
                    if let Some(lit) = rest.strip_prefix('"')
                        && let Some(end) = lit.find('"')
                        && lit[..end]
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        names.insert(lit[..end].to_owned());
                    }
                }
            }
        }
        assert!(
            names.len() > 50,
            "found only {} metric names: the scan is broken",
            names.len()
        );
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !dictionary.contains(&format!("| `{n}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "metrics missing from docs/metrics.md: {missing:?}"
        );
    }
}
