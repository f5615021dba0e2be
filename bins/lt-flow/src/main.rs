//! `lt-flow`: the stream processor as a service — one pipeline file, `/metrics` and `/healthz`,
//! drain on SIGTERM. The same engine runs under `lt flow run`; see docs/flow.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use langtian_core::flow::config::PipelineFile;
use langtian_core::flow::service::{ServiceOptions, run_service, status_line};

/// Runs one sql-flow-compatible pipeline (source → DuckDB SQL → sink) until SIGTERM/SIGINT,
/// draining the batch in progress within `pipeline.drain_deadline_seconds`.
///
/// Exit codes: 0 stopped cleanly (or a jsonl source was consumed), 10 configuration error,
/// 12 sink failure, 15 drain incomplete, 1 other errors.
#[derive(Debug, Parser)]
#[command(name = "lt-flow", version)]
struct Cli {
    /// Pipeline file (sql-flow format; Jinja variables from SQLFLOW_* environment variables).
    file: PathBuf,
    /// Extra template variables, KEY=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_kv)]
    vars: Vec<(String, String)>,
    /// Address of `/metrics` (Prometheus) and `/healthz`; `off` to disable.
    #[arg(long, default_value = "127.0.0.1:9464", env = "LT_FLOW_METRICS_ADDR")]
    metrics_addr: String,
    /// Seconds between status lines on stderr (0 = none).
    #[arg(long, default_value_t = 10)]
    status_every: u64,
    /// Only render and check the pipeline file, then exit.
    #[arg(long)]
    check: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info", env = "LT_LOG")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, default_value_t = langtian_core::cli::LogFormat::Text, env = "LT_LOG_FORMAT")]
    log_format: langtian_core::cli::LogFormat,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = langtian_core::cli::init_logging(&cli.log, cli.log_format) {
        eprintln!("lt-flow: error: {e}");
        return ExitCode::from(langtian_core::cli::EXIT_CONFIG);
    }
    let vars: BTreeMap<String, String> = cli.vars.iter().cloned().collect();
    let file = match PipelineFile::load(&cli.file, &vars) {
        Ok(f) => f,
        Err(e) => {
            langtian_core::console::fail("lt-flow", "config_invalid", &e);
            return ExitCode::from(10);
        }
    };
    if cli.check {
        println!("{}: ok", cli.file.display());
        return ExitCode::SUCCESS;
    }
    let ops_addr = match langtian_core::cli::ops_addr(&cli.metrics_addr) {
        Ok(a) => a,
        Err(e) => {
            langtian_core::console::fail(
                "lt-flow",
                "config_invalid",
                &format!("{e} (use host:port or `off`)"),
            );
            return ExitCode::from(10);
        }
    };
    let opts = ServiceOptions {
        ops_addr,
        status_every: langtian_core::cli::every(cli.status_every),
    };
    match run_service(file, &opts).await {
        Ok(stats) => {
            langtian_core::cli::say(&format!("lt-flow: stopped — {}", status_line(&stats)));
            ExitCode::SUCCESS
        }
        Err(e) => {
            langtian_core::console::fail("lt-flow", "service_failed", &e);
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
