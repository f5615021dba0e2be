//! Benchmark programs behind `lt bench`. Each one prints our figure next to the raw limit of the
//! same machine measured in the same run, and writes `bench/results/<name>.json` in the format
//! DESIGN.md fixes (`bench`, `case`, `unit`, `ours`, `baseline`, `ratio`, `target`, `meets`, ...).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::bus::{
    Bus, BusError, BusOptions, Consumer, ConsumerSpec, OutgoingMessage, Publisher, PublisherConfig, Qos,
    StreamSpec, ensure_consumer, ensure_stream,
};
use crate::natsd::{NatsServer, NatsServerConfig, NatsdError};

mod ingest;
#[cfg(all(feature = "aggregate", feature = "gateway"))]
mod live;
pub use ingest::{IngestBenchConfig, bench_ingest};
#[cfg(all(feature = "aggregate", feature = "gateway"))]
pub use live::{LiveBenchConfig, bench_live};

/// Benchmark errors.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bus error.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Server error.
    #[error(transparent)]
    Natsd(#[from] NatsdError),
    /// The tick simulator stopped.
    #[error(transparent)]
    Ticks(#[from] crate::sim::ticks::TickRunError),
    /// Bare async-nats error in a baseline loop.
    #[error("baseline loop: {0}")]
    Baseline(String),
    /// Writing results.
    #[error("writing {path}: {reason}")]
    Output {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Host facts recorded with every result.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Host {
    /// Logical cores.
    pub cores: usize,
    /// 1-minute load average when the record was made.
    pub load_avg: f64,
}

impl Host {
    /// Reads the current host facts.
    pub fn now() -> Self {
        let load_avg = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            load_avg,
        }
    }
}

/// One benchmark record (DESIGN.md "Benchmark output").
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BenchRecord {
    /// Benchmark name.
    pub bench: String,
    /// What was measured.
    pub case: String,
    /// `msgs/s`, `ms`, `MB` or `ratio`.
    pub unit: String,
    /// Our figure.
    pub ours: f64,
    /// The raw limit measured in the same run.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_what: String,
    /// ours / baseline.
    pub ratio: Option<f64>,
    /// Target (for `ratio` when a baseline exists, else for `ours`).
    pub target: f64,
    /// Whether the target is met.
    pub meets: bool,
    /// Parameters.
    pub params: serde_json::Value,
    /// Host facts.
    pub host: Host,
}

/// Writes `records` to `<dir>/<name>.json`; returns the path.
pub fn write_results(dir: &Path, name: &str, records: &[BenchRecord]) -> Result<PathBuf, BenchError> {
    let path = dir.join(format!("{name}.json"));
    let out = |reason: String| BenchError::Output {
        path: path.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| out(e.to_string()))?;
    let text = serde_json::to_string_pretty(records).map_err(|e| out(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| out(e.to_string()))?;
    Ok(path)
}

/// Settings of `lt bench bus`.
#[derive(Debug, Clone)]
pub struct BusBenchConfig {
    /// Connect to this server instead of starting one.
    pub nats_url: Option<String>,
    /// Messages per measured run.
    pub messages: usize,
    /// Payload size in bytes.
    pub payload: usize,
    /// Publish window (outstanding PubAcks), the same for ours and the bare loop.
    pub window: usize,
    /// Pull batch, the same for ours and the bare loop.
    pub batch: usize,
    /// Rounds; the median of each side is reported.
    pub rounds: usize,
}

impl BusBenchConfig {
    /// `--quick`: seconds, for smoke tests.
    pub fn quick() -> Self {
        Self {
            nats_url: None,
            messages: 20_000,
            payload: 128,
            window: 1024,
            batch: 1000,
            rounds: 1,
        }
    }
    /// The full run.
    pub fn full() -> Self {
        Self {
            messages: 300_000,
            rounds: 5,
            ..Self::quick()
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `lt bench bus`: QoS 1 publish and consume+ack through our API vs a bare async-nats loop.
///
/// `progress` receives one line per measured run.
pub async fn bench_bus(
    cfg: &BusBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRecord>, BenchError> {
    let (_server, _dir, url) = match &cfg.nats_url {
        Some(u) => (None, None, u.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("lt-bench-")
                .tempdir()
                .map_err(|e| BenchError::Baseline(e.to_string()))?;
            let s = NatsServer::start(NatsServerConfig::new(dir.path())).await?;
            let url = s.client_url();
            (Some(s), Some(dir), url)
        }
    };
    let bus = Bus::connect(&BusOptions::new(&url)).await?;
    let payload = Bytes::from(vec![b'x'; cfg.payload]);
    let mut pub_ours = Vec::new();
    let mut pub_bare = Vec::new();
    let mut con_ours = Vec::new();
    let mut con_bare = Vec::new();
    for round in 0..cfg.rounds {
        // Fresh streams each round so both sides append to an empty stream.
        let bare_stream = format!("BENCH_BARE_{round}");
        let ours_stream = format!("BENCH_OURS_{round}");
        for (name, subj) in [(&bare_stream, "bench.bare"), (&ours_stream, "bench.ours")] {
            let _ = bus.jetstream().delete_stream(name).await;
            let mut s = StreamSpec::new(name.clone(), vec![format!("{subj}.{round}")]);
            s.max_bytes = 4 * 1024 * 1024 * 1024;
            ensure_stream(&bus, &s).await?;
        }
        // Alternate which side goes first so warm-up and drift do not favour one.
        let bare_first = round % 2 == 0;
        let (bare, ours) = if bare_first {
            let b = publish_bare(&bus, &format!("bench.bare.{round}"), &payload, cfg).await?;
            (
                b,
                publish_ours(&bus, &format!("bench.ours.{round}"), &payload, cfg).await?,
            )
        } else {
            let o = publish_ours(&bus, &format!("bench.ours.{round}"), &payload, cfg).await?;
            (
                publish_bare(&bus, &format!("bench.bare.{round}"), &payload, cfg).await?,
                o,
            )
        };
        progress(&format!(
            "round {round}: publish  bare async-nats {bare:>9.0} msgs/s | langtian Publisher {ours:>9.0} msgs/s"
        ));
        pub_bare.push(bare);
        pub_ours.push(ours);

        // Consume the same stored messages twice, with one durable each.
        let mut bare_spec = ConsumerSpec::new(ours_stream.clone(), format!("bare{round}"));
        bare_spec.fetch_batch = cfg.batch;
        bare_spec.max_ack_pending = (cfg.batch * 20) as i64;
        let mut ours_spec = bare_spec.clone();
        ours_spec.durable = format!("ours{round}");
        ensure_consumer(&bus, &bare_spec).await?;
        ensure_consumer(&bus, &ours_spec).await?;
        let (bare, ours) = if bare_first {
            let b = consume_bare(&bus, &bare_spec, cfg).await?;
            (b, consume_ours(&bus, ours_spec, cfg).await?)
        } else {
            let o = consume_ours(&bus, ours_spec, cfg).await?;
            (consume_bare(&bus, &bare_spec, cfg).await?, o)
        };
        progress(&format!(
            "round {round}: consume  bare async-nats {bare:>9.0} msgs/s | langtian Consumer  {ours:>9.0} msgs/s"
        ));
        con_bare.push(bare);
        con_ours.push(ours);
        let _ = bus.jetstream().delete_stream(&bare_stream).await;
        let _ = bus.jetstream().delete_stream(&ours_stream).await;
    }
    let params = serde_json::json!({
        "messages": cfg.messages, "payload_bytes": cfg.payload, "window": cfg.window,
        "batch": cfg.batch, "rounds": cfg.rounds, "storage": "file", "replicas": 1,
        "server": bus.client().server_info().version,
        "external_server": cfg.nats_url.is_some(),
    });
    let record = |case: &str, ours: f64, base: f64, what: &str| {
        let ratio = if base > 0.0 { ours / base } else { 0.0 };
        BenchRecord {
            bench: "bus".into(),
            case: case.into(),
            unit: "msgs/s".into(),
            ours,
            baseline: Some(base),
            baseline_what: what.into(),
            ratio: Some(ratio),
            target: 0.9,
            meets: ratio >= 0.9,
            params: params.clone(),
            host: Host::now(),
        }
    };
    Ok(vec![
        record(
            "qos1_publish",
            median(pub_ours),
            median(pub_bare),
            "bare async-nats JetStream publish loop, same Nats-Msg-Id headers and window",
        ),
        record(
            "consume_ack",
            median(con_ours),
            median(con_bare),
            "bare async-nats pull stream (same batch) with ack() per message",
        ),
    ])
}

async fn publish_bare(
    bus: &Bus,
    subject: &str,
    payload: &Bytes,
    cfg: &BusBenchConfig,
) -> Result<f64, BenchError> {
    let js = bus.jetstream();
    let start = Instant::now();
    let mut inflight = VecDeque::with_capacity(cfg.window);
    for i in 0..cfg.messages {
        let f = js
            .send_publish(
                subject.to_owned(),
                PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(format!("b:{i}")),
            )
            .await
            .map_err(|e| BenchError::Baseline(e.to_string()))?;
        inflight.push_back(f);
        if inflight.len() >= cfg.window
            && let Some(f) = inflight.pop_front()
        {
            f.await.map_err(|e| BenchError::Baseline(e.to_string()))?;
        }
    }
    while let Some(f) = inflight.pop_front() {
        f.await.map_err(|e| BenchError::Baseline(e.to_string()))?;
    }
    Ok(cfg.messages as f64 / start.elapsed().as_secs_f64())
}

async fn publish_ours(
    bus: &Bus,
    subject: &str,
    payload: &Bytes,
    cfg: &BusBenchConfig,
) -> Result<f64, BenchError> {
    let mut pc = PublisherConfig::new(Qos::AtLeastOnce);
    pc.window = cfg.window;
    let p = Publisher::new(bus.clone(), pc);
    let start = Instant::now();
    let mut w = p.window();
    for i in 0..cfg.messages {
        w.send(OutgoingMessage::new(subject, payload.clone()).with_msg_id(format!("o:{i}")))
            .await?;
    }
    w.drain().await?;
    Ok(cfg.messages as f64 / start.elapsed().as_secs_f64())
}

async fn consume_bare(bus: &Bus, spec: &ConsumerSpec, cfg: &BusBenchConfig) -> Result<f64, BenchError> {
    let consumer: async_nats::jetstream::consumer::PullConsumer = bus
        .jetstream()
        .get_consumer_from_stream(&spec.durable, &spec.stream)
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let start = Instant::now();
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(cfg.batch)
        .heartbeat(spec.heartbeat)
        .messages()
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let mut n = 0usize;
    while n < cfg.messages {
        match tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
            Ok(Some(Ok(m))) => {
                m.ack().await.map_err(|e| BenchError::Baseline(e.to_string()))?;
                n += 1;
            }
            Ok(Some(Err(e))) => return Err(BenchError::Baseline(e.to_string())),
            Ok(None) | Err(_) => return Err(BenchError::Baseline(format!("stalled after {n} messages"))),
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn consume_ours(bus: &Bus, spec: ConsumerSpec, cfg: &BusBenchConfig) -> Result<f64, BenchError> {
    let mut c = Consumer::bind(bus, spec).await?;
    let start = Instant::now();
    let mut n = 0usize;
    while n < cfg.messages {
        let b = c
            .next_batch(cfg.batch.min(cfg.messages - n), Duration::from_secs(10))
            .await?;
        if b.is_empty() {
            return Err(BenchError::Baseline(format!(
                "our consumer stalled after {n} messages"
            )));
        }
        n += b.len();
        b.ack_all().await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A human summary table of `records`.
pub fn summary(records: &[BenchRecord]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<16} {:>14} {:>14} {:>7} {:>7}  {}\n",
        "case", "ours", "baseline", "ratio", "target", "meets"
    ));
    for r in records {
        s.push_str(&format!(
            "{:<16} {:>10.0} {:<3} {:>10.0} {:<3} {:>7.3} {:>7.2}  {}\n",
            r.case,
            r.ours,
            "",
            r.baseline.unwrap_or(f64::NAN),
            "",
            r.ratio.unwrap_or(f64::NAN),
            r.target,
            if r.meets { "yes" } else { "NO" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_three() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }
}

/// Resets the peak-RSS counter (`VmHWM`) so the next [`peak_rss_mb`] covers only what follows.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Current resident memory split into anonymous (heap) and file-backed (mapped libraries and
/// extensions) parts, as `anon N MB + file N MB`.
pub fn rss_breakdown() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    format!("anon {:.0} MB + file {:.0} MB", get("RssAnon:"), get("RssFile:"))
}

/// Peak resident set size of this process in MB (`VmHWM`), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Settings of `lt bench flow`.
#[cfg(feature = "flow")]
#[derive(Debug, Clone)]
pub struct FlowBenchConfig {
    /// Events in the fixture / stream.
    pub events: usize,
    /// Messages per handler invocation.
    pub batch: usize,
    /// Connect to this server for the end-to-end case instead of starting one.
    pub nats_url: Option<String>,
}

#[cfg(feature = "flow")]
impl FlowBenchConfig {
    /// `--quick`.
    pub fn quick() -> Self {
        Self {
            events: 100_000,
            batch: 10_000,
            nats_url: None,
        }
    }
    /// The full run (1M events).
    pub fn full() -> Self {
        Self {
            events: 1_000_000,
            ..Self::quick()
        }
    }
}

/// Passes over the fixture per engine case; the median is reported.
#[cfg(feature = "flow")]
const ENGINE_PASSES: usize = 3;

/// Rows per second of `h` over `msgs` in batches of `batch`: the median of [`ENGINE_PASSES`]
/// passes (this VM's speed varies by ±30 % from one second to the next).
#[cfg(feature = "flow")]
fn engine_rows_per_sec(
    h: &mut crate::flow::handler::BatchHandler,
    msgs: &[Vec<u8>],
    batch: usize,
) -> Result<f64, BenchError> {
    let mut passes = Vec::new();
    for _ in 0..ENGINE_PASSES {
        let start = Instant::now();
        let mut rows = 0usize;
        for chunk in msgs.chunks(batch) {
            rows += h
                .invoke(chunk)
                .map_err(|e| BenchError::Baseline(e.to_string()))?
                .output_rows();
        }
        passes.push(rows as f64 / start.elapsed().as_secs_f64());
    }
    Ok(median(passes))
}

/// `lt bench flow` in one process: (a) [`bench_flow_engine`], then (b) [`bench_flow_e2e`].
/// (`lt` itself runs (b) in a child process so that each peak RSS is its own.)
#[cfg(feature = "flow")]
pub async fn bench_flow(
    cfg: &FlowBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRecord>, BenchError> {
    let mut out = bench_flow_engine(cfg, &mut progress).await?;
    out.extend(bench_flow_e2e(cfg, &mut progress).await?);
    Ok(out)
}

/// (a) The engine alone over an in-memory fixture (InferredMemBatch on JSON, StructuredBatch on
/// protobuf ChannelSamples) next to DuckDB's own `read_json` of the same JSON as a file.
#[cfg(feature = "flow")]
pub async fn bench_flow_engine(
    cfg: &FlowBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRecord>, BenchError> {
    use crate::flow::config::Handler;
    use crate::flow::handler::BatchHandler;
    use prost::Message as _;

    let err = |e: String| BenchError::Baseline(e);
    let dir = tempfile::Builder::new()
        .prefix("lt-bench-flow-")
        .tempdir()
        .map_err(|e| err(e.to_string()))?;
    let params = serde_json::json!({"events": cfg.events, "batch": cfg.batch, "passes": ENGINE_PASSES, "statistic": "median"});
    let mut out = Vec::new();

    // (a) engine only, JSON + InferredMemBatch.
    let json: Vec<Vec<u8>> = (0..cfg.events)
        .map(|i| {
            format!(
                "{{\"device\":\"d{}\",\"channel\":{},\"v\":{}.5,\"t\":{}}}",
                i % 64,
                i % 16,
                i % 1000,
                i
            )
            .into_bytes()
        })
        .collect();
    let fixture = dir.path().join("fixture.jsonl");
    let mut text = Vec::with_capacity(json.iter().map(|l| l.len() + 1).sum());
    for l in &json {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(&fixture, &text).map_err(|e| err(e.to_string()))?;
    let sql = "SELECT device, channel, v * 2 AS v2, t FROM batch WHERE v >= 0";
    let h_cfg = Handler {
        kind: "handlers.InferredMemBatch".into(),
        sql: sql.into(),
        table: None,
        schema: vec![],
        message_type: None,
    };
    let mut h = BatchHandler::new(&h_cfg, &[]).map_err(|e| err(e.to_string()))?;
    let inferred = engine_rows_per_sec(&mut h, &json, cfg.batch)?;
    // Baseline: DuckDB reading the same JSON itself.
    let start = Instant::now();
    let base_rows: i64 = h
        .connection()
        .query_row(
            &format!(
                "SELECT count(*) FROM (SELECT device, channel, v * 2 AS v2, t FROM read_json('{}', format = 'newline_delimited') WHERE v >= 0)",
                fixture.display()
            ),
            [],
            |r| r.get(0),
        )
        .map_err(|e| err(e.to_string()))?;
    let read_json = base_rows as f64 / start.elapsed().as_secs_f64();
    progress(&format!(
        "engine InferredMemBatch {inferred:>10.0} rows/s | DuckDB read_json of the same file {read_json:>10.0} rows/s"
    ));
    out.push(BenchRecord {
        bench: "flow".into(),
        case: "engine_inferred_json".into(),
        unit: "msgs/s".into(),
        ours: inferred,
        baseline: Some(read_json),
        baseline_what: "DuckDB read_json over the same JSON lines (one query)".into(),
        ratio: Some(inferred / read_json),
        target: 1_000_000.0,
        meets: inferred >= 1_000_000.0,
        params: params.clone(),
        host: Host::now(),
    });

    drop(json);
    drop(text);
    drop(h);
    // (a) engine only, protobuf + StructuredBatch.
    let mut sim = crate::sim::BatterySim::new(16, 64, 3);
    let mut pb: Vec<Vec<u8>> = Vec::with_capacity(cfg.events);
    while pb.len() < cfg.events {
        for s in sim.step(1_000_000_000) {
            if pb.len() < cfg.events {
                pb.push(s.encode_to_vec());
            }
        }
    }
    let s_cfg = Handler {
        kind: "handlers.StructuredBatch".into(),
        sql: "SELECT device_id, channel, voltage, current, soc, seq FROM batch".into(),
        table: None,
        schema: vec![],
        message_type: Some("langtian.battery.v1.ChannelSample".into()),
    };
    let mut h = BatchHandler::new(&s_cfg, &[]).map_err(|e| err(e.to_string()))?;
    let fixture_mb = pb.iter().map(|m| m.len() + 24).sum::<usize>() as f64 / 1e6;
    reset_peak_rss();
    let structured = engine_rows_per_sec(&mut h, &pb, cfg.batch)?;
    let rss = peak_rss_mb().unwrap_or(0.0);
    progress(&format!(
        "engine StructuredBatch (protobuf) {structured:>10.0} rows/s | peak RSS {rss:.0} MB (incl. the {fixture_mb:.0} MB in-memory fixture)"
    ));
    drop(pb);
    drop(h);
    out.push(BenchRecord {
        bench: "flow".into(),
        case: "engine_structured_protobuf".into(),
        unit: "msgs/s".into(),
        ours: structured,
        baseline: None,
        baseline_what: String::new(),
        ratio: None,
        target: 1_000_000.0,
        meets: structured >= 1_000_000.0,
        params: params.clone(),
        host: Host::now(),
    });
    out.push(BenchRecord {
        bench: "flow".into(),
        case: "engine_peak_rss".into(),
        unit: "MB".into(),
        ours: rss,
        baseline: None,
        baseline_what: String::new(),
        ratio: None,
        target: 250.0,
        meets: rss <= 250.0,
        params: params.clone(),
        host: Host::now(),
    });
    Ok(out)
}

/// (b) pre-loaded JetStream → flow (StructuredBatch protobuf → SQL → DuckLake, exactly once)
/// next to a bare async-nats consume+ack loop over the same stored messages.
#[cfg(feature = "flow")]
pub async fn bench_flow_e2e(
    cfg: &FlowBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRecord>, BenchError> {
    use prost::Message as _;
    use std::sync::atomic::Ordering;

    let err = |e: String| BenchError::Baseline(e);
    let dir = tempfile::Builder::new()
        .prefix("lt-bench-flow-e2e-")
        .tempdir()
        .map_err(|e| err(e.to_string()))?;
    let (_server, url) = match &cfg.nats_url {
        Some(u) => (None, u.clone()),
        None => {
            let s = NatsServer::start(NatsServerConfig::new(dir.path().join("nats"))).await?;
            let url = s.client_url();
            (Some(s), url)
        }
    };
    let bus = Bus::connect(&BusOptions::new(&url)).await?;
    let stream = "BENCH_FLOW";
    let _ = bus.jetstream().delete_stream(stream).await;
    let mut spec = StreamSpec::new(stream, vec!["bench.flow.>".into()]);
    spec.max_bytes = 4 * 1024 * 1024 * 1024;
    ensure_stream(&bus, &spec).await?;

    // Pre-load: battery samples in envelopes, as the collector publishes them.
    let t = Instant::now();
    let publisher = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let mut w = publisher.window();
    let mut sim = crate::sim::BatterySim::new(16, 64, 5);
    let mut n = 0usize;
    let mut bytes = 0usize;
    'load: loop {
        for s in sim.step(1_000_000_000) {
            if n >= cfg.events {
                break 'load;
            }
            let env = crate::envelope::EnvelopeBuilder::new("battery.sample", "bench")
                .event_id(format!("bench:{n}"))
                .payload(s.encode_to_vec(), "application/x-protobuf")
                .build()
                .map_err(|e| err(e.to_string()))?;
            let mut m = OutgoingMessage::from_envelope("bench.flow", &env);
            m.subject = "bench.flow.battery".into();
            bytes += m.payload.len();
            w.send(m).await?;
            n += 1;
        }
    }
    w.drain().await?;
    progress(&format!(
        "end-to-end: pre-loaded {n} envelopes ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    ));

    // Baseline: bare async-nats pull + ack of every message.
    let mut bare_spec = ConsumerSpec::new(stream, "bare");
    bare_spec.fetch_batch = 1000;
    bare_spec.max_ack_pending = (cfg.batch * 4) as i64;
    ensure_consumer(&bus, &bare_spec).await?;
    let bcfg = BusBenchConfig {
        messages: n,
        batch: 1000,
        ..BusBenchConfig::quick()
    };
    let bare = consume_bare(&bus, &bare_spec, &bcfg).await?;
    progress(&format!(
        "end-to-end: bare async-nats consume+ack {bare:>10.0} msgs/s"
    ));

    // Ours: the real runner, exactly once into a DuckLake.
    let lake_dir = dir.path().join("lake");
    let yaml = format!(
        r#"
pipeline:
  name: bench
  batch_size: {batch}
  flush_interval_seconds: 1
  source:
    type: nats
    nats:
      servers: ["{url}"]
      stream: {stream}
      consumer: flow
      ack_wait: 60s
      fetch: {{ batch: 1000 }}
  handler:
    type: handlers.StructuredBatch
    message_type: langtian.battery.v1.ChannelSample
    sql: SELECT device_id, channel, seq, voltage, current, temperature, soc, nats.stream_seq AS stream_seq FROM batch
  sink:
    type: ducklake
    ducklake:
      catalog: "{lake}/meta.ducklake"
      data_path: "{lake}/data"
      table: samples
      maintenance_interval: 0s
"#,
        batch = cfg.batch,
        lake = lake_dir.display()
    );
    let file = crate::flow::config::PipelineFile::from_str("bench.yml", &yaml, &Default::default())
        .map_err(|e| err(e.to_string()))?;
    let stats = std::sync::Arc::new(crate::flow::runner::RunStats::default());
    let (tx, rx) = tokio::sync::watch::channel(false);
    reset_peak_rss();
    let rss_at_start = peak_rss_mb().unwrap_or(0.0);
    let start = Instant::now();
    let mut task = tokio::spawn(crate::flow::runner::run_pipeline(file, stats.clone(), rx));
    let mut last_report = Instant::now();
    while stats.committed_seq.load(Ordering::Relaxed) < n as u64 {
        if task.is_finished() {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(err(format!(
                "flow stalled at {} of {n}",
                stats.committed_seq.load(Ordering::Relaxed)
            )));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!(
                "end-to-end: flow committed {} of {n}",
                stats.committed_seq.load(Ordering::Relaxed)
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let rss = peak_rss_mb().unwrap_or(0.0);
    let breakdown = rss_breakdown();
    let _ = tx.send(true);
    crate::flow::runner::drain_within(&mut task, Duration::from_secs(30))
        .await
        .map_err(|e| err(e.to_string()))?;
    let ours = n as f64 / took.as_secs_f64();
    // Exactly once: every stream sequence once in the lake.
    let lake =
        crate::lake::Lake::open(crate::lake::LakeConfig::local(&lake_dir)).map_err(|e| err(e.to_string()))?;
    let (rows, distinct): (i64, i64) = lake
        .connection()
        .query_row(
            "SELECT count(*), count(DISTINCT stream_seq) FROM lake.samples",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| err(e.to_string()))?;
    if rows != n as i64 || distinct != n as i64 {
        return Err(err(format!(
            "lake holds {rows} rows / {distinct} distinct sequences, expected {n}"
        )));
    }
    let ratio = ours / bare;
    progress(&format!(
        "end-to-end: JetStream → flow → DuckLake {ours:>10.0} events/s | bare consume+ack {bare:>10.0} | ratio {ratio:.2} | peak RSS {rss:.0} MB (at start {rss_at_start:.0} MB; at the end {breakdown}) | lake verified: {rows} rows, {distinct} distinct seqs"
    ));
    let params = serde_json::json!({
        "events": n, "batch": cfg.batch, "fetch_batch": 1000, "payload": "envelope(battery.v1.ChannelSample)",
        "sink": "ducklake (duckdb catalog, local data)", "server": bus.client().server_info().version,
    });
    Ok(vec![
        BenchRecord {
            bench: "flow".into(),
            case: "e2e_jetstream_to_ducklake".into(),
            unit: "msgs/s".into(),
            ours,
            baseline: Some(bare),
            baseline_what: "bare async-nats pull stream (batch 1000) with ack() per message, same stream"
                .into(),
            ratio: Some(ratio),
            target: 0.7,
            meets: ratio >= 0.7,
            params: params.clone(),
            host: Host::now(),
        },
        BenchRecord {
            bench: "flow".into(),
            case: "e2e_peak_rss".into(),
            unit: "MB".into(),
            ours: rss,
            baseline: None,
            baseline_what: String::new(),
            ratio: None,
            target: 250.0,
            meets: rss <= 250.0,
            params,
            host: Host::now(),
        },
    ])
}
