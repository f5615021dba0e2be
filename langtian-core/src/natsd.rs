//! Locating and running a real `nats-server` process.
//!
//! `lt up` uses this to start its embedded server; the `testkit` feature builds single nodes and
//! 3-node clusters on top of it. The server is configured through a generated config file, waited
//! for on its `/healthz` endpoint (never a blind sleep), and killed when the handle is dropped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), langtian_core::natsd::NatsdError> {
//! use langtian_core::natsd::{NatsServer, NatsServerConfig};
//! let cfg = NatsServerConfig::new("/tmp/lt-nats-store");
//! let server = NatsServer::start(cfg).await?;
//! println!("connect to {}", server.client_url());
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Oldest nats-server accepted: 2.11 brings per-message TTL and KV limit markers.
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 11);

/// Errors from locating, configuring or running nats-server.
#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    /// No usable binary was found.
    #[error(
        "no nats-server >= {}.{} found (tried {tried}); run scripts/setup.sh or set LANGTIAN_NATS_SERVER",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    NotFound {
        /// The candidates that were tried, with why each was rejected.
        tried: String,
    },
    /// An I/O error with context.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server exited before becoming healthy.
    #[error("nats-server exited during start-up ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Exit status.
        status: String,
        /// End of the server log.
        log_tail: String,
    },
    /// The server did not report healthy in time.
    #[error("nats-server at {url} not healthy after {waited:?}; last log lines:\n{log_tail}")]
    NotHealthy {
        /// The monitoring URL polled.
        url: String,
        /// How long we waited.
        waited: Duration,
        /// End of the server log.
        log_tail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NatsdError {
    let what = what.into();
    move |source| NatsdError::Io { what, source }
}

/// Cluster membership of one node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Cluster name (same on every node).
    pub name: String,
    /// This node's route port.
    pub port: u16,
    /// Route ports of all nodes (including this one).
    pub routes: Vec<u16>,
}

/// How to run one nats-server.
#[derive(Debug, Clone)]
pub struct NatsServerConfig {
    /// Explicit binary; `None` = [`find_nats_server`].
    pub binary: Option<PathBuf>,
    /// Listen host for clients, monitoring and routes.
    pub host: String,
    /// Client port; 0 picks a free one.
    pub port: u16,
    /// Monitoring (HTTP) port; 0 picks a free one.
    pub http_port: u16,
    /// Directory for the JetStream store, the config file and the log.
    pub store_dir: PathBuf,
    /// `server_name` (required for clustering).
    pub server_name: Option<String>,
    /// Cluster membership.
    pub cluster: Option<ClusterConfig>,
    /// `sync_interval: always` (fsync every write) instead of the 2-minute default.
    pub sync_always: bool,
    /// Server `max_payload` in bytes (server default 1 MiB).
    pub max_payload: Option<usize>,
    /// Extra configuration appended verbatim (authorization blocks, TLS, ...).
    pub extra_config: Option<String>,
    /// Enable JetStream (default); `false` gives a core-NATS-only server.
    pub jetstream: bool,
    /// How long to wait for `/healthz`.
    pub start_timeout: Duration,
}

impl NatsServerConfig {
    /// A single JetStream node on 127.0.0.1 with free ports, storing under `store_dir`.
    pub fn new(store_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: None,
            host: "127.0.0.1".into(),
            port: 0,
            http_port: 0,
            store_dir: store_dir.into(),
            server_name: None,
            cluster: None,
            sync_always: false,
            max_payload: None,
            extra_config: None,
            jetstream: true,
            start_timeout: Duration::from_secs(20),
        }
    }

    fn render(&self) -> String {
        let mut c = String::new();
        if let Some(n) = &self.server_name {
            let _ = writeln!(c, "server_name: {n}");
        }
        let _ = writeln!(c, "listen: \"{}:{}\"", self.host, self.port);
        let _ = writeln!(c, "http: \"{}:{}\"", self.host, self.http_port);
        if let Some(m) = self.max_payload {
            let _ = writeln!(c, "max_payload: {m}");
        }
        if self.jetstream {
            let _ = writeln!(c, "jetstream {{");
            let _ = writeln!(
                c,
                "  store_dir: {:?}",
                self.store_dir.join("js").display().to_string()
            );
            if self.sync_always {
                let _ = writeln!(c, "  sync_interval: always");
            }
            let _ = writeln!(c, "}}");
        }
        if let Some(cl) = &self.cluster {
            let _ = writeln!(c, "cluster {{");
            let _ = writeln!(c, "  name: {}", cl.name);
            let _ = writeln!(c, "  listen: \"{}:{}\"", self.host, cl.port);
            let routes: Vec<String> = cl
                .routes
                .iter()
                .map(|p| format!("\"nats-route://{}:{p}\"", self.host))
                .collect();
            let _ = writeln!(c, "  routes: [{}]", routes.join(", "));
            let _ = writeln!(c, "}}");
        }
        if let Some(extra) = &self.extra_config {
            c.push_str(extra);
            c.push('\n');
        }
        c
    }
}

/// A running nats-server process; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    cfg: NatsServerConfig,
    binary: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Writes the config, starts the server and waits until `/healthz` reports ok.
    pub async fn start(mut cfg: NatsServerConfig) -> Result<Self, NatsdError> {
        let binary = match &cfg.binary {
            Some(b) => b.clone(),
            None => find_nats_server()?,
        };
        std::fs::create_dir_all(&cfg.store_dir)
            .map_err(io(format!("creating {}", cfg.store_dir.display())))?;
        let (pick_port, pick_http) = (cfg.port == 0, cfg.http_port == 0);
        // A free port is only free until someone else binds it: when we picked the ports and the
        // server lost that race ("address already in use"), pick again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Pick both ports while holding both probe sockets, so they cannot coincide.
            let ports = free_ports(2)?;
            if pick_port {
                cfg.port = ports[0];
            }
            if pick_http {
                cfg.http_port = ports[1];
            }
            let mut server = Self {
                cfg: cfg.clone(),
                binary: binary.clone(),
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(NatsdError::Exited { log_tail, .. })
                    if (pick_port || pick_http)
                        && attempt < 5
                        && log_tail.contains("address already in use") =>
                {
                    tracing::debug!(attempt, "nats-server lost a port race; picking other ports");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn spawn(&mut self) -> Result<(), NatsdError> {
        let conf = self.config_path();
        std::fs::write(&conf, self.cfg.render()).map_err(io(format!("writing {}", conf.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io(format!("opening {}", self.log_path().display())))?;
        let log2 = log.try_clone().map_err(io("cloning log handle"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_healthy(self.cfg.start_timeout).await
    }

    /// Polls `/healthz` until it answers 200 (JetStream ready), the process exits or `timeout`.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), NatsdError> {
        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(NatsdError::Exited {
                    status: status.to_string(),
                    log_tail: self.log_tail(20),
                });
            }
            if http_get_status(self.cfg.http_port, "/healthz").await == Some(200) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(NatsdError::NotHealthy {
                    url: self.monitor_url(),
                    waited: started.elapsed(),
                    log_tail: self.log_tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `nats://host:port` for clients.
    pub fn client_url(&self) -> String {
        format!("nats://{}:{}", self.cfg.host, self.cfg.port)
    }
    /// `http://host:port` of the monitoring endpoint.
    pub fn monitor_url(&self) -> String {
        format!("http://{}:{}", self.cfg.host, self.cfg.http_port)
    }
    /// The client port.
    pub fn port(&self) -> u16 {
        self.cfg.port
    }
    /// The configuration in use (ports resolved).
    pub fn config(&self) -> &NatsServerConfig {
        &self.cfg
    }
    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
    /// OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Hard kill (SIGKILL) and wait for exit; the store stays on disk.
    pub async fn kill(&mut self) -> Result<(), NatsdError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(io("killing nats-server"))?;
        }
        Ok(())
    }

    /// Graceful stop (SIGTERM, the server flushes its store) and wait for exit.
    pub async fn stop(&mut self) -> Result<(), NatsdError> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            child.kill().await.map_err(io("killing nats-server"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same ports and store (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)).
    pub async fn restart(&mut self) -> Result<(), NatsdError> {
        self.kill().await?;
        self.spawn().await
    }

    fn config_path(&self) -> PathBuf {
        self.cfg.store_dir.join("nats-server.conf")
    }
    /// Path of the server log.
    pub fn log_path(&self) -> PathBuf {
        self.cfg.store_dir.join("nats-server.log")
    }
    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Finds a nats-server binary at least [`MIN_SERVER_VERSION`]: `$LANGTIAN_NATS_SERVER`, the path
/// recorded at build time by `scripts/setup.sh`, then `nats-server` on `PATH`.
pub fn find_nats_server() -> Result<PathBuf, NatsdError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("LANGTIAN_NATS_SERVER") {
        candidates.push(p.into());
    }
    if let Some(p) = option_env!("LANGTIAN_NATS_SERVER") {
        candidates.push(p.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push(dir.join("nats-server"));
        }
    }
    let mut tried = Vec::new();
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        match server_version(&c) {
            Some(v) if v >= MIN_SERVER_VERSION => return Ok(c),
            Some(v) => tried.push(format!("{} is v{}.{}", c.display(), v.0, v.1)),
            None => tried.push(format!("{} did not report a version", c.display())),
        }
    }
    if tried.is_empty() {
        tried.push("$LANGTIAN_NATS_SERVER, the setup path and PATH: nothing there".into());
    }
    Err(NatsdError::NotFound {
        tried: tried.join("; "),
    })
}

fn server_version(bin: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.15.1"
    let v = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16, NatsdError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a probe socket"))?;
    let port = l.local_addr().map_err(io("reading probe socket address"))?.port();
    Ok(port)
}

/// `n` distinct TCP ports that were free on 127.0.0.1 a moment ago (all probe sockets are held
/// until every port is chosen, so the ports are distinct).
pub fn free_ports(n: usize) -> Result<Vec<u16>, NatsdError> {
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a probe socket"))?;
        ports.push(l.local_addr().map_err(io("reading probe socket address"))?.port());
        held.push(l);
    }
    Ok(ports)
}

/// Minimal HTTP/1.0 GET against 127.0.0.1:`port`; returns the status code.
pub async fn http_get_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).await.map(|(s, _)| s)
}

/// Minimal HTTP/1.0 GET against 127.0.0.1:`port`; returns status code and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_response(port, path).await.map(|r| (r.status, r.body))
}

/// A response read by [`http_get_response`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The status line and headers, header names lower-cased (`name: value` per line).
    pub head: String,
    /// The body.
    pub body: String,
}

/// Minimal HTTP/1.0 GET against 127.0.0.1:`port` that keeps the headers (2 s timeout).
pub async fn http_get_response(port: u16, path: &str) -> Option<HttpResponse> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        let head = head
            .lines()
            .map(|l| match l.split_once(':') {
                Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        Some(HttpResponse {
            status,
            head,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cluster_config() {
        let mut cfg = NatsServerConfig::new("/tmp/x");
        cfg.port = 1;
        cfg.http_port = 2;
        cfg.server_name = Some("n1".into());
        cfg.sync_always = true;
        cfg.cluster = Some(ClusterConfig {
            name: "c".into(),
            port: 3,
            routes: vec![3, 4],
        });
        let text = cfg.render();
        assert!(text.contains("listen: \"127.0.0.1:1\""));
        assert!(text.contains("sync_interval: always"));
        assert!(text.contains("\"nats-route://127.0.0.1:4\""));
        assert!(text.contains("server_name: n1"));
    }
}
