//! Pipeline sources: a durable JetStream pull consumer (`nats`) or a JSONL file replay (`jsonl`).
//!
//! Both yield [`Pulled`] batches of message bodies with their [`SourceMeta`]. Only the `nats`
//! source has anything to acknowledge; the `jsonl` source ends at the end of the file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::config::{DeliverPolicy, NatsSource, Pipeline};
use super::meta::SourceMeta;
use crate::bus::{Bus, BusError, BusOptions, Consumer, ConsumerSpec, Delivery, ensure_consumer};

/// One message taken from a source.
#[derive(Debug, Clone)]
pub struct SourceMessage {
    /// The message body as received (an envelope or a raw payload).
    pub body: Bytes,
    /// Where it came from.
    pub meta: SourceMeta,
}

/// A batch taken from a source; ack it with [`Source::ack`] after the sink committed it.
#[derive(Debug, Default)]
pub struct Pulled {
    /// The messages, in source order.
    pub messages: Vec<SourceMessage>,
    /// The JetStream deliveries behind `messages` (empty for `jsonl`); shared with the progress
    /// ticker while the batch is processed.
    deliveries: Arc<Vec<Delivery>>,
    /// Messages the consumer still has to deliver after this batch (JetStream's pending count).
    pub lag: Option<u64>,
    /// True when the source has nothing more to give (end of a `jsonl` file).
    pub exhausted: bool,
    /// The consumer acks cumulatively (`AckAll`): one ack of the last delivery acks the batch.
    cumulative_ack: bool,
}

impl Pulled {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Splits off the messages at or below `seq` (already committed) as their own batch.
    pub fn split_committed(&mut self, seq: u64) -> Pulled {
        let keep = |m: &SourceMessage| m.meta.stream_seq > seq;
        let (new_m, old_m): (Vec<_>, Vec<_>) = std::mem::take(&mut self.messages).into_iter().partition(keep);
        let all = Arc::try_unwrap(std::mem::take(&mut self.deliveries)).unwrap_or_else(|a| (*a).clone());
        let (new_d, old_d): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d.stream_sequence > seq);
        self.messages = new_m;
        self.deliveries = Arc::new(new_d);
        Pulled {
            messages: old_m,
            deliveries: Arc::new(old_d),
            lag: None,
            exhausted: false,
            cumulative_ack: self.cumulative_ack,
        }
    }

    /// The JetStream deliveries (empty for `jsonl`).
    pub fn deliveries(&self) -> &Arc<Vec<Delivery>> {
        &self.deliveries
    }

    /// Acknowledges the batch after the sink committed it (JetStream: one ack of the last
    /// delivery on an `ack_policy: all` consumer, else one ack per message; `jsonl`: nothing).
    pub async fn ack(self) -> Result<(), SourceError> {
        if self.cumulative_ack {
            if let Some(last) = self.deliveries.last() {
                last.ack().await?;
            }
            return Ok(());
        }
        for d in self.deliveries.iter() {
            d.ack().await?;
        }
        Ok(())
    }
}

/// A running source.
#[derive(Debug)]
pub enum Source {
    /// Durable pull consumer.
    Nats {
        /// The connection (shared with DLQ and `nats` sinks).
        bus: Box<Bus>,
        /// The consumer.
        consumer: Box<Consumer>,
        /// Settings.
        cfg: Box<NatsSource>,
    },
    /// A JSONL file replayed line by line.
    Jsonl {
        /// Stream name recorded with offsets: `jsonl:<path>`.
        stream: String,
        /// Lines not yet delivered (line number from 1, text).
        lines: std::vec::IntoIter<(u64, Bytes)>,
    },
}

/// Source errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// NATS.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The sink holds a position past the end of the stream: the stream was deleted and
    /// created again (its sequences restarted from 1), so resuming after the position would
    /// silently skip every new message up to it.
    #[error(
        "the sink's committed position for stream `{stream}`, consumer `{consumer}` is {committed}, but the stream's last sequence is {last}: the stream was re-created and its sequences restarted. Resuming would skip new messages up to {committed}. Use a new consumer name for the re-created stream, or delete that consumer's rows from the sink's offsets table"
    )]
    PositionAheadOfStream {
        /// Stream.
        stream: String,
        /// Durable consumer.
        consumer: String,
        /// Position the sink holds.
        committed: u64,
        /// The stream's last sequence now.
        last: u64,
    },
    /// The JSONL file.
    #[error("jsonl source {path}: {reason}")]
    Jsonl {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Compares the sink's position with the stream it resumes on.
///
/// A position past the stream's last sequence means the stream was re-created: an error, never
/// a silent skip. Otherwise returns how many messages after the position the stream no longer
/// holds (its retention removed them before they were read).
async fn check_position(bus: &Bus, cfg: &NatsSource, committed: u64) -> Result<u64, SourceError> {
    let stream = bus
        .jetstream()
        .get_stream(&cfg.stream)
        .await
        .map_err(|e| BusError::Api {
            what: format!("reading stream `{}`", cfg.stream),
            reason: e.to_string(),
        })?;
    let state = &stream.cached_info().state;
    if committed > state.last_sequence {
        return Err(SourceError::PositionAheadOfStream {
            stream: cfg.stream.clone(),
            consumer: cfg.consumer.clone(),
            committed,
            last: state.last_sequence,
        });
    }
    // Sequences after `committed` and before the first one the stream holds were removed.
    Ok(state.first_sequence.saturating_sub(committed + 1))
}

/// Connection options of a `nats` source block.
pub fn bus_options(n: &NatsSource, name: &str) -> BusOptions {
    let mut opts = BusOptions::new(&n.servers.join(","));
    opts.name = Some(format!("lt-flow:{name}"));
    opts.creds_file = n.creds_file.clone();
    opts.token = n.token.clone();
    opts.user = n.user.clone();
    opts.password = n.password.clone();
    opts.nkey_seed = n.nkey_seed.clone();
    opts.inbox_prefix = n.inbox_prefix.clone();
    if let Some(ca) = &n.tls_ca {
        opts.tls.ca_file = Some(ca.clone());
        opts.tls.required = true;
    }
    opts
}

/// The inverse of [`bus_options`]: makes source block `n` connect with `o`'s authentication
/// and inbox prefix (how `lt up` runs its flow as the flow's own NATS user).
pub fn connect_as(n: &mut NatsSource, o: &BusOptions) {
    n.creds_file = o.creds_file.clone();
    n.token = o.token.clone();
    n.user = o.user.clone();
    n.password = o.password.clone();
    n.nkey_seed = o.nkey_seed.clone();
    if let Some(path) = &o.nkey_seed_file {
        // The source block holds seeds only; an unreadable file leaves it without one, and the
        // server then refuses the connection (or, with `--nats-auth local`, limits it).
        n.nkey_seed = std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    }
    n.inbox_prefix = o.inbox_prefix.clone();
    if o.tls.ca_file.is_some() {
        n.tls_ca = o.tls.ca_file.clone();
    }
}

/// The consumer spec of a `nats` source block within pipeline `p`.
pub fn consumer_spec(n: &NatsSource, p: &Pipeline) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(n.stream.clone(), n.consumer.clone());
    spec.filter_subjects = n.filter_subjects.clone();
    spec.ack_wait = n.ack_wait;
    spec.max_deliver = n.max_deliver;
    spec.fetch_batch = n.fetch.batch.unwrap_or(p.batch_size.min(1000)).max(1);
    spec.fetch_max_bytes = n.fetch.max_bytes;
    spec.fetch_expires = Some(n.fetch.expires);
    spec.max_ack_pending = n
        .max_ack_pending
        .unwrap_or((p.batch_size as i64 * 2).max(spec.fetch_batch as i64));
    spec.deliver_new = matches!(n.deliver_policy, DeliverPolicy::New);
    spec.ack_policy = n.ack_policy;
    spec
}

impl Source {
    /// Connects and binds the durable consumer (creating it when `create_consumer`).
    pub async fn nats(n: &NatsSource, p: &Pipeline) -> Result<Self, SourceError> {
        let name = p.name.clone().unwrap_or_else(|| n.consumer.clone());
        let bus = Bus::connect(&bus_options(n, &name)).await?;
        let spec = consumer_spec(n, p);
        if n.create_consumer {
            ensure_consumer(&bus, &spec).await?;
        }
        let consumer = Consumer::bind(&bus, spec).await?;
        Ok(Source::Nats {
            bus: Box::new(bus),
            consumer: Box::new(consumer),
            cfg: Box::new(n.clone()),
        })
    }

    /// Reads a JSONL file; blank lines are skipped but keep their line numbers.
    pub fn jsonl(path: &Path) -> Result<Self, SourceError> {
        let text = std::fs::read(path).map_err(|e| SourceError::Jsonl {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let text = Bytes::from(text);
        let mut lines = Vec::new();
        let mut start = 0usize;
        let mut no = 0u64;
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' {
                no += 1;
                push_line(&mut lines, no, text.slice(start..i));
                start = i + 1;
            }
        }
        if start < text.len() {
            no += 1;
            push_line(&mut lines, no, text.slice(start..));
        }
        Ok(Source::Jsonl {
            stream: format!("jsonl:{}", path.display()),
            lines: lines.into_iter(),
        })
    }

    /// The stream name recorded with offsets.
    pub fn stream_name(&self) -> &str {
        match self {
            Source::Nats { cfg, .. } => &cfg.stream,
            Source::Jsonl { stream, .. } => stream,
        }
    }

    /// The NATS connection, if this is a `nats` source.
    pub fn bus(&self) -> Option<&Bus> {
        match self {
            Source::Nats { bus, .. } => Some(bus),
            Source::Jsonl { .. } => None,
        }
    }

    /// Positions the source right after `committed` (a stream sequence or line number).
    /// For JetStream this is the native consumer reset, so delivery resumes in stream order.
    ///
    /// Returns how many messages after `committed` the stream's retention removed before they
    /// were read (0 for `jsonl`). Fails with [`SourceError::PositionAheadOfStream`] when the
    /// stream ends before `committed` (it was re-created).
    pub async fn resume_after(&mut self, committed: u64) -> Result<u64, SourceError> {
        let mut expired = 0;
        match self {
            Source::Nats { bus, consumer, cfg } => {
                if committed > 0 {
                    expired = check_position(bus, cfg, committed).await?;
                }
                let next = (committed > 0).then_some(committed + 1);
                if let Err(e) = consumer.reset(next).await {
                    if matches!(cfg.deliver_policy, DeliverPolicy::All) {
                        return Err(e.into());
                    }
                    tracing::warn!(code = "consumer_reset_failed", error = %e, "could not reset the consumer (deliver_policy is not `all`); redeliveries after a crash may arrive out of order");
                }
            }
            Source::Jsonl { lines, .. } => {
                let rest: Vec<(u64, Bytes)> = lines.by_ref().filter(|(no, _)| *no > committed).collect();
                *lines = rest.into_iter();
            }
        }
        Ok(expired)
    }

    /// Takes up to `max` messages: waits up to `idle` for the first, then at most `linger` from
    /// the first message; returns what it has when `stop` turns true.
    pub async fn pull(
        &mut self,
        max: usize,
        idle: Duration,
        linger: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Pulled, SourceError> {
        match self {
            Source::Nats { consumer, .. } => {
                let mut b = consumer.collect_batch(max, idle, linger, Some(stop)).await?;
                let lag = b.messages.last().map(|d| d.pending);
                let messages = b
                    .messages
                    .iter_mut()
                    .map(|d| SourceMessage {
                        body: d.payload.clone(),
                        meta: SourceMeta::take_from_delivery(d),
                    })
                    .collect();
                Ok(Pulled {
                    messages,
                    deliveries: Arc::new(b.messages),
                    lag,
                    exhausted: false,
                    cumulative_ack: b.cumulative_ack,
                })
            }
            Source::Jsonl { lines, .. } => {
                let messages: Vec<SourceMessage> = lines
                    .by_ref()
                    .take(max)
                    .map(|(no, body)| SourceMessage {
                        body,
                        meta: SourceMeta {
                            subject: "jsonl".into(),
                            stream_seq: no,
                            timestamp_us: crate::envelope::now_nanos() / 1000,
                            deliveries: 1,
                            headers: None,
                        },
                    })
                    .collect();
                let lag = lines.len() as u64;
                Ok(Pulled {
                    messages,
                    deliveries: Arc::default(),
                    lag: Some(lag),
                    exhausted: lag == 0,
                    cumulative_ack: false,
                })
            }
        }
    }
}

fn push_line(lines: &mut Vec<(u64, Bytes)>, no: u64, line: Bytes) {
    let trimmed = line.iter().any(|b| !b.is_ascii_whitespace());
    if trimmed {
        lines.push((no, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jsonl_source_replays_lines_and_resumes_after_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.jsonl");
        std::fs::write(&f, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}").unwrap();
        let mut s = Source::jsonl(&f).unwrap();
        let (_tx, mut stop) = watch::channel(false);
        s.resume_after(1).await.unwrap();
        let p = s
            .pull(10, Duration::ZERO, Duration::ZERO, &mut stop)
            .await
            .unwrap();
        let seqs: Vec<u64> = p.messages.iter().map(|m| m.meta.stream_seq).collect();
        assert_eq!(seqs, vec![3, 4], "blank line 2 skipped, line 1 already committed");
        assert!(p.exhausted);
        assert_eq!(&p.messages[1].body[..], b"{\"a\":3}");
    }
}
