//! Publishing one application event the way every SDK does (`publish` in Python, Node and C#):
//! wrap a payload in an envelope, put it on `<prefix>.<event_type>.<source>` and, for QoS 1/2,
//! wait for JetStream's PubAck.
//!
//! ```no_run
//! # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::bus::EventError> {
//! use langtian_core::bus::{EventSpec, publish_event};
//! let mut spec = EventSpec::new("note", "docs", br#"{"text":"hi"}"#.to_vec());
//! spec.event_id = Some("note-1".into()); // a repeat is a duplicate within the stream's window
//! let r = publish_event(&bus, spec).await?;
//! println!("{} stored as #{:?} in {:?}", r.subject, r.sequence, r.stream);
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;

use super::{Bus, BusError, OutgoingMessage, Publisher, PublisherConfig, Qos};
use crate::envelope::{EnvelopeBuilder, EnvelopeError, now_nanos};

/// The default subject prefix of application events.
pub const EVENT_PREFIX: &str = "lt.evt";

/// One event to publish.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// Event type (the subject's second-to-last token).
    pub event_type: String,
    /// Source system (the subject's last token).
    pub source: String,
    /// The payload, as is.
    pub payload: Bytes,
    /// Its MIME type (default `application/json`).
    pub content_type: String,
    /// Delivery guarantee (default QoS 1).
    pub qos: Qos,
    /// Subject prefix (default [`EVENT_PREFIX`]).
    pub prefix: String,
    /// An exact subject instead of `<prefix>.<event_type>.<source>`.
    pub subject: Option<String>,
    /// Event id (default: [`new_event_id`]); JetStream de-duplicates by it.
    pub event_id: Option<String>,
    /// Partition key carried in the envelope.
    pub partition_key: Option<String>,
}

impl EventSpec {
    /// A JSON event with QoS 1 on `lt.evt.<event_type>.<source>`.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            event_type: event_type.into(),
            source: source.into(),
            payload: payload.into(),
            content_type: "application/json".into(),
            qos: Qos::AtLeastOnce,
            prefix: EVENT_PREFIX.into(),
            subject: None,
            event_id: None,
            partition_key: None,
        }
    }

    /// The message to publish and the event id it carries.
    pub fn into_message(self) -> Result<(OutgoingMessage, String), EnvelopeError> {
        let id = self.event_id.unwrap_or_else(|| new_event_id(&self.source));
        let mut b = EnvelopeBuilder::new(self.event_type, self.source)
            .event_id(id.clone())
            .payload(self.payload, self.content_type);
        if let Some(k) = self.partition_key {
            b = b.partition_key(k);
        }
        let env = b.build()?;
        let mut msg = OutgoingMessage::from_envelope(&self.prefix, &env);
        if let Some(s) = self.subject {
            msg.subject = s;
        }
        Ok((msg, id))
    }
}

/// What JetStream said about a published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReceipt {
    /// The subject it went to.
    pub subject: String,
    /// Its event id.
    pub event_id: String,
    /// The stream that stored it (`None` for QoS 0).
    pub stream: Option<String>,
    /// Its stream sequence (`None` for QoS 0).
    pub sequence: Option<u64>,
    /// The server had this event id already (stored once).
    pub duplicate: bool,
}

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The envelope could not be built (empty type or source, ...).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Publishing failed (no stream, no JetStream, no PubAck, ...).
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A fresh event id: `<source>:<ns since epoch>:<process counter>`.
pub fn new_event_id(source: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{source}:{}:{}", now_nanos(), N.fetch_add(1, Ordering::Relaxed))
}

/// Wraps, publishes and (QoS 1/2) confirms one event.
pub async fn publish_event(bus: &Bus, spec: EventSpec) -> Result<EventReceipt, EventError> {
    let qos = spec.qos;
    let (msg, event_id) = spec.into_message()?;
    let subject = msg.subject.clone();
    let r = Publisher::new(bus.clone(), PublisherConfig::new(qos))
        .publish(msg)
        .await?;
    Ok(EventReceipt {
        subject,
        event_id,
        stream: r.stream,
        sequence: r.sequence,
        duplicate: r.duplicate,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::envelope::Envelope;

    #[test]
    fn the_message_carries_the_envelope_on_the_event_subject() {
        let mut spec = EventSpec::new("note", "svc", b"{}".to_vec());
        spec.partition_key = Some("k".into());
        let (msg, id) = spec.into_message().unwrap();
        assert_eq!(msg.subject, "lt.evt.note.svc");
        assert!(id.starts_with("svc:"));
        assert_eq!(msg.msg_id.as_deref(), Some(id.as_str()));
        let env = Envelope::decode(&msg.payload).unwrap();
        assert_eq!((env.event_type(), env.partition_key()), ("note", Some("k")));
    }

    #[test]
    fn an_exact_subject_and_id_win_and_bad_envelopes_are_refused() {
        let mut spec = EventSpec::new("note", "svc", b"1".to_vec());
        spec.subject = Some("x.y".into());
        spec.event_id = Some("id-7".into());
        let (msg, id) = spec.into_message().unwrap();
        assert_eq!((msg.subject.as_str(), id.as_str()), ("x.y", "id-7"));
        assert!(EventSpec::new("", "svc", b"1".to_vec()).into_message().is_err());
        assert_ne!(new_event_id("a"), new_event_id("a"));
    }
}
