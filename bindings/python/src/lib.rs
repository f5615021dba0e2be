//! `langtian._native`: the Rust half of the Python SDK. Thin: every call goes to
//! `langtian-core` on one shared tokio runtime with the GIL released while it waits; errors are
//! mapped once, here, to the exception classes of `langtian.errors`. The Python package
//! (`python/langtian/`) adds pandas/pyarrow conversion and the asyncio variants.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use langtian_core::aggregate::records::{Cell, Row};
use langtian_core::aggregate::{AggregateError, AnyLiveGroup, LiveKind, LiveUpdate, RowCells};
use langtian_core::bus::{Bus, BusError, BusOptions, EventError, EventSpec, Qos, publish_event};
use langtian_core::discovery::{DiscoveryConfig, DiscoveryError, LeftReason, NodeEvent, Registry};
use langtian_core::envelope::{Envelope, EnvelopeError};
use langtian_core::proto::battery::v1::ChannelSample;
use langtian_core::query::{ErrorCode, FrameError, QUERY_SUBJECT, QueryError, QueryRequest, query_chunks_on};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// How long a blocking wait runs before Python gets a chance to raise KeyboardInterrupt.
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("langtian")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| PyRuntimeError::new_err(format!("starting the tokio runtime: {e}")))
}

/// Runs `fut` to completion with the GIL released.
fn block<T: Send>(py: Python<'_>, fut: impl Future<Output = T> + Send) -> PyResult<T> {
    let rt = runtime()?;
    Ok(py.detach(|| rt.block_on(fut)))
}

/// Raises `langtian.errors.<kind>(message, code)`.
fn raise(py: Python<'_>, kind: &str, message: String, code: &str) -> PyErr {
    let made = py
        .import("langtian.errors")
        .and_then(|m| m.getattr(kind))
        .and_then(|cls| cls.call1((message.clone(), code)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(format!("{kind}: {message}")),
    }
}

fn bus_err(py: Python<'_>, e: BusError) -> PyErr {
    let kind = match &e {
        BusError::Connect { .. } | BusError::Options(_) => "ConnectError",
        _ => "PublishError",
    };
    raise(py, kind, e.to_string(), "nats")
}

fn query_err(py: Python<'_>, e: QueryError) -> PyErr {
    match e {
        QueryError::Failed(f) => {
            let kind = match f.code {
                ErrorCode::NotReadOnly => "QueryRejected",
                ErrorCode::Timeout => "QueryTimeout",
                _ => "QueryError",
            };
            raise(py, kind, f.message, f.code.as_str())
        }
        QueryError::Timeout(_) => raise(py, "QueryTimeout", e.to_string(), "timeout"),
        QueryError::NoService { .. } => raise(py, "NoServiceError", e.to_string(), "no_service"),
        QueryError::Nats(_) => raise(py, "ConnectError", e.to_string(), "nats"),
        other => raise(py, "QueryError", other.to_string(), "protocol"),
    }
}

fn frame_err(py: Python<'_>, e: FrameError) -> PyErr {
    let code = match &e {
        FrameError::BadName { .. } => "bad_name",
        FrameError::TooLarge { .. } => "too_large",
        FrameError::Encode { .. } => "not_arrow",
        FrameError::Publish { .. } => "nats",
    };
    raise(py, "FrameError", e.to_string(), code)
}

fn envelope_err(py: Python<'_>, e: EnvelopeError) -> PyErr {
    raise(py, "EnvelopeError", e.to_string(), "envelope")
}

fn live_err(py: Python<'_>, e: AggregateError) -> PyErr {
    let code = match &e {
        AggregateError::Config { key: "kind", .. } => "bad_kind",
        AggregateError::Config { .. } => "bad_group",
        AggregateError::NoSnapshot { .. } => "no_snapshot",
        AggregateError::Bus(_) | AggregateError::Nats { .. } => "nats",
    };
    raise(py, "LiveError", e.to_string(), code)
}

fn discovery_err(py: Python<'_>, e: DiscoveryError) -> PyErr {
    raise(py, "LangtianError", e.to_string(), "discovery")
}

/// A connection to the platform's NATS.
#[pyclass(module = "langtian._native", frozen)]
struct Client {
    bus: Bus,
    url: String,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url = "nats://127.0.0.1:14222", *, name = None, token = None, user = None, password = None, creds = None, nkey_seed = None, inbox_prefix = None, tls_ca = None, timeout = 5.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: &str,
        name: Option<String>,
        token: Option<String>,
        user: Option<String>,
        password: Option<String>,
        creds: Option<PathBuf>,
        nkey_seed: Option<String>,
        inbox_prefix: Option<String>,
        tls_ca: Option<PathBuf>,
        timeout: f64,
    ) -> PyResult<Self> {
        let mut opts = BusOptions::new(url);
        opts.name = Some(name.unwrap_or_else(|| "langtian-python".into()));
        opts.token = token;
        opts.user = user;
        opts.password = password;
        opts.creds_file = creds;
        opts.nkey_seed = nkey_seed.map(|s| s.trim().to_owned());
        opts.inbox_prefix = inbox_prefix;
        opts.tls.required = tls_ca.is_some();
        opts.tls.ca_file = tls_ca;
        let limit = Duration::from_secs_f64(timeout.clamp(0.1, 3600.0));
        let r = block(py, async {
            tokio::time::timeout(limit, Bus::connect(&opts)).await
        })?;
        match r {
            Ok(Ok(bus)) => Ok(Self {
                bus,
                url: url.to_owned(),
            }),
            Ok(Err(e)) => Err(bus_err(py, e)),
            Err(_) => Err(raise(
                py,
                "ConnectError",
                format!("no NATS server answered at {url} within {timeout} s"),
                "timeout",
            )),
        }
    }

    /// The server URL this client was given.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// The server's largest message, bytes.
    #[getter]
    fn max_payload(&self) -> usize {
        self.bus.client().server_info().max_payload
    }

    /// Wraps `payload` in an envelope and publishes it; QoS 1/2 wait for JetStream's PubAck.
    #[pyo3(signature = (event_type, payload, content_type, *, source = "python", qos = 1, prefix = "lt.evt", subject = None, event_id = None, partition_key = None))]
    #[allow(clippy::too_many_arguments)]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        event_type: &str,
        payload: Vec<u8>,
        content_type: &str,
        source: &str,
        qos: u8,
        prefix: &str,
        subject: Option<String>,
        event_id: Option<String>,
        partition_key: Option<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let qos = Qos::from_level(qos).ok_or_else(|| {
            raise(
                py,
                "PublishError",
                format!("qos must be 0, 1 or 2, not {qos}"),
                "bad_qos",
            )
        })?;
        let mut spec = EventSpec::new(event_type, source, payload);
        spec.content_type = content_type.to_owned();
        spec.qos = qos;
        spec.prefix = prefix.to_owned();
        spec.subject = subject;
        spec.event_id = event_id;
        spec.partition_key = partition_key;
        let bus = self.bus.clone();
        let r = block(py, async move { publish_event(&bus, spec).await })?.map_err(|e| match e {
            EventError::Envelope(e) => envelope_err(py, e),
            EventError::Bus(e) => bus_err(py, e),
        })?;
        let d = PyDict::new(py);
        d.set_item("subject", r.subject)?;
        d.set_item("event_id", r.event_id)?;
        d.set_item("stream", r.stream)?;
        d.set_item("sequence", r.sequence)?;
        d.set_item("duplicate", r.duplicate)?;
        Ok(d)
    }

    /// A live subscription (core NATS; JetStream-published events arrive too).
    #[pyo3(signature = (subject, *, queue = None))]
    fn subscribe(&self, py: Python<'_>, subject: String, queue: Option<String>) -> PyResult<Subscription> {
        let client = self.bus.client().clone();
        let s = subject.clone();
        let sub = block(py, async move {
            let sub = match queue {
                Some(q) => client.queue_subscribe(s, q).await,
                None => client.subscribe(s).await,
            };
            // Registered at the server before we return: nothing published afterwards is missed.
            let flushed = client.flush().await;
            sub.map_err(|e| e.to_string())
                .and_then(|s| flushed.map(|_| s).map_err(|e| e.to_string()))
        })?
        .map_err(|e| {
            raise(
                py,
                "ConnectError",
                format!("subscribing to {subject}: {e}"),
                "nats",
            )
        })?;
        Ok(Subscription {
            inner: Mutex::new(Some(sub)),
            subject,
        })
    }

    /// Runs SQL on the query service; returns (Arrow IPC chunks as bytes, rows, truncated).
    #[pyo3(signature = (sql, params_json = None, *, max_rows = None, max_bytes = None, timeout = None, subject = None))]
    #[allow(clippy::too_many_arguments)]
    fn query_ipc<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params_json: Option<String>,
        max_rows: Option<u64>,
        max_bytes: Option<u64>,
        timeout: Option<f64>,
        subject: Option<String>,
    ) -> PyResult<(Bound<'py, PyList>, u64, Option<String>)> {
        let mut req = QueryRequest::new(sql);
        if let Some(p) = params_json {
            req.params = serde_json::from_str(&p)
                .map_err(|e| raise(py, "QueryError", format!("params: {e}"), "bad_request"))?;
        }
        req.max_rows = max_rows;
        req.max_bytes = max_bytes;
        req.timeout_ms = timeout.map(|t| (t.max(0.0) * 1000.0) as u64);
        let bus = self.bus.clone();
        let subject = subject.unwrap_or_else(|| QUERY_SUBJECT.to_owned());
        let (chunks, done) = block(py, async move {
            let mut chunks: Vec<Bytes> = Vec::new();
            let done = query_chunks_on(&bus, &subject, &req, |_, b| chunks.push(b)).await;
            (chunks, done)
        })?;
        let done = done.map_err(|e| query_err(py, e))?;
        let list = PyList::empty(py);
        for c in &chunks {
            list.append(PyBytes::new(py, c))?;
        }
        Ok((list, done.rows.unwrap_or(0), done.truncated))
    }

    /// Publishes an Arrow IPC stream as the table `name` on `lt.analysis.<name>`.
    #[pyo3(signature = (name, ipc, rows = None))]
    fn publish_frame_ipc<'py>(
        &self,
        py: Python<'py>,
        name: String,
        ipc: Vec<u8>,
        rows: Option<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let bus = self.bus.clone();
        let n = name.clone();
        let r = block(py, async move {
            langtian_core::query::publish_frame_ipc(&bus, &n, Bytes::from(ipc), rows).await
        })?
        .map_err(|e| frame_err(py, e))?;
        let d = PyDict::new(py);
        d.set_item("subject", r.subject)?;
        d.set_item("rows", r.rows)?;
        d.set_item("bytes", r.bytes)?;
        Ok(d)
    }

    /// The registered nodes (KV discovery) as a JSON array of NodeInfo.
    #[pyo3(signature = (*, bucket = None))]
    fn nodes_json(&self, py: Python<'_>, bucket: Option<String>) -> PyResult<String> {
        let bus = self.bus.clone();
        let cfg = discovery_config(bucket);
        let nodes = block(py, async move { Registry::open(&bus, cfg).await?.nodes().await })?
            .map_err(|e| discovery_err(py, e))?;
        serde_json::to_string(&nodes).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Node changes as they happen (the present nodes first, as `joined`).
    #[pyo3(signature = (*, bucket = None))]
    fn watch_nodes(&self, py: Python<'_>, bucket: Option<String>) -> PyResult<NodeWatch> {
        let bus = self.bus.clone();
        let cfg = discovery_config(bucket);
        let stream = block(py, async move { Registry::open(&bus, cfg).await?.watch().await })?
            .map_err(|e| discovery_err(py, e))?;
        Ok(NodeWatch {
            inner: Mutex::new(stream),
        })
    }

    /// Follows one group of the aggregator live (snapshot + deltas): `kind` is `ticks`,
    /// `contracts` or `battery` (group `cells`).
    #[pyo3(signature = (group, *, kind = "ticks", bucket = "md_snapshots"))]
    fn live(&self, py: Python<'_>, group: String, kind: &str, bucket: &str) -> PyResult<Live> {
        let kind: LiveKind = kind.parse().map_err(|e| live_err(py, e))?;
        let bus = self.bus.clone();
        let bucket = bucket.to_owned();
        let inner = block(py, async move {
            AnyLiveGroup::open(&bus, kind, &bucket, &group).await
        })?
        .map_err(|e| live_err(py, e))?;
        Ok(Live {
            inner: Mutex::new(inner),
        })
    }

    /// Flushes what was published.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.bus.client().clone();
        block(py, async move { client.flush().await })?
            .map_err(|e| raise(py, "ConnectError", e.to_string(), "nats"))
    }

    fn __repr__(&self) -> String {
        format!("Client(url={:?})", self.url)
    }
}

fn discovery_config(bucket: Option<String>) -> DiscoveryConfig {
    let mut cfg = DiscoveryConfig::default();
    if let Some(b) = bucket {
        cfg.bucket = b;
    }
    cfg
}

/// Repeats `step(d)` — wait at most `d`, `Some(x)` when it produced `x` — until it produces,
/// or `timeout` seconds pass (`None`: forever), checking for Ctrl-C between steps.
fn wait_loop<T>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut step: impl FnMut(Duration) -> PyResult<Option<T>>,
) -> PyResult<Option<T>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    loop {
        let d = match deadline {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .min(SIGNAL_CHECK),
            None => SIGNAL_CHECK,
        };
        if let Some(x) = step(d)? {
            return Ok(Some(x));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// A message as a dict: the envelope's fields when it is one, the raw payload otherwise.
fn message_dict<'py>(
    py: Python<'py>,
    m: &langtian_core::async_nats::Message,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("subject", m.subject.as_str())?;
    match Envelope::decode(&m.payload) {
        Ok(env) => {
            d.set_item("envelope", true)?;
            d.set_item("event_id", env.event_id())?;
            d.set_item("event_type", env.event_type())?;
            d.set_item("source", env.source_system())?;
            d.set_item("timestamp_ns", env.event_timestamp())?;
            d.set_item("schema_version", env.schema_version())?;
            d.set_item("partition_key", env.partition_key())?;
            d.set_item("content_type", env.content_type())?;
            d.set_item("payload", PyBytes::new(py, env.payload()))?;
        }
        Err(_) => {
            d.set_item("envelope", false)?;
            d.set_item("payload", PyBytes::new(py, &m.payload))?;
        }
    }
    Ok(d)
}

/// A live subscription: iterate it, or call `next(timeout)`.
#[pyclass(module = "langtian._native")]
struct Subscription {
    inner: Mutex<Option<langtian_core::async_nats::Subscriber>>,
    subject: String,
}

impl Subscription {
    /// Waits up to `timeout` (forever with `None`) for the next message; `Ok(None)` on timeout
    /// or after `close`.
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyDict>>> {
        // Some(Some(m)): a message; Some(None): closed or ended; None: timed out.
        let got = wait_loop(py, timeout, |d| {
            let mut guard = self
                .inner
                .lock()
                .map_err(|_| PyRuntimeError::new_err("subscription used from two threads at once"))?;
            let Some(sub) = guard.as_mut() else {
                return Ok(Some(None));
            };
            Ok(block(py, async { tokio::time::timeout(d, sub.next()).await })?.ok())
        })?;
        match got {
            Some(Some(m)) => message_dict(py, &m).map(Some),
            _ => Ok(None),
        }
    }
}

#[pymethods]
impl Subscription {
    /// The next message as a dict, or `None` when `timeout` (seconds) passes first.
    #[pyo3(signature = (timeout = None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.wait(py, timeout)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        // None ends the iteration (closed subscription).
        self.wait(py, None)
    }

    /// Unsubscribes.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let sub = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("subscription in use"))?
            .take();
        if let Some(mut s) = sub {
            block(py, async move { s.unsubscribe().await })?
                .map_err(|e| raise(py, "ConnectError", e.to_string(), "nats"))?;
        }
        Ok(())
    }

    #[getter]
    fn subject(&self) -> &str {
        &self.subject
    }
}

type NodeStream = futures::stream::BoxStream<'static, Result<NodeEvent, DiscoveryError>>;

/// Node changes: iterate it, or call `next(timeout)`.
#[pyclass(module = "langtian._native")]
struct NodeWatch {
    inner: Mutex<NodeStream>,
}

#[pymethods]
impl NodeWatch {
    /// The next change as `(kind, json)`: kind `joined` | `updated` (json = NodeInfo) or `left`
    /// (json = {"node_id", "reason"}); `None` when `timeout` passes first.
    #[pyo3(signature = (timeout = None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(String, String)>> {
        let got = wait_loop(py, timeout, |d| {
            let mut s = self
                .inner
                .lock()
                .map_err(|_| PyRuntimeError::new_err("watch used from two threads at once"))?;
            let stream: &mut NodeStream = &mut s;
            Ok(block(py, async { tokio::time::timeout(d, stream.next()).await })?.ok())
        })?;
        let ev = match got {
            Some(Some(Ok(ev))) => ev,
            Some(Some(Err(e))) => return Err(discovery_err(py, e)),
            _ => return Ok(None),
        };
        let (kind, value) = match ev {
            NodeEvent::Joined(n) => ("joined", serde_json::to_value(n)),
            NodeEvent::Updated(n) => ("updated", serde_json::to_value(n)),
            NodeEvent::Left { node_id, reason } => (
                "left",
                Ok(serde_json::json!({
                    "node_id": node_id,
                    "reason": match reason {
                        LeftReason::Unregistered => "unregistered",
                        LeftReason::Expired => "expired",
                    },
                })),
            ),
        };
        let value = value.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Some((kind.to_owned(), value.to_string())))
    }
}

/// One group followed live: `next(timeout)` applies the next delta, `records()` is the state.
#[pyclass(module = "langtian._native")]
struct Live {
    inner: Mutex<AnyLiveGroup>,
}

impl Live {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, AnyLiveGroup>> {
        self.inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("live group used from two threads at once"))
    }
}

#[pymethods]
impl Live {
    /// Waits for the next delta and applies it: `{"kind": "applied", "shard", "keys"}`,
    /// `{"kind": "stale"}` or `{"kind": "resynced", "snapshot_version"}`; `None` when `timeout`
    /// (seconds) passes first.
    #[pyo3(signature = (timeout = None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let got = wait_loop(py, timeout, |d| {
            let mut any = self.lock()?;
            let g: &mut AnyLiveGroup = &mut any;
            Ok(block(py, async { tokio::time::timeout(d, g.next()).await })?.ok())
        })?;
        let update = match got {
            Some(Ok(u)) => u,
            Some(Err(e)) => return Err(live_err(py, e)),
            None => return Ok(None),
        };
        let d = PyDict::new(py);
        match update {
            LiveUpdate::Applied { shard, keys } => {
                d.set_item("kind", "applied")?;
                d.set_item("shard", shard)?;
                d.set_item("keys", keys)?;
            }
            LiveUpdate::Stale => d.set_item("kind", "stale")?,
            LiveUpdate::Resynced { snapshot_version } => {
                d.set_item("kind", "resynced")?;
                d.set_item("snapshot_version", snapshot_version)?;
            }
        }
        Ok(Some(d))
    }

    /// Every record of the group now, sorted by key, as dicts.
    fn records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let any = self.lock()?;
        let list = PyList::empty(py);
        for row in any.rows() {
            list.append(row_dict(py, row)?)?;
        }
        Ok(list)
    }

    /// One record by key (`shfe.rb2501`, `<device_id>/<channel>`), or `None`.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let any = self.lock()?;
        any.row(key).map(|r| row_dict(py, r)).transpose()
    }

    /// Deltas applied and stale, resyncs after gaps, foreign messages rejected.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let any = self.lock()?;
        let s = any.stats();
        let d = PyDict::new(py);
        d.set_item("applied", s.applied)?;
        d.set_item("stale", s.stale)?;
        d.set_item("resyncs", s.resyncs)?;
        d.set_item("rejected", s.rejected)?;
        Ok(d)
    }

    #[getter]
    fn kind(&self) -> PyResult<&'static str> {
        Ok(self.lock()?.kind().as_str())
    }

    #[getter]
    fn group(&self) -> PyResult<String> {
        Ok(self.lock()?.group().to_owned())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.len())
    }
}

/// A record as a dict, its columns as `langtian_core::aggregate::records::Row` defines them.
fn row_dict(py: Python<'_>, row: RowCells) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (column, cell) in row {
        match cell {
            Cell::Text(v) => d.set_item(column, v)?,
            Cell::Int(v) => d.set_item(column, v)?,
            Cell::UInt(v) => d.set_item(column, v)?,
            Cell::Float(v) => d.set_item(column, v)?,
            Cell::Missing => d.set_item(column, py.None())?,
        }
    }
    Ok(d)
}

/// Decodes a payload the SDK knows by content type into a dict (battery samples); `None` for
/// other types.
#[pyfunction]
fn decode_payload<'py>(
    py: Python<'py>,
    content_type: &str,
    payload: &[u8],
) -> PyResult<Option<Bound<'py, PyDict>>> {
    use prost::Message as _;
    if !content_type.contains("langtian.battery.v1.ChannelSample") {
        return Ok(None);
    }
    let s = ChannelSample::decode(payload).map_err(|e| {
        raise(
            py,
            "EnvelopeError",
            format!("not a ChannelSample: {e}"),
            "payload",
        )
    })?;
    row_dict(py, s.row()).map(Some)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<Subscription>()?;
    m.add_class::<NodeWatch>()?;
    m.add_class::<Live>()?;
    m.add_function(wrap_pyfunction!(decode_payload, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
