//! `lt` — the Langtian operator CLI. Argument parsing and printing only; the work is done by
//! `langtian-core`.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use langtian_core::bench::{BusBenchConfig, bench_bus, summary, write_results};
use langtian_core::bus::{
    Bus, BusOptions, Consumer, ConsumerSpec, OutgoingMessage, Publisher, PublisherConfig, Qos,
};
use langtian_core::discovery::{DiscoveryConfig, NodeEvent, Registry};
use langtian_core::envelope::{Envelope, EnvelopeBuilder};
use langtian_core::platform::access::NatsAuth;
use langtian_core::platform::{UpConfig, run_up};

mod access_cmd;
mod query_cmd;
mod sim_cmd;

/// Langtian: NATS-centred event platform — operator CLI.
///
/// Start the platform with `lt up`, then try `lt sub 'lt.evt.>'`, `lt nodes --watch` or
/// `lt pub lt.evt.demo.cli hello --qos 1`.
#[derive(Debug, Parser)]
#[command(name = "lt", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `langtian_core=debug`.
    #[arg(long, global = true, env = "LT_LOG", default_value = "warn")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = langtian_core::cli::LogFormat::Text, env = "LT_LOG_FORMAT")]
    log_format: langtian_core::cli::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// NATS server URL(s), comma-separated. `lt up` starts its own server on port 14222 unless
    /// this is set explicitly.
    #[arg(long, global = true, env = "LT_NATS_URL")]
    pub(crate) nats_url: Option<String>,
    /// Credentials file (user JWT + NKey seed).
    #[arg(long, global = true, env = "LT_NATS_CREDS")]
    creds: Option<PathBuf>,
    /// Token authentication.
    #[arg(long, global = true, env = "LT_NATS_TOKEN")]
    token: Option<String>,
    /// User name (with --password).
    #[arg(long, global = true, env = "LT_NATS_USER")]
    user: Option<String>,
    /// Password (with --user).
    #[arg(long, global = true, env = "LT_NATS_PASSWORD")]
    password: Option<String>,
    /// NKey user seed.
    #[arg(long, global = true, env = "LT_NATS_NKEY_SEED")]
    nkey_seed: Option<String>,
    /// File holding an NKey user seed (as `lt up` keeps its services' keys:
    /// `.langtian/nats/keys/admin.nk`).
    #[arg(
        long,
        global = true,
        env = "LT_NATS_NKEY_SEED_FILE",
        conflicts_with = "nkey_seed"
    )]
    nkey_seed_file: Option<PathBuf>,
    /// Inbox prefix instead of `_INBOX` (an NKey user of `lt up` or `lt nats-access` reads only
    /// `_LT.<user>.>`: pass `--inbox-prefix _LT.<user>` with its key; the admin may read any inbox).
    #[arg(long, global = true, env = "LT_NATS_INBOX_PREFIX")]
    inbox_prefix: Option<String>,
    /// CA certificate (PEM) to trust for TLS.
    #[arg(long, global = true, env = "LT_NATS_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

const DEFAULT_URL: &str = "nats://127.0.0.1:14222";

impl ConnArgs {
    fn options(&self) -> BusOptions {
        let mut o = BusOptions::new(self.nats_url.as_deref().unwrap_or(DEFAULT_URL));
        o.name = Some("lt".into());
        o.creds_file = self.creds.clone();
        o.token = self.token.clone();
        o.user = self.user.clone();
        o.password = self.password.clone();
        o.nkey_seed = self.nkey_seed.clone();
        o.nkey_seed_file = self.nkey_seed_file.clone();
        o.inbox_prefix = self.inbox_prefix.clone();
        o.tls.ca_file = self.tls_ca.clone();
        o.tls.required = self.tls_ca.is_some();
        o
    }
    pub(crate) async fn connect(&self) -> Result<Bus, String> {
        Bus::connect(&self.options()).await.map_err(|e| {
            let text = e.to_string();
            let lower = text.to_lowercase();
            if lower.contains("authorization violation") {
                format!(
                    "{text}\nhint: the server wants credentials; for `lt up --nats-auth keys` pass a service's key, e.g. `--nkey-seed-file .langtian/nats/keys/admin.nk` (docs/security.md)"
                )
            } else if lower.contains("certificate") || lower.contains("tls") {
                format!(
                    "{text}\nhint: the server requires TLS with a certificate this client does not trust; pass its CA with --tls-ca (for `lt up --nats-tls`: .langtian/nats/tls/ca.pem) (docs/security.md)"
                )
            } else {
                format!(
                    "{text}\nhint: start the platform with `lt up`, or point --nats-url / LT_NATS_URL at a server"
                )
            }
        })
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the platform: embedded nats-server, provisioning, node registry, dead-letter
    /// forwarder, UDP collector, battery simulator, the flow into a local DuckLake and the query
    /// service, and the live path (tick simulator with its contracts, aggregator, WebSocket
    /// gateway serving the UI, whose URL it prints), with a live status line. Ctrl-C drains and
    /// stops cleanly; a second `lt up` resumes with the same store and lake.
    ///
    /// Exit codes: 0 stopped cleanly, 10 configuration (a flag, the topology file), 1 other
    /// errors.
    Up(UpArgs),
    /// Read-only SQL on the lake (through the running `lt up`, or the lake file with --local).
    Query(query_cmd::QueryArgs),
    /// Data simulators: battery cyclers over UDP, market ticks (and their contracts) to NATS.
    /// Settings that cannot work exit 10.
    #[command(subcommand)]
    Sim(sim_cmd::SimCmd),
    /// Publish a message (raw or as an envelope) with QoS 0, 1 or 2.
    Pub(PubArgs),
    /// Subscribe and print messages (core subscription, or a durable consumer with acks).
    Sub(SubArgs),
    /// List the nodes registered in KV discovery, or watch them join and leave.
    Nodes(NodesArgs),
    /// JetStream's streams and their durable consumers as the server counts them: messages,
    /// bytes and sequences; for each consumer what it still has to deliver, what awaits an ack,
    /// what was redelivered (the numbers `lt up` puts on /metrics as `jetstream_*`).
    Streams(StreamsArgs),
    /// Write NKey users with least-privilege permissions for running the services on your own
    /// nats-server (accounts.conf + one seed per service), as `lt up` runs them.
    NatsAccess(access_cmd::AccessArgs),
    /// Create or update the topology's streams, consumers, KV buckets and dead-letter streams
    /// (what `lt up` does at start; on a server with `lt nats-access` users, as `admin`).
    Provision(access_cmd::ProvisionArgs),
    /// sql-flow-compatible pipelines: run, invoke over a fixture, validate, print an example.
    #[command(subcommand)]
    Flow(FlowCmd),
    /// Benchmarks; results go to bench/results/<name>.json.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
enum FlowCmd {
    /// Run a pipeline until Ctrl-C / SIGTERM (the batch in progress is finished first, within
    /// pipeline.drain_deadline_seconds) or, for a jsonl source, until the file is consumed.
    /// Exit codes: 10 configuration, 12 sink failure, 15 drain incomplete, 1 other errors.
    Run(FlowRunArgs),
    /// Run the pipeline's commands and handler SQL over a JSONL fixture and print the rows
    /// (one JSON object per line); the source and sink are not touched.
    Invoke {
        #[command(flatten)]
        file: FlowFileArgs,
        /// JSONL fixture: one message payload per line.
        fixture: PathBuf,
    },
    /// Render and check a pipeline file; errors name the key path and line.
    Validate(FlowFileArgs),
    /// Print an example pipeline (JetStream → SQL → DuckLake).
    Example,
}

#[derive(Debug, Args)]
struct FlowRunArgs {
    #[command(flatten)]
    file: FlowFileArgs,
    /// Address of the Prometheus `/metrics` and `/healthz` endpoint; `off` to disable.
    #[arg(long, default_value = "127.0.0.1:9464", env = "LT_FLOW_METRICS_ADDR")]
    metrics_addr: String,
}

#[derive(Debug, Args)]
struct FlowFileArgs {
    /// Pipeline file (sql-flow format; Jinja variables from SQLFLOW_* environment variables).
    file: PathBuf,
    /// Extra template variables, KEY=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_kv)]
    vars: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

impl FlowFileArgs {
    fn load(&self) -> Result<langtian_core::flow::config::PipelineFile, String> {
        let vars = self.vars.iter().cloned().collect();
        langtian_core::flow::config::PipelineFile::load(&self.file, &vars).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Data directory: nats-server store (<dir>/nats) and the lake (<dir>/lake).
    #[arg(long, default_value = ".langtian")]
    data_dir: PathBuf,
    /// Client port of the embedded nats-server (ignored with --nats-url).
    #[arg(long, default_value_t = 14222)]
    nats_port: u16,
    /// Monitoring port of the embedded nats-server.
    #[arg(long, default_value_t = 18222)]
    nats_http_port: u16,
    /// How the embedded nats-server authenticates. `local`: every service connects as its own
    /// NKey user allowed only what it does, and clients without credentials (SDKs, this CLI)
    /// get the limited `local` user; `keys`: every client must present a key (the services'
    /// seeds are in <data-dir>/nats/keys; `--nkey-seed-file …/admin.nk` may do anything);
    /// `open`: no authentication, every client may do anything.
    #[arg(long, default_value = "local")]
    nats_auth: NatsAuth,
    /// Require TLS on the embedded nats-server. A local CA and a server certificate for
    /// 127.0.0.1/localhost are made once under <data-dir>/nats/tls; the services trust it, and
    /// other clients need `--tls-ca <data-dir>/nats/tls/ca.pem` (SDKs: their TLS CA option).
    #[arg(long)]
    nats_tls: bool,
    /// Topology file (streams, consumers, KV) instead of the built-in config/topology.yaml.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// UDP address of the collector.
    #[arg(long, default_value = "127.0.0.1:14250")]
    udp: std::net::SocketAddr,
    /// Listen only: do not run the battery simulator.
    #[arg(long)]
    no_sim: bool,
    /// Do not run the default flow (battery samples → DuckLake under <data-dir>/lake) and the
    /// query service.
    #[arg(long)]
    no_flow: bool,
    /// Simulated samples per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Simulated cyclers.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Channels per cycler.
    #[arg(long, default_value_t = 16)]
    channels: u32,
    /// Address of /metrics and /healthz; `off` to disable.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: String,
    /// How often /metrics reads JetStream's own state of every stream and durable consumer
    /// (jetstream_stream_total_messages, jetstream_consumer_num_pending, … as
    /// prometheus-nats-exporter names them); 1s–1h, or `off`.
    #[arg(long, default_value = "5s")]
    jetstream_metrics_every: String,
    /// Do not run the live path (tick simulator, aggregator, WebSocket gateway).
    #[arg(long)]
    no_live: bool,
    /// Simulated market ticks per second (0: none; the seeds' load is 4000).
    #[arg(long, default_value_t = 500.0)]
    tick_rate: f64,
    /// How often the aggregator publishes deltas (16–100 ms; the seed's 33 ms by default;
    /// shorter means fresher screens for more messages).
    #[arg(long, default_value = "33ms", value_parser = langtian_core::cli::duration_arg)]
    delta_interval: Duration,
    /// Address of the WebSocket gateway and the web UI.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway_addr: std::net::SocketAddr,
    /// The built web UI to serve (when it holds an index.html).
    #[arg(long, default_value = "ui/dist")]
    ui_dir: PathBuf,
    /// Serve the UI without the COOP/COEP headers that make it cross-origin isolated (for a UI
    /// that loads cross-origin resources lacking CORP, or is framed by a page that is not
    /// isolated; the browser's clock then reads 0.1 ms instead of 5 µs).
    #[arg(long)]
    no_cross_origin_isolation: bool,
    /// Stop after this long (e.g. `30s`); default: run until Ctrl-C.
    #[arg(long, value_parser = langtian_core::cli::duration_arg)]
    duration: Option<Duration>,
}

#[derive(Debug, Args)]
struct PubArgs {
    /// Subject (for --envelope: the prefix, default lt.evt, becomes <prefix>.<type>.<source>).
    subject: String,
    /// Payload; read from stdin when omitted.
    data: Option<String>,
    /// 0 = core publish, 1 = JetStream PubAck, 2 = 1 + deterministic message id.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Nats-Msg-Id (required for QoS 2 unless --envelope is used).
    #[arg(long)]
    msg_id: Option<String>,
    /// Publish this many copies ({i} in data or msg id is replaced by the index).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Wrap the payload in a langtian.envelope.v1.Envelope.
    #[arg(long)]
    envelope: bool,
    /// Envelope event type.
    #[arg(long, default_value = "demo")]
    event_type: String,
    /// Envelope source system.
    #[arg(long, default_value = "cli")]
    source: String,
}

#[derive(Debug, Args)]
struct SubArgs {
    /// Subject (wildcards allowed) for a core subscription.
    subject: Option<String>,
    /// Read a durable consumer of this stream instead (acks each message after printing).
    #[arg(long, requires = "durable")]
    stream: Option<String>,
    /// Durable consumer name (must be provisioned).
    #[arg(long, requires = "stream")]
    durable: Option<String>,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit when nothing arrives for this long (e.g. `5s`).
    #[arg(long, value_parser = langtian_core::cli::duration_arg)]
    idle: Option<Duration>,
    /// Print only the payload.
    #[arg(long)]
    raw: bool,
}

#[derive(Debug, Args)]
struct StreamsArgs {
    /// Print one JSON document ({"streams": [...], "consumers": [...]}).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct NodesArgs {
    /// Keep watching and print Joined/Updated/Left events.
    #[arg(long)]
    watch: bool,
    /// KV bucket.
    #[arg(long, default_value = "lt_nodes")]
    bucket: String,
    /// Output JSON lines.
    #[arg(long)]
    json: bool,
    /// With --watch: exit after this many events.
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// QoS 1 publish and consume+ack through the Langtian API vs a bare async-nats loop.
    Bus(BenchBusArgs),
    /// The flow engine alone over an in-memory fixture (rows/s, peak RSS).
    Flow(BenchFlowArgs),
    /// The UDP collector's zero-loss rate vs a bare windowed publish, and UDP → DuckLake end to end.
    Ingest(BenchIngestArgs),
    /// Ticks → JetStream → aggregator → gateway → WebSocket clients: latency at 4k and 40k ticks/s.
    Live(BenchLiveArgs),
}

#[derive(Debug, Args)]
struct BenchLiveArgs {
    /// Seconds instead of minutes (smoke test).
    #[arg(long)]
    quick: bool,
    /// Tick rates to measure at the default 33 ms deltas (comma-separated); default: 4000 and
    /// 40000, then 4000 with 16 ms deltas.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// WebSocket clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Results directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct BenchIngestArgs {
    /// Seconds instead of minutes (smoke test).
    #[arg(long)]
    quick: bool,
    /// Results directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct BenchFlowArgs {
    /// 100k events instead of 1M.
    #[arg(long)]
    quick: bool,
    /// Run one part only: `engine` (handlers over an in-memory fixture) or `e2e` (JetStream →
    /// flow → DuckLake). By default the engine runs here and the end-to-end part in a child
    /// process, so that each peak RSS is measured on its own.
    #[arg(long, value_parser = ["engine", "e2e"])]
    only: Option<String>,
    /// Results directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct BenchBusArgs {
    /// Seconds instead of minutes (smoke test).
    #[arg(long)]
    quick: bool,
    /// Messages per run (overrides the preset).
    #[arg(long)]
    messages: Option<usize>,
    /// Payload bytes.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Results directory.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = langtian_core::cli::init_logging(&cli.log, cli.log_format) {
        eprintln!("lt: error: {e}");
        return ExitCode::from(langtian_core::cli::EXIT_CONFIG);
    }
    // `lt up`, `lt sim` and `lt bench bus|live` tell settings errors (exit 10) from the rest;
    // the other commands' errors are messages (exit 1).
    let conn = &cli.conn;
    let result: Result<(), CmdError> = match &cli.cmd {
        Cmd::Up(a) => Box::pin(cmd_up(conn, a)).await,
        Cmd::Sim(c) => sim_cmd::cmd_sim(conn, c).await,
        Cmd::Bench(BenchCmd::Bus(a)) => cmd_bench_bus(conn, a).await,
        Cmd::Bench(BenchCmd::Live(a)) => cmd_bench_live(a).await,
        Cmd::Query(a) => query_cmd::cmd_query(conn, a).await.map_err(CmdError::from),
        Cmd::Pub(a) => cmd_pub(conn, a).await.map_err(CmdError::from),
        Cmd::Sub(a) => cmd_sub(conn, a).await.map_err(CmdError::from),
        Cmd::Nodes(a) => cmd_nodes(conn, a).await.map_err(CmdError::from),
        Cmd::Streams(a) => cmd_streams(conn, a).await.map_err(CmdError::from),
        Cmd::NatsAccess(a) => access_cmd::cmd_nats_access(a).map_err(CmdError::from),
        Cmd::Provision(a) => access_cmd::cmd_provision(conn, a).await.map_err(CmdError::from),
        Cmd::Bench(BenchCmd::Flow(a)) => cmd_bench_flow(a).await.map_err(CmdError::from),
        Cmd::Bench(BenchCmd::Ingest(a)) => cmd_bench_ingest(a).await.map_err(CmdError::from),
        Cmd::Flow(f) => cmd_flow(f).await.map_err(CmdError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            langtian_core::console::fail("lt", "command_failed", &e.message);
            ExitCode::from(e.exit)
        }
    }
}

/// How a command failed: its message and exit code (10 for settings that cannot work, as for
/// every Langtian binary; 1 for the rest).
#[derive(Debug)]
pub(crate) struct CmdError {
    exit: u8,
    message: String,
}

impl CmdError {
    /// A setting that cannot work (exit 10).
    pub(crate) fn config(message: impl std::fmt::Display) -> Self {
        Self {
            exit: langtian_core::cli::EXIT_CONFIG,
            message: message.to_string(),
        }
    }
}

impl From<String> for CmdError {
    fn from(message: String) -> Self {
        Self { exit: 1, message }
    }
}

pub(crate) async fn ctrl_c_or(limit: Option<Duration>) {
    match limit {
        Some(d) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = tokio::time::sleep(d) => {}
                _ = sigterm() => {}
            }
        }
        None => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm() => {}
            }
        }
    }
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

async fn cmd_up(conn: &ConnArgs, a: &UpArgs) -> Result<(), CmdError> {
    if a.nats_tls && conn.nats_url.is_some() {
        return Err(CmdError::config(
            "--nats-tls makes the embedded nats-server require TLS; with --nats-url the server is yours: pass its CA with --tls-ca instead",
        ));
    }
    if !(a.tick_rate.is_finite() && a.tick_rate >= 0.0) {
        return Err(CmdError::config(format!(
            "--tick-rate must be a number ≥ 0 (0: no ticks), got {}",
            a.tick_rate
        )));
    }
    let cfg = UpConfig {
        data_dir: a.data_dir.clone(),
        connect: conn.nats_url.as_ref().map(|_| conn.options()),
        nats_auth: a.nats_auth,
        nats_tls: a.nats_tls,
        nats_port: a.nats_port,
        nats_http_port: a.nats_http_port,
        topology: a.topology.clone(),
        udp_listen: a.udp,
        sim: !a.no_sim,
        rate: a.rate,
        devices: a.devices,
        channels: a.channels,
        flow: !a.no_flow,
        query: !a.no_flow,
        ops_addr: match a.metrics_addr.as_str() {
            "off" => None,
            s => Some(
                s.parse()
                    .map_err(|e| CmdError::config(format!("--metrics-addr `{s}`: {e}")))?,
            ),
        },
        live: !a.no_live,
        tick_rate: a.tick_rate,
        delta_interval: a.delta_interval,
        gateway_addr: a.gateway_addr,
        ui_dir: Some(a.ui_dir.clone()),
        cross_origin_isolation: !a.no_cross_origin_isolation,
        jetstream_state_every: match a.jetstream_metrics_every.as_str() {
            "off" => None,
            s => {
                let d = langtian_core::cli::duration_arg(s)
                    .map_err(|e| CmdError::config(format!("--jetstream-metrics-every: {e}")))?;
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
                    return Err(CmdError::config(format!(
                        "--jetstream-metrics-every must be between 1s and 1h (or `off`), got `{s}`"
                    )));
                }
                Some(d)
            }
        },
    };
    let tty = std::io::stdout().is_terminal();
    println!("lt up: starting (Ctrl-C to stop)");
    let summary = Box::pin(run_up(
        cfg,
        ctrl_c_or(a.duration),
        |line| println!("  {line}"),
        |status| {
            if tty {
                print!("\r\x1b[2K{}", status.line());
                let _ = std::io::stdout().flush();
            } else {
                println!("{}", status.line());
            }
        },
    ))
    .await
    .map_err(|e| CmdError {
        exit: if e.is_config() {
            langtian_core::cli::EXIT_CONFIG
        } else {
            1
        },
        message: e.to_string(),
    })?;
    if tty {
        println!();
    }
    println!("lt up: stopped cleanly\n{}", summary.status.line());
    Ok(())
}

async fn cmd_pub(conn: &ConnArgs, a: &PubArgs) -> Result<(), String> {
    let qos = Qos::from_level(a.qos).ok_or("qos must be 0, 1 or 2")?;
    let data = match &a.data {
        Some(d) => d.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("reading stdin: {e}"))?;
            s
        }
    };
    let bus = conn.connect().await?;
    let publisher = Publisher::new(bus.clone(), PublisherConfig::new(qos));
    for i in 0..a.count {
        let body = data.replace("{i}", &i.to_string());
        let msg_id = a.msg_id.as_ref().map(|m| m.replace("{i}", &i.to_string()));
        let msg = if a.envelope {
            let id =
                msg_id.unwrap_or_else(|| format!("{}:{}", a.source, langtian_core::envelope::now_nanos()));
            let env = EnvelopeBuilder::new(a.event_type.clone(), a.source.clone())
                .event_id(id)
                .payload(Bytes::from(body), "application/json")
                .build()
                .map_err(|e| e.to_string())?;
            OutgoingMessage::from_envelope(&a.subject, &env)
        } else {
            let mut m = OutgoingMessage::new(a.subject.clone(), body);
            m.msg_id = msg_id;
            m
        };
        let r = publisher.publish(msg).await.map_err(|e| e.to_string())?;
        match (r.stream, r.sequence) {
            (Some(stream), Some(seq)) => println!(
                "published to stream {stream} seq {seq}{} (msg id {}, {} attempt{})",
                if r.duplicate { " [duplicate]" } else { "" },
                r.msg_id.unwrap_or_default(),
                r.attempts,
                if r.attempts == 1 { "" } else { "s" }
            ),
            _ => println!("published (QoS 0, no server confirmation)"),
        }
    }
    bus.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}

fn describe(
    subject: &str,
    payload: &[u8],
    headers: Option<&langtian_core::async_nats::HeaderMap>,
    raw: bool,
) -> String {
    if raw {
        return String::from_utf8_lossy(payload).into_owned();
    }
    let is_env = headers
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str().contains("langtian.envelope.v1"))
        .unwrap_or(false);
    if is_env {
        match Envelope::decode(payload) {
            Ok(e) => {
                let body = if e.content_type().contains("json") || e.content_type().starts_with("text") {
                    String::from_utf8_lossy(e.payload()).into_owned()
                } else {
                    format!("<{} bytes {}>", e.payload().len(), e.content_type())
                };
                return format!(
                    "[{subject}] envelope id={} type={} source={} v{} {}",
                    e.event_id(),
                    e.event_type(),
                    e.source_system(),
                    e.schema_version(),
                    body
                );
            }
            Err(err) => return format!("[{subject}] BAD ENVELOPE: {err}"),
        }
    }
    format!("[{subject}] {}", String::from_utf8_lossy(payload))
}

async fn cmd_sub(conn: &ConnArgs, a: &SubArgs) -> Result<(), String> {
    let bus = conn.connect().await?;
    let idle = a.idle.unwrap_or(Duration::from_secs(u64::MAX / 4));
    let mut n = 0u64;
    let done = |n: u64| a.count.is_some_and(|c| n >= c);
    if let (Some(stream), Some(durable)) = (&a.stream, &a.durable) {
        let mut spec = ConsumerSpec::new(stream.clone(), durable.clone());
        spec.fetch_batch = 100;
        let mut c = Consumer::bind(&bus, spec).await.map_err(|e| e.to_string())?;
        while !done(n) {
            let want = a.count.map(|c| (c - n) as usize).unwrap_or(100).min(100);
            let b = tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                b = c.next_batch(want, idle.min(Duration::from_secs(1))) => b.map_err(|e| e.to_string())?,
            };
            if b.is_empty() && a.idle.is_some() {
                break;
            }
            for m in &b.messages {
                println!(
                    "{} (seq {}, delivery {})",
                    describe(&m.subject, &m.payload, m.headers.as_ref(), a.raw),
                    m.stream_sequence,
                    m.deliveries
                );
            }
            n += b.len() as u64;
            b.ack_all().await.map_err(|e| e.to_string())?;
        }
    } else {
        let subject = a
            .subject
            .clone()
            .ok_or("give a SUBJECT, or --stream and --durable")?;
        let mut sub = bus
            .client()
            .subscribe(subject.clone())
            .await
            .map_err(|e| format!("subscribing to `{subject}`: {e}"))?;
        while !done(n) {
            let m = tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                m = tokio::time::timeout(idle, sub.next()) => match m {
                    Ok(Some(m)) => m,
                    _ => break,
                },
            };
            println!("{}", describe(&m.subject, &m.payload, m.headers.as_ref(), a.raw));
            n += 1;
        }
    }
    eprintln!("lt sub: {n} message(s)");
    Ok(())
}

async fn cmd_streams(conn: &ConnArgs, a: &StreamsArgs) -> Result<(), String> {
    let bus = conn.connect().await?;
    let state = langtian_core::bus::JetStreamState::read(&bus)
        .await
        .map_err(|e| e.to_string())?;
    if a.json {
        println!("{}", serde_json::to_string(&state).map_err(|e| e.to_string())?);
    } else {
        print!("{state}");
    }
    Ok(())
}

async fn cmd_nodes(conn: &ConnArgs, a: &NodesArgs) -> Result<(), String> {
    let bus = conn.connect().await?;
    let cfg = DiscoveryConfig {
        bucket: a.bucket.clone(),
        ..DiscoveryConfig::default()
    };
    let reg = Registry::open(&bus, cfg).await.map_err(|e| e.to_string())?;
    if !a.watch {
        let nodes = reg.nodes().await.map_err(|e| e.to_string())?;
        if a.json {
            for n in &nodes {
                println!("{}", serde_json::to_string(n).map_err(|e| e.to_string())?);
            }
        } else {
            println!(
                "{:<32} {:<12} {:<10} {:>8} {:>12}",
                "NODE", "ROLE", "VERSION", "LOAD", "LAST SEEN"
            );
            let now = langtian_core::envelope::now_nanos() / 1_000_000;
            for n in &nodes {
                println!(
                    "{:<32} {:<12} {:<10} {:>8.2} {:>10.1}s",
                    n.node_id,
                    n.role,
                    n.version,
                    n.load,
                    (now - n.last_seen_ms) as f64 / 1000.0
                );
            }
            println!("{} node(s)", nodes.len());
        }
        return Ok(());
    }
    let mut w = reg.watch().await.map_err(|e| e.to_string())?;
    let mut n = 0u64;
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = w.next() => match ev { Some(e) => e.map_err(|e| e.to_string())?, None => break },
        };
        let line = match (&ev, a.json) {
            (NodeEvent::Joined(node), false) => format!("joined  {} ({})", node.node_id, node.role),
            (NodeEvent::Updated(node), false) => format!("updated {} load={:.2}", node.node_id, node.load),
            (NodeEvent::Left { node_id, reason }, false) => format!("left    {node_id} ({reason:?})"),
            (NodeEvent::Joined(node), true) => serde_json::json!({"event":"joined","node":node}).to_string(),
            (NodeEvent::Updated(node), true) => {
                serde_json::json!({"event":"updated","node":node}).to_string()
            }
            (NodeEvent::Left { node_id, reason }, true) => {
                serde_json::json!({"event":"left","node_id":node_id,"reason":format!("{reason:?}")})
                    .to_string()
            }
        };
        println!("{line}");
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
    }
    Ok(())
}

async fn cmd_bench_bus(conn: &ConnArgs, a: &BenchBusArgs) -> Result<(), CmdError> {
    let mut cfg = if a.quick {
        BusBenchConfig::quick()
    } else {
        BusBenchConfig::full()
    };
    cfg.nats_url = conn.nats_url.clone();
    cfg.payload = a.payload;
    if let Some(m) = a.messages {
        if m == 0 {
            return Err(CmdError::config(
                "--messages must be at least 1 (a run of 0 messages measures nothing)",
            ));
        }
        cfg.messages = m;
    }
    println!(
        "lt bench bus: {} messages × {} bytes, window {}, batch {}, {} round(s){}",
        cfg.messages,
        cfg.payload,
        cfg.window,
        cfg.batch,
        cfg.rounds,
        if cfg.nats_url.is_some() {
            ""
        } else {
            " (own nats-server)"
        }
    );
    let records = bench_bus(&cfg, |line| println!("  {line}"))
        .await
        .map_err(|e| e.to_string())?;
    print!("{}", summary(&records));
    let path = write_results(&a.out, "bus", &records).map_err(|e| e.to_string())?;
    println!("results: {}", path.display());
    Ok(())
}

async fn cmd_flow(cmd: &FlowCmd) -> Result<(), String> {
    use langtian_core::flow::sink::json_lines;
    match cmd {
        FlowCmd::Example => {
            print!("{}", langtian_core::flow::EXAMPLE_PIPELINE);
            Ok(())
        }
        FlowCmd::Validate(a) => {
            let f = a.load()?;
            let p = &f.pipeline;
            println!(
                "{}: ok — source {} → {} → sink {} (batch_size {}, flush every {}s, on_error {:?}, {} command(s))",
                a.file.display(),
                p.source.kind,
                p.handler.kind,
                p.sink.kind,
                p.batch_size,
                p.flush_interval_seconds,
                p.on_error.policy,
                f.commands.len()
            );
            Ok(())
        }
        FlowCmd::Invoke { file, fixture } => {
            let f = file.load()?;
            let inv = tokio::task::block_in_place(|| langtian_core::flow::invoke_jsonl(&f, fixture))
                .map_err(|e| e.to_string())?;
            for line in json_lines(&inv.batches)? {
                println!("{line}");
            }
            for (i, why) in &inv.rejected {
                eprintln!("line {}: rejected: {why}", i + 1);
            }
            eprintln!(
                "lt flow invoke: {} input row(s), {} output row(s), {} rejected",
                inv.input_rows,
                inv.output_rows(),
                inv.rejected.len()
            );
            Ok(())
        }
        FlowCmd::Run(a) => {
            let f = a.file.load()?;
            let ops_addr = match a.metrics_addr.as_str() {
                "off" | "" => None,
                addr => Some(
                    addr.parse()
                        .map_err(|e| format!("--metrics-addr `{addr}`: {e} (use host:port or `off`)"))?,
                ),
            };
            let opts = langtian_core::flow::service::ServiceOptions {
                ops_addr,
                ..Default::default()
            };
            eprintln!(
                "lt flow: running {} (Ctrl-C or SIGTERM drains and stops){}",
                a.file.file.display(),
                ops_addr
                    .map(|a| format!("; metrics http://{a}/metrics"))
                    .unwrap_or_default()
            );
            match langtian_core::flow::service::run_service(f, &opts).await {
                Ok(stats) => {
                    eprintln!(
                        "lt flow: stopped at committed seq {} ({})",
                        stats.committed_seq.load(std::sync::atomic::Ordering::Relaxed),
                        langtian_core::flow::service::status_line(&stats)
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("lt: error: {e}");
                    std::process::exit(e.exit_code());
                }
            }
        }
    }
}

async fn cmd_bench_flow(a: &BenchFlowArgs) -> Result<(), String> {
    use langtian_core::bench::{BenchRecord, FlowBenchConfig, bench_flow_e2e, bench_flow_engine};
    let cfg = if a.quick {
        FlowBenchConfig::quick()
    } else {
        FlowBenchConfig::full()
    };
    println!("lt bench flow: {} events, {} per batch", cfg.events, cfg.batch);
    let run_here = |part: &'static str| {
        let cfg = cfg.clone();
        tokio::task::block_in_place(move || {
            tokio::runtime::Handle::current().block_on(async move {
                let p = |line: &str| println!("  {line}");
                match part {
                    "engine" => bench_flow_engine(&cfg, p).await,
                    _ => bench_flow_e2e(&cfg, p).await,
                }
            })
        })
        .map_err(|e| e.to_string())
    };
    let records: Vec<BenchRecord> = match a.only.as_deref() {
        Some("engine") => run_here("engine")?,
        Some(_) => run_here("e2e")?,
        None => {
            let mut records = run_here("engine")?;
            // The end-to-end part in a fresh process: its peak RSS must not include the engine
            // part's fixtures or whatever the allocator kept from them.
            let dir = std::env::temp_dir().join(format!("lt-bench-flow-e2e-{}", std::process::id()));
            let exe = std::env::current_exe().map_err(|e| format!("locating lt: {e}"))?;
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["bench", "flow", "--only", "e2e", "--out"]).arg(&dir);
            if a.quick {
                cmd.arg("--quick");
            }
            let status = cmd.status().map_err(|e| format!("running the e2e part: {e}"))?;
            if !status.success() {
                return Err(format!("the end-to-end part failed ({status})"));
            }
            let text = std::fs::read_to_string(dir.join("flow.json"))
                .map_err(|e| format!("reading the e2e results: {e}"))?;
            let e2e: Vec<BenchRecord> =
                serde_json::from_str(&text).map_err(|e| format!("parsing the e2e results: {e}"))?;
            let _ = std::fs::remove_dir_all(&dir);
            records.extend(e2e);
            records
        }
    };
    print!("{}", summary(&records));
    let path = write_results(&a.out, "flow", &records).map_err(|e| e.to_string())?;
    println!("results: {}", path.display());
    Ok(())
}

async fn cmd_bench_live(a: &BenchLiveArgs) -> Result<(), CmdError> {
    use langtian_core::bench::{LiveBenchConfig, bench_live};
    let mut cfg = if a.quick {
        LiveBenchConfig::quick()
    } else {
        LiveBenchConfig::full()
    };
    if let Some(r) = &a.rates {
        if let Some(bad) = r.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(CmdError::config(format!(
                "--rates: each rate must be a number of ticks/s above 0, got {bad}"
            )));
        }
        cfg.steps = r.iter().map(|r| (*r, Duration::from_millis(33))).collect();
    }
    if a.clients == 0 {
        return Err(CmdError::config(
            "--clients must be at least 1 (the latency is measured at the clients)",
        ));
    }
    cfg.clients = a.clients;
    eprintln!("lt bench live ({}):", if a.quick { "quick" } else { "full" });
    let records = bench_live(&cfg, |line| eprintln!("  {line}"))
        .await
        .map_err(|e| e.to_string())?;
    let path = write_results(&a.out, "live", &records).map_err(|e| e.to_string())?;
    println!("{}", summary(&records));
    println!("results: {}", path.display());
    Ok(())
}

async fn cmd_bench_ingest(a: &BenchIngestArgs) -> Result<(), String> {
    use langtian_core::bench::{IngestBenchConfig, bench_ingest};
    let cfg = if a.quick {
        IngestBenchConfig::quick()
    } else {
        IngestBenchConfig::full()
    };
    eprintln!("lt bench ingest ({}):", if a.quick { "quick" } else { "full" });
    let records = bench_ingest(&cfg, |line| eprintln!("  {line}"))
        .await
        .map_err(|e| e.to_string())?;
    let path = write_results(&a.out, "ingest", &records).map_err(|e| e.to_string())?;
    println!("{}", summary(&records));
    println!("results: {}", path.display());
    Ok(())
}
