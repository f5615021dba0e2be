//! The event envelope: every event on the Langtian bus travels as a
//! `langtian.envelope.v1.Envelope` protobuf.
//!
//! Build one with [`EnvelopeBuilder`], which validates the required fields, checks that
//! `schema_version` is `major.minor` and enforces a size limit. [`Envelope::decode`] never panics
//! on garbage: it returns a typed [`EnvelopeError`]. [`Envelope::headers`] maps the envelope onto
//! NATS headers; `Nats-Msg-Id` is the `event_id`, so JetStream de-duplicates re-publications.
//!
//! ```
//! use langtian_core::envelope::{Envelope, EnvelopeBuilder};
//!
//! let env = EnvelopeBuilder::new("battery.sample", "cycler-7")
//!     .event_id("cycler-7:42")
//!     .schema_version("1.0")
//!     .payload(&b"{\"v\":3.71}"[..], "application/json")
//!     .build()?;
//! let bytes = env.encode();
//! let back = Envelope::decode(&bytes)?;
//! assert_eq!(back.event_id(), "cycler-7:42");
//! assert_eq!(back.subject("lt.evt"), "lt.evt.battery.sample.cycler-7");
//! # Ok::<(), langtian_core::envelope::EnvelopeError>(())
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;

use crate::proto::envelope::v1 as pb;

/// Default upper bound for an encoded envelope (bytes). NATS' default `max_payload` is 1 MiB.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// Content type of the envelope itself on the wire (NATS header `Content-Type`).
pub const ENVELOPE_CONTENT_TYPE: &str = "application/x-protobuf; messageType=langtian.envelope.v1.Envelope";

/// NATS header carrying the event type.
pub const HEADER_EVENT_TYPE: &str = "Lt-Event-Type";
/// NATS header carrying the schema version.
pub const HEADER_SCHEMA_VERSION: &str = "Lt-Schema-Version";
/// NATS header carrying the source system.
pub const HEADER_SOURCE: &str = "Lt-Source";
/// NATS header carrying the partition key, when there is one.
pub const HEADER_PARTITION_KEY: &str = "Lt-Partition-Key";

/// What is wrong with an envelope.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A required field is empty.
    #[error("envelope field `{0}` is required but empty")]
    MissingField(&'static str),
    /// `schema_version` is not `major.minor` with numeric parts.
    #[error("envelope schema_version `{0}` is not `major.minor` (e.g. \"1.0\")")]
    BadSchemaVersion(String),
    /// A field holds a character that cannot appear in a NATS subject token.
    #[error(
        "envelope field `{field}` = `{value}` cannot be used in a subject (no spaces, '.', '*', '>' or control characters)"
    )]
    BadSubjectToken {
        /// Field name.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The encoded envelope is larger than the configured limit.
    #[error("envelope `{event_id}` is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The event id, for context.
        event_id: String,
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid protobuf envelope.
    #[error("bytes are not a langtian.envelope.v1.Envelope ({len} bytes): {reason}")]
    Decode {
        /// Length of the input.
        len: usize,
        /// The decoder's explanation.
        reason: String,
    },
}

/// A validated event envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    inner: pb::Envelope,
}

impl Envelope {
    /// Decodes and validates an envelope from protobuf bytes.
    ///
    /// Any input, including random bytes, yields either a valid envelope or an
    /// [`EnvelopeError`]; it never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::decode_with_limit(bytes, DEFAULT_MAX_ENVELOPE_BYTES)
    }

    /// Like [`Envelope::decode`] with an explicit size limit.
    pub fn decode_with_limit(bytes: &[u8], limit: usize) -> Result<Self, EnvelopeError> {
        if bytes.len() > limit {
            return Err(EnvelopeError::TooLarge {
                event_id: String::from("<undecoded>"),
                size: bytes.len(),
                limit,
            });
        }
        let inner = pb::Envelope::decode(bytes).map_err(|e| EnvelopeError::Decode {
            len: bytes.len(),
            reason: e.to_string(),
        })?;
        validate(&inner)?;
        Ok(Self { inner })
    }

    /// Encodes the envelope to protobuf bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(self.inner.encode_to_vec())
    }

    /// The encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.inner.encoded_len()
    }

    /// Event id (also the `Nats-Msg-Id`).
    pub fn event_id(&self) -> &str {
        &self.inner.event_id
    }
    /// Event type, e.g. `battery.sample`.
    pub fn event_type(&self) -> &str {
        &self.inner.event_type
    }
    /// Event time in nanoseconds since the Unix epoch.
    pub fn event_timestamp(&self) -> i64 {
        self.inner.event_timestamp
    }
    /// Schema version `major.minor`.
    pub fn schema_version(&self) -> &str {
        &self.inner.schema_version
    }
    /// The producing system.
    pub fn source_system(&self) -> &str {
        &self.inner.source_system
    }
    /// Optional partition key.
    pub fn partition_key(&self) -> Option<&str> {
        self.inner.partition_key.as_deref()
    }
    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }
    /// The payload's content type.
    pub fn content_type(&self) -> &str {
        &self.inner.content_type
    }
    /// The schema's major version.
    pub fn schema_major(&self) -> u32 {
        parse_schema_version(&self.inner.schema_version)
            .map(|(m, _)| m)
            .unwrap_or(0)
    }

    /// The default subject for this event: `<prefix>.<event_type>.<source_system>`.
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.inner.event_type, self.inner.source_system)
    }

    /// NATS headers for this envelope: `Nats-Msg-Id` = event id, plus the routing fields so
    /// that consumers can filter without decoding.
    pub fn headers(&self) -> async_nats::HeaderMap {
        use async_nats::header::HeaderName;
        // Static names: no parsing or allocation per header (this runs once per event).
        const CONTENT_TYPE: HeaderName = HeaderName::from_static("Content-Type");
        const EVENT_TYPE: HeaderName = HeaderName::from_static(HEADER_EVENT_TYPE);
        const SCHEMA_VERSION: HeaderName = HeaderName::from_static(HEADER_SCHEMA_VERSION);
        const SOURCE: HeaderName = HeaderName::from_static(HEADER_SOURCE);
        const PARTITION_KEY: HeaderName = HeaderName::from_static(HEADER_PARTITION_KEY);
        let mut h = async_nats::HeaderMap::new();
        h.insert(async_nats::header::NATS_MESSAGE_ID, self.inner.event_id.as_str());
        h.insert(CONTENT_TYPE, ENVELOPE_CONTENT_TYPE);
        h.insert(EVENT_TYPE, self.inner.event_type.as_str());
        h.insert(SCHEMA_VERSION, self.inner.schema_version.as_str());
        h.insert(SOURCE, self.inner.source_system.as_str());
        if let Some(k) = &self.inner.partition_key {
            h.insert(PARTITION_KEY, k.as_str());
        }
        h
    }

    /// Wraps a protobuf envelope whose fields the caller has already checked (the collector's
    /// hot path builds thousands per second from a few validated parts).
    pub(crate) fn from_checked(inner: pb::Envelope) -> Self {
        debug_assert!(validate(&inner).is_ok(), "{:?}", validate(&inner));
        Self { inner }
    }

    /// The underlying protobuf message.
    pub fn as_proto(&self) -> &pb::Envelope {
        &self.inner
    }
}

/// Builds a validated [`Envelope`].
#[derive(Debug, Clone)]
pub struct EnvelopeBuilder {
    inner: pb::Envelope,
    max_bytes: usize,
}

impl EnvelopeBuilder {
    /// Starts an envelope of `event_type` from `source_system`. The timestamp defaults to now,
    /// the schema version to `1.0`; the event id must be set (it is deterministic by design).
    pub fn new(event_type: impl Into<String>, source_system: impl Into<String>) -> Self {
        Self {
            inner: pb::Envelope {
                event_type: event_type.into(),
                source_system: source_system.into(),
                schema_version: "1.0".into(),
                event_timestamp: now_nanos(),
                ..Default::default()
            },
            max_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
        }
    }
    /// Sets the event id (use something deterministic, e.g. `"<source>:<sequence>"`).
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.inner.event_id = id.into();
        self
    }
    /// Sets the event time (nanoseconds since the Unix epoch).
    pub fn event_timestamp(mut self, nanos: i64) -> Self {
        self.inner.event_timestamp = nanos;
        self
    }
    /// Sets the schema version (`major.minor`).
    pub fn schema_version(mut self, v: impl Into<String>) -> Self {
        self.inner.schema_version = v.into();
        self
    }
    /// Sets the partition key.
    pub fn partition_key(mut self, k: impl Into<String>) -> Self {
        self.inner.partition_key = Some(k.into());
        self
    }
    /// Sets the payload and its content type.
    pub fn payload(mut self, payload: impl Into<Bytes>, content_type: impl Into<String>) -> Self {
        self.inner.payload = payload.into();
        self.inner.content_type = content_type.into();
        self
    }
    /// Sets the size limit for the encoded envelope (default 1 MiB).
    pub fn max_bytes(mut self, limit: usize) -> Self {
        self.max_bytes = limit;
        self
    }
    /// Validates and returns the envelope.
    pub fn build(self) -> Result<Envelope, EnvelopeError> {
        validate(&self.inner)?;
        let size = self.inner.encoded_len();
        if size > self.max_bytes {
            return Err(EnvelopeError::TooLarge {
                event_id: self.inner.event_id,
                size,
                limit: self.max_bytes,
            });
        }
        Ok(Envelope { inner: self.inner })
    }
}

fn validate(e: &pb::Envelope) -> Result<(), EnvelopeError> {
    if e.event_id.is_empty() {
        return Err(EnvelopeError::MissingField("event_id"));
    }
    if e.event_type.is_empty() {
        return Err(EnvelopeError::MissingField("event_type"));
    }
    if e.source_system.is_empty() {
        return Err(EnvelopeError::MissingField("source_system"));
    }
    if e.schema_version.is_empty() {
        return Err(EnvelopeError::MissingField("schema_version"));
    }
    if e.content_type.is_empty() && !e.payload.is_empty() {
        return Err(EnvelopeError::MissingField("content_type"));
    }
    if parse_schema_version(&e.schema_version).is_none() {
        return Err(EnvelopeError::BadSchemaVersion(e.schema_version.clone()));
    }
    // event_type may contain dots (it becomes several subject tokens); source must be one token.
    check_subject_part("event_type", &e.event_type, true)?;
    check_subject_part("source_system", &e.source_system, false)?;
    if e.event_id.chars().any(|c| c.is_control()) {
        return Err(EnvelopeError::BadSubjectToken {
            field: "event_id",
            value: e.event_id.clone(),
        });
    }
    Ok(())
}

pub(crate) fn check_subject_part(field: &'static str, v: &str, dots_ok: bool) -> Result<(), EnvelopeError> {
    let bad = v
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>' || (!dots_ok && c == '.'))
        || v.starts_with('.')
        || v.ends_with('.')
        || v.contains("..");
    if bad {
        return Err(EnvelopeError::BadSubjectToken {
            field,
            value: v.to_owned(),
        });
    }
    Ok(())
}

/// Parses `major.minor` (both non-negative integers).
pub fn parse_schema_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(major) || !all_digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Current time in nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnvelopeBuilder {
        EnvelopeBuilder::new("battery.sample", "cycler-1")
            .event_id("cycler-1:1")
            .payload(&b"x"[..], "application/octet-stream")
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let env = sample()
            .partition_key("dev-9")
            .event_timestamp(42)
            .build()
            .unwrap();
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.partition_key(), Some("dev-9"));
        assert_eq!(back.event_timestamp(), 42);
        assert_eq!(back.schema_major(), 1);
    }

    #[test]
    fn missing_fields_are_named() {
        let err = EnvelopeBuilder::new("t", "s").build().unwrap_err();
        assert_eq!(err, EnvelopeError::MissingField("event_id"));
        let err = EnvelopeBuilder::new("", "s").event_id("a").build().unwrap_err();
        assert_eq!(err, EnvelopeError::MissingField("event_type"));
        let err = EnvelopeBuilder::new("t", "").event_id("a").build().unwrap_err();
        assert_eq!(err, EnvelopeError::MissingField("source_system"));
    }

    #[test]
    fn schema_version_must_be_major_minor() {
        for bad in ["1", "1.", ".1", "a.b", "1.0.0", "v1.0", "1.-1"] {
            let err = sample().schema_version(bad).build().unwrap_err();
            assert_eq!(err, EnvelopeError::BadSchemaVersion(bad.into()), "{bad}");
        }
        assert!(sample().schema_version("12.34").build().is_ok());
    }

    #[test]
    fn size_limit_is_enforced() {
        let err = sample()
            .payload(vec![0u8; 2000], "application/octet-stream")
            .max_bytes(1000)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, EnvelopeError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn subject_tokens_are_checked() {
        let err = EnvelopeBuilder::new("a b", "s")
            .event_id("1")
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::BadSubjectToken {
                field: "event_type",
                ..
            }
        ));
        let err = EnvelopeBuilder::new("t", "s.x")
            .event_id("1")
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::BadSubjectToken {
                field: "source_system",
                ..
            }
        ));
        let err = EnvelopeBuilder::new("t", "s>").event_id("1").build().unwrap_err();
        assert!(matches!(err, EnvelopeError::BadSubjectToken { .. }));
    }

    #[test]
    fn headers_map_msg_id_to_event_id() {
        let env = sample().partition_key("p").build().unwrap();
        let h = env.headers();
        assert_eq!(
            h.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str()),
            Some("cycler-1:1")
        );
        assert_eq!(h.get(HEADER_PARTITION_KEY).map(|v| v.as_str()), Some("p"));
        assert_eq!(env.subject("lt.evt"), "lt.evt.battery.sample.cycler-1");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = Envelope::decode(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, EnvelopeError::Decode { len: 3, .. }), "{err}");
        // A valid protobuf of another shape decodes to an envelope with empty fields.
        let err = Envelope::decode(&[]).unwrap_err();
        assert_eq!(err, EnvelopeError::MissingField("event_id"));
    }
}
