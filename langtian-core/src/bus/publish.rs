use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use bytes::Bytes;

use super::{Bus, BusError};
use crate::envelope::Envelope;

/// Delivery guarantee of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// QoS 0: core NATS publish, fire and forget. `Ok` means queued in the client.
    AtMostOnce,
    /// QoS 1: JetStream publish confirmed by the server's PubAck; retried with the same
    /// `Nats-Msg-Id` on timeout so the server de-duplicates a retry of a stored message.
    AtLeastOnce,
    /// QoS 2: QoS 1 with a caller-supplied deterministic `Nats-Msg-Id`, on a stream whose
    /// duplicate window covers the whole retry horizon (checked before the first publish).
    ExactlyOnce,
}

impl Qos {
    /// Maps 0/1/2 to a QoS.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Delivery guarantee.
    pub qos: Qos,
    /// Max PubAcks outstanding in a [`PublishWindow`].
    pub window: usize,
    /// How long to wait for one PubAck before retrying.
    pub ack_timeout: Duration,
    /// Attempts per message (first try included).
    pub max_attempts: u32,
    /// Pause before the first retry; doubles per retry up to `max_retry_backoff` (a cluster
    /// needs a few seconds to elect a new stream leader after a node dies).
    pub retry_backoff: Duration,
    /// Cap of the retry pause.
    pub max_retry_backoff: Duration,
}

impl PublisherConfig {
    /// Defaults: window 1024, ack timeout 5 s, 6 attempts, pauses 250 ms doubling to 4 s.
    pub fn new(qos: Qos) -> Self {
        Self {
            qos,
            window: 1024,
            ack_timeout: Duration::from_secs(5),
            max_attempts: 6,
            retry_backoff: Duration::from_millis(250),
            max_retry_backoff: Duration::from_secs(4),
        }
    }

    /// The pause after failed attempt number `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.retry_backoff * factor).min(self.max_retry_backoff.max(self.retry_backoff))
    }

    /// The longest time between the first and the last attempt of one message; a QoS 2 stream's
    /// duplicate window must be at least this long.
    pub fn retry_horizon(&self) -> Duration {
        let pauses: Duration = (1..self.max_attempts).map(|a| self.backoff_after(a)).sum();
        self.ack_timeout
            .saturating_mul(self.max_attempts)
            .saturating_add(pauses)
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Subject.
    pub subject: String,
    /// Body.
    pub payload: Bytes,
    /// Extra headers.
    pub headers: Option<HeaderMap>,
    /// `Nats-Msg-Id` (required for QoS 2; generated for QoS 1 when absent).
    pub msg_id: Option<String>,
}

impl OutgoingMessage {
    /// A message without headers or id.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            headers: None,
            msg_id: None,
        }
    }

    /// Sets the `Nats-Msg-Id`.
    pub fn with_msg_id(mut self, id: impl Into<String>) -> Self {
        self.msg_id = Some(id.into());
        self
    }

    /// Sets extra headers.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// An envelope on `<prefix>.<event_type>.<source_system>`, with its headers and
    /// `Nats-Msg-Id` = event id.
    pub fn from_envelope(prefix: &str, env: &Envelope) -> Self {
        Self {
            subject: env.subject(prefix),
            payload: env.encode(),
            headers: Some(env.headers()),
            msg_id: Some(env.event_id().to_owned()),
        }
    }

    /// An envelope on `<prefix>.<event_type>.<source_system>` with `Nats-Msg-Id` = event id
    /// and no other headers: routing is by subject and everything else is in the envelope.
    /// For high-rate producers — building the five routing headers of
    /// [`from_envelope`](Self::from_envelope) cost the collector ~20 % of its throughput.
    pub fn from_envelope_lean(prefix: &str, env: &Envelope) -> Self {
        Self {
            subject: env.subject(prefix),
            payload: env.encode(),
            headers: None,
            msg_id: Some(env.event_id().to_owned()),
        }
    }

    fn wire_size(&self) -> usize {
        let h: usize = self
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|(k, vs)| {
                        let k: &str = k.as_ref();
                        vs.iter().map(|v| k.len() + v.as_str().len() + 4).sum::<usize>()
                    })
                    .sum()
            })
            .unwrap_or(0);
        self.payload.len() + h + self.msg_id.as_ref().map(|i| i.len() + 14).unwrap_or(0)
    }
}

/// What the server said about a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The stream that stored the message (`None` for QoS 0).
    pub stream: Option<String>,
    /// Its stream sequence (`None` for QoS 0).
    pub sequence: Option<u64>,
    /// The server had already stored this `Nats-Msg-Id` within the duplicate window.
    pub duplicate: bool,
    /// Attempts it took.
    pub attempts: u32,
    /// The `Nats-Msg-Id` used.
    pub msg_id: Option<String>,
}

/// Publishes with a fixed QoS; cheap to share by reference across tasks.
#[derive(Debug)]
pub struct Publisher {
    bus: Bus,
    /// The bus's JetStream context with `ack_timeout` as its own: the PubAck future then times
    /// out by itself, with no second timer per message around it.
    /// (Boxed: a Context is large, and publishers live inside long-running futures.)
    js: Box<async_nats::jetstream::Context>,
    cfg: PublisherConfig,
    verified_subjects: Mutex<HashSet<String>>,
    /// The server's max_payload, read once (reading server info clones it).
    max_payload: usize,
}

impl Publisher {
    /// A publisher on `bus`.
    pub fn new(bus: Bus, cfg: PublisherConfig) -> Self {
        let max_payload = bus.max_payload();
        let mut js = Box::new(bus.jetstream().clone());
        js.set_timeout(cfg.ack_timeout);
        Self {
            bus,
            js,
            cfg,
            verified_subjects: Mutex::new(HashSet::new()),
            max_payload,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.cfg
    }

    /// Publishes one message and, for QoS 1/2, waits for its PubAck (retrying on timeout).
    pub async fn publish(&self, msg: OutgoingMessage) -> Result<PublishReceipt, BusError> {
        let msg = self.prepare(msg).await?;
        if self.cfg.qos == Qos::AtMostOnce {
            return self.publish_core(msg).await;
        }
        self.publish_with_retry(&msg, 0).await
    }

    /// A bounded window of in-flight PubAcks for high-throughput QoS 1/2 publishing.
    pub fn window(&self) -> PublishWindow<'_> {
        PublishWindow {
            publisher: self,
            inflight: VecDeque::with_capacity(self.cfg.window),
        }
    }

    /// Validates size, assigns the message id and (QoS 2) checks the stream's duplicate window.
    async fn prepare(&self, msg: OutgoingMessage) -> Result<OutgoingMessage, BusError> {
        let msg = self.check_local(msg)?;
        if self.cfg.qos == Qos::ExactlyOnce {
            self.verify_duplicate_window(&msg.subject).await?;
        }
        Ok(msg)
    }

    /// The checks that need no server: size and message id (assigned for QoS 1).
    fn check_local(&self, mut msg: OutgoingMessage) -> Result<OutgoingMessage, BusError> {
        let max = self.max_payload;
        let size = msg.wire_size();
        if max > 0 && size > max {
            return Err(BusError::PayloadTooLarge {
                subject: msg.subject,
                size,
                max,
            });
        }
        match self.cfg.qos {
            Qos::AtMostOnce => {}
            Qos::AtLeastOnce => {
                if msg.msg_id.is_none() {
                    msg.msg_id = Some(nuid::next().to_string());
                }
            }
            Qos::ExactlyOnce => {
                if msg.msg_id.as_deref().is_none_or(str::is_empty) {
                    return Err(BusError::MissingMessageId { subject: msg.subject });
                }
            }
        }
        Ok(msg)
    }

    async fn verify_duplicate_window(&self, subject: &str) -> Result<(), BusError> {
        if self
            .verified_subjects
            .lock()
            .map(|s| s.contains(subject))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let js = self.bus.jetstream();
        let name = js.stream_by_subject(subject).await.map_err(|e| {
            if e.to_string().contains("not found") {
                BusError::StreamNotFound {
                    subject: subject.to_owned(),
                }
            } else {
                BusError::Api {
                    what: format!("looking up the stream of `{subject}`"),
                    reason: e.to_string(),
                }
            }
        })?;
        let mut stream = js.get_stream(&name).await.map_err(|e| BusError::Api {
            what: format!("reading stream `{name}`"),
            reason: e.to_string(),
        })?;
        let info = stream.info().await.map_err(|e| BusError::Api {
            what: format!("reading stream `{name}`"),
            reason: e.to_string(),
        })?;
        let window = info.config.duplicate_window;
        let horizon = self.cfg.retry_horizon();
        if window < horizon {
            return Err(BusError::DuplicateWindowTooShort {
                stream: name,
                window,
                horizon,
            });
        }
        if let Ok(mut s) = self.verified_subjects.lock() {
            s.insert(subject.to_owned());
        }
        Ok(())
    }

    async fn publish_core(&self, msg: OutgoingMessage) -> Result<PublishReceipt, BusError> {
        let client = self.bus.client();
        let res = match msg.headers {
            Some(h) => {
                client
                    .publish_with_headers(msg.subject.clone(), h, msg.payload)
                    .await
            }
            None => client.publish(msg.subject.clone(), msg.payload).await,
        };
        res.map_err(|e| BusError::Publish {
            subject: msg.subject,
            reason: e.to_string(),
        })?;
        Ok(PublishReceipt {
            stream: None,
            sequence: None,
            duplicate: false,
            attempts: 1,
            msg_id: msg.msg_id,
        })
    }

    /// Sends the JetStream publish request; returns the ack future.
    async fn send(&self, msg: &OutgoingMessage) -> Result<PublishAckFuture, PublishFailure> {
        let mut headers = msg.headers.clone().unwrap_or_default();
        if let Some(id) = &msg.msg_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        self.js
            .publish_with_headers(msg.subject.clone(), headers, msg.payload.clone())
            .await
            .map_err(|e| classify(msg, e.kind(), e.to_string(), self.max_payload))
    }

    async fn await_ack(
        &self,
        msg: &OutgoingMessage,
        fut: PublishAckFuture,
        sent_at: std::time::Instant,
    ) -> Result<async_nats::jetstream::publish::PublishAck, PublishFailure> {
        // The future's own timeout is `ack_timeout` (see `js`); TimedOut classifies as Retry.
        // A refusal by the server (the user may not publish there) ends the wait at once.
        tokio::select! {
            r = fut => r.map_err(|e| classify(msg, e.kind(), e.to_string(), self.max_payload)),
            why = self.bus.denials().refused(&msg.subject, sent_at) => Err(PublishFailure::Fatal(why)),
        }
    }

    /// "No responders" means no stream on a single server, but in a cluster it is also what a
    /// publish sees while a stream elects a new leader. Ask the JetStream API which it is.
    async fn confirm_failure(&self, msg: &OutgoingMessage, f: PublishFailure) -> PublishFailure {
        use async_nats::jetstream::context::GetStreamByNameErrorKind as K;
        match f {
            PublishFailure::Fatal(BusError::StreamNotFound { .. }) => {
                // A server without JetStream says so in its INFO: nothing will ever answer.
                if !self.bus.client().server_info().jetstream {
                    return PublishFailure::Fatal(BusError::JetStreamDisabled {
                        subject: msg.subject.clone(),
                    });
                }
                match self.bus.jetstream().stream_by_subject(msg.subject.clone()).await {
                    Err(e) if matches!(e.kind(), K::NotFound | K::InvalidSubject) => f,
                    _ => {
                        tracing::debug!(subject = %msg.subject, "stream exists but did not answer (leader election?); retrying");
                        PublishFailure::Retry
                    }
                }
            }
            other => other,
        }
    }

    /// Publishes `msg` until acked; `already` attempts were made before.
    async fn publish_with_retry(
        &self,
        msg: &OutgoingMessage,
        already: u32,
    ) -> Result<PublishReceipt, BusError> {
        let mut attempts = already;
        loop {
            attempts += 1;
            let sent_at = std::time::Instant::now();
            let result = match self.send(msg).await {
                Ok(fut) => self.await_ack(msg, fut, sent_at).await,
                Err(e) => Err(e),
            };
            let result = match result {
                Err(f) => Err(self.confirm_failure(msg, f).await),
                ok => ok,
            };
            match result {
                Ok(ack) => return Ok(receipt(ack, attempts, msg.msg_id.clone())),
                Err(PublishFailure::Fatal(e)) => return Err(e),
                Err(PublishFailure::Retry) if attempts < self.cfg.max_attempts => {
                    tracing::warn!(code = "puback_retry", subject = %msg.subject, msg_id = ?msg.msg_id, attempts, "no PubAck yet; retrying with the same message id");
                    tokio::time::sleep(self.cfg.backoff_after(attempts)).await;
                }
                Err(PublishFailure::Retry) => {
                    return Err(BusError::AckTimeout {
                        subject: msg.subject.clone(),
                        msg_id: msg.msg_id.clone().unwrap_or_default(),
                        attempts,
                    });
                }
            }
        }
    }
}

enum PublishFailure {
    Retry,
    Fatal(BusError),
}

fn classify(msg: &OutgoingMessage, kind: PublishErrorKind, text: String, max: usize) -> PublishFailure {
    match kind {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            PublishFailure::Retry
        }
        PublishErrorKind::StreamNotFound => PublishFailure::Fatal(BusError::StreamNotFound {
            subject: msg.subject.clone(),
        }),
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::Fatal(BusError::PayloadTooLarge {
            subject: msg.subject.clone(),
            size: msg.wire_size(),
            max,
        }),
        _ if text.contains("maximum payload") => PublishFailure::Fatal(BusError::PayloadTooLarge {
            subject: msg.subject.clone(),
            size: msg.wire_size(),
            max,
        }),
        _ => PublishFailure::Fatal(BusError::Publish {
            subject: msg.subject.clone(),
            reason: text,
        }),
    }
}

fn receipt(
    ack: async_nats::jetstream::publish::PublishAck,
    attempts: u32,
    msg_id: Option<String>,
) -> PublishReceipt {
    PublishReceipt {
        stream: Some(ack.stream),
        sequence: Some(ack.sequence),
        duplicate: ack.duplicate,
        attempts,
        msg_id,
    }
}

struct InFlight {
    msg: OutgoingMessage,
    fut: Option<PublishAckFuture>,
    sent_at: std::time::Instant,
}

/// A bounded window of outstanding PubAcks (see [`Publisher::window`]).
///
/// `send` returns the receipt of the oldest message once the window is full; `drain` waits for
/// the rest. Receipts come back in publish order. A message whose ack times out is re-sent with
/// the same `Nats-Msg-Id`, so the server stores it once.
///
/// A message handed to `send` is never lost silently: it is either confirmed by a receipt,
/// rejected at once for a reason of its own (too large, no id for QoS 2), or still held by the
/// window after an error — [`take_unconfirmed`](Self::take_unconfirmed) hands those back in
/// order, e.g. to publish them again once the connection is back.
///
/// ```no_run
/// # async fn demo(p: &langtian_core::bus::Publisher) -> Result<(), langtian_core::bus::BusError> {
/// use langtian_core::bus::OutgoingMessage;
/// let mut w = p.window();
/// for i in 0..10_000 {
///     w.send(OutgoingMessage::new("lt.evt.demo.x", format!("{i}")).with_msg_id(format!("x:{i}"))).await?;
/// }
/// let rest = w.drain().await?;
/// # Ok(()) }
/// ```
pub struct PublishWindow<'a> {
    publisher: &'a Publisher,
    inflight: VecDeque<InFlight>,
}

impl std::fmt::Debug for PublishWindow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishWindow")
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

impl PublishWindow<'_> {
    /// Queues `msg`; when the window is full, first completes the oldest and returns its receipt.
    ///
    /// On an error other than the message's own (size, missing id), `msg` and every other
    /// unconfirmed message stay in the window (see [`take_unconfirmed`](Self::take_unconfirmed)).
    pub async fn send(&mut self, msg: OutgoingMessage) -> Result<Option<PublishReceipt>, BusError> {
        let p = self.publisher;
        let msg = p.check_local(msg)?;
        if p.cfg.qos == Qos::AtMostOnce {
            return p.publish_core(msg).await.map(Some);
        }
        if p.cfg.qos == Qos::ExactlyOnce {
            let subject = msg.subject.clone();
            self.inflight.push_back(InFlight {
                msg,
                fut: None,
                sent_at: std::time::Instant::now(),
            });
            p.verify_duplicate_window(&subject).await?;
        } else {
            self.inflight.push_back(InFlight {
                msg,
                fut: None,
                sent_at: std::time::Instant::now(),
            });
        }
        let done = if self.inflight.len() > p.cfg.window.max(1) {
            self.confirm_oldest().await?
        } else {
            None
        };
        if let Some(last) = self.inflight.back_mut() {
            last.sent_at = std::time::Instant::now();
            match p.send(&last.msg).await {
                Ok(f) => last.fut = Some(f),
                Err(PublishFailure::Retry) => {} // retried when this entry is completed
                Err(PublishFailure::Fatal(e)) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Number of messages awaiting their PubAck.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Hands back every message not yet confirmed, oldest first, and empties the window.
    /// Publishing them again is safe: they keep their `Nats-Msg-Id`, so the server stores each
    /// once within the stream's duplicate window.
    pub fn take_unconfirmed(&mut self) -> Vec<OutgoingMessage> {
        self.inflight.drain(..).map(|e| e.msg).collect()
    }

    /// Waits for the oldest message's PubAck (re-sending it with the same id on timeout) and
    /// returns its receipt; `None` when the window is empty. On error the message stays first.
    pub async fn confirm_oldest(&mut self) -> Result<Option<PublishReceipt>, BusError> {
        let Some(mut entry) = self.inflight.pop_front() else {
            return Ok(None);
        };
        let p = self.publisher;
        let first = match entry.fut.take() {
            Some(fut) => p.await_ack(&entry.msg, fut, entry.sent_at).await,
            None => Err(PublishFailure::Retry),
        };
        let first = match first {
            Err(f) => Err(p.confirm_failure(&entry.msg, f).await),
            ok => ok,
        };
        let result = match first {
            Ok(ack) => return Ok(Some(receipt(ack, 1, entry.msg.msg_id))),
            Err(PublishFailure::Fatal(e)) => Err(e),
            Err(PublishFailure::Retry) if p.cfg.max_attempts <= 1 => Err(BusError::AckTimeout {
                subject: entry.msg.subject.clone(),
                msg_id: entry.msg.msg_id.clone().unwrap_or_default(),
                attempts: 1,
            }),
            Err(PublishFailure::Retry) => {
                tokio::time::sleep(p.cfg.backoff_after(1)).await;
                p.publish_with_retry(&entry.msg, 1).await
            }
        };
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.inflight.push_front(entry);
                Err(e)
            }
        }
    }

    /// Waits for every outstanding PubAck; returns their receipts in publish order.
    pub async fn drain(&mut self) -> Result<Vec<PublishReceipt>, BusError> {
        let mut out = Vec::with_capacity(self.inflight.len());
        while !self.inflight.is_empty() {
            if let Some(r) = self.confirm_oldest().await? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_horizon_covers_all_attempts() {
        let mut c = PublisherConfig::new(Qos::ExactlyOnce);
        c.ack_timeout = Duration::from_secs(2);
        c.retry_backoff = Duration::from_millis(500);
        c.max_retry_backoff = Duration::from_millis(1500);
        c.max_attempts = 4;
        // 4 × 2 s of waiting for acks + pauses 0.5 s, 1 s, 1.5 s (capped).
        assert_eq!(c.retry_horizon(), Duration::from_millis(11_000));
        assert_eq!(c.backoff_after(1), Duration::from_millis(500));
        assert_eq!(c.backoff_after(2), Duration::from_millis(1000));
        assert_eq!(c.backoff_after(9), Duration::from_millis(1500));
    }

    #[test]
    fn default_horizon_fits_the_default_duplicate_window() {
        let c = PublisherConfig::new(Qos::ExactlyOnce);
        assert!(
            c.retry_horizon() <= Duration::from_secs(120),
            "{:?}",
            c.retry_horizon()
        );
    }

    #[test]
    fn qos_levels() {
        assert_eq!(Qos::from_level(0), Some(Qos::AtMostOnce));
        assert_eq!(Qos::from_level(2), Some(Qos::ExactlyOnce));
        assert_eq!(Qos::from_level(3), None);
    }
}
