//! The stream processor: sql-flow-compatible pipeline files with a native JetStream source and an
//! exactly-once DuckLake sink.
//!
//! - [`config`]: templated, strictly parsed pipeline files.
//! - [`handler`]: JSON / protobuf payloads → Arrow relation `batch` → DuckDB SQL.
//! - [`source`]: JetStream durable pull consumer or JSONL replay; [`meta`]: the `nats` column.
//! - [`sink`]: ducklake (exactly once), parquet, nats, console, noop.
//! - [`runner`]: the loop (ordering, error policies, drain); [`metrics`]: Prometheus names.

mod batch_scan;
pub mod config;
pub mod handler;
pub mod meta;
pub mod metrics;
mod proto_arrow;
pub mod runner;
pub mod service;
pub mod sink;
pub mod source;

use std::path::Path;

/// The example pipeline shipped in `config/pipelines/battery-to-lake.yml`.
pub const EXAMPLE_PIPELINE: &str = include_str!("../../../config/pipelines/battery-to-lake.yml");

/// Errors of [`invoke_jsonl`].
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Reading the fixture.
    #[error("reading {path}: {reason}")]
    Fixture {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The handler failed.
    #[error(transparent)]
    Handler(#[from] handler::HandlerError),
}

/// Runs the pipeline's start-up commands and handler over a JSONL fixture (one message per
/// line), without touching the source or the sink (`lt flow invoke`). Each row gets a synthetic
/// `nats` column (subject `invoke`, stream_seq = line number, deliveries 1) so that SQL using
/// the source metadata runs unchanged.
pub fn invoke_jsonl(file: &config::PipelineFile, fixture: &Path) -> Result<handler::Invocation, InvokeError> {
    let text = std::fs::read_to_string(fixture).map_err(|e| InvokeError::Fixture {
        path: fixture.display().to_string(),
        reason: e.to_string(),
    })?;
    let lines: Vec<&[u8]> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::as_bytes)
        .collect();
    let now_us = crate::envelope::now_nanos() / 1000;
    let meta: Vec<meta::SourceMeta> = (1..=lines.len() as u64)
        .map(|i| meta::SourceMeta {
            subject: "invoke".into(),
            stream_seq: i,
            timestamp_us: now_us,
            deliveries: 1,
            headers: None,
        })
        .collect();
    let meta: Vec<&meta::SourceMeta> = meta.iter().collect();
    let mut h = handler::BatchHandler::new(&file.pipeline.handler, &file.commands)?;
    Ok(h.invoke_with_meta(&lines, Some(&meta))?)
}
