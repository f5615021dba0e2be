//! `lt-query`: the query service on its own. Argument parsing and wiring only; the service is
//! `langtian_core::query` (see docs/query.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use langtian_core::bus::Bus;
use langtian_core::cli::{self, NatsArgs};
use langtian_core::discovery::{DiscoveryConfig, NodeInfo, Registry};
use langtian_core::lake::{Catalog, DataPath, Lake, LakeConfig};
use langtian_core::query::{QUERY_SUBJECT, QueryService, QueryServiceConfig};
use tokio::sync::watch;

/// Answers read-only SQL on a DuckLake over NATS request/reply (`lt.query.v1`): each request is
/// JSON (sql, params, limits, timeout), each answer Arrow IPC chunks no larger than the server's
/// max_payload; errors come back with a code. Only read statements run (DuckDB's parser decides),
/// each in a transaction that is rolled back, on a lake attached READ_ONLY.
///
/// A DuckDB-file catalog (`--lake DIR`) belongs to one process: serve it with `lt-query` only
/// while nothing writes it (while `lt up` writes it, `lt up`'s own query service answers). With a
/// SQLite or PostgreSQL catalog (`--catalog`), `lt-query` runs next to the writers.
///
/// Exit codes: 0 stopped cleanly, 10 configuration error (bad flags, no such lake), 1 other errors.
#[derive(Debug, Parser)]
#[command(name = "lt-query", version)]
struct Cli {
    /// A local lake directory (`DIR/meta.ducklake` + `DIR/data/`), as `lt up` writes it.
    #[arg(long, default_value = ".langtian/lake", conflicts_with = "catalog")]
    lake: PathBuf,
    /// The lake's catalog instead of --lake: `sqlite:PATH`, `postgres:CONNINFO` or a DuckDB file.
    #[arg(long, requires = "data_path")]
    catalog: Option<String>,
    /// The data directory of --catalog.
    #[arg(long)]
    data_path: Option<PathBuf>,
    /// Request subject.
    #[arg(long, default_value = QUERY_SUBJECT)]
    subject: String,
    /// Queue group: several lt-query processes share the requests.
    #[arg(long, default_value = "lt-query")]
    queue_group: String,
    /// Queries run at the same time.
    #[arg(long, default_value_t = 2)]
    max_concurrent: usize,
    /// Cap on a request's max_rows.
    #[arg(long, default_value_t = 10_000_000)]
    max_rows: u64,
    /// Cap on a request's max_bytes (Arrow bytes).
    #[arg(long, default_value_t = 2 << 30)]
    max_bytes: u64,
    /// Timeout of a request that gives none.
    #[arg(long, default_value = "60s", value_parser = langtian_core::cli::duration_arg)]
    default_timeout: Duration,
    /// Cap on a request's timeout.
    #[arg(long, default_value = "10m", value_parser = langtian_core::cli::duration_arg)]
    max_timeout: Duration,
    /// DuckDB memory_limit (e.g. 2GB).
    #[arg(long)]
    memory_limit: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
    /// Node id in KV discovery (`lt_nodes`); `off` not to register.
    #[arg(long, default_value = "query-1")]
    node_id: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info", env = "LT_LOG")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, default_value_t = langtian_core::cli::LogFormat::Text, env = "LT_LOG_FORMAT")]
    log_format: langtian_core::cli::LogFormat,
}

fn lake_config(cli: &Cli) -> LakeConfig {
    let mut cfg = match (&cli.catalog, &cli.data_path) {
        (Some(c), Some(d)) => LakeConfig::new(Catalog::parse(c), DataPath::Local(d.clone())),
        _ => LakeConfig::local(&cli.lake),
    };
    cfg.memory_limit = cli.memory_limit.clone();
    cfg.read_only()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = langtian_core::cli::init_logging(&cli.log, cli.log_format) {
        eprintln!("lt-query: error: {e}");
        return ExitCode::from(langtian_core::cli::EXIT_CONFIG);
    }
    let scfg = QueryServiceConfig {
        subject: cli.subject.clone(),
        queue_group: cli.queue_group.clone(),
        max_concurrent: cli.max_concurrent,
        max_rows: cli.max_rows,
        max_bytes: cli.max_bytes,
        default_timeout: cli.default_timeout,
        max_timeout: cli.max_timeout,
    };
    if let Err(e) = scfg.validate() {
        langtian_core::console::fail("lt-query", "config_invalid", &e);
        return ExitCode::from(10);
    }
    let lake = lake_config(&cli);
    // Open once up front: a missing or locked lake is a configuration error, said at start.
    let probe = lake.clone();
    match tokio::task::spawn_blocking(move || Lake::open(probe)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            langtian_core::console::fail("lt-query", "config_invalid", &e);
            return ExitCode::from(10);
        }
        Err(e) => {
            langtian_core::console::fail("lt-query", "service_failed", &e);
            return ExitCode::FAILURE;
        }
    }
    let bus = match Bus::connect(&cli.nats.options("lt-query")).await {
        Ok(b) => b,
        Err(e) => {
            langtian_core::console::fail("lt-query", "nats_unreachable", &e);
            return ExitCode::FAILURE;
        }
    };
    let node = match cli::node_id(&cli.node_id) {
        Some(id) => {
            let mut info = NodeInfo::new(id, "query");
            info.endpoints.insert("nats".into(), cli.nats.nats_url.clone());
            info.metadata.insert("subject".into(), cli.subject.clone());
            match Registry::open_or_provision(&bus, DiscoveryConfig::default()).await {
                Ok(r) => match r.register(info).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        langtian_core::console::warn(
                            "lt-query",
                            "registration_failed",
                            "not registered in discovery",
                            &e,
                        );
                        None
                    }
                },
                Err(e) => {
                    langtian_core::console::warn(
                        "lt-query",
                        "registration_failed",
                        "not registered in discovery",
                        &e,
                    );
                    None
                }
            }
        }
        None => None,
    };
    let beat = node.as_ref().map(|n| n.spawn_heartbeat());
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = tokio::spawn(QueryService::new(bus.clone(), lake, scfg).run(stop_rx));
    langtian_core::cli::say(&format!(
        "lt-query: serving {} (queue group {}) on {}",
        cli.subject, cli.queue_group, cli.nats.nats_url
    ));
    cli::stop_signal("lt-query", "finishing the queries in progress").await;
    let _ = stop_tx.send(true);
    let result = service.await;
    if let Some(b) = beat {
        b.abort();
    }
    if let Some(n) = node {
        let _ = n.unregister().await;
    }
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            langtian_core::console::fail("lt-query", "service_failed", &e);
            ExitCode::FAILURE
        }
        Err(e) => {
            langtian_core::console::fail("lt-query", "service_failed", &e);
            ExitCode::FAILURE
        }
    }
}
