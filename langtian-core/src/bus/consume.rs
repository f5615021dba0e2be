use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, message::Acker};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use super::{Bus, BusError};
use crate::envelope::{Envelope, EnvelopeError};

/// A durable pull consumer as declared in a topology: what the server is told at provisioning,
/// plus the client-side pull settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Stream the consumer reads.
    pub stream: String,
    /// Durable name.
    pub durable: String,
    /// Subjects to deliver (empty = all of the stream).
    #[serde(default)]
    pub filter_subjects: Vec<String>,
    /// How long the server waits for an ack before redelivering.
    #[serde(default = "d_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before the server gives up and emits a MAX_DELIVERIES advisory (-1 = never).
    #[serde(default = "d_max_deliver")]
    pub max_deliver: i64,
    /// NAK delays for retryable handler errors, by delivery count (last one repeats).
    #[serde(default = "d_backoff", deserialize_with = "crate::serde_util::durations")]
    pub backoff: Vec<Duration>,
    /// Optional server-side redelivery schedule on ack-wait expiry (JetStream `backoff`; the
    /// server then uses its first entry as `ack_wait`).
    #[serde(default, deserialize_with = "crate::serde_util::durations")]
    pub ack_wait_backoff: Vec<Duration>,
    /// Max delivered-but-unacked messages (the flow-control window); must be ≥ `fetch_batch`.
    #[serde(default = "d_max_ack_pending")]
    pub max_ack_pending: i64,
    /// Messages per pull request.
    #[serde(default = "d_fetch_batch")]
    pub fetch_batch: usize,
    /// Bytes per pull request (0 = no limit).
    #[serde(default)]
    pub fetch_max_bytes: usize,
    /// Expiry of each pull request (default: 6 × heartbeat).
    #[serde(default, with = "humantime_serde")]
    pub fetch_expires: Option<Duration>,
    /// Idle heartbeat of pull requests.
    #[serde(default = "d_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Where a new consumer starts: `all` (default) or `new`.
    #[serde(default)]
    pub deliver_new: bool,
    /// Replicas (0 = the stream's).
    #[serde(default)]
    pub replicas: usize,
    /// How acks count: `explicit` (default: every message acked on its own) or `all` (acking a
    /// message acks every earlier one — one ack per batch for consumers that commit in stream
    /// order and never NAK single messages, like a flow's source). Fixed once the consumer exists.
    #[serde(default)]
    pub ack_policy: AckMode,
}

/// The JetStream ack policy of a consumer (see [`ConsumerSpec::ack_policy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Every message is acked on its own (NAK/TERM per message are safe).
    #[default]
    Explicit,
    /// An ack acknowledges every earlier message too (JetStream `AckAll`).
    All,
}

impl AckMode {
    fn server(self) -> AckPolicy {
        match self {
            AckMode::Explicit => AckPolicy::Explicit,
            AckMode::All => AckPolicy::All,
        }
    }

    /// The mode of a server-side policy (`None` for the policies this crate never uses).
    pub fn of_server(p: AckPolicy) -> Option<Self> {
        match p {
            AckPolicy::Explicit => Some(AckMode::Explicit),
            AckPolicy::All => Some(AckMode::All),
            _ => None,
        }
    }
}

fn d_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn d_max_deliver() -> i64 {
    5
}
fn d_backoff() -> Vec<Duration> {
    vec![
        Duration::from_millis(500),
        Duration::from_secs(2),
        Duration::from_secs(10),
    ]
}
fn d_max_ack_pending() -> i64 {
    20_000
}
fn d_fetch_batch() -> usize {
    1000
}
fn d_heartbeat() -> Duration {
    Duration::from_secs(5)
}

impl ConsumerSpec {
    /// A spec with defaults: ack_wait 30 s, max_deliver 5, backoff 0.5 s/2 s/10 s, batch 1000.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            filter_subjects: Vec::new(),
            ack_wait: d_ack_wait(),
            max_deliver: d_max_deliver(),
            backoff: d_backoff(),
            ack_wait_backoff: Vec::new(),
            max_ack_pending: d_max_ack_pending(),
            fetch_batch: d_fetch_batch(),
            fetch_max_bytes: 0,
            fetch_expires: None,
            heartbeat: d_heartbeat(),
            deliver_new: false,
            replicas: 0,
            ack_policy: AckMode::Explicit,
        }
    }

    /// Checks the settings that the server would reject or that would stall the consumer.
    pub fn validate(&self) -> Result<(), String> {
        if self.durable.is_empty() || self.durable.contains(['.', '*', '>', ' ']) {
            return Err(format!(
                "durable `{}` must be a non-empty name without . * > or spaces",
                self.durable
            ));
        }
        if self.max_ack_pending > 0 && (self.max_ack_pending as u64) < self.fetch_batch as u64 {
            return Err(format!(
                "max_ack_pending ({}) must be at least fetch_batch ({})",
                self.max_ack_pending, self.fetch_batch
            ));
        }
        if self.max_deliver > 0 && self.ack_wait_backoff.len() as i64 > self.max_deliver {
            return Err(format!(
                "ack_wait_backoff has {} entries, more than max_deliver ({})",
                self.ack_wait_backoff.len(),
                self.max_deliver
            ));
        }
        if self.fetch_batch == 0 {
            return Err("fetch_batch must be > 0".into());
        }
        let year = crate::MAX_SETTING_DURATION;
        crate::check_duration_at_most("ack_wait", self.ack_wait, year)?;
        crate::check_duration_at_most("heartbeat", self.heartbeat, year)?;
        if let Some(e) = self.fetch_expires {
            crate::check_duration_at_most("fetch_expires", e, year)?;
        }
        for (i, d) in self.backoff.iter().enumerate() {
            crate::check_duration_at_most(&format!("backoff[{i}]"), *d, year)?;
        }
        for (i, d) in self.ack_wait_backoff.iter().enumerate() {
            crate::check_duration_at_most(&format!("ack_wait_backoff[{i}]"), *d, year)?;
        }
        if let Some(e) = self.fetch_expires
            && e <= self.heartbeat
        {
            return Err(format!(
                "fetch expiry ({e:?}) must be longer than the idle heartbeat ({:?})",
                self.heartbeat
            ));
        }
        Ok(())
    }

    /// The server-side consumer configuration.
    pub fn server_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            name: Some(self.durable.clone()),
            ack_policy: self.ack_policy.server(),
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            backoff: self.ack_wait_backoff.clone(),
            max_ack_pending: self.max_ack_pending,
            filter_subjects: self.filter_subjects.clone(),
            deliver_policy: if self.deliver_new {
                DeliverPolicy::New
            } else {
                DeliverPolicy::All
            },
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// The NAK delay for a message delivered `deliveries` times.
    pub fn nak_delay(&self, deliveries: i64) -> Duration {
        let idx = usize::try_from(deliveries.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(idx)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// One delivered message with its JetStream metadata and ack handle. Cloning shares the handle.
#[derive(Clone)]
pub struct Delivery {
    /// Subject it was published to.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// Headers.
    pub headers: Option<async_nats::HeaderMap>,
    /// Stream it is stored in.
    pub stream: String,
    /// Its stream sequence (the idempotency key for sinks).
    pub stream_sequence: u64,
    /// The consumer's delivery sequence.
    pub consumer_sequence: u64,
    /// How many times it has been delivered (1 = first time).
    pub deliveries: i64,
    /// Messages still pending for the consumer after this one.
    pub pending: u64,
    /// Publish time, nanoseconds since the Unix epoch.
    pub published_ns: i64,
    reply: Option<async_nats::Subject>,
    acker: Arc<Acker>,
    client: async_nats::Client,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("stream_sequence", &self.stream_sequence)
            .field("deliveries", &self.deliveries)
            .finish()
    }
}

impl Delivery {
    fn from_js(m: async_nats::jetstream::Message, client: &async_nats::Client) -> Result<Self, String> {
        let info = m.info().map_err(|e| e.to_string())?;
        let stream = info.stream.to_owned();
        let stream_sequence = info.stream_sequence;
        let consumer_sequence = info.consumer_sequence;
        let deliveries = info.delivered;
        let pending = info.pending;
        let published_ns = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
        let reply = m.message.reply.clone();
        let (msg, acker) = m.split();
        Ok(Self {
            subject: msg.subject.to_string(),
            payload: msg.payload,
            headers: msg.headers,
            stream,
            stream_sequence,
            consumer_sequence,
            deliveries,
            pending,
            published_ns,
            reply,
            acker: Arc::new(acker),
            client: client.clone(),
        })
    }

    /// Decodes the payload as an [`Envelope`].
    pub fn envelope(&self) -> Result<Envelope, EnvelopeError> {
        Envelope::decode(&self.payload)
    }

    fn ack_err(&self, kind: &'static str) -> impl FnOnce(async_nats::Error) -> BusError + '_ {
        move |e| BusError::Ack {
            stream: self.stream.clone(),
            stream_seq: self.stream_sequence,
            kind,
            reason: e.to_string(),
        }
    }

    /// Acknowledges the message (fire-and-forget on the connection).
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await.map_err(self.ack_err("ack"))
    }

    /// Acknowledges and waits for the server to confirm the ack.
    pub async fn ack_sync(&self) -> Result<(), BusError> {
        self.acker
            .double_ack_with(AckKind::Ack)
            .await
            .map_err(self.ack_err("ack (confirmed)"))
    }

    /// Negative ack: the server redelivers after `delay` (at once when `None`).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(self.ack_err("nak"))
    }

    /// Terminates delivery: the server never redelivers it and emits a MSG_TERMINATED advisory
    /// carrying `reason`, from which the dead-letter forwarder builds a dead letter.
    pub async fn term(&self, reason: Option<&str>) -> Result<(), BusError> {
        match (reason, &self.reply) {
            (Some(r), Some(reply)) => {
                let r: String = r.chars().filter(|c| !c.is_control()).collect();
                self.client
                    .publish(reply.clone(), Bytes::from(format!("+TERM {r}")))
                    .await
                    .map_err(|e| BusError::Ack {
                        stream: self.stream.clone(),
                        stream_seq: self.stream_sequence,
                        kind: "term",
                        reason: e.to_string(),
                    })
            }
            _ => self
                .acker
                .ack_with(AckKind::Term)
                .await
                .map_err(self.ack_err("term")),
        }
    }

    /// "Work in progress": resets the server's ack-wait timer for this message.
    pub async fn progress(&self) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(self.ack_err("progress"))
    }
}

/// Messages returned by [`Consumer::next_batch`].
#[derive(Debug, Default)]
pub struct Batch {
    /// The deliveries, in stream order.
    pub messages: Vec<Delivery>,
    /// The consumer acks cumulatively (`AckAll`): acking the last message acks the batch.
    pub cumulative_ack: bool,
}

impl Batch {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
    /// Stream sequences of the first and last message.
    pub fn sequence_range(&self) -> Option<(u64, u64)> {
        Some((
            self.messages.first()?.stream_sequence,
            self.messages.last()?.stream_sequence,
        ))
    }
    /// Acks every message; the last ack is confirmed by the server, and since acks on one
    /// connection are processed in order, so are all before it. On an `AckAll` consumer only the
    /// last message is acked (the server acks everything before it).
    pub async fn ack_all(&self) -> Result<(), BusError> {
        let Some((last, rest)) = self.messages.split_last() else {
            return Ok(());
        };
        if !self.cumulative_ack {
            for m in rest {
                m.ack().await?;
            }
        }
        last.ack_sync().await
    }
    /// Sends "work in progress" for every message (keeps a long commit from redelivery).
    pub async fn progress_all(&self) -> Result<(), BusError> {
        for m in &self.messages {
            m.progress().await?;
        }
        Ok(())
    }
    /// NAKs every message with `delay` (on an `AckAll` consumer, an ack of a later message
    /// would still ack these).
    pub async fn nak_all(&self, delay: Option<Duration>) -> Result<(), BusError> {
        for m in &self.messages {
            m.nak(delay).await?;
        }
        Ok(())
    }
}

/// What a handler says about one message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandlerError {
    /// Try again later: NAK with the spec's backoff (dead-lettered after `max_deliver`).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Never succeeds: TERM now (dead-lettered at once with this reason).
    #[error("fatal: {0}")]
    Fatal(String),
}

/// What happened to one message in [`Consumer::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// Handler returned `Ok`: acked.
    Acked,
    /// Retryable error: NAKed with a delay.
    Naked,
    /// Fatal error: terminated.
    Terminated,
}

/// Counters of a [`Consumer::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Messages acked.
    pub acked: u64,
    /// Messages NAKed.
    pub naked: u64,
    /// Messages terminated.
    pub terminated: u64,
}

/// A bound durable pull consumer. Provision it first (see [`super::Topology`]); binding never
/// creates or changes server state.
///
/// ```no_run
/// # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::bus::BusError> {
/// use std::time::Duration;
/// use langtian_core::bus::{Consumer, ConsumerSpec};
/// let mut c = Consumer::bind(&bus, ConsumerSpec::new("LT_EVENTS", "lake-writer")).await?;
/// let batch = c.next_batch(500, Duration::from_secs(1)).await?;
/// // ... commit the batch to the sink first ...
/// batch.ack_all().await?;
/// # Ok(()) }
/// ```
pub struct Consumer {
    spec: ConsumerSpec,
    inner: PullConsumer,
    client: async_nats::Client,
    messages: Option<pull::Stream>,
    missed_heartbeats: u64,
    ack_mode: AckMode,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.spec.stream)
            .field("durable", &self.spec.durable)
            .finish()
    }
}

impl Consumer {
    /// Binds to the existing durable `spec.durable` on `spec.stream`.
    pub async fn bind(bus: &Bus, spec: ConsumerSpec) -> Result<Self, BusError> {
        spec.validate().map_err(|reason| BusError::Consume {
            stream: spec.stream.clone(),
            consumer: spec.durable.clone(),
            reason,
        })?;
        let inner: PullConsumer = bus
            .jetstream()
            .get_consumer_from_stream(&spec.durable, &spec.stream)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("stream not found") {
                    BusError::UnknownStream {
                        stream: spec.stream.clone(),
                    }
                } else if text.contains("not found") {
                    BusError::UnknownConsumer {
                        stream: spec.stream.clone(),
                        consumer: spec.durable.clone(),
                    }
                } else {
                    BusError::Consume {
                        stream: spec.stream.clone(),
                        consumer: spec.durable.clone(),
                        reason: text,
                    }
                }
            })?;
        // The server's policy decides how batches are acked, whatever the spec says.
        let ack_mode = AckMode::of_server(inner.cached_info().config.ack_policy).ok_or_else(|| BusError::Consume {
            stream: spec.stream.clone(),
            consumer: spec.durable.clone(),
            reason: "the consumer's ack policy is neither `explicit` nor `all`; Langtian consumers ack explicitly or cumulatively".into(),
        })?;
        Ok(Self {
            spec,
            inner,
            client: bus.client().clone(),
            messages: None,
            missed_heartbeats: 0,
            ack_mode,
        })
    }

    /// The ack policy of the consumer on the server.
    pub fn ack_mode(&self) -> AckMode {
        self.ack_mode
    }

    /// The spec this consumer was bound with.
    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    /// Idle heartbeats missed so far (transient; logged and counted, never fatal).
    pub fn missed_heartbeats(&self) -> u64 {
        self.missed_heartbeats
    }

    fn consume_err(&self, reason: impl Into<String>) -> BusError {
        BusError::Consume {
            stream: self.spec.stream.clone(),
            consumer: self.spec.durable.clone(),
            reason: reason.into(),
        }
    }

    async fn ensure_stream(&mut self) -> Result<&mut pull::Stream, BusError> {
        if self.messages.is_none() {
            let mut b = self
                .inner
                .stream()
                .max_messages_per_batch(self.spec.fetch_batch)
                .heartbeat(self.spec.heartbeat)
                .expires(self.spec.fetch_expires.unwrap_or(self.spec.heartbeat * 6));
            if self.spec.fetch_max_bytes > 0 {
                b = b.max_bytes_per_batch(self.spec.fetch_max_bytes);
            }
            let s = b.messages().await.map_err(|e| self.consume_err(e.to_string()))?;
            self.messages = Some(s);
        }
        self.messages.as_mut().ok_or_else(|| BusError::Consume {
            stream: String::new(),
            consumer: String::new(),
            reason: "message stream unavailable".into(),
        })
    }

    /// Returns up to `max` messages, waiting at most `wait` (fewer, or none, when the time is up).
    ///
    /// Not cancel-safe: if the future is dropped part-way, the messages it had taken are not
    /// lost but are redelivered by the server after `ack_wait`. Check shutdown flags between
    /// calls rather than racing a call against them.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        self.fill(max, deadline, None, None).await
    }

    /// Collects a batch the way a stream processor wants it: waits up to `idle` for a first
    /// message (returns an empty batch if none came), then keeps adding until `max` messages or
    /// until `linger` has passed **since the first message**. When `stop` turns true the batch
    /// collected so far is returned at once (drain on shutdown).
    ///
    /// Not cancel-safe (see [`Consumer::next_batch`]); use `stop` instead of racing the call.
    pub async fn collect_batch(
        &mut self,
        max: usize,
        idle: Duration,
        linger: Duration,
        stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Batch, BusError> {
        let deadline = tokio::time::Instant::now() + idle;
        self.fill(max, deadline, Some(linger), stop).await
    }

    async fn fill(
        &mut self,
        max: usize,
        mut deadline: tokio::time::Instant,
        linger: Option<Duration>,
        mut stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Batch, BusError> {
        let mut batch = Batch {
            messages: Vec::with_capacity(max.min(4096)),
            cumulative_ack: self.ack_mode == AckMode::All,
        };
        while batch.messages.len() < max {
            let client = self.client.clone();
            let stream = self.ensure_stream().await?;
            // Buffered messages are taken without arming a timer.
            let next = match futures::FutureExt::now_or_never(stream.next()) {
                Some(n) => n,
                None => {
                    let stopped = async {
                        match stop.as_deref_mut() {
                            Some(rx) => {
                                if *rx.borrow_and_update() {
                                    return;
                                }
                                // A closed channel means nobody can stop us: wait forever.
                                while rx.changed().await.is_ok() {
                                    if *rx.borrow_and_update() {
                                        return;
                                    }
                                }
                                futures::future::pending::<()>().await
                            }
                            None => futures::future::pending::<()>().await,
                        }
                    };
                    // `Stream::next` on the pull stream is cancel-safe: a message not yet
                    // yielded stays buffered for the next call.
                    tokio::select! {
                        r = tokio::time::timeout_at(deadline, stream.next()) => match r {
                            Err(_) => break,
                            Ok(n) => n,
                        },
                        () = stopped => break,
                    }
                }
            };
            match next {
                Some(Ok(m)) => match Delivery::from_js(m, &client) {
                    Ok(d) => {
                        if batch.messages.is_empty()
                            && let Some(l) = linger
                        {
                            deadline = tokio::time::Instant::now() + l;
                        }
                        batch.messages.push(d)
                    }
                    Err(e) => {
                        tracing::warn!(code = "no_jetstream_metadata", error = %e, "skipping a message without JetStream metadata")
                    }
                },
                Some(Err(e)) => match e.kind() {
                    pull::MessagesErrorKind::MissingHeartbeat => {
                        self.missed_heartbeats += 1;
                        tracing::warn!(code = "missed_heartbeat", stream = %self.spec.stream, consumer = %self.spec.durable, "missed idle heartbeat (transient)");
                    }
                    pull::MessagesErrorKind::ConsumerDeleted => {
                        self.messages = None;
                        return Err(BusError::UnknownConsumer {
                            stream: self.spec.stream.clone(),
                            consumer: self.spec.durable.clone(),
                        });
                    }
                    pull::MessagesErrorKind::RequestLimitExceeded
                    | pull::MessagesErrorKind::PushBasedConsumer => {
                        self.messages = None;
                        return Err(self.consume_err(e.to_string()));
                    }
                    _ => {
                        tracing::warn!(code = "pull_error", stream = %self.spec.stream, consumer = %self.spec.durable, error = %e, "pull error (transient)");
                    }
                },
                None => {
                    // The pull stream ended; a new one is created on the next call.
                    self.messages = None;
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Runs `handler` on every message until `shutdown` resolves: ack after `Ok`, NAK with the
    /// spec's backoff on [`HandlerError::Retryable`], TERM on [`HandlerError::Fatal`].
    pub async fn run<F, Fut, S>(&mut self, mut handler: F, shutdown: S) -> Result<HandlerStats, BusError>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
        S: Future<Output = ()>,
    {
        use futures::FutureExt as _;
        if self.ack_mode == AckMode::All {
            return Err(self.consume_err(
                "run() NAKs and terminates single messages, which an `ack_policy: all` consumer cannot do safely (a later ack would ack them); use `explicit`",
            ));
        }
        let mut stats = HandlerStats::default();
        tokio::pin!(shutdown);
        loop {
            // Checked between batches: cancelling `next_batch` would strand taken messages.
            if (&mut shutdown).now_or_never().is_some() {
                return Ok(stats);
            }
            let batch = self
                .next_batch(self.spec.fetch_batch, Duration::from_millis(200))
                .await?;
            for d in batch.messages {
                match self.handle_one(&mut handler, d).await? {
                    HandlerOutcome::Acked => stats.acked += 1,
                    HandlerOutcome::Naked => stats.naked += 1,
                    HandlerOutcome::Terminated => stats.terminated += 1,
                }
            }
        }
    }

    async fn handle_one<F, Fut>(&self, handler: &mut F, d: Delivery) -> Result<HandlerOutcome, BusError>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        match handler(d.clone()).await {
            Ok(()) => {
                d.ack().await?;
                Ok(HandlerOutcome::Acked)
            }
            Err(HandlerError::Retryable(why)) => {
                let delay = self.spec.nak_delay(d.deliveries);
                tracing::debug!(subject = %d.subject, seq = d.stream_sequence, deliveries = d.deliveries, ?delay, %why, "handler asked for a retry");
                d.nak(Some(delay)).await?;
                Ok(HandlerOutcome::Naked)
            }
            Err(HandlerError::Fatal(why)) => {
                tracing::warn!(code = "handler_fatal", subject = %d.subject, seq = d.stream_sequence, %why, "handler failed fatally; terminating the message");
                d.term(Some(&why)).await?;
                Ok(HandlerOutcome::Terminated)
            }
        }
    }

    /// Resets the consumer's delivery state on the server (JetStream consumer reset, server
    /// ≥ 2.14): pending and redelivery state is cleared and the next message delivered has a
    /// stream sequence of at least `next_seq` (`None`: restart from the ack floor). A sink that
    /// keeps its own committed position calls this on start so that delivery resumes **in
    /// order** right after that position, instead of old redeliveries arriving after newer
    /// messages. Drops any messages this handle had prefetched.
    pub async fn reset(&mut self, next_seq: Option<u64>) -> Result<(), BusError> {
        self.messages = None;
        self.inner
            .reset(next_seq)
            .await
            .map(|_| ())
            .map_err(|e| self.consume_err(format!("reset to {next_seq:?}: {e}")))
    }

    /// The consumer's server-side state (pending, ack floor, redelivered).
    pub async fn info(&mut self) -> Result<consumer::Info, BusError> {
        self.inner
            .info()
            .await
            .cloned()
            .map_err(|e| self.consume_err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_follows_backoff_and_repeats_last() {
        let mut s = ConsumerSpec::new("S", "d");
        s.backoff = vec![Duration::from_millis(10), Duration::from_millis(20)];
        assert_eq!(s.nak_delay(1), Duration::from_millis(10));
        assert_eq!(s.nak_delay(2), Duration::from_millis(20));
        assert_eq!(s.nak_delay(9), Duration::from_millis(20));
    }

    #[test]
    fn spec_validation() {
        let mut s = ConsumerSpec::new("S", "d");
        assert!(s.validate().is_ok());
        s.max_ack_pending = 10;
        assert!(s.validate().unwrap_err().contains("max_ack_pending"));
        s.max_ack_pending = -1;
        s.durable = "a.b".into();
        assert!(s.validate().unwrap_err().contains("durable"));
    }
}
