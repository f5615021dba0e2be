//! What every binary (`lt`, `lt-collector`, `lt-aggregator`, `lt-gateway`, `lt-flow`, `lt-query`) parses
//! the same way: the NATS connection flags, the ops address, the stop signal, logging.
//!
//! ```
//! use clap::Parser;
//! use langtian_core::cli::NatsArgs;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     nats: NatsArgs,
//! }
//! let cli = Cli::parse_from(["svc", "--nats-url", "nats://10.0.0.5:4222"]);
//! assert_eq!(cli.nats.options("svc").urls, vec!["nats://10.0.0.5:4222".to_string()]);
//! assert_eq!(langtian_core::cli::ops_addr("off").unwrap(), None);
//! assert!(langtian_core::cli::log_filter("info,langtian_core=debug").is_ok());
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::bus::BusOptions;

/// Exit code of every binary for a configuration error: a bad flag, file or value.
pub const EXIT_CONFIG: u8 = 10;

/// Parses a `--log` value (tracing `EnvFilter` syntax, e.g. `info` or `langtian_core=debug,warn`).
/// A malformed directive is an error naming the value, instead of being silently dropped.
pub fn log_filter(filter: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("--log `{filter}`: {e}"))
}

/// Parses a duration flag in humantime syntax (`250ms`, `10s`, `12h`, `2days`) of at most
/// [`MAX_SETTING_DURATION`](crate::MAX_SETTING_DURATION) (one year); use it as clap's
/// `value_parser` for every duration.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(langtian_core::cli::duration_arg("250ms"), Ok(Duration::from_millis(250)));
/// assert!(langtian_core::cli::duration_arg("2years").unwrap_err().contains("longer than the limit of 365days (one year)"));
/// assert!(langtian_core::cli::duration_arg("soon").is_err());
/// ```
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 250ms, 10s or 2h: {e}"))?;
    if let Some(tail) = crate::over_limit(d, crate::MAX_SETTING_DURATION) {
        return Err(format!("`{s}` {tail}"));
    }
    Ok(d)
}

/// How log lines are written (`--log-format`, env `LT_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line for log pipelines: `timestamp`, `level`, `target`, `fields`
    /// (with `message` and every field, e.g. the `code` of a refusal), `span`/`spans`.
    Json,
}

/// Starts logging to stderr with the `--log` filter (see [`log_filter`]) in `format`.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), String> {
    crate::console::set_json(format == LogFormat::Json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(filter)?)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| format!("logging: {e}"))
}

pub use crate::console::say;

/// NATS connection flags.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, default_value = "nats://127.0.0.1:14222", env = "LT_NATS_URL")]
    pub nats_url: String,
    /// Credentials file (user JWT + NKey seed).
    #[arg(long, env = "LT_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// Token authentication to NATS.
    #[arg(long, env = "LT_NATS_TOKEN")]
    pub token: Option<String>,
    /// File holding the NKey user seed to connect with (`lt up` keeps one per service in
    /// `<data-dir>/nats/keys/<service>.nk`).
    #[arg(long, env = "LT_NATS_NKEY_SEED_FILE")]
    pub nkey_seed_file: Option<PathBuf>,
    /// Inbox prefix instead of `_INBOX` (an NKey user of `lt up` reads only `_LT.<service>.>`).
    #[arg(long, env = "LT_NATS_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
    /// CA certificate (PEM) to trust for TLS to NATS.
    #[arg(long, env = "LT_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl NatsArgs {
    /// Connection options, the client named `name`.
    pub fn options(&self, name: &str) -> BusOptions {
        let mut o = BusOptions::new(&self.nats_url);
        o.name = Some(name.to_owned());
        o.creds_file = self.creds.clone();
        o.token = self.token.clone();
        o.nkey_seed_file = self.nkey_seed_file.clone();
        o.inbox_prefix = self.inbox_prefix.clone();
        o.tls.ca_file = self.tls_ca.clone();
        o.tls.required = self.tls_ca.is_some();
        o
    }
}

/// Parses an ops address flag: `off` (or empty) → `None`.
pub fn ops_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    match s {
        "off" | "" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|e| format!("--metrics-addr `{a}`: {e}")),
    }
}

/// `Some(n s)` for a positive number of seconds, `None` for 0 (status lines off).
pub fn every(seconds: u64) -> Option<std::time::Duration> {
    (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
}

/// `None` for `off`, else the id (node registration).
pub fn node_id(id: &str) -> Option<String> {
    (id != "off").then(|| id.to_owned())
}

/// Resolves on SIGTERM or Ctrl-C, printing `<name>: stopping — <what>` on stderr.
pub async fn stop_signal(name: &str, what: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    say(&format!("{name}: stopping — {what}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_accepts_directives_and_names_a_malformed_value() {
        assert!(log_filter("info").is_ok());
        assert!(log_filter("warn,langtian_core=debug").is_ok());
        let e = log_filter("langtian_core=loud").unwrap_err();
        assert!(e.contains("--log `langtian_core=loud`"), "{e}");
    }
}
