//! Dead letters from the server's own advisories.
//!
//! JetStream announces a message it gives up on with `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.
//! <stream>.<consumer>` (after `max_deliver` deliveries) and one a consumer terminated with
//! `...MSG_TERMINATED.<stream>.<consumer>`. A capture stream (`LT_ADVISORIES`) stores those
//! advisories durably; the [`DeadLetterForwarder`] reads them through a durable pull consumer,
//! re-reads the original message by stream sequence and publishes it to
//! `lt.dlq.<consumer>` (stream `LT_DLQ`) with its provenance in headers; only then does it ack the
//! advisory. Nothing here keeps its own retry state: redelivery of an unforwarded advisory is the
//! server's job, and a forwarded dead letter is de-duplicated by its `Nats-Msg-Id`.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;

use super::topology::StreamSpec;
use super::{Bus, BusError, Consumer, ConsumerSpec, OutgoingMessage, Publisher, PublisherConfig, Qos};

/// Header: stream the message was in.
pub const H_STREAM: &str = "Lt-Dlq-Stream";
/// Header: consumer that gave up.
pub const H_CONSUMER: &str = "Lt-Dlq-Consumer";
/// Header: original subject.
pub const H_SUBJECT: &str = "Lt-Dlq-Subject";
/// Header: original stream sequence.
pub const H_STREAM_SEQ: &str = "Lt-Dlq-Stream-Seq";
/// Header: deliveries made.
pub const H_DELIVERIES: &str = "Lt-Dlq-Deliveries";
/// Header: why (`max_deliveries` or `terminated: <reason>`).
pub const H_REASON: &str = "Lt-Dlq-Reason";
/// Header: `true` when the original was no longer in the stream.
pub const H_ORIGINAL_MISSING: &str = "Lt-Dlq-Original-Missing";

/// Where dead letters go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    /// Stream holding dead letters.
    #[serde(default = "d_dlq_stream")]
    pub dlq_stream: String,
    /// Subject prefix: dead letters go to `<prefix>.<consumer>`.
    #[serde(default = "d_dlq_prefix")]
    pub dlq_prefix: String,
    /// Stream capturing the server advisories.
    #[serde(default = "d_advisory_stream")]
    pub advisory_stream: String,
    /// Durable name of the forwarder's consumer on the advisory stream.
    #[serde(default = "d_forwarder")]
    pub forwarder: String,
    /// Replicas of both streams.
    #[serde(default = "d_replicas")]
    pub replicas: usize,
    /// How long dead letters are kept.
    #[serde(default = "d_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn d_dlq_stream() -> String {
    "LT_DLQ".into()
}
fn d_dlq_prefix() -> String {
    "lt.dlq".into()
}
fn d_advisory_stream() -> String {
    "LT_ADVISORIES".into()
}
fn d_forwarder() -> String {
    "lt-dlq-forwarder".into()
}
fn d_replicas() -> usize {
    1
}
fn d_max_age() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            dlq_stream: d_dlq_stream(),
            dlq_prefix: d_dlq_prefix(),
            advisory_stream: d_advisory_stream(),
            forwarder: d_forwarder(),
            replicas: d_replicas(),
            max_age: d_max_age(),
        }
    }
}

impl DlqConfig {
    /// The advisory capture stream and the dead-letter stream.
    pub fn stream_specs(&self) -> [StreamSpec; 2] {
        let mut adv = StreamSpec::new(
            self.advisory_stream.clone(),
            vec![
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>".into(),
                "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>".into(),
            ],
        );
        adv.replicas = self.replicas;
        adv.max_age = self.max_age;
        let mut dlq = StreamSpec::new(self.dlq_stream.clone(), vec![format!("{}.>", self.dlq_prefix)]);
        dlq.replicas = self.replicas;
        dlq.max_age = self.max_age;
        [adv, dlq]
    }

    /// The forwarder's durable consumer on the advisory stream.
    pub fn forwarder_spec(&self) -> ConsumerSpec {
        let mut c = ConsumerSpec::new(self.advisory_stream.clone(), self.forwarder.clone());
        c.max_deliver = -1;
        c.fetch_batch = 100;
        c.max_ack_pending = 1000;
        c.backoff = vec![
            Duration::from_millis(200),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ];
        c.heartbeat = Duration::from_secs(2);
        c
    }
}

/// The advisory JSON the server publishes (both kinds share these fields).
#[derive(Debug, Clone, Deserialize)]
struct Advisory {
    #[serde(rename = "type")]
    kind: String,
    stream: String,
    consumer: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
    #[serde(default)]
    reason: Option<String>,
}

/// A dead letter as read back from `LT_DLQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Stream the original was in.
    pub stream: String,
    /// Consumer that gave up.
    pub consumer: String,
    /// Original subject.
    pub subject: String,
    /// Original stream sequence.
    pub stream_seq: u64,
    /// Deliveries made.
    pub deliveries: u64,
    /// `max_deliveries` or `terminated: <reason>`.
    pub reason: String,
    /// Original payload (empty if the original was gone).
    pub payload: Bytes,
    /// Whether the original had already left the stream.
    pub original_missing: bool,
}

impl DeadLetter {
    /// Reads a dead letter from a message of the DLQ stream; `None` if the provenance headers are
    /// missing.
    pub fn from_parts(headers: Option<&HeaderMap>, payload: Bytes) -> Option<Self> {
        let h = headers?;
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
        Some(Self {
            stream: get(H_STREAM)?,
            consumer: get(H_CONSUMER)?,
            subject: get(H_SUBJECT)?,
            stream_seq: get(H_STREAM_SEQ)?.parse().ok()?,
            deliveries: get(H_DELIVERIES)?.parse().ok()?,
            reason: get(H_REASON)?,
            payload,
            original_missing: get(H_ORIGINAL_MISSING).as_deref() == Some("true"),
        })
    }
}

/// Provenance headers of a dead letter, merged over the original message's headers.
pub fn dlq_headers(original: Option<&HeaderMap>, letter: &DeadLetter) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(orig) = original {
        for (k, vs) in orig.iter() {
            let name: &str = k.as_ref();
            if name.starts_with("Nats-") {
                continue; // server-interpreted headers must not be replayed
            }
            for v in vs {
                h.append(name, v.as_str());
            }
        }
    }
    h.insert(H_STREAM, letter.stream.as_str());
    h.insert(H_CONSUMER, letter.consumer.as_str());
    h.insert(H_SUBJECT, letter.subject.as_str());
    h.insert(H_STREAM_SEQ, letter.stream_seq.to_string().as_str());
    h.insert(H_DELIVERIES, letter.deliveries.to_string().as_str());
    h.insert(H_REASON, letter.reason.as_str());
    if letter.original_missing {
        h.insert(H_ORIGINAL_MISSING, "true");
    }
    h
}

/// Turns advisories into dead letters (see the module docs). Run one per account.
#[derive(Debug)]
pub struct DeadLetterForwarder {
    bus: Bus,
    cfg: DlqConfig,
    publisher: Publisher,
}

impl DeadLetterForwarder {
    /// A forwarder; the streams and its consumer must be provisioned (see `Topology::dlq`).
    pub fn new(bus: Bus, cfg: DlqConfig) -> Self {
        let publisher = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
        Self { bus, cfg, publisher }
    }

    /// Forwards advisories until `shutdown` resolves; returns how many dead letters it wrote.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<u64, BusError> {
        let mut consumer = Consumer::bind(&self.bus, self.cfg.forwarder_spec()).await?;
        let mut written = 0u64;
        use futures::FutureExt as _;
        tokio::pin!(shutdown);
        loop {
            if (&mut shutdown).now_or_never().is_some() {
                return Ok(written);
            }
            let batch = consumer.next_batch(100, Duration::from_millis(250)).await?;
            for adv in batch.messages {
                match self.forward(&adv.payload).await {
                    Ok(true) => {
                        written += 1;
                        adv.ack().await?;
                    }
                    Ok(false) => adv.ack().await?,
                    Err(ForwardError::Bad(why)) => {
                        tracing::warn!(code = "advisory_unreadable", seq = adv.stream_sequence, %why, "unreadable advisory; terminating it");
                        adv.term(Some(&why)).await?;
                    }
                    Err(ForwardError::Transient(e)) => {
                        tracing::warn!(code = "dead_letter_forward_failed", seq = adv.stream_sequence, error = %e, "could not forward a dead letter yet");
                        adv.nak(Some(Duration::from_secs(1))).await?;
                    }
                }
            }
        }
    }

    /// Forwards one advisory; `Ok(false)` = ignored (an advisory about the DLQ machinery itself).
    async fn forward(&self, advisory: &[u8]) -> Result<bool, ForwardError> {
        let a: Advisory =
            serde_json::from_slice(advisory).map_err(|e| ForwardError::Bad(format!("advisory JSON: {e}")))?;
        if a.stream == self.cfg.advisory_stream || a.stream == self.cfg.dlq_stream {
            return Ok(false);
        }
        let reason = if a.kind.ends_with(".terminated") {
            match a.reason.as_deref().map(str::trim) {
                Some(r) if !r.is_empty() => format!("terminated: {r}"),
                _ => "terminated".to_owned(),
            }
        } else {
            "max_deliveries".to_owned()
        };
        let original = match self.bus.jetstream().get_stream_no_info(&a.stream).await {
            Ok(s) => s.get_raw_message(a.stream_seq).await.ok(),
            Err(_) => None,
        };
        let (subject, payload, headers) = match &original {
            Some(m) => (m.subject.to_string(), m.payload.clone(), Some(&m.headers)),
            None => (String::new(), Bytes::new(), None),
        };
        let letter = DeadLetter {
            stream: a.stream.clone(),
            consumer: a.consumer.clone(),
            subject,
            stream_seq: a.stream_seq,
            deliveries: a.deliveries,
            reason,
            payload: payload.clone(),
            original_missing: original.is_none(),
        };
        let consumer_token: String = a
            .consumer
            .chars()
            .map(|c| {
                if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let msg = OutgoingMessage::new(format!("{}.{consumer_token}", self.cfg.dlq_prefix), payload)
            .with_headers(dlq_headers(headers, &letter))
            .with_msg_id(format!("dlq:{}:{}:{}", a.stream, a.consumer, a.stream_seq));
        self.publisher
            .publish(msg)
            .await
            .map_err(ForwardError::Transient)?;
        tracing::info!(stream = %a.stream, consumer = %a.consumer, seq = a.stream_seq, reason = %letter.reason, "dead letter written");
        Ok(true)
    }
}

enum ForwardError {
    Bad(String),
    Transient(BusError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let letter = DeadLetter {
            stream: "S".into(),
            consumer: "c".into(),
            subject: "a.b".into(),
            stream_seq: 7,
            deliveries: 3,
            reason: "max_deliveries".into(),
            payload: Bytes::from_static(b"x"),
            original_missing: false,
        };
        let mut orig = HeaderMap::new();
        orig.insert("Nats-Msg-Id", "m1");
        orig.insert("Trace", "t");
        let h = dlq_headers(Some(&orig), &letter);
        assert!(h.get("Nats-Msg-Id").is_none());
        assert_eq!(h.get("Trace").map(|v| v.as_str()), Some("t"));
        let back = DeadLetter::from_parts(Some(&h), Bytes::from_static(b"x")).unwrap();
        assert_eq!(back, letter);
    }

    #[test]
    fn parses_server_advisories() {
        let max: Advisory = serde_json::from_str(r#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-01-01T00:00:00Z","stream":"S","consumer":"c","stream_seq":5,"deliveries":3}"#).unwrap();
        assert_eq!((max.stream_seq, max.deliveries), (5, 3));
        let term: Advisory = serde_json::from_str(r#"{"type":"io.nats.jetstream.advisory.v1.terminated","stream":"S","consumer":"c","consumer_seq":9,"stream_seq":6,"deliveries":1,"reason":"bad"}"#).unwrap();
        assert_eq!(term.reason.as_deref(), Some("bad"));
    }
}
