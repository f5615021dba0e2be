//! What every service binary (`lt-collector`, `lt-aggregator`, `lt-gateway`, `lt-flow`) parses
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
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::bus::BusOptions;

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
    eprintln!("{name}: stopping — {what}");
}
