//! `@langtian/sdk`: the Node face of `langtian-core` (napi-rs). Thin: async calls become
//! Promises on napi's tokio runtime; every error is a JS `Error` with a stable `code`
//! (`ERR_CONNECT`, `ERR_PUBLISH`, `ERR_ENVELOPE`, `ERR_QUERY_<CODE>`, `ERR_NO_SERVICE`,
//! `ERR_DISCOVERY`, `ERR_REQUEST`, `ERR_TIMEOUT`, `ERR_LIVE_NO_SNAPSHOT`, `ERR_LIVE_BAD_ARGUMENT`),
//! mapped once, here.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use langtian_core::aggregate::records::Cell;
use langtian_core::aggregate::{AggregateError, AnyLiveGroup, LiveKind, LiveUpdate, RowCells};
use langtian_core::bus::{
    Bus, BusError, BusOptions, EventError, EventSpec, Qos, new_event_id, publish_event,
};
use langtian_core::discovery::{DiscoveryConfig, DiscoveryError, LeftReason, NodeEvent, Registry};
use langtian_core::envelope::{Envelope, EnvelopeBuilder, EnvelopeError};
use langtian_core::query::{QueryError, QueryRequest, encode_ipc, query};
use napi::bindgen_prelude::{AsyncGenerator, Buffer};
use napi_derive::napi;
use tokio::sync::Mutex;

/// An error for JS: the reason is `[CODE] message`; `sdk.js` moves CODE to the error's `code`
/// (napi-rs gives async errors a fixed status, so the code travels in the message).
fn err(code: impl AsRef<str>, message: impl std::fmt::Display) -> napi::Error {
    napi::Error::from_reason(format!("[{}] {message}", code.as_ref()))
}

fn bus_err(e: BusError) -> napi::Error {
    let code = match &e {
        BusError::Connect { .. } | BusError::Options(_) => "ERR_CONNECT",
        _ => "ERR_PUBLISH",
    };
    err(code, e)
}

fn query_err(e: QueryError) -> napi::Error {
    match e {
        QueryError::Failed(f) => err(
            format!("ERR_QUERY_{}", f.code.as_str().to_ascii_uppercase()),
            f.message,
        ),
        QueryError::NoService { .. } => err("ERR_NO_SERVICE", e),
        QueryError::Timeout(_) => err("ERR_QUERY_TIMEOUT", e),
        QueryError::Nats(_) => err("ERR_CONNECT", e),
        other => err("ERR_QUERY_PROTOCOL", other),
    }
}

fn envelope_err(e: EnvelopeError) -> napi::Error {
    err("ERR_ENVELOPE", e)
}

fn discovery_err(e: DiscoveryError) -> napi::Error {
    err("ERR_DISCOVERY", e)
}

fn live_err(e: AggregateError) -> napi::Error {
    let code = match &e {
        AggregateError::Config { .. } => "ERR_LIVE_BAD_ARGUMENT",
        AggregateError::NoSnapshot { .. } => "ERR_LIVE_NO_SNAPSHOT",
        AggregateError::Bus(_) | AggregateError::Nats { .. } => "ERR_CONNECT",
    };
    err(code, e)
}

/// Connection options.
#[napi(object)]
#[derive(Debug, Default)]
pub struct ConnectOptions {
    /// Client name shown by the server.
    pub name: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Credentials file (user JWT + NKey seed).
    pub creds: Option<String>,
    /// NKey user seed (`SU…`, e.g. the text of `lt up`'s `.langtian/nats/keys/<service>.nk`).
    pub nkey_seed: Option<String>,
    /// Inbox prefix instead of `_INBOX` (an `lt up` service's user reads only `_LT.<service>`).
    pub inbox_prefix: Option<String>,
    /// CA certificate (PEM file) to trust; the connection then requires TLS (`lt up --nats-tls`:
    /// `.langtian/nats/tls/ca.pem`).
    pub tls_ca: Option<String>,
    /// Give up connecting after this many milliseconds (default 5000).
    pub timeout_ms: Option<u32>,
}

/// How to publish an event.
#[napi(object)]
#[derive(Debug, Default)]
pub struct PublishOptions {
    /// MIME type of the payload (default `application/json`).
    pub content_type: Option<String>,
    /// 0 (fire and forget), 1 (PubAck, default) or 2 (PubAck + de-duplication by event id).
    pub qos: Option<u8>,
    /// Source system (default `node`).
    pub source: Option<String>,
    /// Subject prefix (default `lt.evt`): the subject is `<prefix>.<eventType>.<source>`.
    pub prefix: Option<String>,
    /// Exact subject instead of the prefix rule.
    pub subject: Option<String>,
    /// Event id (default: generated); a repeat is a no-op within the stream's duplicate window.
    pub event_id: Option<String>,
    pub partition_key: Option<String>,
}

/// What JetStream said about a published event.
#[napi(object)]
#[derive(Debug)]
pub struct Receipt {
    pub subject: String,
    pub event_id: String,
    /// The stream that stored it (absent for QoS 0).
    pub stream: Option<String>,
    /// Its stream sequence (absent for QoS 0; a JS number, exact below 2^53).
    pub sequence: Option<f64>,
    /// The server had this event id already.
    pub duplicate: bool,
}

/// An envelope (a published event).
#[napi(object)]
#[allow(missing_debug_implementations)]
pub struct EventEnvelope {
    pub event_id: String,
    pub event_type: String,
    pub source: String,
    /// Nanoseconds since the Unix epoch, as a decimal string (exact).
    pub timestamp_ns: String,
    pub schema_version: String,
    pub partition_key: Option<String>,
    pub content_type: String,
    pub payload: Buffer,
}

/// A message from a subscription: its subject and the envelope when it is one.
#[napi(object)]
#[allow(missing_debug_implementations)]
pub struct Message {
    pub subject: String,
    /// The decoded envelope (absent when the payload is not an envelope).
    pub envelope: Option<EventEnvelope>,
    /// The raw payload.
    pub data: Buffer,
}

fn envelope_object(env: &Envelope) -> EventEnvelope {
    EventEnvelope {
        event_id: env.event_id().to_owned(),
        event_type: env.event_type().to_owned(),
        source: env.source_system().to_owned(),
        timestamp_ns: env.event_timestamp().to_string(),
        schema_version: env.schema_version().to_owned(),
        partition_key: env.partition_key().map(str::to_owned),
        content_type: env.content_type().to_owned(),
        payload: env.payload().to_vec().into(),
    }
}

/// A new envelope around `payload` (for `publish` or your own transport).
#[napi(object)]
#[allow(missing_debug_implementations)]
pub struct NewEnvelope {
    pub event_type: String,
    pub source: String,
    pub payload: Buffer,
    pub content_type: Option<String>,
    pub event_id: Option<String>,
    pub partition_key: Option<String>,
}

fn build_envelope(e: &NewEnvelope, default_id: impl FnOnce() -> String) -> napi::Result<Envelope> {
    let mut b = EnvelopeBuilder::new(e.event_type.clone(), e.source.clone())
        .event_id(e.event_id.clone().unwrap_or_else(default_id))
        .payload(
            e.payload.to_vec(),
            e.content_type
                .clone()
                .unwrap_or_else(|| "application/json".into()),
        );
    if let Some(k) = &e.partition_key {
        b = b.partition_key(k.clone());
    }
    b.build().map_err(envelope_err)
}

/// Encodes an envelope (protobuf `langtian.envelope.v1.Envelope`).
#[napi]
pub fn encode_envelope(e: NewEnvelope) -> napi::Result<Buffer> {
    let env = build_envelope(&e, || new_event_id(&e.source))?;
    Ok(env.encode().to_vec().into())
}

/// Decodes an envelope; `ERR_ENVELOPE` when the bytes are not one.
#[napi]
pub fn decode_envelope(data: Buffer) -> napi::Result<EventEnvelope> {
    let env = Envelope::decode(&data).map_err(envelope_err)?;
    Ok(envelope_object(&env))
}

/// Options of a lake query.
#[napi(object)]
#[derive(Debug, Default)]
pub struct QueryOptions {
    /// Values for `?` placeholders (JSON values).
    pub params: Option<Vec<serde_json::Value>>,
    pub max_rows: Option<u32>,
    pub max_bytes: Option<u32>,
    pub timeout_ms: Option<u32>,
}

/// A connection to the platform's NATS.
#[napi]
#[derive(Debug)]
pub struct Client {
    bus: Bus,
}

#[napi]
impl Client {
    /// Connects (`lt up` serves `nats://127.0.0.1:14222`).
    #[napi(factory)]
    pub async fn connect(url: String, options: Option<ConnectOptions>) -> napi::Result<Client> {
        let o = options.unwrap_or_default();
        let mut opts = BusOptions::new(&url);
        opts.name = Some(o.name.unwrap_or_else(|| "langtian-node".into()));
        opts.token = o.token;
        opts.user = o.user;
        opts.password = o.password;
        opts.creds_file = o.creds.map(Into::into);
        opts.nkey_seed = o.nkey_seed.map(|s| s.trim().to_owned());
        opts.inbox_prefix = o.inbox_prefix;
        opts.tls.required = o.tls_ca.is_some();
        opts.tls.ca_file = o.tls_ca.map(Into::into);
        let limit = Duration::from_millis(u64::from(o.timeout_ms.unwrap_or(5000)));
        let bus = Bus::connect_within(&opts, limit).await.map_err(bus_err)?;
        Ok(Client { bus })
    }

    /// Wraps `payload` in an envelope and publishes it; QoS 1/2 resolve after JetStream's PubAck.
    #[napi]
    pub async fn publish(
        &self,
        event_type: String,
        payload: Buffer,
        options: Option<PublishOptions>,
    ) -> napi::Result<Receipt> {
        let o = options.unwrap_or_default();
        let mut spec = EventSpec::new(
            event_type,
            o.source.unwrap_or_else(|| "node".into()),
            payload.to_vec(),
        );
        spec.qos =
            Qos::from_level(o.qos.unwrap_or(1)).ok_or_else(|| err("ERR_PUBLISH", "qos must be 0, 1 or 2"))?;
        if let Some(c) = o.content_type {
            spec.content_type = c;
        }
        if let Some(p) = o.prefix {
            spec.prefix = p;
        }
        spec.subject = o.subject;
        spec.event_id = o.event_id;
        spec.partition_key = o.partition_key;
        let r = publish_event(&self.bus, spec).await.map_err(|e| match e {
            EventError::Envelope(e) => envelope_err(e),
            EventError::Bus(e) => bus_err(e),
        })?;
        Ok(Receipt {
            subject: r.subject,
            event_id: r.event_id,
            stream: r.stream,
            sequence: r.sequence.map(|s| s as f64),
            duplicate: r.duplicate,
        })
    }

    /// Live messages on `subject` (wildcards allowed): `for await (const m of await client.subscribe(s))`.
    #[napi]
    pub async fn subscribe(&self, subject: String) -> napi::Result<Subscription> {
        let client = self.bus.client().clone();
        let sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| err("ERR_CONNECT", format!("subscribing to {subject}: {e}")))?;
        client.flush().await.map_err(|e| err("ERR_CONNECT", e))?;
        let (closed, _) = tokio::sync::watch::channel(false);
        Ok(Subscription {
            inner: Arc::new(Mutex::new(Some(sub))),
            closed,
        })
    }

    /// Request/reply: sends `payload` to `subject` and resolves with the reply's bytes.
    #[napi]
    pub async fn request(
        &self,
        subject: String,
        payload: Buffer,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Buffer> {
        let limit = Duration::from_millis(u64::from(timeout_ms.unwrap_or(5000)));
        let fut = self
            .bus
            .client()
            .request(subject.clone(), payload.to_vec().into());
        let sent = std::time::Instant::now();
        let answer = tokio::select! {
            r = tokio::time::timeout(limit, fut) => r,
            why = self.bus.refusal(&subject, sent) => {
                return Err(err("ERR_REQUEST", format!("request to {subject}: {why}")));
            }
        };
        match answer {
            Ok(Ok(m)) => Ok(m.payload.to_vec().into()),
            Ok(Err(e)) => Err(err("ERR_REQUEST", format!("request to {subject}: {e}"))),
            Err(_) => Err(err(
                "ERR_TIMEOUT",
                format!("no reply from {subject} within {} ms", limit.as_millis()),
            )),
        }
    }

    /// One SELECT on the lake through the query service; resolves with ONE Arrow IPC stream
    /// (read it with `apache-arrow`'s `tableFromIPC`, or `queryTable` in `@langtian/sdk/arrow`).
    #[napi]
    pub async fn query(&self, sql: String, options: Option<QueryOptions>) -> napi::Result<Buffer> {
        let o = options.unwrap_or_default();
        let mut req = QueryRequest::new(sql);
        req.params = o.params.unwrap_or_default();
        req.max_rows = o.max_rows.map(u64::from);
        req.max_bytes = o.max_bytes.map(u64::from);
        req.timeout_ms = o.timeout_ms.map(u64::from);
        let r = query(&self.bus, &req).await.map_err(query_err)?;
        let bytes = encode_ipc("query", &r.schema, &r.batches).map_err(|e| err("ERR_QUERY_PROTOCOL", e))?;
        Ok(bytes.into())
    }

    /// The registered services (KV `lt_nodes`), as NodeInfo objects.
    #[napi]
    pub async fn nodes(&self, bucket: Option<String>) -> napi::Result<Vec<serde_json::Value>> {
        let reg = Registry::open(&self.bus, discovery_config(bucket))
            .await
            .map_err(discovery_err)?;
        let nodes = reg.nodes().await.map_err(discovery_err)?;
        nodes
            .into_iter()
            .map(|n| serde_json::to_value(n).map_err(|e| err("ERR_DISCOVERY", e)))
            .collect()
    }

    /// Node changes as they happen (present nodes first, as `joined`):
    /// `for await (const ev of await client.watchNodes())`.
    #[napi]
    pub async fn watch_nodes(&self, bucket: Option<String>) -> napi::Result<NodeWatch> {
        let reg = Registry::open(&self.bus, discovery_config(bucket))
            .await
            .map_err(discovery_err)?;
        let stream = reg.watch().await.map_err(discovery_err)?;
        Ok(NodeWatch {
            inner: Arc::new(Mutex::new(stream)),
        })
    }

    /// Follows one group of the aggregator live, as the UI's grids do: its snapshot, then every
    /// delta (a gap reads the snapshot again). `kind`: `ticks` (default) or `contracts` (groups
    /// are venues in lower case, e.g. `shfe`), `battery` (group `cells`).
    #[napi]
    pub async fn live(&self, group: String, options: Option<LiveOptions>) -> napi::Result<LiveGroup> {
        let o = options.unwrap_or_default();
        let kind: LiveKind = o.kind.as_deref().unwrap_or("ticks").parse().map_err(live_err)?;
        let bucket = o.bucket.unwrap_or_else(|| "md_snapshots".into());
        let inner = AnyLiveGroup::open(&self.bus, kind, &bucket, &group)
            .await
            .map_err(live_err)?;
        Ok(LiveGroup {
            inner: Arc::new(Mutex::new(inner)),
            kind: kind.as_str().to_owned(),
            group,
        })
    }

    /// Waits until everything published reached the server.
    #[napi]
    pub async fn flush(&self) -> napi::Result<()> {
        self.bus.client().flush().await.map_err(|e| err("ERR_CONNECT", e))
    }
}

fn discovery_config(bucket: Option<String>) -> DiscoveryConfig {
    let mut cfg = DiscoveryConfig::default();
    if let Some(b) = bucket {
        cfg.bucket = b;
    }
    cfg
}

/// A live subscription (an async iterator of messages); `close()` ends it.
#[napi(async_iterator)]
#[derive(Debug)]
pub struct Subscription {
    inner: Arc<Mutex<Option<langtian_core::async_nats::Subscriber>>>,
    /// Set by `close()`: a pending `next()` stops waiting and resolves as done.
    closed: tokio::sync::watch::Sender<bool>,
}

#[napi]
impl AsyncGenerator for Subscription {
    type Yield = Message;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _: Option<()>,
    ) -> impl Future<Output = napi::Result<Option<Message>>> + Send + 'static {
        let inner = self.inner.clone();
        let mut closed = self.closed.subscribe();
        async move {
            if *closed.borrow_and_update() {
                return Ok(None);
            }
            let mut guard = inner.lock().await;
            let Some(sub) = guard.as_mut() else {
                return Ok(None);
            };
            let m = tokio::select! {
                m = sub.next() => m,
                _ = closed.changed() => None,
            };
            Ok(m.map(|m| Message {
                subject: m.subject.to_string(),
                envelope: Envelope::decode(&m.payload).ok().as_ref().map(envelope_object),
                data: m.payload.to_vec().into(),
            }))
        }
    }
}

#[napi]
impl Subscription {
    /// Unsubscribes; a pending `next()` resolves as done.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        // Wake a pending next() first (it holds the subscriber), then unsubscribe.
        self.closed.send_replace(true);
        let mut guard = self.inner.lock().await;
        if let Some(mut s) = guard.take() {
            s.unsubscribe().await.map_err(|e| err("ERR_CONNECT", e))?;
        }
        Ok(())
    }
}

type NodeStream = futures::stream::BoxStream<'static, Result<NodeEvent, DiscoveryError>>;

/// A change of the node set.
#[napi(object)]
#[derive(Debug)]
pub struct NodeChange {
    /// `joined`, `updated` or `left`.
    pub kind: String,
    /// The NodeInfo (joined/updated) or `{nodeId, reason}` (left).
    pub node: serde_json::Value,
}

/// Node changes (an async iterator).
#[napi(async_iterator)]
#[allow(missing_debug_implementations)]
pub struct NodeWatch {
    inner: Arc<Mutex<NodeStream>>,
}

#[napi]
impl AsyncGenerator for NodeWatch {
    type Yield = NodeChange;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _: Option<()>,
    ) -> impl Future<Output = napi::Result<Option<NodeChange>>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let ev = match inner.lock().await.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(discovery_err(e)),
                Some(Ok(ev)) => ev,
            };
            let (kind, node) = match ev {
                NodeEvent::Joined(n) => ("joined", serde_json::to_value(n)),
                NodeEvent::Updated(n) => ("updated", serde_json::to_value(n)),
                NodeEvent::Left { node_id, reason } => (
                    "left",
                    Ok(serde_json::json!({
                        "nodeId": node_id,
                        "reason": match reason {
                            LeftReason::Unregistered => "unregistered",
                            LeftReason::Expired => "expired",
                        },
                    })),
                ),
            };
            Ok(Some(NodeChange {
                kind: kind.to_owned(),
                node: node.map_err(|e| err("ERR_DISCOVERY", e))?,
            }))
        }
    }
}

/// Options of `client.live`.
#[napi(object)]
#[derive(Debug, Default)]
pub struct LiveOptions {
    /// `ticks` (default), `contracts` or `battery`.
    pub kind: Option<String>,
    /// The aggregator's KV bucket of snapshots (default `md_snapshots`).
    pub bucket: Option<String>,
}

/// What `next()` did: `kind` `applied` (with `shard`, `keys`), `stale`, or `resynced` (with
/// `snapshotVersion`).
#[napi(object)]
#[derive(Debug)]
pub struct LiveChange {
    pub kind: String,
    pub shard: Option<u32>,
    pub keys: Option<u32>,
    pub snapshot_version: Option<f64>,
}

/// Deltas applied and stale, resyncs after gaps, foreign messages rejected.
#[napi(object)]
#[derive(Debug)]
pub struct LiveStats {
    pub applied: f64,
    pub stale: f64,
    pub resyncs: f64,
    pub rejected: f64,
}

/// A record as a plain object, its columns as `langtian_core::aggregate::records::Row` defines
/// them (timestamps: nanoseconds since the epoch as a number, exact to ~0.3 µs).
fn row_object(row: RowCells) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (column, cell) in row {
        let v = match cell {
            Cell::Text(v) => serde_json::Value::String(v),
            Cell::Int(v) => serde_json::json!(v as f64),
            Cell::UInt(v) => serde_json::json!(v as f64),
            Cell::Float(v) => serde_json::json!(v),
            Cell::Missing => serde_json::Value::Null,
        };
        m.insert(column.to_owned(), v);
    }
    serde_json::Value::Object(m)
}

/// One group followed live (see `Client.live`). Its methods wait for one another: a `next()`
/// without a timeout holds the group until a delta comes.
#[napi]
#[allow(missing_debug_implementations)]
pub struct LiveGroup {
    inner: Arc<Mutex<AnyLiveGroup>>,
    kind: String,
    group: String,
}

#[napi]
impl LiveGroup {
    /// `ticks`, `contracts` or `battery`.
    #[napi(getter)]
    pub fn kind(&self) -> String {
        self.kind.clone()
    }

    /// The group's name.
    #[napi(getter)]
    pub fn group(&self) -> String {
        self.group.clone()
    }

    /// Applies the next delta; resolves with what happened, or `null` when `timeoutMs` passes
    /// first (waits forever without it).
    #[napi]
    pub async fn next(&self, timeout_ms: Option<u32>) -> napi::Result<Option<LiveChange>> {
        let mut any = self.inner.lock().await;
        let update = match timeout_ms {
            Some(ms) => {
                let d = Duration::from_millis(u64::from(ms));
                match tokio::time::timeout(d, any.next()).await {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                }
            }
            None => any.next().await,
        }
        .map_err(live_err)?;
        Ok(Some(match update {
            LiveUpdate::Applied { shard, keys } => LiveChange {
                kind: "applied".into(),
                shard: Some(shard),
                keys: Some(u32::try_from(keys).unwrap_or(u32::MAX)),
                snapshot_version: None,
            },
            LiveUpdate::Stale => LiveChange {
                kind: "stale".into(),
                shard: None,
                keys: None,
                snapshot_version: None,
            },
            LiveUpdate::Resynced { snapshot_version } => LiveChange {
                kind: "resynced".into(),
                shard: None,
                keys: None,
                snapshot_version: Some(snapshot_version as f64),
            },
        }))
    }

    /// Applies every delta that arrives during `ms`; resolves with how many were applied.
    #[napi]
    pub async fn follow(&self, ms: u32) -> napi::Result<u32> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(ms));
        let mut any = self.inner.lock().await;
        let mut applied = 0u32;
        loop {
            match tokio::time::timeout_at(deadline, any.next()).await {
                Err(_) => return Ok(applied),
                Ok(Ok(LiveUpdate::Applied { .. })) => applied += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(live_err(e)),
            }
        }
    }

    /// Every record now, sorted by key, as plain objects.
    #[napi]
    pub async fn records(&self) -> Vec<serde_json::Value> {
        let any = self.inner.lock().await;
        any.rows().into_iter().map(row_object).collect()
    }

    /// One record by key (`shfe.rb2501`, `<device_id>/<channel>`), or `null`.
    #[napi]
    pub async fn get(&self, key: String) -> Option<serde_json::Value> {
        let any = self.inner.lock().await;
        any.row(&key).map(row_object)
    }

    /// How many records the group holds.
    #[napi]
    pub async fn size(&self) -> u32 {
        let any = self.inner.lock().await;
        u32::try_from(any.len()).unwrap_or(u32::MAX)
    }

    /// Deltas applied and stale, resyncs after gaps, foreign messages rejected.
    #[napi]
    pub async fn stats(&self) -> LiveStats {
        let any = self.inner.lock().await;
        let s = any.stats();
        LiveStats {
            applied: s.applied as f64,
            stale: s.stale as f64,
            resyncs: s.resyncs as f64,
            rejected: s.rejected as f64,
        }
    }
}
