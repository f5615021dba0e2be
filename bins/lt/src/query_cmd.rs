//! `lt query`: argument handling and printing; the work is in `langtian_core::query`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use langtian_core::lake::LakeConfig;
use langtian_core::query::output::{OutputFormat, format_table, write_file};
use langtian_core::query::{QueryError, QueryRequest, QueryResult, publish_frame, query, query_local};

use crate::ConnArgs;

/// Arguments of `lt query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// One SELECT statement; the lake is attached as `lake`, e.g.
    /// "SELECT device_id, count(*) FROM lake.battery_samples GROUP BY ALL".
    sql: String,
    /// table (default), csv, json (one object per line) or parquet (needs --output).
    #[arg(long, short = 'f', default_value = "table")]
    format: OutputFormat,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Fetch at most this many rows (default: 1,000 for a table, the service's cap otherwise).
    #[arg(long)]
    max_rows: Option<u64>,
    /// Interrupt the query after this long.
    #[arg(long, default_value = "60s", value_parser = langtian_core::cli::duration_arg)]
    timeout: Duration,
    /// A value for a `?` placeholder, as JSON (`42`, `"cycler-01"`, `true`); repeatable.
    #[arg(long = "param", value_parser = parse_json)]
    params: Vec<serde_json::Value>,
    /// Open the lake file directly instead of asking the running `lt up` (only works while no
    /// other process has the lake open).
    #[arg(long)]
    local: bool,
    /// The lake directory for --local (and the fallback when no service answers).
    #[arg(long, default_value = ".langtian/lake")]
    lake: PathBuf,
    /// Also publish the result as an Arrow table on `lt.analysis.<NAME>`, where the web UI's
    /// analysis view shows it (needs the platform's NATS; one message, so at most max_payload).
    #[arg(long, value_name = "NAME")]
    publish: Option<String>,
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).or_else(|_| Ok(serde_json::Value::String(s.to_owned())))
}

pub async fn cmd_query(conn: &ConnArgs, a: &QueryArgs) -> Result<(), String> {
    let mut req = QueryRequest::new(a.sql.clone());
    req.params = a.params.clone();
    req.timeout_ms = Some(a.timeout.as_millis().min(u128::from(u64::MAX)) as u64);
    req.max_rows = a.max_rows.or((a.format == OutputFormat::Table).then_some(1000));
    let result = if a.local {
        run_local(a, &req).await?
    } else {
        match conn.connect().await {
            Ok(bus) => match query(&bus, &req).await {
                Ok(r) => r,
                Err(QueryError::NoService { .. }) if conn.nats_url.is_none() => {
                    eprintln!(
                        "lt query: no query service on NATS; opening {} directly",
                        a.lake.display()
                    );
                    run_local(a, &req).await?
                }
                Err(e) => return Err(e.to_string()),
            },
            Err(_) if conn.nats_url.is_none() => run_local(a, &req).await?,
            Err(e) => return Err(e),
        }
    };
    if let Some(name) = &a.publish {
        let bus = conn.connect().await?;
        let sent = publish_frame(&bus, name, &result.schema, &result.batches)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "lt query: published {} rows ({} bytes of Arrow IPC) on {}",
            sent.rows, sent.bytes, sent.subject
        );
    }
    print(a, &result)
}

async fn run_local(a: &QueryArgs, req: &QueryRequest) -> Result<QueryResult, String> {
    let cfg = LakeConfig::local(&a.lake);
    let req = req.clone();
    tokio::task::spawn_blocking(move || query_local(cfg, &req))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn print(a: &QueryArgs, r: &QueryResult) -> Result<(), String> {
    match a.format {
        OutputFormat::Table => {
            let text = format_table(r, usize::MAX)?;
            match &a.output {
                Some(p) => {
                    std::fs::write(p, text + "\n").map_err(|e| format!("writing {}: {e}", p.display()))
                }
                None => {
                    println!("{text}");
                    Ok(())
                }
            }
        }
        f => {
            write_file(r, f, a.output.as_deref())?;
            if let Some(t) = &r.truncated {
                eprintln!(
                    "lt query: result cut by the {t} limit after {} rows (raise --max-rows)",
                    r.rows
                );
            }
            Ok(())
        }
    }
}
