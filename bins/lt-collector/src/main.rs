//! `lt-collector`: the UDP collector as a service. Argument parsing only; the collector is
//! `langtian_core::collector` (see docs/collector.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use langtian_core::bus::Qos;
use langtian_core::cli::{self, NatsArgs};
use langtian_core::collector::service::{CollectorServiceOptions, run_collector_service, status_line};
use langtian_core::collector::{CollectorConfig, DatagramFormat, JsonDefaults};

/// Receives UDP datagrams — encoded envelopes, battery sample batches
/// (langtian.battery.v1.ChannelSampleBatch) or JSON lines — and publishes one envelope per
/// record to `<prefix>.<event_type>.<source>` with QoS 1 or 2. The socket reader never waits
/// for the network: while NATS is away, envelopes wait in a bounded buffer (counted drops
/// beyond it) and are published in order after the reconnect.
///
/// Exit codes: 0 stopped cleanly, 10 configuration error, 15 stopped with envelopes still
/// unpublished (NATS away until the drain timeout), 1 other errors.
#[derive(Debug, Parser)]
#[command(name = "lt-collector", version)]
struct Cli {
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:14250", env = "LT_COLLECTOR_LISTEN")]
    listen: SocketAddr,
    /// Socket receive buffer in bytes (capped by the kernel's net.core.rmem_max).
    #[arg(long, default_value_t = 8 << 20)]
    recv_buffer: usize,
    /// Datagram format: auto, envelope, battery or jsonl.
    #[arg(long, default_value = "auto")]
    format: DatagramFormat,
    /// Subject prefix.
    #[arg(long, default_value = "lt.evt")]
    prefix: String,
    /// 1 = PubAck (re-sent with the same message id), 2 = also checks the stream's duplicate window.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    qos: u8,
    /// Envelopes buffered while NATS is slow or away (drops beyond are counted).
    #[arg(long, default_value_t = 200_000)]
    buffer: usize,
    /// PubAcks in flight.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Event type of JSON lines that name none.
    #[arg(long, default_value = "telemetry")]
    json_event_type: String,
    /// On shutdown, how long to keep publishing the backlog.
    #[arg(long, default_value = "10s", value_parser = langtian_core::cli::duration_arg)]
    drain_timeout: Duration,
    #[command(flatten)]
    nats: NatsArgs,
    /// Address of `/metrics` and `/healthz`; `off` to disable.
    #[arg(long, default_value = "127.0.0.1:9465")]
    metrics_addr: String,
    /// Seconds between status lines on stderr (0 = none).
    #[arg(long, default_value_t = 10)]
    status_every: u64,
    /// Node id in KV discovery (`lt_nodes`); `off` not to register.
    #[arg(long, default_value = "collector-1")]
    node_id: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info", env = "LT_LOG")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, default_value_t = langtian_core::cli::LogFormat::Text, env = "LT_LOG_FORMAT")]
    log_format: langtian_core::cli::LogFormat,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = langtian_core::cli::init_logging(&cli.log, cli.log_format) {
        eprintln!("lt-collector: error: {e}");
        return ExitCode::from(langtian_core::cli::EXIT_CONFIG);
    }
    let mut cfg = CollectorConfig::new(cli.listen);
    cfg.recv_buffer_bytes = cli.recv_buffer;
    cfg.format = cli.format;
    cfg.subject_prefix = cli.prefix.clone();
    cfg.qos = if cli.qos == 2 {
        Qos::ExactlyOnce
    } else {
        Qos::AtLeastOnce
    };
    cfg.buffer_records = cli.buffer;
    cfg.publish_window = cli.window;
    cfg.json = JsonDefaults {
        event_type: cli.json_event_type.clone(),
    };
    cfg.drain_timeout = cli.drain_timeout;
    let bus = cli.nats.options("lt-collector");
    let ops_addr = match cli::ops_addr(&cli.metrics_addr) {
        Ok(a) => a,
        Err(e) => {
            langtian_core::console::fail("lt-collector", "config_invalid", &e);
            return ExitCode::from(10);
        }
    };
    let opts = CollectorServiceOptions {
        ops_addr,
        status_every: cli::every(cli.status_every),
        node_id: cli::node_id(&cli.node_id),
    };
    let stop = cli::stop_signal("lt-collector", "publishing the backlog…");
    match run_collector_service(cfg, bus, opts, stop).await {
        Ok(r) if r.unpublished_at_stop > 0 => {
            cli::say(&format!(
                "lt-collector: stopped with {} envelopes unpublished\n{}",
                r.unpublished_at_stop,
                status_line(&r.stats)
            ));
            ExitCode::from(15)
        }
        Ok(r) => {
            cli::say(&format!(
                "lt-collector: stopped cleanly\n{}",
                status_line(&r.stats)
            ));
            ExitCode::SUCCESS
        }
        Err(
            e @ (langtian_core::collector::CollectorError::Config(_)
            | langtian_core::collector::CollectorError::Socket { .. }),
        ) => {
            langtian_core::console::fail("lt-collector", "config_invalid", &e);
            ExitCode::from(10)
        }
        Err(e) => {
            langtian_core::console::fail("lt-collector", "service_failed", &e);
            ExitCode::FAILURE
        }
    }
}
