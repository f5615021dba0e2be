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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// Latency histogram buckets in seconds (1 ms … 60 s), with the seeds' thresholds as bounds
/// (120 ms, 180 ms, 1 s) so that `config/alerts.yml` compares against them exactly.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.12, 0.18, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of `ui_frame_interval` (seconds): the seed's frame budgets (p95 ≤ 16.7 ms, p99 ≤
/// 25 ms) as bounds, a 120 Hz frame below the first.
pub const FRAME_BUCKETS: &[f64] = &[0.009, 0.0167, 0.025, 0.034, 0.05, 0.1, 0.25, 1.0];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder on first use and returns its handle. Metrics
/// whose names end in `latency` are histograms with [`LATENCY_BUCKETS`].
pub fn prometheus() -> Result<PrometheusHandle, ObsError> {
    HANDLE
        .get_or_init(|| {
            let h = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("latency".into()), LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .set_buckets_for_metric(Matcher::Full("ui_frame_interval".into()), FRAME_BUCKETS)
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

/// Text appended to every `/metrics` answer after the recorder's series: series whose set
/// changes from one reading to the next (a deleted stream's series must go), which the
/// recorder cannot remove.
pub type TextSource = Arc<dyn Fn() -> String + Send + Sync>;

static TEXT_SOURCES: Mutex<Vec<(u64, TextSource)>> = Mutex::new(Vec::new());
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);

fn text_sources() -> std::sync::MutexGuard<'static, Vec<(u64, TextSource)>> {
    TEXT_SOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps a [`TextSource`] on `/metrics`; dropping it takes the source off.
#[derive(Debug)]
#[must_use = "the source is removed when the guard is dropped"]
pub struct TextSourceGuard(u64);

impl Drop for TextSourceGuard {
    fn drop(&mut self) {
        text_sources().retain(|(id, _)| *id != self.0);
    }
}

/// Adds `source` to every `/metrics` answer of this process until the guard is dropped.
pub fn add_text_source(source: TextSource) -> TextSourceGuard {
    let id = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
    text_sources().push((id, source));
    TextSourceGuard(id)
}

/// What `/metrics` answers: the recorder's series, then every [`TextSource`]'s.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    let sources: Vec<TextSource> = text_sources().iter().map(|(_, s)| s.clone()).collect();
    for s in sources {
        text.push_str(&s());
    }
    text
}

/// The `GET /metrics` route of every ops endpoint: [`render`] as Prometheus text.
pub fn metrics_route<S: Clone + Send + Sync + 'static>(
    handle: PrometheusHandle,
) -> axum::routing::MethodRouter<S> {
    get(move || {
        let h = handle.clone();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&h)) }
    })
}

/// Serves JetStream's own state of every stream and durable consumer
/// ([`crate::bus::JetStreamState`], prometheus-nats-exporter's series names) on this process's
/// `/metrics`, read every `every` until `stop` turns true. A failed reading is counted in
/// `jetstream_state_errors`, logged when the failures start (code `jetstream_state_failed`) and
/// takes the series off until a reading succeeds: stale numbers would look current.
pub async fn export_jetstream_state(bus: crate::bus::Bus, every: Duration, mut stop: watch::Receiver<bool>) {
    let latest = Arc::new(Mutex::new(String::new()));
    let shown = latest.clone();
    let _guard = add_text_source(Arc::new(move || {
        shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }));
    let failed = metrics::counter!("jetstream_state_errors");
    let mut failing = false;
    loop {
        let reading = tokio::time::timeout(
            every.max(Duration::from_secs(5)),
            crate::bus::JetStreamState::read(&bus),
        )
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let text = match reading {
            Ok(state) => {
                if failing {
                    tracing::info!(
                        code = "jetstream_state_recovered",
                        "reading JetStream's state works again"
                    );
                }
                failing = false;
                state.to_prometheus()
            }
            Err(e) => {
                failed.increment(1);
                if !failing {
                    tracing::warn!(code = "jetstream_state_failed", error = %e, "reading JetStream's state for /metrics failed");
                }
                failing = true;
                String::new()
            }
        };
        *latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = text;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
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
    let app = Router::new().route("/metrics", metrics_route(handle)).route(
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

    /// The alerting rules compare against the buckets at the seeds' thresholds (latency and frame
    /// intervals) by their `le`
    /// label: those buckets exist, and the exporter writes their bounds as the rules do.
    #[test]
    fn the_alerts_name_latency_buckets_that_exist() {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("latency".into()), super::LATENCY_BUCKETS)
            .unwrap()
            .set_buckets_for_metric(Matcher::Full("ui_frame_interval".into()), super::FRAME_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("ui_tick_to_paint_latency").record(0.15);
            metrics::histogram!("ui_frame_interval").record(0.0165);
        });
        let text = handle.render();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let alerts = std::fs::read_to_string(root.join("../config/alerts.yml")).unwrap();
        for le in ["0.12", "0.18", "1"] {
            let label = format!("{{le=\"{le}\"}}");
            assert!(
                text.contains(&format!("ui_tick_to_paint_latency_bucket{label} ")),
                "{text}"
            );
            assert!(alerts.contains(&label), "config/alerts.yml does not use {label}");
        }
        for le in ["0.0167", "0.025"] {
            let label = format!("{{le=\"{le}\"}}");
            assert!(
                text.contains(&format!("ui_frame_interval_bucket{label} ")),
                "{text}"
            );
            assert!(alerts.contains(&label), "config/alerts.yml does not use {label}");
        }
    }

    /// Text sources are appended to `/metrics` while their guard lives.
    #[test]
    fn text_sources_come_and_go_with_their_guard() {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let guard = super::add_text_source(std::sync::Arc::new(|| "probe_series 1\n".to_owned()));
        assert!(super::render(&handle).contains("probe_series 1"));
        drop(guard);
        assert!(!super::render(&handle).contains("probe_series"));
    }

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
