//! The JetStream bus: connect, publish with QoS 0/1/2, consume with native acks, dead letters
//! from server advisories, and declarative provisioning.
//!
//! Everything delegates to JetStream's own mechanisms: PubAck for delivery confirmation,
//! `Nats-Msg-Id` for de-duplication, durable pull consumers with explicit `Ack`/`Nak`/`Term`/
//! `Progress` for redelivery, `max_deliver` + `backoff` for retry schedules, and the server's
//! `MAX_DELIVERIES` / `MSG_TERMINATED` advisories for dead letters.
//!
//! ```no_run
//! # async fn demo() -> Result<(), langtian_core::bus::BusError> {
//! use langtian_core::bus::{Bus, BusOptions, Publisher, PublisherConfig, Qos, OutgoingMessage};
//! let bus = Bus::connect(&BusOptions::new("nats://127.0.0.1:14222")).await?;
//! let publisher = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
//! let receipt = publisher.publish(OutgoingMessage::new("lt.evt.demo.cli", "hello")).await?;
//! println!("stored in {:?} at seq {:?}", receipt.stream, receipt.sequence);
//! # Ok(()) }
//! ```

pub mod access;
mod connect;
mod consume;
mod dlq;
mod error;
mod event;
mod js_state;
mod publish;
mod reachability;
mod topology;

pub use connect::{Bus, BusOptions, EXIT_FLUSH, TlsOptions};
pub use consume::{
    AckMode, Batch, Consumer, ConsumerSpec, Delivery, HandlerError, HandlerOutcome, HandlerStats,
};
pub use dlq::{DeadLetter, DeadLetterForwarder, DlqConfig, dlq_headers};
pub use error::BusError;
pub use event::{EVENT_PREFIX, EventError, EventReceipt, EventSpec, new_event_id, publish_event};
pub use js_state::{
    CONSUMER_SERIES, ConsumerState, JetStreamSeries, JetStreamState, STREAM_SERIES, StreamState,
};
pub use publish::{OutgoingMessage, PublishReceipt, PublishWindow, Publisher, PublisherConfig, Qos};
pub use reachability::{Reachability, UNREACHABLE_WARN_EVERY, UnreachableWarning, redact_url};
pub use topology::{
    DEFAULT_TOPOLOGY_YAML, KvSpec, Storage, StreamSpec, Topology, ensure_consumer, ensure_kv, ensure_stream,
};
