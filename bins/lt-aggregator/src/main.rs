//! `lt-aggregator`: the aggregator as a service. Argument parsing only; the aggregator is
//! `langtian_core::aggregate` (see docs/aggregator.md).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use langtian_core::aggregate::service::{AggregatorServiceOptions, run_aggregator_service, status_line};
use langtian_core::aggregate::{AggregateError, AggregatorConfig, FeedConfig, ReorderPolicy};
use langtian_core::bus::Bus;
use langtian_core::cli::{self, NatsArgs};

/// Reads raw market ticks (`xy.src.tick.<venue>.<symbol>`, stream XY_SRC), contracts
/// (`xy.ref.contract.<venue>.<symbol>`, stream XY_REF) and battery channel samples
/// (`lt.evt.battery.>`, stream LT_EVENTS), keeps the latest state per instrument or channel
/// (duplicates dropped, small re-orderings fixed by per-key sequence, gaps counted), and
/// publishes every `--delta-interval` the changed keys per shard (`xy.md.tick.<venue>.<shard>`,
/// `xy.md.contract.<venue>.<shard>`, `lt.md.delta.cells.<shard>`) and every
/// `--snapshot-interval` a snapshot per group (`xy.md.snapshot.<venue>`,
/// `xy.md.contracts.<venue>`, `lt.md.snapshot.cells`), also stored in the KV bucket
/// `md_snapshots` under the same name. A restart continues from those snapshots.
///
/// Exit codes: 0 stopped cleanly, 10 configuration error, 1 other errors.
#[derive(Debug, Parser)]
#[command(name = "lt-aggregator", version)]
struct Cli {
    /// How often deltas are published (16ms–100ms).
    #[arg(long, default_value = "33ms", value_parser = langtian_core::cli::duration_arg)]
    delta_interval: Duration,
    /// How often snapshots are published and stored (2s–5s).
    #[arg(long, default_value = "3s", value_parser = langtian_core::cli::duration_arg)]
    snapshot_interval: Duration,
    /// Shards per group (1–256); a shard is FNV-1a(key) mod shards.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// How long a record ahead of a missing sequence waits for it.
    #[arg(long, default_value = "20ms", value_parser = langtian_core::cli::duration_arg)]
    reorder_window: Duration,
    /// Feeds to run, comma-separated: ticks, contracts, battery.
    #[arg(long, default_value = "ticks,contracts,battery", value_delimiter = ',')]
    feeds: Vec<String>,
    /// Group name of the battery channels.
    #[arg(long, default_value = "cells")]
    battery_group: String,
    /// KV bucket of the latest snapshot per group.
    #[arg(long, default_value = "md_snapshots")]
    kv_bucket: String,
    #[command(flatten)]
    nats: NatsArgs,
    /// Address of `/metrics` and `/healthz`; `off` to disable.
    #[arg(long, default_value = "127.0.0.1:9466")]
    metrics_addr: String,
    /// Seconds between status lines on stderr (0 = none).
    #[arg(long, default_value_t = 10)]
    status_every: u64,
    /// Node id in KV discovery (`lt_nodes`); `off` not to register.
    #[arg(long, default_value = "aggregator-1")]
    node_id: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info", env = "LT_LOG")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, default_value_t = langtian_core::cli::LogFormat::Text, env = "LT_LOG_FORMAT")]
    log_format: langtian_core::cli::LogFormat,
}

fn config(cli: &Cli) -> Result<AggregatorConfig, String> {
    let mut cfg = AggregatorConfig {
        delta_interval: cli.delta_interval,
        snapshot_interval: cli.snapshot_interval,
        shards: cli.shards,
        reorder: ReorderPolicy {
            window: cli.reorder_window,
            ..ReorderPolicy::default()
        },
        kv_bucket: cli.kv_bucket.clone(),
        ticks: None,
        battery: None,
        contracts: None,
    };
    for f in &cli.feeds {
        match f.trim() {
            "ticks" => cfg.ticks = Some(FeedConfig::ticks()),
            "contracts" => cfg.contracts = Some(FeedConfig::contracts()),
            "battery" => {
                let mut b = FeedConfig::battery();
                b.group = Some(cli.battery_group.clone());
                cfg.battery = Some(b);
            }
            other => {
                return Err(format!(
                    "--feeds: unknown feed `{other}` (ticks, contracts, battery)"
                ));
            }
        }
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = langtian_core::cli::init_logging(&cli.log, cli.log_format) {
        eprintln!("lt-aggregator: error: {e}");
        return ExitCode::from(langtian_core::cli::EXIT_CONFIG);
    }
    let cfg = match config(&cli) {
        Ok(c) => c,
        Err(e) => {
            langtian_core::console::fail("lt-aggregator", "config_invalid", &e);
            return ExitCode::from(10);
        }
    };
    let ops_addr = match cli::ops_addr(&cli.metrics_addr) {
        Ok(a) => a,
        Err(e) => {
            langtian_core::console::fail("lt-aggregator", "config_invalid", &e);
            return ExitCode::from(10);
        }
    };
    let bus = match Bus::connect(&cli.nats.options("lt-aggregator")).await {
        Ok(b) => b,
        Err(e) => {
            langtian_core::console::fail("lt-aggregator", "nats_unreachable", &e);
            return ExitCode::FAILURE;
        }
    };
    let sopts = AggregatorServiceOptions {
        ops_addr,
        status_every: cli::every(cli.status_every),
        node_id: cli::node_id(&cli.node_id),
    };
    let stop = cli::stop_signal("lt-aggregator", "publishing the last deltas and snapshots…");
    match run_aggregator_service(bus, cfg, sopts, stop).await {
        Ok(stats) => {
            langtian_core::cli::say(&format!(
                "lt-aggregator: stopped cleanly\n{}",
                status_line(&stats)
            ));
            ExitCode::SUCCESS
        }
        Err(e @ AggregateError::Config { .. }) => {
            langtian_core::console::fail("lt-aggregator", "config_invalid", &e);
            ExitCode::from(10)
        }
        Err(e) => {
            langtian_core::console::fail("lt-aggregator", "service_failed", &e);
            ExitCode::FAILURE
        }
    }
}
