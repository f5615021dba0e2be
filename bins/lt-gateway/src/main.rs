//! `lt-gateway`: the browser WebSocket gateway as a service. Argument parsing only; the gateway
//! is `langtian_core::gateway` (see docs/gateway.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use langtian_core::bus::Bus;
use langtian_core::cli::{self, NatsArgs};
use langtian_core::gateway::auth::{Claims, JwtConfig, sign_hs256};
use langtian_core::gateway::{Gateway, GatewayConfig, GatewayError, GatewayStats};

/// Serves browsers (and any WebSocket client) NATS subjects over one WebSocket per client:
/// clients authenticate with a JWT whose `subs` claim lists the subject patterns they may
/// subscribe to; messages are forwarded in binary `langtian.gateway.v1` batches every
/// `--batch-interval`; a client that falls behind is degraded in three levels (sampled,
/// trimmed, paused) and recovers on its own. Also serves `/healthz`, `/metrics`,
/// `/admin/feature-flags` (admin tokens only, every change audited to stream LT_AUDIT) and the
/// web UI's files.
///
/// Exit codes: 0 stopped cleanly, 10 configuration error, 1 other errors.
#[derive(Debug, Parser)]
#[command(name = "lt-gateway", version)]
struct Cli {
    /// HTTP/WebSocket address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "LT_GATEWAY_LISTEN")]
    listen: SocketAddr,
    /// JWT algorithm: HS256/384/512 (with --jwt-secret-file), RS*/PS*/ES256/ES384/EdDSA (with --jwt-public-key).
    #[arg(long, default_value = "HS256")]
    jwt_alg: String,
    /// File holding the HS* shared secret (at least 16 bytes).
    #[arg(long, env = "LT_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// Public key (PEM) for RS*/PS*/ES*/EdDSA tokens.
    #[arg(long, env = "LT_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long)]
    jwt_audience: Option<String>,
    /// Allowed browser origin (repeatable; `*` for any). Default: same origin only.
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Directory of the built web UI (served at /).
    #[arg(long)]
    ui_dir: Option<PathBuf>,
    /// Do not send COOP same-origin + COEP require-corp. By default the UI runs cross-origin
    /// isolated (5 µs timers). Use this flag when it must load cross-origin resources that send
    /// no CORP/CORS headers, or be framed by a page that is not isolated.
    #[arg(long)]
    no_cross_origin_isolation: bool,
    /// TLS certificate chain (PEM); with --tls-key, serves https/wss.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Interval between batches at level 0.
    #[arg(long, default_value = "16ms", value_parser = langtian_core::cli::duration_arg)]
    batch_interval: Duration,
    /// Interval between batches from level 1 on.
    #[arg(long, default_value = "250ms", value_parser = langtian_core::cli::duration_arg)]
    sample_interval: Duration,
    /// Subscriptions per connection.
    #[arg(long, default_value_t = 256)]
    max_subscriptions: usize,
    /// WebSocket connections the gateway holds at most; more are refused with HTTP 503.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections one token subject (`sub`) may hold at most; more are refused with HTTP 429.
    /// A browser needs one (its tabs share it).
    #[arg(long, default_value_t = 32)]
    max_connections_per_user: usize,
    /// Kernel send buffer per connection in bytes (default: the kernel's autotuning).
    #[arg(long)]
    send_buffer: Option<usize>,
    /// Print a development token for these subject patterns (comma-separated) signed with the
    /// HS* secret, then exit. Add --dev-token-admin for an admin token.
    #[arg(long, value_delimiter = ',')]
    dev_token: Option<Vec<String>>,
    /// With --dev-token: an admin token.
    #[arg(long)]
    dev_token_admin: bool,
    /// With --dev-token: lifetime.
    #[arg(long, default_value = "12h", value_parser = langtian_core::cli::duration_arg)]
    dev_token_ttl: Duration,
    #[command(flatten)]
    nats: NatsArgs,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info", env = "LT_LOG")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, default_value_t = langtian_core::cli::LogFormat::Text, env = "LT_LOG_FORMAT")]
    log_format: langtian_core::cli::LogFormat,
}

fn jwt(cli: &Cli) -> Result<JwtConfig, String> {
    let algorithm: langtian_core::gateway::auth::Algorithm = cli
        .jwt_alg
        .parse()
        .map_err(|_| format!("--jwt-alg `{}` is not a JWT algorithm", cli.jwt_alg))?;
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let key = match (&cli.jwt_secret_file, &cli.jwt_public_key) {
        (Some(f), None) => {
            let mut k = read(f)?;
            while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                k.pop();
            }
            k
        }
        (None, Some(f)) => read(f)?,
        (None, None) => return Err("give --jwt-secret-file (HS*) or --jwt-public-key (RS*/ES*/EdDSA)".into()),
        (Some(_), Some(_)) => return Err("give only one of --jwt-secret-file and --jwt-public-key".into()),
    };
    let mut cfg = JwtConfig::hs256(key);
    cfg.algorithm = algorithm;
    cfg.issuer = cli.jwt_issuer.clone();
    cfg.audience = cli.jwt_audience.clone();
    Ok(cfg)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = langtian_core::cli::init_logging(&cli.log, cli.log_format) {
        eprintln!("lt-gateway: error: {e}");
        return ExitCode::from(langtian_core::cli::EXIT_CONFIG);
    }
    let jwt = match jwt(&cli) {
        Ok(j) => j,
        Err(e) => {
            langtian_core::console::fail("lt-gateway", "config_invalid", &e);
            return ExitCode::from(10);
        }
    };
    if let Some(subs) = &cli.dev_token {
        if cli.dev_token_ttl.is_zero() {
            let e =
                "--dev-token-ttl must be above 0 (a token that expires at once is refused by every gateway)";
            langtian_core::console::fail("lt-gateway", "config_invalid", &e);
            return ExitCode::from(10);
        }
        let mut c = Claims::new("dev", subs.clone(), cli.dev_token_ttl);
        c.admin = cli.dev_token_admin;
        return match sign_hs256(&jwt.key, &c) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                langtian_core::console::fail("lt-gateway", "config_invalid", &e);
                ExitCode::from(10)
            }
        };
    }
    let mut cfg = GatewayConfig::new(cli.listen, jwt);
    cfg.allowed_origins = cli.allowed_origins.clone();
    cfg.static_dir = cli.ui_dir.clone();
    cfg.cross_origin_isolation = !cli.no_cross_origin_isolation;
    cfg.tls = cli.tls_cert.clone().zip(cli.tls_key.clone());
    cfg.degrade.batch_interval = cli.batch_interval;
    cfg.degrade.sample_interval = cli.sample_interval;
    cfg.max_subscriptions = cli.max_subscriptions;
    cfg.max_connections = cli.max_connections;
    cfg.max_connections_per_user = cli.max_connections_per_user;
    cfg.send_buffer_bytes = cli.send_buffer;
    let gw = match Gateway::bind(cfg).await {
        Ok(g) => g,
        Err(e) => {
            langtian_core::console::fail("lt-gateway", "config_invalid", &e);
            return ExitCode::from(10);
        }
    };
    let bus = match Bus::connect(&cli.nats.options("lt-gateway")).await {
        Ok(b) => b,
        Err(e) => {
            langtian_core::console::fail("lt-gateway", "nats_unreachable", &e);
            return ExitCode::FAILURE;
        }
    };
    langtian_core::cli::say(&format!(
        "lt-gateway: UI {} · WebSocket {}",
        gw.http_url(),
        gw.ws_url()
    ));
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        cli::stop_signal("lt-gateway", "closing connections…").await;
        let _ = tx.send(true);
    });
    match gw.run(bus, Arc::new(GatewayStats::default()), rx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ GatewayError::Config { .. }) => {
            langtian_core::console::fail("lt-gateway", "config_invalid", &e);
            ExitCode::from(10)
        }
        Err(e) => {
            langtian_core::console::fail("lt-gateway", "service_failed", &e);
            ExitCode::FAILURE
        }
    }
}
