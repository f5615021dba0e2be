//! Node discovery on JetStream KV (seed 003): the native store replaces the old in-memory
//! dictionary.
//!
//! - persistence: a file-backed bucket (`lt_nodes`), replicated in a cluster;
//! - liveness TTL: the bucket's `max_age`; every heartbeat is a `put` that refreshes it;
//! - leave detection: with limit markers (nats-server ≥ 2.11) the server writes a `MaxAge` marker
//!   when an entry expires, which watchers receive as a purge → [`NodeEvent::Left`] with
//!   [`LeftReason::Expired`];
//! - history: the last 5 revisions of each node are kept for debugging.
//!
//! ```no_run
//! # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::discovery::DiscoveryError> {
//! use futures::StreamExt;
//! use langtian_core::discovery::{DiscoveryConfig, NodeInfo, Registry};
//! let registry = Registry::provision(&bus, DiscoveryConfig::default()).await?;
//! let me = registry.register(NodeInfo::new("collector-1", "collector")).await?;
//! let _beat = me.spawn_heartbeat(); // every TTL/3
//! let mut events = registry.watch().await?;
//! while let Some(ev) = events.next().await { println!("{:?}", ev?); }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, BusError, KvSpec, ensure_kv};

/// Discovery errors; each names the bucket or node.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Bus/provisioning error.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A KV operation failed.
    #[error("KV bucket `{bucket}`, key `{key}`: {reason}")]
    Kv {
        /// Bucket.
        bucket: String,
        /// Key (or `*`).
        key: String,
        /// Why.
        reason: String,
    },
    /// A node id that cannot be a KV key.
    #[error("node id `{0}` is invalid: use 1-128 characters from [A-Za-z0-9_=/-]")]
    InvalidNodeId(String),
    /// An entry that is not a NodeInfo JSON document.
    #[error("KV bucket `{bucket}`, key `{key}`: not a node document: {reason}")]
    BadNode {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// KV bucket.
    pub bucket: String,
    /// Node TTL: a node that stops heart-beating leaves after this.
    pub ttl: Duration,
    /// Revisions kept per node.
    pub history: i64,
    /// Replicas (3 in a production cluster).
    pub replicas: usize,
    /// How long the server keeps an expiry marker (when supported).
    pub marker_ttl: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            bucket: "lt_nodes".into(),
            ttl: Duration::from_secs(15),
            history: 5,
            replicas: 1,
            marker_ttl: Duration::from_secs(60),
        }
    }
}

impl DiscoveryConfig {
    /// The bucket declaration; limit markers only when the server supports them.
    pub fn kv_spec(&self, limit_markers: bool) -> KvSpec {
        KvSpec {
            bucket: self.bucket.clone(),
            history: self.history,
            max_age: self.ttl,
            storage: crate::bus::Storage::File,
            replicas: self.replicas,
            limit_markers: limit_markers.then_some(self.marker_ttl),
        }
    }
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id (the KV key).
    pub node_id: String,
    /// Role, e.g. `collector`, `flow`, `gateway`.
    pub role: String,
    /// Software version.
    #[serde(default)]
    pub version: String,
    /// Host name.
    #[serde(default)]
    pub host: String,
    /// Start time, ms since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: i64,
    /// Time of the last heartbeat, ms since the Unix epoch.
    #[serde(default)]
    pub last_seen_ms: i64,
    /// Load figure reported with the heartbeat (0..1 or any unit the role defines).
    #[serde(default)]
    pub load: f64,
    /// Named endpoints (metrics URL, UDP address, ...).
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl NodeInfo {
    /// A node with the current time as start time.
    pub fn new(node_id: impl Into<String>, role: impl Into<String>) -> Self {
        let now = now_ms();
        Self {
            node_id: node_id.into(),
            role: role.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            host: std::env::var("HOSTNAME").unwrap_or_default(),
            started_at_ms: now,
            last_seen_ms: now,
            load: 0.0,
            endpoints: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }
}

/// Why a node left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    /// It unregistered itself.
    Unregistered,
    /// Its entry expired (no heartbeat within the TTL).
    Expired,
}

/// A change in the set of nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// A node appeared (or was present when the watch started).
    Joined(NodeInfo),
    /// A known node sent a heartbeat or changed its info.
    Updated(NodeInfo),
    /// A node is gone.
    Left {
        /// Its id.
        node_id: String,
        /// Why.
        reason: LeftReason,
    },
}

/// The node registry.
#[derive(Debug, Clone)]
pub struct Registry {
    kv: kv::Store,
    cfg: DiscoveryConfig,
    markers: bool,
}

impl Registry {
    /// Creates or updates the bucket (admin step), then opens it.
    pub async fn provision(bus: &Bus, cfg: DiscoveryConfig) -> Result<Self, DiscoveryError> {
        let markers = server_supports_limit_markers(bus);
        if !markers {
            tracing::warn!(
                code = "no_kv_limit_markers",
                "nats-server < 2.11: no KV limit markers, watchers will not see TTL expiry"
            );
        }
        ensure_kv(bus, &cfg.kv_spec(markers)).await?;
        Self::open(bus, cfg).await
    }

    /// Opens the bucket as it is when it exists, else [`provision`](Self::provision)s it: what a
    /// service or client that registers itself does. It needs no permission to create or
    /// change the bucket once the platform has provisioned it (docs/security.md).
    pub async fn open_or_provision(bus: &Bus, cfg: DiscoveryConfig) -> Result<Self, DiscoveryError> {
        if bus.jetstream().get_key_value(&cfg.bucket).await.is_ok() {
            return Self::open(bus, cfg).await;
        }
        Self::provision(bus, cfg).await
    }

    /// Opens an existing bucket.
    pub async fn open(bus: &Bus, cfg: DiscoveryConfig) -> Result<Self, DiscoveryError> {
        let kv = bus
            .jetstream()
            .get_key_value(&cfg.bucket)
            .await
            .map_err(|e| DiscoveryError::Kv {
                bucket: cfg.bucket.clone(),
                key: "*".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            kv,
            markers: server_supports_limit_markers(bus),
            cfg,
        })
    }

    /// Whether TTL expiry is visible to watchers (limit markers).
    pub fn expiry_visible(&self) -> bool {
        self.markers
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    fn kv_err(&self, key: &str) -> impl FnOnce(String) -> DiscoveryError + '_ {
        let key = key.to_owned();
        move |reason| DiscoveryError::Kv {
            bucket: self.cfg.bucket.clone(),
            key,
            reason,
        }
    }

    /// Registers (puts) a node and returns a handle for heartbeats.
    pub async fn register(&self, info: NodeInfo) -> Result<NodeHandle, DiscoveryError> {
        validate_node_id(&info.node_id)?;
        let handle = NodeHandle {
            kv: self.kv.clone(),
            bucket: self.cfg.bucket.clone(),
            ttl: self.cfg.ttl,
            info,
        };
        handle.put().await?;
        Ok(handle)
    }

    /// All live nodes, one per node id, sorted by id.
    ///
    /// The key listing is a live consumer: a heartbeat written while it runs is delivered
    /// again, so the same key can be listed twice. Keys are therefore collected into a set
    /// first and each is read once.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, DiscoveryError> {
        let mut listing = self
            .kv
            .keys()
            .await
            .map_err(|e| self.kv_err("*")(e.to_string()))?;
        let mut keys = std::collections::BTreeSet::new();
        while let Some(key) = listing.next().await {
            keys.insert(key.map_err(|e| self.kv_err("*")(e.to_string()))?);
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = self
                .kv
                .get(&key)
                .await
                .map_err(|e| self.kv_err(&key)(e.to_string()))?;
            if let Some(value) = entry {
                out.push(parse_node(&self.cfg.bucket, &key, &value)?);
            }
        }
        Ok(out)
    }

    /// Revisions kept for one node, oldest first.
    pub async fn history(&self, node_id: &str) -> Result<Vec<NodeInfo>, DiscoveryError> {
        let mut h = self
            .kv
            .history(node_id)
            .await
            .map_err(|e| self.kv_err(node_id)(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(e) = h.next().await {
            let e = e.map_err(|e| self.kv_err(node_id)(e.to_string()))?;
            if e.operation == kv::Operation::Put {
                out.push(parse_node(&self.cfg.bucket, node_id, &e.value)?);
            }
        }
        Ok(out)
    }

    /// Current nodes as `Joined`, then live changes.
    pub async fn watch(
        &self,
    ) -> Result<BoxStream<'static, Result<NodeEvent, DiscoveryError>>, DiscoveryError> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| self.kv_err(">")(e.to_string()))?;
        let bucket = self.cfg.bucket.clone();
        let s = futures::stream::unfold(
            (watch, HashSet::<String>::new(), bucket),
            |(mut watch, mut known, bucket)| async move {
                loop {
                    let entry = match watch.next().await? {
                        Ok(e) => e,
                        Err(e) => {
                            let err = DiscoveryError::Kv {
                                bucket: bucket.clone(),
                                key: ">".into(),
                                reason: e.to_string(),
                            };
                            return Some((Err(err), (watch, known, bucket)));
                        }
                    };
                    let ev = match entry.operation {
                        kv::Operation::Put => match parse_node(&bucket, &entry.key, &entry.value) {
                            Ok(node) if known.insert(entry.key.clone()) => Ok(NodeEvent::Joined(node)),
                            Ok(node) => Ok(NodeEvent::Updated(node)),
                            Err(e) => Err(e),
                        },
                        op => {
                            if !known.remove(&entry.key) {
                                continue; // a marker for a node we never saw
                            }
                            let reason = if op == kv::Operation::Purge {
                                LeftReason::Expired
                            } else {
                                LeftReason::Unregistered
                            };
                            Ok(NodeEvent::Left {
                                node_id: entry.key.clone(),
                                reason,
                            })
                        }
                    };
                    return Some((ev, (watch, known, bucket)));
                }
            },
        );
        Ok(s.boxed())
    }
}

/// How many nodes are registered, kept current by one open [`Registry::watch`]: a status line
/// or dashboard reads [`count`](Self::count) as often as it likes without asking the server
/// (each [`Registry::nodes`] listing is a new consumer on the bucket). The watch is an ordered
/// consumer that async-nats re-creates across reconnects; should it end or fail, it is opened
/// again a second later. The background task stops when this is dropped.
///
/// On a server without limit markers (nats-server < 2.11) a watcher never learns of an expiry,
/// so the count is re-listed every two seconds instead.
///
/// ```no_run
/// # async fn demo(registry: langtian_core::discovery::Registry) {
/// let live = registry.live_count();
/// let mut changes = live.subscribe();
/// let _ = changes.wait_for(|n| *n >= 3).await; // three nodes are up
/// println!("{} nodes", live.count());
/// # }
/// ```
#[derive(Debug)]
pub struct LiveNodes {
    rx: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveNodes {
    /// The number of registered nodes now.
    pub fn count(&self) -> usize {
        *self.rx.borrow()
    }

    /// A receiver that sees every change of the count (`changed`, `wait_for`).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<usize> {
        self.rx.clone()
    }
}

impl Drop for LiveNodes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    /// Starts counting the registered nodes from one open watch; see [`LiveNodes`].
    pub fn live_count(&self) -> LiveNodes {
        let (tx, rx) = tokio::sync::watch::channel(0);
        let span = tracing::info_span!("node_count", bucket = %self.cfg.bucket);
        let task = tokio::spawn(tracing::Instrument::instrument(self.clone().keep_count(tx), span));
        LiveNodes { rx, task }
    }

    async fn keep_count(self, tx: tokio::sync::watch::Sender<usize>) {
        const REOPEN_AFTER: Duration = Duration::from_secs(1);
        const RELIST_EVERY: Duration = Duration::from_secs(2);
        let mut warned = false;
        let mut warn = |what: &str, e: &DiscoveryError| {
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(code = "node_count_failed", what, error = %e, "cannot follow the node registry; retrying");
            }
        };
        loop {
            if !self.markers {
                match self.nodes().await {
                    Ok(nodes) => {
                        tx.send_if_modified(|n| std::mem::replace(n, nodes.len()) != nodes.len());
                    }
                    Err(e) => warn("list", &e),
                }
                tokio::time::sleep(RELIST_EVERY).await;
                continue;
            }
            match self.watch().await {
                Ok(mut events) => {
                    let mut live = HashSet::new();
                    while let Some(ev) = events.next().await {
                        match ev {
                            Ok(NodeEvent::Joined(n) | NodeEvent::Updated(n)) => {
                                live.insert(n.node_id);
                            }
                            Ok(NodeEvent::Left { node_id, .. }) => {
                                live.remove(&node_id);
                            }
                            // A document that is not a node is not counted (Registry::nodes
                            // refuses the listing over it; here it is only skipped).
                            Err(DiscoveryError::BadNode { .. }) => continue,
                            Err(e) => {
                                warn("watch", &e);
                                break;
                            }
                        }
                        let now = live.len();
                        tx.send_if_modified(|n| std::mem::replace(n, now) != now);
                    }
                }
                Err(e) => warn("watch", &e),
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    }
}

/// A registered node; heartbeats refresh its TTL.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    kv: kv::Store,
    bucket: String,
    ttl: Duration,
    info: NodeInfo,
}

impl NodeHandle {
    /// The node's info as last written.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    async fn put(&self) -> Result<u64, DiscoveryError> {
        let body = serde_json::to_vec(&self.info).map_err(|e| DiscoveryError::BadNode {
            bucket: self.bucket.clone(),
            key: self.info.node_id.clone(),
            reason: e.to_string(),
        })?;
        self.kv
            .put(&self.info.node_id, body.into())
            .await
            .map_err(|e| DiscoveryError::Kv {
                bucket: self.bucket.clone(),
                key: self.info.node_id.clone(),
                reason: e.to_string(),
            })
    }

    /// Writes a heartbeat with a new load figure; returns the KV revision.
    pub async fn heartbeat(&mut self, load: f64) -> Result<u64, DiscoveryError> {
        self.info.last_seen_ms = now_ms();
        self.info.load = load;
        self.put().await
    }

    /// Heartbeats every TTL/3 in a background task (stops when the handle is aborted).
    pub fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let mut me = self.clone();
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let load = me.info.load;
                if let Err(e) = me.heartbeat(load).await {
                    tracing::warn!(code = "heartbeat_failed", node = %me.info.node_id, error = %e, "heartbeat failed");
                }
            }
        })
    }

    /// Removes the node at once (watchers see `Left { reason: Unregistered }`).
    pub async fn unregister(self) -> Result<(), DiscoveryError> {
        self.kv
            .delete(&self.info.node_id)
            .await
            .map_err(|e| DiscoveryError::Kv {
                bucket: self.bucket.clone(),
                key: self.info.node_id.clone(),
                reason: e.to_string(),
            })
    }
}

fn parse_node(bucket: &str, key: &str, value: &[u8]) -> Result<NodeInfo, DiscoveryError> {
    serde_json::from_slice(value).map_err(|e| DiscoveryError::BadNode {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn validate_node_id(id: &str) -> Result<(), DiscoveryError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '/'));
    if ok {
        Ok(())
    } else {
        Err(DiscoveryError::InvalidNodeId(id.to_owned()))
    }
}

fn server_supports_limit_markers(bus: &Bus) -> bool {
    let v = bus.client().server_info().version;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (2, 11)
}

fn now_ms() -> i64 {
    crate::envelope::now_nanos() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_validated() {
        assert!(validate_node_id("collector-1").is_ok());
        assert!(validate_node_id("a/b=c_d").is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a.b").is_err());
        assert!(validate_node_id("a b").is_err());
        assert!(validate_node_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn node_json_round_trip() {
        let n = NodeInfo::new("n1", "collector");
        let back = parse_node("b", "n1", &serde_json::to_vec(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        assert!(matches!(
            parse_node("b", "k", b"nope"),
            Err(DiscoveryError::BadNode { .. })
        ));
    }
}
