use std::time::Duration;

/// Errors of the bus. Every variant names the subject, stream, consumer or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Connecting to NATS failed.
    #[error("connecting to {urls}: {reason}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        reason: String,
    },
    /// Bad connect options (missing creds file, bad nkey, ...).
    #[error("connect options: {0}")]
    Options(String),
    /// No stream captures the subject.
    #[error("no JetStream stream captures subject `{subject}`")]
    StreamNotFound {
        /// The subject published to.
        subject: String,
    },
    /// The server runs without JetStream, so QoS 1/2 cannot be stored.
    #[error(
        "the NATS server has no JetStream enabled: `{subject}` cannot be published with QoS 1/2 (start nats-server with -js, or use QoS 0)"
    )]
    JetStreamDisabled {
        /// The subject published to.
        subject: String,
    },
    /// A named stream does not exist.
    #[error("stream `{stream}` does not exist")]
    UnknownStream {
        /// The stream name.
        stream: String,
    },
    /// A named consumer does not exist.
    #[error("consumer `{consumer}` on stream `{stream}` does not exist (provision it first)")]
    UnknownConsumer {
        /// Stream.
        stream: String,
        /// Consumer.
        consumer: String,
    },
    /// The message is larger than the server's `max_payload`.
    #[error("message for `{subject}` is {size} bytes, over the server's max_payload of {max} bytes")]
    PayloadTooLarge {
        /// Subject.
        subject: String,
        /// Payload size.
        size: usize,
        /// Server limit.
        max: usize,
    },
    /// nats-server refused to let this connection's user publish to the subject.
    #[error(
        "publishing to `{subject}` is not allowed for this connection's NATS user (nats-server: permissions violation)"
    )]
    PermissionDenied {
        /// Subject.
        subject: String,
    },
    /// nats-server refused this connection's subscription to its own inbox, so no reply (PubAck,
    /// JetStream answer) can reach it: the user's permissions name another inbox prefix.
    #[error(
        "this connection's NATS user may not read its inbox `{inbox_prefix}.>`: connect with the inbox prefix its permissions allow (`lt up` users: `_LT.<user>`)"
    )]
    InboxDenied {
        /// The prefix the connection used.
        inbox_prefix: String,
    },
    /// No PubAck after all retries.
    #[error("no PubAck for `{subject}` (msg id {msg_id}) after {attempts} attempts")]
    AckTimeout {
        /// Subject.
        subject: String,
        /// The message id used for every attempt.
        msg_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// QoS 2 needs a deterministic message id.
    #[error("QoS 2 publish to `{subject}` needs a deterministic message id (Nats-Msg-Id)")]
    MissingMessageId {
        /// Subject.
        subject: String,
    },
    /// The stream's duplicate window cannot cover the publisher's retries.
    #[error(
        "stream `{stream}` has a duplicate window of {window:?}, shorter than the publisher's retry horizon of {horizon:?}; QoS 2 could store a retried message twice"
    )]
    DuplicateWindowTooShort {
        /// Stream.
        stream: String,
        /// Its duplicate window.
        window: Duration,
        /// The publisher's retry horizon.
        horizon: Duration,
    },
    /// Publishing failed for another reason.
    #[error("publishing to `{subject}`: {reason}")]
    Publish {
        /// Subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// Consuming failed.
    #[error("consumer `{consumer}` on `{stream}`: {reason}")]
    Consume {
        /// Stream.
        stream: String,
        /// Consumer.
        consumer: String,
        /// Why.
        reason: String,
    },
    /// Acknowledging a message failed.
    #[error("ack ({kind}) of stream seq {stream_seq} on `{stream}`: {reason}")]
    Ack {
        /// Stream.
        stream: String,
        /// The message's stream sequence.
        stream_seq: u64,
        /// Which ack.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// Provisioning (stream/consumer/KV creation) failed.
    #[error("provisioning {what}: {reason}")]
    Provision {
        /// What was being provisioned.
        what: String,
        /// Why.
        reason: String,
    },
    /// The topology file is invalid.
    #[error("topology {file}: {reason}")]
    Topology {
        /// The file.
        file: String,
        /// What is wrong, with the key path.
        reason: String,
    },
    /// A JetStream API request failed.
    #[error("{what}: {reason}")]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        reason: String,
    },
}

pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(String) -> BusError {
    let what = what.into();
    move |reason| BusError::Api { what, reason }
}
