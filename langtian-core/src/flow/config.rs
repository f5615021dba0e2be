//! sql-flow-compatible pipeline files.
//!
//! A file is first rendered as a Jinja template (variables: every `SQLFLOW_*` environment
//! variable, `STATIC_ROOT`, `SQL_RESULTS_CACHE_DIR`, plus caller overrides; `|default(...)` works;
//! an undefined variable without a default is an error), then parsed as YAML **strictly**: an
//! unknown or mistyped key is an error that names the key path and the line.
//!
//! ```
//! use langtian_core::flow::config::PipelineFile;
//! let yaml = r#"
//! pipeline:
//!   batch_size: {{ SQLFLOW_BATCH_SIZE|default(500) }}
//!   source:
//!     type: jsonl
//!     jsonl: { path: events.jsonl }
//!   handler:
//!     type: handlers.InferredMemBatch
//!     sql: SELECT * FROM batch
//!   sink:
//!     type: console
//! "#;
//! let p = PipelineFile::from_str("inline.yml", yaml, &Default::default())?;
//! assert_eq!(p.pipeline.batch_size, 500);
//! # Ok::<(), langtian_core::flow::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::MAX_SETTING_DURATION;

use crate::bus::AckMode;
use serde::Deserialize;

/// A pipeline file that cannot be used; the message names the file, the key path and the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Source types this engine implements.
pub const SOURCE_TYPES: &[&str] = &["nats", "jsonl"];
/// Sink types this engine implements.
pub const SINK_TYPES: &[&str] = &["ducklake", "parquet", "console", "nats", "noop"];
/// Handler types this engine implements.
pub const HANDLER_TYPES: &[&str] = &["handlers.InferredMemBatch", "handlers.StructuredBatch"];

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// SQL run once at start, in order (ATTACH, CREATE VIEW, SET ...).
    #[serde(default)]
    pub commands: Vec<Command>,
    /// The pipeline.
    pub pipeline: Pipeline,
}

/// One start-up command.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Label for logs and errors.
    pub name: String,
    /// SQL (several statements allowed).
    pub sql: String,
}

/// `pipeline:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Name (used in metrics and dead-letter subjects).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Messages per batch.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// A partial batch runs when this many seconds have passed since its first message
    /// (sql-flow parses this key but never runs a partial batch; Langtian does).
    #[serde(default = "thirty")]
    pub flush_interval_seconds: f64,
    /// On SIGTERM/Ctrl-C the batch in progress is finished within this many seconds, or
    /// abandoned unacknowledged (exit code 15).
    #[serde(default = "thirty")]
    pub drain_deadline_seconds: f64,
    /// What to do with a message or batch that fails.
    #[serde(default)]
    pub on_error: OnError,
    /// Where messages come from.
    pub source: Source,
    /// What runs over each batch.
    pub handler: Handler,
    /// Where results go.
    pub sink: Sink,
}

fn one() -> usize {
    1
}
fn thirty() -> f64 {
    30.0
}

impl Pipeline {
    /// `flush_interval_seconds` as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush_interval_seconds.max(0.0))
    }

    /// `drain_deadline_seconds` as a duration.
    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.drain_deadline_seconds.max(0.0))
    }
}

/// Error policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Policy {
    /// Stop without acking (the default).
    #[default]
    #[serde(alias = "raise")]
    RAISE,
    /// Count, ack and go on.
    #[serde(alias = "ignore")]
    IGNORE,
    /// Publish a dead letter, ack and go on.
    #[serde(alias = "dlq")]
    DLQ,
}

/// `pipeline.on_error`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OnError {
    /// RAISE, IGNORE or DLQ.
    #[serde(default)]
    pub policy: Policy,
    /// Where dead letters go (a sink block) when the policy is DLQ.
    #[serde(default)]
    pub dlq: Option<Box<Sink>>,
}

/// `pipeline.source`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `nats` or `jsonl`.
    #[serde(rename = "type")]
    pub kind: String,
    /// JetStream settings.
    #[serde(default)]
    pub nats: Option<NatsSource>,
    /// File replay settings.
    #[serde(default)]
    pub jsonl: Option<JsonlSource>,
    /// sql-flow's Kafka block: accepted only to produce a helpful error.
    #[serde(default)]
    pub kafka: Option<serde_yaml_ng::Value>,
    /// sql-flow's websocket block: accepted only to produce a helpful error.
    #[serde(default)]
    pub websocket: Option<serde_yaml_ng::Value>,
    /// sql-flow's webhook block: accepted only to produce a helpful error.
    #[serde(default)]
    pub webhook: Option<serde_yaml_ng::Value>,
}

/// How message bodies are read.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// A `langtian.envelope.v1.Envelope`; the handler sees its payload.
    #[default]
    Envelope,
    /// The message body as is.
    Raw,
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// From the first message (default).
    #[default]
    All,
    /// Only new messages.
    New,
    /// From the last message.
    Last,
    /// The last message of each subject.
    LastPerSubject,
}

/// `source.nats.fetch`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    /// Messages per pull request (default: the pipeline's batch size, at most 1000).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Bytes per pull request (0 = no limit).
    #[serde(default)]
    pub max_bytes: usize,
    /// Pull request expiry.
    #[serde(default = "d_expires", with = "humantime_serde")]
    pub expires: Duration,
}

fn d_expires() -> Duration {
    Duration::from_secs(30)
}

impl Default for Fetch {
    fn default() -> Self {
        Self {
            batch: None,
            max_bytes: 0,
            expires: d_expires(),
        }
    }
}

/// `source.nats`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsSource {
    /// Server URLs.
    pub servers: Vec<String>,
    /// Credentials file.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// Token.
    #[serde(default)]
    pub token: Option<String>,
    /// User (with password).
    #[serde(default)]
    pub user: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// NKey seed.
    #[serde(default)]
    pub nkey_seed: Option<String>,
    /// Inbox prefix instead of `_INBOX` (when the user's permissions give it its own inboxes).
    #[serde(default)]
    pub inbox_prefix: Option<String>,
    /// CA file for TLS.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Stream.
    pub stream: String,
    /// Durable consumer (created if missing when `create_consumer` is true).
    pub consumer: String,
    /// Create or update the durable consumer at start (an admin convenience; default true).
    #[serde(default = "yes")]
    pub create_consumer: bool,
    /// Subjects to consume.
    #[serde(default)]
    pub filter_subjects: Vec<String>,
    /// Where a new consumer starts.
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    /// Redelivery timeout; must exceed the worst batch + commit time.
    #[serde(default = "d_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Max delivered-but-unacked; must be at least `batch_size`.
    #[serde(default)]
    pub max_ack_pending: Option<i64>,
    /// Deliveries before the server dead-letters a message.
    #[serde(default = "d_max_deliver")]
    pub max_deliver: i64,
    /// Ack policy of the consumer: `all` (default — the flow commits batches in stream order
    /// and acks each with one message) or `explicit` (one ack per message).
    #[serde(default = "d_ack_policy")]
    pub ack_policy: AckMode,
    /// Pull settings.
    #[serde(default)]
    pub fetch: Fetch,
    /// Envelope (default) or raw payloads.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Partition number recorded with offsets (one writer per partition).
    #[serde(default)]
    pub partition: i32,
}

fn yes() -> bool {
    true
}
fn d_ack_wait() -> Duration {
    Duration::from_secs(60)
}
fn d_max_deliver() -> i64 {
    5
}
fn d_ack_policy() -> AckMode {
    AckMode::All
}

/// `source.jsonl`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonlSource {
    /// File to replay (one JSON object per line).
    pub path: PathBuf,
}

/// A declared column of `handlers.StructuredBatch`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// DuckDB type (`VARCHAR`, `DOUBLE`, `BIGINT`, `TIMESTAMP`, ...).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// `pipeline.handler`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// `handlers.InferredMemBatch` or `handlers.StructuredBatch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// SQL over the relation `batch`; several statements allowed, the last one's rows are the result.
    pub sql: String,
    /// StructuredBatch: the relation name (default `batch`).
    #[serde(default)]
    pub table: Option<String>,
    /// StructuredBatch: declared columns (for JSON payloads).
    #[serde(default)]
    pub schema: Vec<Column>,
    /// StructuredBatch: protobuf message type of the payloads, e.g. `langtian.battery.v1.ChannelSample`.
    #[serde(default)]
    pub message_type: Option<String>,
}

/// `sink.ducklake`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DuckLakeSink {
    /// Catalog: a `.ducklake` file path, `sqlite:<path>` or `postgres:<conninfo>`.
    pub catalog: String,
    /// Data path: a directory or `s3://bucket/prefix/`.
    pub data_path: String,
    /// Target table (created from the first batch's schema if missing).
    pub table: String,
    /// S3 credentials when `data_path` is `s3://`.
    #[serde(default)]
    pub s3: Option<S3Settings>,
    /// Maintenance interval (flush inlined data, merge, expire, clean up); 0 = never.
    #[serde(default = "d_maintenance", with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// DuckDB `memory_limit` of the lake connection (e.g. `256MB`; default: DuckDB's, 80 % of RAM).
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// DuckDB `threads` of the lake connection (default: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
}

fn d_maintenance() -> Duration {
    Duration::from_secs(600)
}

/// S3 settings of a sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Access key id.
    pub key_id: String,
    /// Secret.
    pub secret: String,
    /// Region.
    #[serde(default = "d_region")]
    pub region: String,
    /// Endpoint host:port for S3-compatible servers.
    #[serde(default)]
    pub endpoint: String,
    /// `path` or `vhost`.
    #[serde(default = "d_url_style")]
    pub url_style: String,
    /// https.
    #[serde(default = "yes")]
    pub use_ssl: bool,
}

fn d_region() -> String {
    "us-east-1".into()
}
fn d_url_style() -> String {
    "vhost".into()
}

/// `sink.parquet`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParquetSink {
    /// Directory or `s3://` prefix; one file per flush.
    pub path: String,
    /// S3 credentials.
    #[serde(default)]
    pub s3: Option<S3Settings>,
}

/// `sink.nats`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsSink {
    /// Server URLs (default: the source's).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Subject for result rows (one JSON object per message).
    pub subject: String,
}

/// `pipeline.sink` (also used for `on_error.dlq`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    /// `ducklake`, `parquet`, `console`, `nats` or `noop`.
    #[serde(rename = "type")]
    pub kind: String,
    /// DuckLake settings.
    #[serde(default)]
    pub ducklake: Option<DuckLakeSink>,
    /// Parquet settings.
    #[serde(default)]
    pub parquet: Option<ParquetSink>,
    /// NATS settings.
    #[serde(default)]
    pub nats: Option<NatsSink>,
    /// Console settings (none).
    #[serde(default)]
    pub console: Option<BTreeMap<String, serde_yaml_ng::Value>>,
    /// sql-flow's `format` block (accepted, unused, as upstream).
    #[serde(default)]
    pub format: Option<serde_yaml_ng::Value>,
}

/// Template variables: `SQLFLOW_*` from the environment plus defaults and overrides.
pub fn template_vars(overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SQLFLOW_"))
        .collect();
    let tmp = std::env::temp_dir().display().to_string();
    let static_root = std::env::var("SQLFLOW_STATIC_ROOT").unwrap_or_else(|_| tmp.clone());
    let cache = std::env::var("SQLFLOW_SQL_RESULTS_CACHE_DIR").unwrap_or(tmp);
    vars.insert("STATIC_ROOT".into(), static_root);
    vars.insert("SQL_RESULTS_CACHE_DIR".into(), cache);
    for (k, v) in overrides {
        vars.insert(k.clone(), v.clone());
    }
    vars
}

/// Renders the Jinja template `text` with `vars`.
pub fn render(file: &str, text: &str, vars: &BTreeMap<String, String>) -> Result<String, ConfigError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let err = |e: minijinja::Error| ConfigError {
        file: file.to_owned(),
        line: e.line(),
        message: format!(
            "template: {}",
            e.detail()
                .map(str::to_owned)
                .unwrap_or_else(|| e.kind().to_string())
        ),
    };
    let tmpl = env.template_from_str(text).map_err(err)?;
    tmpl.render(minijinja::Value::from(vars)).map_err(err)
}

impl PipelineFile {
    /// Reads, renders, parses and validates a pipeline file.
    pub fn load(path: &Path, overrides: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::from_str(&file, &text, overrides)
    }

    /// Renders, parses and validates `text` (named `file` in errors).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(
        file: &str,
        text: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let rendered = render(file, text, &template_vars(overrides))?;
        let parsed: PipelineFile = serde_yaml_ng::from_str(&rendered).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: e.location().map(|l| l.line()),
            message: strip_location(&e.to_string()),
        })?;
        parsed.validate(file, &rendered)?;
        Ok(parsed)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let fail = |path: &[&str], message: String| ConfigError {
            file: file.to_owned(),
            line: locate(text, path),
            message: format!("{}: {message}", path.join(".")),
        };
        let p = &self.pipeline;
        if p.batch_size == 0 {
            return Err(fail(&["pipeline", "batch_size"], "must be at least 1".into()));
        }
        for (key, v) in [
            ("flush_interval_seconds", p.flush_interval_seconds),
            ("drain_deadline_seconds", p.drain_deadline_seconds),
        ] {
            // NaN fails the first test; `.inf` or 1e300 would have panicked turning into a Duration.
            if !(v > 0.0 && v <= MAX_SETTING_DURATION.as_secs_f64()) {
                return Err(fail(
                    &["pipeline", key],
                    format!(
                        "is {v}: must be greater than 0 and at most {} (one year)",
                        MAX_SETTING_DURATION.as_secs()
                    ),
                ));
            }
        }
        let durations = [
            p.source
                .nats
                .as_ref()
                .map(|n| (&["pipeline", "source", "nats", "ack_wait"][..], n.ack_wait)),
            p.source.nats.as_ref().map(|n| {
                (
                    &["pipeline", "source", "nats", "fetch", "expires"][..],
                    n.fetch.expires,
                )
            }),
            p.sink.ducklake.as_ref().map(|d| {
                (
                    &["pipeline", "sink", "ducklake", "maintenance_interval"][..],
                    d.maintenance_interval,
                )
            }),
        ];
        for (path, d) in durations.into_iter().flatten() {
            if let Some(tail) = crate::over_limit(d, MAX_SETTING_DURATION) {
                let value = humantime::format_duration(d);
                return Err(fail(path, format!("({value}) {tail}")));
            }
        }
        match p.source.kind.as_str() {
            "nats" => {
                let n =
                    p.source.nats.as_ref().ok_or_else(|| {
                        fail(&["pipeline", "source"], "type nats needs a `nats:` block".into())
                    })?;
                if n.servers.is_empty() {
                    return Err(fail(
                        &["pipeline", "source", "nats", "servers"],
                        "needs at least one URL".into(),
                    ));
                }
                if let Some(m) = n.max_ack_pending
                    && m > 0
                    && (m as u64) < p.batch_size as u64
                {
                    return Err(fail(
                        &["pipeline", "source", "nats", "max_ack_pending"],
                        format!(
                            "is {m}, below pipeline.batch_size ({}): a batch could never fill and would wait for ack_wait",
                            p.batch_size
                        ),
                    ));
                }
                if n.ack_wait.as_secs_f64() <= p.flush_interval_seconds {
                    return Err(fail(
                        &["pipeline", "source", "nats", "ack_wait"],
                        format!(
                            "({:?}) must be longer than pipeline.flush_interval_seconds ({}s), or messages are redelivered while their batch is open",
                            n.ack_wait, p.flush_interval_seconds
                        ),
                    ));
                }
            }
            "jsonl" => {
                if p.source.jsonl.is_none() {
                    return Err(fail(
                        &["pipeline", "source"],
                        "type jsonl needs a `jsonl:` block with `path`".into(),
                    ));
                }
            }
            other => {
                return Err(fail(
                    &["pipeline", "source", "type"],
                    format!(
                        "source type `{other}` is not supported by Langtian; available source types: {} (sql-flow's kafka, websocket and webhook sources are not implemented; use a `nats` source on a JetStream stream)",
                        SOURCE_TYPES.join(", ")
                    ),
                ));
            }
        }
        if !HANDLER_TYPES.contains(&p.handler.kind.as_str()) {
            return Err(fail(
                &["pipeline", "handler", "type"],
                format!(
                    "handler type `{}` is not supported; available: {}",
                    p.handler.kind,
                    HANDLER_TYPES.join(", ")
                ),
            ));
        }
        if p.handler.kind == "handlers.StructuredBatch"
            && p.handler.schema.is_empty()
            && p.handler.message_type.is_none()
        {
            return Err(fail(
                &["pipeline", "handler"],
                "handlers.StructuredBatch needs `schema` (declared columns) or `message_type` (protobuf payloads)".into(),
            ));
        }
        if p.handler.sql.trim().is_empty() {
            return Err(fail(&["pipeline", "handler", "sql"], "is empty".into()));
        }
        check_sink(&p.sink, &["pipeline", "sink"], &fail)?;
        match (p.on_error.policy, &p.on_error.dlq) {
            (Policy::DLQ, None) => {
                return Err(fail(
                    &["pipeline", "on_error", "dlq"],
                    "policy DLQ needs a `dlq:` sink block".into(),
                ));
            }
            (_, Some(d)) => check_sink(d, &["pipeline", "on_error", "dlq"], &fail)?,
            _ => {}
        }
        Ok(())
    }
}

fn check_sink(
    s: &Sink,
    path: &[&str],
    fail: &dyn Fn(&[&str], String) -> ConfigError,
) -> Result<(), ConfigError> {
    let mut type_path = path.to_vec();
    type_path.push("type");
    let missing = |block: &str| {
        let mut p = path.to_vec();
        p.push("type");
        fail(&p, format!("type {block} needs a `{block}:` block"))
    };
    match s.kind.as_str() {
        "ducklake" if s.ducklake.is_none() => Err(missing("ducklake")),
        "parquet" if s.parquet.is_none() => Err(missing("parquet")),
        "nats" if s.nats.is_none() => Err(missing("nats")),
        k if SINK_TYPES.contains(&k) => Ok(()),
        other => Err(fail(
            &type_path,
            format!(
                "sink type `{other}` is not supported; available sink types: {}",
                SINK_TYPES.join(", ")
            ),
        )),
    }
}

fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Finds the 1-based line of a nested mapping key (block-style YAML).
pub fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let mut depth = 0usize;
    let mut parent_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(pi) = parent_indent
            && indent <= pi
        {
            return None; // left the parent's block without finding the key
        }
        let key = trimmed.trim_start_matches("- ");
        let want = path.get(depth)?;
        if key.starts_with(&format!("{want}:")) {
            depth += 1;
            if depth == path.len() {
                return Some(i + 1);
            }
            parent_indent = Some(indent);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(source: &str) -> String {
        format!(
            "pipeline:\n  batch_size: 100\n  flush_interval_seconds: 1\n  source:\n{source}\n  handler:\n    type: handlers.InferredMemBatch\n    sql: SELECT * FROM batch\n  sink:\n    type: console\n"
        )
    }

    const NATS: &str = "    type: nats\n    nats:\n      servers: [nats://127.0.0.1:4222]\n      stream: S\n      consumer: c\n";

    #[test]
    fn parses_a_nats_pipeline() {
        let p = PipelineFile::from_str("t.yml", &base(NATS), &BTreeMap::new()).unwrap();
        let n = p.pipeline.source.nats.unwrap();
        assert_eq!(n.stream, "S");
        assert_eq!(n.ack_wait, Duration::from_secs(60));
        assert_eq!(n.payload, PayloadFormat::Envelope);
        assert_eq!(p.pipeline.on_error.policy, Policy::RAISE);
    }

    #[test]
    fn templating_with_defaults_and_overrides() {
        let text = base(NATS).replace(
            "batch_size: 100",
            "batch_size: {{ SQLFLOW_TEST_BATCH|default(7) }}",
        );
        let p = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap();
        assert_eq!(p.pipeline.batch_size, 7);
        let mut o = BTreeMap::new();
        o.insert("SQLFLOW_TEST_BATCH".into(), "42".into());
        assert_eq!(
            PipelineFile::from_str("t.yml", &text, &o)
                .unwrap()
                .pipeline
                .batch_size,
            42
        );
        let text = base(NATS).replace("stream: S", "stream: {{ SQLFLOW_MISSING_VAR }}");
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        assert!(err.message.contains("template"), "{err}");
        assert_eq!(err.line, Some(8), "{err}");
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = base(&NATS.replace("stream: S", "stream: S\n      max_ack_pendng: 5"));
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        assert!(err.message.contains("pipeline.source.nats"), "{err}");
        assert!(err.message.contains("max_ack_pendng"), "{err}");
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.to_string().starts_with("t.yml:9: "), "{err}");
    }

    #[test]
    fn mistyped_value_is_named() {
        let err = PipelineFile::from_str(
            "t.yml",
            &base(NATS).replace("batch_size: 100", "batch_size: lots"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.message.contains("pipeline.batch_size"), "{err}");
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn kafka_files_get_a_helpful_error() {
        let kafka = "    type: kafka\n    kafka:\n      brokers: [localhost:9092]\n      group_id: g\n      auto_offset_reset: earliest\n      topics: [t]\n";
        let err = PipelineFile::from_str("k.yml", &base(kafka), &BTreeMap::new()).unwrap_err();
        assert!(
            err.message.contains("source type `kafka` is not supported"),
            "{err}"
        );
        assert!(
            err.message.contains("available source types: nats, jsonl"),
            "{err}"
        );
        assert_eq!(err.line, Some(5));
    }

    #[test]
    fn durations_out_of_range_are_named_not_panicked_on() {
        for (from, to, key) in [
            (
                "flush_interval_seconds: 1",
                "flush_interval_seconds: .inf",
                "flush_interval_seconds",
            ),
            (
                "flush_interval_seconds: 1",
                "flush_interval_seconds: 1e300",
                "flush_interval_seconds",
            ),
            (
                "flush_interval_seconds: 1",
                "flush_interval_seconds: .nan",
                "flush_interval_seconds",
            ),
            (
                "flush_interval_seconds: 1",
                "flush_interval_seconds: 1\n  drain_deadline_seconds: .inf",
                "drain_deadline_seconds",
            ),
            ("stream: S", "stream: S\n      ack_wait: 2years", "ack_wait"),
            (
                "stream: S",
                "stream: S\n      fetch: {expires: 100000000years}",
                "expires",
            ),
        ] {
            let text = base(NATS).replace(from, to);
            let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new())
                .expect_err(&format!("{to} must be refused"));
            assert!(err.message.contains(key), "{to}: {err}");
        }
        // The longest accepted values convert without panicking.
        let text = base(NATS).replace(
            "flush_interval_seconds: 1",
            "flush_interval_seconds: 31536000\n  drain_deadline_seconds: 31536000",
        );
        let text = text.replace("stream: S", "stream: S\n      ack_wait: 365days");
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        // (ack_wait must exceed the flush interval: one year each is refused for that reason.)
        assert!(
            err.message
                .contains("must be longer than pipeline.flush_interval_seconds"),
            "{err}"
        );
        let text = base(NATS).replace("flush_interval_seconds: 1", "flush_interval_seconds: 31536000");
        let text = text.replace("stream: S", "stream: S\n      ack_wait: 365days 1s");
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        assert!(
            err.message.contains("ack_wait")
                && err
                    .message
                    .contains("longer than the limit of 365days (one year)"),
            "{err}"
        );
        let text = base(NATS).replace("flush_interval_seconds: 1", "flush_interval_seconds: 31535999");
        let text = text.replace("stream: S", "stream: S\n      ack_wait: 365days");
        let p = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap();
        assert_eq!(p.pipeline.flush_interval(), Duration::from_secs(31_535_999));
        assert_eq!(p.pipeline.drain_deadline(), Duration::from_secs(30));
    }

    #[test]
    fn max_ack_pending_must_cover_the_batch() {
        let text = base(&format!("{NATS}      max_ack_pending: 10\n"));
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        assert!(err.message.contains("max_ack_pending"), "{err}");
        assert_eq!(err.line, Some(10));
    }

    #[test]
    fn policies_and_sinks_are_checked() {
        let text = base(NATS).replace("    type: console\n", "    type: iceberg\n");
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        assert!(
            err.message.contains("sink type `iceberg` is not supported"),
            "{err}"
        );
        let text = base(NATS).replace("  sink:", "  on_error:\n    policy: DLQ\n  sink:");
        let err = PipelineFile::from_str("t.yml", &text, &BTreeMap::new()).unwrap_err();
        assert!(err.message.contains("policy DLQ needs"), "{err}");
    }

    #[test]
    fn locate_finds_nested_keys() {
        let t = "a:\n  b:\n    c: 1\n  d: 2\ne:\n  c: 3\n";
        assert_eq!(locate(t, &["a", "b", "c"]), Some(3));
        assert_eq!(locate(t, &["a", "d"]), Some(4));
        assert_eq!(locate(t, &["e", "c"]), Some(6));
        assert_eq!(locate(t, &["a", "x"]), None);
    }
}
