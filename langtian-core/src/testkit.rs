//! Real nats-server processes for tests (feature `testkit`).
//!
//! Every server gets free ports and a temporary store that is deleted with the handle; readiness
//! is awaited on `/healthz`, never slept for.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use langtian_core::testkit::{TestServer, TestCluster};
//! let server = TestServer::start().await?;
//! let client = async_nats::connect(server.url()).await?;
//! let mut cluster = TestCluster::start(3).await?;
//! cluster.kill(0).await?;          // one node down, R3 keeps working
//! cluster.restart(0).await?;       // back, same ports and store
//! # Ok(()) }
//! ```

use std::time::Duration;

use tempfile::TempDir;

use crate::natsd::{ClusterConfig, NatsServer, NatsServerConfig, NatsdError, free_port, free_ports};

/// Errors from the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Starting or controlling a server failed.
    #[error(transparent)]
    Natsd(#[from] NatsdError),
    /// Temp dir creation failed.
    #[error("creating a temp dir: {0}")]
    TempDir(std::io::Error),
    /// Connecting a client failed.
    #[error("connecting to {url}: {reason}")]
    Connect {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The cluster did not elect a JetStream meta leader in time.
    #[error("cluster not ready: {0}")]
    ClusterNotReady(String),
}

/// One nats-server with JetStream on free ports and a temp store.
#[derive(Debug)]
pub struct TestServer {
    server: NatsServer,
    _dir: TempDir,
}

impl TestServer {
    /// Starts a default single node.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(|_| {}).await
    }

    /// Starts a single node after letting `f` adjust the config (max_payload, auth, ...).
    pub async fn start_with(f: impl FnOnce(&mut NatsServerConfig)) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("lt-nats-")
            .tempdir()
            .map_err(TestkitError::TempDir)?;
        let mut cfg = NatsServerConfig::new(dir.path());
        f(&mut cfg);
        let server = NatsServer::start(cfg).await?;
        Ok(Self { server, _dir: dir })
    }

    /// Client URL.
    pub fn url(&self) -> String {
        self.server.client_url()
    }

    /// Monitoring port.
    pub fn http_port(&self) -> u16 {
        self.server.config().http_port
    }

    /// A connected client with a short request timeout.
    pub async fn client(&self) -> Result<async_nats::Client, TestkitError> {
        connect(&self.url()).await
    }

    /// SIGKILL the server (store kept).
    pub async fn kill(&mut self) -> Result<(), TestkitError> {
        Ok(self.server.kill().await?)
    }

    /// SIGTERM the server (store kept).
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        Ok(self.server.stop().await?)
    }

    /// Start again on the same ports and store; returns once healthy.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        Ok(self.server.restart().await?)
    }

    /// The underlying process handle.
    pub fn server(&mut self) -> &mut NatsServer {
        &mut self.server
    }
}

/// A JetStream cluster of N nodes on one machine.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<NatsServer>,
    _dir: TempDir,
}

impl TestCluster {
    /// Starts `n` clustered nodes and waits until every node's `/healthz` (which includes the
    /// JetStream meta layer) reports ok.
    pub async fn start(n: usize) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("lt-cluster-")
            .tempdir()
            .map_err(TestkitError::TempDir)?;
        // Client, monitoring and route ports of every node, chosen together so none coincide.
        let ports = free_ports(3 * n)?;
        let route_ports: Vec<u16> = ports[2 * n..].to_vec();
        // Start all processes first (they need each other for a meta leader), then wait.
        let mut starting = Vec::with_capacity(n);
        for (i, rp) in route_ports.iter().enumerate() {
            let mut cfg = NatsServerConfig::new(dir.path().join(format!("n{}", i + 1)));
            cfg.port = ports[i];
            cfg.http_port = ports[n + i];
            cfg.server_name = Some(format!("n{}", i + 1));
            cfg.cluster = Some(ClusterConfig {
                name: "ltc".into(),
                port: *rp,
                routes: route_ports.clone(),
            });
            cfg.start_timeout = Duration::from_secs(30);
            starting.push(tokio::spawn(NatsServer::start(cfg)));
        }
        let mut nodes = Vec::with_capacity(n);
        for h in starting {
            let node = h
                .await
                .map_err(|e| TestkitError::ClusterNotReady(e.to_string()))??;
            nodes.push(node);
        }
        Ok(Self { nodes, _dir: dir })
    }

    /// Client URLs of all nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_url()).collect()
    }

    /// A client that knows every node.
    pub async fn client(&self) -> Result<async_nats::Client, TestkitError> {
        connect(&self.urls().join(",")).await
    }

    /// SIGKILL node `i`.
    pub async fn kill(&mut self, i: usize) -> Result<(), TestkitError> {
        if let Some(n) = self.nodes.get_mut(i) {
            n.kill().await?;
        }
        Ok(())
    }

    /// Restart node `i` and wait until it is healthy again.
    pub async fn restart(&mut self, i: usize) -> Result<(), TestkitError> {
        if let Some(n) = self.nodes.get_mut(i) {
            n.restart().await?;
        }
        Ok(())
    }

    /// Node handles.
    pub fn nodes(&mut self) -> &mut [NatsServer] {
        &mut self.nodes
    }
}

async fn connect(urls: &str) -> Result<async_nats::Client, TestkitError> {
    let list: Vec<&str> = urls.split(',').collect();
    async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(list)
        .await
        .map_err(|e| TestkitError::Connect {
            url: urls.into(),
            reason: e.to_string(),
        })
}

/// A throw-away PostgreSQL cluster (initdb in a temp dir, free port, trust auth), for DuckLake
/// catalog tests. Uses the machine's PostgreSQL binaries (`pg_config --bindir`, or
/// `/usr/lib/postgresql/*/bin`); when running as root the server runs as the `postgres` user.
#[derive(Debug)]
pub struct TestPostgres {
    bin: std::path::PathBuf,
    dir: TempDir,
    port: u16,
    as_postgres: bool,
}

impl TestPostgres {
    /// Creates the cluster, starts it and creates database `lake`.
    pub async fn start() -> Result<Self, TestkitError> {
        let err = |m: String| TestkitError::ClusterNotReady(format!("postgres: {m}"));
        let bin = pg_bindir()
            .ok_or_else(|| err("no PostgreSQL binaries found (apt-get install postgresql)".into()))?;
        let dir = tempfile::Builder::new()
            .prefix("lt-pg-")
            .tempdir()
            .map_err(TestkitError::TempDir)?;
        let port = free_port()?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(err("chown of the data dir to postgres failed".into()));
            }
        }
        let me = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = me.dir.path().join("data");
        me.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .map_err(err)?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            port,
            me.dir.path().display()
        );
        me.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &opts,
                "-l",
                &me.dir.path().join("pg.log").display().to_string(),
                "-w",
                "start",
            ],
        )
        .map_err(err)?;
        me.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "lake",
            ],
        )
        .map_err(err)?;
        Ok(me)
    }

    /// libpq connection string for database `lake`.
    pub fn conninfo(&self) -> String {
        format!("dbname=lake host=127.0.0.1 port={} user=postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn pg_bindir() -> Option<std::path::PathBuf> {
    if let Ok(o) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let p = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").is_file() {
            return Some(p);
        }
    }
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// An S3-compatible server (`s3s-fs`, installed by scripts/setup.sh) on a free port, storing
/// buckets as directories of a temp dir.
#[derive(Debug)]
pub struct TestS3 {
    child: std::process::Child,
    dir: TempDir,
    port: u16,
}

impl TestS3 {
    /// Access key of the test server.
    pub const KEY_ID: &'static str = "ltaccess";
    /// Secret key of the test server.
    pub const SECRET: &'static str = "ltsecret123";

    /// Starts the server with one bucket and waits until it accepts connections.
    pub async fn start(bucket: &str) -> Result<Self, TestkitError> {
        let err = |m: String| TestkitError::ClusterNotReady(format!("s3s-fs: {m}"));
        let bin = std::env::var("LANGTIAN_S3S_FS")
            .ok()
            .or_else(|| option_env!("LANGTIAN_S3S_FS").map(str::to_owned))
            .ok_or_else(|| err("not installed (run scripts/setup.sh or set LANGTIAN_S3S_FS)".into()))?;
        let dir = tempfile::Builder::new()
            .prefix("lt-s3-")
            .tempdir()
            .map_err(TestkitError::TempDir)?;
        std::fs::create_dir_all(dir.path().join(bucket)).map_err(TestkitError::TempDir)?;
        let port = free_port()?;
        let child = std::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::KEY_ID, "--secret-key", Self::SECRET])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| err(format!("starting {bin}: {e}")))?;
        let me = Self { child, dir, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!("not listening on port {port} after 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(me)
    }

    /// `host:port` endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service process started by a test: killed and reaped when the guard drops, so a test that
/// fails half-way leaves no orphan behind; [`ChildGuard::take`] hands it back for a clean stop.
///
/// ```no_run
/// use langtian_core::testkit::{ChildGuard, sigterm};
/// let mut guard = ChildGuard::new(std::process::Command::new("sleep").arg("10").spawn().unwrap());
/// // … the test; a panic here kills `sleep` …
/// let child = guard.take().unwrap();
/// sigterm(&child).unwrap();
/// ```
#[derive(Debug)]
pub struct ChildGuard(Option<std::process::Child>);

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }

    /// The process, no longer guarded (`None` once taken).
    pub fn take(&mut self) -> Option<std::process::Child> {
        self.0.take()
    }

    /// The process, still guarded.
    pub fn get_mut(&mut self) -> Option<&mut std::process::Child> {
        self.0.as_mut()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `GET http://127.0.0.1:<port><path>` answers `status` (a service's `/healthz`
/// turning 200, or 503 when NATS goes away), polling every 50 ms for at most `within`; the error
/// says what was awaited and the last answer.
pub async fn wait_for_http_status(
    port: u16,
    path: &str,
    status: u16,
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = crate::natsd::http_get_status(port, path).await;
        if got == Some(status) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "127.0.0.1:{port}{path} did not answer {status} within {within:?} (last: {got:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM to `child` (the stop signal every service drains on), with `kill(1)`; an error
/// says why it could not be sent.
///
/// ```no_run
/// let child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
/// langtian_core::testkit::sigterm(&child).unwrap();
/// ```
pub fn sigterm(child: &std::process::Child) -> Result<(), String> {
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| format!("running kill -TERM {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -TERM {pid}: {status}"))
    }
}

/// Waits for `child` to exit, at most `limit`; then collects its output. A child still running at
/// the limit is killed and the result is an error saying so, so a test of "it stops" fails
/// instead of hanging.
///
/// ```no_run
/// let child = std::process::Command::new("true").spawn().unwrap();
/// let out = langtian_core::testkit::output_within(child, std::time::Duration::from_secs(5)).unwrap();
/// assert!(out.status.success());
/// ```
pub fn output_within(
    mut child: std::process::Child,
    limit: Duration,
) -> Result<std::process::Output, String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for the child: {e}")),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading the child's output: {e}"))
}

/// A binary's stderr under `--log-format json`, parsed: one event per line.
///
/// ```
/// use langtian_core::testkit::JsonLog;
/// let log = JsonLog::parse([r#"{"level":"ERROR","fields":{"code":"config_invalid"}}"#]).unwrap();
/// assert_eq!(log.with_code("config_invalid").unwrap()["level"], "ERROR");
/// assert!(JsonLog::parse(["lt: error: plain text"]).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct JsonLog {
    /// The events, in order.
    pub events: Vec<serde_json::Value>,
}

impl JsonLog {
    /// Parses every line; a line that is not a JSON object is an error naming it (the point of
    /// JSON logs is that a pipeline reads nothing else).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut events = Vec::new();
        for l in lines {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| format!("not a JSON log line ({e}): {l}"))?;
            if !v.is_object() {
                return Err(format!("not a JSON log object: {l}"));
            }
            events.push(v);
        }
        Ok(Self { events })
    }

    /// The first event whose `fields.code` is `code`.
    pub fn with_code(&self, code: &str) -> Option<&serde_json::Value> {
        self.events.iter().find(|e| e["fields"]["code"] == code)
    }
}
