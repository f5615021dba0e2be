//! The safe side of the C ABI: blocking calls on one library-owned tokio runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt as _;
use langtian_core::aggregate::records::Cell;
use langtian_core::aggregate::{AggregateError, AnyLiveGroup, LiveKind, LiveUpdate, RowCells};
use langtian_core::bus::{
    publish_event, Bus, BusError, BusOptions, EventError, EventReceipt, EventSpec, Qos,
};
use langtian_core::discovery::{DiscoveryConfig, DiscoveryError, NodeHandle, NodeInfo, Registry};
use langtian_core::envelope::{Envelope, EnvelopeError};
use serde::Deserialize;
use tokio::runtime::Runtime;

/// Status codes of the C ABI (stable: the C# layer maps them to exceptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A bad argument (null pointer, invalid UTF-8, malformed options JSON, bad QoS).
    Argument = 1,
    /// Connecting failed or the connection is gone.
    Connect = 2,
    /// JetStream did not confirm a publish.
    Publish = 3,
    /// An envelope could not be built or decoded.
    Envelope = 4,
    /// KV discovery failed (bucket missing, bad node id, KV error).
    Discovery = 5,
    /// No answer in time.
    Timeout = 6,
    /// A request had no responder or failed.
    Request = 7,
    /// A live group has no snapshot to start from (no aggregator has seen the group).
    NoSnapshot = 8,
    /// The library itself failed (a panic was caught, the runtime could not start).
    Internal = 99,
}

/// Errors of the C ABI calls; each maps to one [`Status`].
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    #[error("invalid argument `{name}`: {reason}")]
    Argument { name: &'static str, reason: String },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("subscribing to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("request to {subject}: {reason}")]
    Request { subject: String, reason: String },
    #[error("no reply from {subject} within {ms} ms")]
    RequestTimeout { subject: String, ms: u64 },
    #[error(transparent)]
    Live(#[from] AggregateError),
    #[error("{0}")]
    Internal(String),
}

impl FfiError {
    /// The status code for the C ABI.
    pub fn status(&self) -> Status {
        match self {
            Self::Argument { .. } => Status::Argument,
            Self::Bus(BusError::Connect { .. } | BusError::Options(_)) | Self::Subscribe { .. } => {
                Status::Connect
            }
            Self::Bus(_) => Status::Publish,
            Self::Envelope(_) => Status::Envelope,
            Self::Discovery(_) => Status::Discovery,
            Self::Request { .. } => Status::Request,
            Self::RequestTimeout { .. } => Status::Timeout,
            Self::Live(AggregateError::Config { .. }) => Status::Argument,
            Self::Live(AggregateError::NoSnapshot { .. }) => Status::NoSnapshot,
            Self::Live(AggregateError::Bus(_) | AggregateError::Nats { .. }) => Status::Connect,
            Self::Internal(_) => Status::Internal,
        }
    }

    pub(crate) fn arg(name: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Argument {
            name,
            reason: reason.to_string(),
        }
    }
}

/// The library's runtime (two worker threads; created on first use).
pub fn runtime() -> Result<&'static Runtime, FfiError> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("langtian-cs")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| FfiError::Internal(format!("starting the tokio runtime: {e}")))
}

/// Connection options (JSON from C#, all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectOptions {
    pub name: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub creds: Option<String>,
    pub nkey_seed: Option<String>,
    pub inbox_prefix: Option<String>,
    pub tls_ca: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// Publish options (JSON from C#, all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishOptions {
    pub qos: Option<u8>,
    pub source: Option<String>,
    pub prefix: Option<String>,
    pub subject: Option<String>,
    pub event_id: Option<String>,
    pub content_type: Option<String>,
    pub partition_key: Option<String>,
}

/// A connection.
#[derive(Debug)]
pub struct Client {
    bus: Bus,
}

impl Client {
    /// Connects to `url` within the options' timeout (default 5 s).
    pub fn connect(url: &str, options: ConnectOptions) -> Result<Self, FfiError> {
        let mut opts = BusOptions::new(url);
        opts.name = Some(options.name.unwrap_or_else(|| "langtian-csharp".into()));
        opts.token = options.token;
        opts.user = options.user;
        opts.password = options.password;
        opts.creds_file = options.creds.map(Into::into);
        opts.nkey_seed = options.nkey_seed.map(|s| s.trim().to_owned());
        opts.inbox_prefix = options.inbox_prefix;
        opts.tls.required = options.tls_ca.is_some();
        opts.tls.ca_file = options.tls_ca.map(Into::into);
        let ms = options.timeout_ms.unwrap_or(5000);
        let bus = runtime()?.block_on(Bus::connect_within(&opts, Duration::from_millis(ms)))?;
        Ok(Client { bus })
    }

    /// Wraps `payload` in an envelope and publishes it (QoS 1/2 wait for the PubAck).
    pub fn publish(
        &self,
        event_type: &str,
        payload: &[u8],
        o: PublishOptions,
    ) -> Result<EventReceipt, FfiError> {
        let mut spec = EventSpec::new(
            event_type,
            o.source.unwrap_or_else(|| "csharp".into()),
            payload.to_vec(),
        );
        spec.qos =
            Qos::from_level(o.qos.unwrap_or(1)).ok_or_else(|| FfiError::arg("qos", "must be 0, 1 or 2"))?;
        if let Some(c) = o.content_type {
            spec.content_type = c;
        }
        if let Some(p) = o.prefix {
            spec.prefix = p;
        }
        spec.subject = o.subject;
        spec.event_id = o.event_id;
        spec.partition_key = o.partition_key;
        runtime()?
            .block_on(publish_event(&self.bus, spec))
            .map_err(|e| match e {
                EventError::Envelope(e) => FfiError::Envelope(e),
                EventError::Bus(e) => FfiError::Bus(e),
            })
    }

    /// Request/reply: the reply's bytes.
    pub fn request(&self, subject: &str, payload: &[u8], timeout_ms: u64) -> Result<Vec<u8>, FfiError> {
        let fut = self
            .bus
            .client()
            .request(subject.to_owned(), payload.to_vec().into());
        let sent = std::time::Instant::now();
        runtime()?.block_on(async {
            let answer = tokio::select! {
                r = tokio::time::timeout(Duration::from_millis(timeout_ms), fut) => r,
                why = self.bus.refusal(subject, sent) => {
                    return Err(FfiError::Request {
                        subject: subject.to_owned(),
                        reason: why.to_string(),
                    });
                }
            };
            match answer {
                Ok(Ok(m)) => Ok(m.payload.to_vec()),
                Ok(Err(e)) => Err(FfiError::Request {
                    subject: subject.to_owned(),
                    reason: e.to_string(),
                }),
                Err(_) => Err(FfiError::RequestTimeout {
                    subject: subject.to_owned(),
                    ms: timeout_ms,
                }),
            }
        })
    }

    /// Subscribes; `deliver` runs on one dedicated thread for every message, in order, until the
    /// returned [`Subscription`] is dropped.
    pub fn subscribe(
        &self,
        subject: &str,
        deliver: impl FnMut(IncomingMessage) + Send + 'static,
    ) -> Result<Subscription, FfiError> {
        let rt = runtime()?;
        let client = self.bus.client().clone();
        let mut sub = rt.block_on(async {
            let sub = client
                .subscribe(subject.to_owned())
                .await
                .map_err(|e| FfiError::Subscribe {
                    subject: subject.to_owned(),
                    reason: e.to_string(),
                })?;
            // The SUB reached the server: messages published after this call are delivered.
            client.flush().await.map_err(|e| FfiError::Subscribe {
                subject: subject.to_owned(),
                reason: e.to_string(),
            })?;
            Ok::<_, FfiError>(sub)
        })?;
        let (tx, rx) = std::sync::mpsc::channel::<IncomingMessage>();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let pump = rt.spawn(async move {
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => {
                            if tx.send(IncomingMessage::from(&m)).is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = &mut stop_rx => break,
                }
            }
            let _ = sub.unsubscribe().await;
        });
        let mut deliver = deliver;
        let thread = std::thread::Builder::new()
            .name("langtian-cs-sub".into())
            .spawn(move || {
                while let Ok(m) = rx.recv() {
                    deliver(m);
                }
            })
            .map_err(|e| FfiError::Internal(format!("starting the callback thread: {e}")))?;
        Ok(Subscription {
            stop: Some(stop_tx),
            pump: Some(pump),
            thread: Some(thread),
        })
    }

    /// Follows one group of the aggregator live (`kind`: ticks, contracts, battery; `bucket`
    /// default `md_snapshots`).
    pub fn live(&self, kind: &str, group: &str, bucket: Option<&str>) -> Result<Live, FfiError> {
        let kind: LiveKind = kind.parse()?;
        let group = runtime()?.block_on(AnyLiveGroup::open(
            &self.bus,
            kind,
            bucket.unwrap_or("md_snapshots"),
            group,
        ))?;
        Ok(Live {
            group: std::sync::Mutex::new(group),
        })
    }

    /// The registered nodes of KV bucket `bucket` (default `lt_nodes`).
    pub fn nodes(&self, bucket: Option<&str>) -> Result<Vec<NodeInfo>, FfiError> {
        let cfg = discovery_config(bucket);
        runtime()?.block_on(async {
            let reg = Registry::open(&self.bus, cfg).await?;
            Ok(reg.nodes().await?)
        })
    }

    /// Registers `info` in KV (creating the bucket if needed) and heartbeats every TTL/3 until
    /// the returned [`Registration`] is dropped, which unregisters it.
    pub fn register(&self, info: NodeInfo, bucket: Option<&str>) -> Result<Registration, FfiError> {
        let cfg = discovery_config(bucket);
        let rt = runtime()?;
        let handle = rt.block_on(async {
            let reg = Registry::open_or_provision(&self.bus, cfg).await?;
            Ok::<_, FfiError>(reg.register(info).await?)
        })?;
        let every = (discovery_config(bucket).ttl / 3).max(Duration::from_millis(100));
        let handle = Arc::new(tokio::sync::Mutex::new(Some(handle)));
        let beat = handle.clone();
        let task = rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut g = beat.lock().await;
                let Some(h) = g.as_mut() else { break };
                let load = h.info().load;
                if let Err(e) = h.heartbeat(load).await {
                    tracing::warn!(code = "heartbeat_failed", node = %h.info().node_id, error = %e, "heartbeat failed");
                }
            }
        });
        Ok(Registration {
            handle,
            task: Some(task),
        })
    }
}

fn discovery_config(bucket: Option<&str>) -> DiscoveryConfig {
    let mut cfg = DiscoveryConfig::default();
    if let Some(b) = bucket {
        cfg.bucket = b.to_owned();
    }
    cfg
}

/// A received message, with its envelope when it is one.
#[derive(Debug)]
pub struct IncomingMessage {
    pub subject: String,
    pub data: Vec<u8>,
    pub envelope: Option<Envelope>,
}

impl From<&langtian_core::async_nats::Message> for IncomingMessage {
    fn from(m: &langtian_core::async_nats::Message) -> Self {
        Self {
            subject: m.subject.to_string(),
            data: m.payload.to_vec(),
            envelope: Envelope::decode(&m.payload).ok(),
        }
    }
}

/// A live subscription; dropping it unsubscribes and waits until no callback runs any more.
#[derive(Debug)]
pub struct Subscription {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pump: Option<tokio::task::JoinHandle<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let (Some(p), Ok(rt)) = (self.pump.take(), runtime()) {
            // The pump ends and drops its sender, so the callback thread ends after the
            // messages already queued. Called from the callback thread itself it must not join.
            let _ = rt.block_on(p);
        }
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// A node registered in KV; heartbeats until dropped, then unregisters.
#[derive(Debug)]
pub struct Registration {
    handle: Arc<tokio::sync::Mutex<Option<NodeHandle>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    /// Writes a heartbeat now with a new load figure (later automatic heartbeats keep it);
    /// returns the KV revision.
    pub fn heartbeat(&self, load: f64) -> Result<u64, FfiError> {
        runtime()?.block_on(async {
            let mut g = self.handle.lock().await;
            let h = g
                .as_mut()
                .ok_or_else(|| FfiError::Internal("the node is unregistered".into()))?;
            Ok(h.heartbeat(load).await?)
        })
    }

    /// Removes the node at once (watchers see it leave).
    pub fn unregister(mut self) -> Result<(), FfiError> {
        self.stop_and_unregister()
    }

    fn stop_and_unregister(&mut self) -> Result<(), FfiError> {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let rt = runtime()?;
        rt.block_on(async {
            if let Some(h) = self.handle.lock().await.take() {
                h.unregister().await?;
            }
            Ok(())
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.stop_and_unregister();
    }
}

/// A node for `register` (JSON from C#; `nodeId` and `role` required).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewNode {
    pub node_id: String,
    pub role: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl From<NewNode> for NodeInfo {
    fn from(n: NewNode) -> Self {
        let mut info = NodeInfo::new(n.node_id, n.role);
        if let Some(v) = n.version {
            info.version = v;
        }
        if let Some(h) = n.host {
            info.host = h;
        }
        info.endpoints = n.endpoints;
        info.metadata = n.metadata;
        info
    }
}

/// A group followed live (see `Client::live`); its calls wait for one another.
#[derive(Debug)]
pub struct Live {
    group: std::sync::Mutex<AnyLiveGroup>,
}

impl Live {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, AnyLiveGroup>, FfiError> {
        self.group
            .lock()
            .map_err(|_| FfiError::Internal("a live group call panicked earlier".into()))
    }

    /// The next delta applied, or `None` when `timeout_ms` passes first.
    pub fn next(&self, timeout_ms: u64) -> Result<Option<LiveUpdate>, FfiError> {
        let mut g = self.lock()?;
        let limit = Duration::from_millis(timeout_ms);
        match runtime()?.block_on(async { tokio::time::timeout(limit, g.next()).await }) {
            Ok(r) => Ok(Some(r?)),
            Err(_) => Ok(None),
        }
    }

    /// Every record now as a JSON array of objects (one row definition for every SDK).
    pub fn records_json(&self) -> Result<Vec<u8>, FfiError> {
        let rows: Vec<serde_json::Value> = self.lock()?.rows().into_iter().map(row_json).collect();
        serde_json::to_vec(&rows).map_err(|e| FfiError::Internal(format!("encoding JSON: {e}")))
    }

    /// One record by key as a JSON object, or `null`.
    pub fn get_json(&self, key: &str) -> Result<Vec<u8>, FfiError> {
        let row = self.lock()?.row(key).map(row_json);
        serde_json::to_vec(&row).map_err(|e| FfiError::Internal(format!("encoding JSON: {e}")))
    }

    /// How many records, and the counts (applied, stale, resyncs, rejected).
    pub fn counts(&self) -> Result<(u64, [u64; 4]), FfiError> {
        let g = self.lock()?;
        let s = g.stats();
        Ok((g.len() as u64, [s.applied, s.stale, s.resyncs, s.rejected]))
    }
}

fn row_json(row: RowCells) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (column, cell) in row {
        let v = match cell {
            Cell::Text(v) => serde_json::Value::String(v),
            Cell::Int(v) => serde_json::Value::from(v),
            Cell::UInt(v) => serde_json::Value::from(v),
            Cell::Float(v) => serde_json::Value::from(v),
            Cell::Missing => serde_json::Value::Null,
        };
        m.insert(column.to_owned(), v);
    }
    serde_json::Value::Object(m)
}
