//! The pipeline loop: pull a batch from JetStream → drop what the lake already has → decode and run
//! the handler's SQL → write the rows and the batch's position to the sink in one transaction →
//! ack. Nothing is acked before the sink has committed; a crash anywhere before the commit leaves
//! the messages unacked (redelivered), a crash after it leaves them acked-or-dropped on redelivery.
//!
//! Implemented sinks: `ducklake` (exactly once), `console`, `noop`. Sources: `nats`.
//! Error policies: RAISE (stop, ack nothing), IGNORE (count, ack), DLQ (dead letter to a `nats`
//! dlq sink, then ack).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use tokio::sync::watch;

use super::config::{DeliverPolicy, PayloadFormat, PipelineFile, Policy};
use super::handler::{BatchHandler, HandlerError};
use crate::bus::{
    Batch, Bus, BusError, BusOptions, Consumer, ConsumerSpec, DeadLetter, Delivery, OutgoingMessage,
    Publisher, PublisherConfig, Qos, dlq_headers, ensure_consumer,
};
use crate::envelope::Envelope;
use crate::lake::{
    Catalog, DataPath, Lake, LakeConfig, LakeError, MaintenanceOptions, MaintenanceSchedule, OffsetRecord, S3,
};

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration that cannot run.
    #[error("pipeline configuration: {0}")]
    Config(String),
    /// NATS.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The lake.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The handler (policy RAISE).
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// A message failed under policy RAISE.
    #[error(
        "message stream seq {seq} on `{subject}` failed in {phase}: {error} (policy RAISE: stopping without ack)"
    )]
    Raise {
        /// Stream sequence.
        seq: u64,
        /// Subject.
        subject: String,
        /// decode | handler | sink.
        phase: &'static str,
        /// The error.
        error: String,
    },
}

/// Live counters of a running pipeline.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Messages received (including redeliveries).
    pub messages: AtomicU64,
    /// Rows written to the sink.
    pub rows_out: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Redelivered messages dropped because the lake already had them.
    pub duplicates_dropped: AtomicU64,
    /// Errors by any phase.
    pub errors: AtomicU64,
    /// Dead letters published.
    pub dead_letters: AtomicU64,
    /// Highest committed stream sequence.
    pub committed_seq: AtomicU64,
}

enum SinkImpl {
    Lake {
        lake: Box<Lake>,
        table: String,
        schedule: MaintenanceSchedule,
    },
    Console,
    Noop,
}

fn parse_catalog(s: &str) -> Catalog {
    if let Some(rest) = s.strip_prefix("postgres:") {
        Catalog::Postgres(rest.to_owned())
    } else if let Some(rest) = s.strip_prefix("sqlite:") {
        Catalog::Sqlite(PathBuf::from(rest))
    } else {
        Catalog::DuckDb(PathBuf::from(s.strip_prefix("ducklake:").unwrap_or(s)))
    }
}

fn open_sink(p: &PipelineFile) -> Result<SinkImpl, RunError> {
    let s = &p.pipeline.sink;
    match s.kind.as_str() {
        "ducklake" => {
            let d = s
                .ducklake
                .as_ref()
                .ok_or_else(|| RunError::Config("sink.ducklake missing".into()))?;
            let data_path = if d.data_path.starts_with("s3://") {
                let c = d.s3.as_ref().ok_or_else(|| {
                    RunError::Config("sink.ducklake.s3 credentials needed for an s3:// data_path".into())
                })?;
                DataPath::S3(S3 {
                    url: d.data_path.clone(),
                    key_id: c.key_id.clone(),
                    secret: c.secret.clone(),
                    region: c.region.clone(),
                    endpoint: c.endpoint.clone(),
                    url_style: c.url_style.clone(),
                    use_ssl: c.use_ssl,
                })
            } else {
                DataPath::Local(PathBuf::from(&d.data_path))
            };
            let lake = Lake::open(LakeConfig::new(parse_catalog(&d.catalog), data_path))?;
            Ok(SinkImpl::Lake {
                lake: Box::new(lake),
                table: d.table.clone(),
                schedule: MaintenanceSchedule::new(d.maintenance_interval, MaintenanceOptions::default()),
            })
        }
        "console" => Ok(SinkImpl::Console),
        "noop" => Ok(SinkImpl::Noop),
        other => Err(RunError::Config(format!(
            "sink type `{other}` is not implemented by the runner yet (implemented: ducklake, console, noop)"
        ))),
    }
}

/// Rows as JSON lines.
pub fn json_lines(batches: &[RecordBatch]) -> Result<Vec<String>, String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
        for b in batches {
            w.write(b).map_err(|e| e.to_string())?;
        }
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(String::from_utf8_lossy(&buf).lines().map(str::to_owned).collect())
}

fn meta_of(d: &Delivery) -> serde_json::Value {
    serde_json::json!({
        "subject": d.subject,
        "stream_seq": d.stream_sequence,
        "timestamp": d.published_ns / 1000,
        "deliveries": d.deliveries,
    })
}

/// Runs `file`'s pipeline until `shutdown` turns true (a batch in progress is finished first).
pub async fn run_pipeline(
    file: PipelineFile,
    stats: Arc<RunStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let p = &file.pipeline;
    let n = p.source.nats.clone().ok_or_else(|| {
        RunError::Config("the runner needs a `nats` source (use `lt flow invoke` for jsonl)".into())
    })?;
    let mut opts = BusOptions::new(&n.servers.join(","));
    opts.name = Some(format!("lt-flow:{}", p.name.clone().unwrap_or_default()));
    opts.creds_file = n.creds_file.clone();
    opts.token = n.token.clone();
    opts.user = n.user.clone();
    opts.password = n.password.clone();
    opts.nkey_seed = n.nkey_seed.clone();
    if let Some(ca) = &n.tls_ca {
        opts.tls.ca_file = Some(ca.clone());
        opts.tls.required = true;
    }
    let bus = Bus::connect(&opts).await?;
    let mut spec = ConsumerSpec::new(n.stream.clone(), n.consumer.clone());
    spec.filter_subjects = n.filter_subjects.clone();
    spec.ack_wait = n.ack_wait;
    spec.max_deliver = n.max_deliver;
    spec.fetch_batch = n.fetch.batch.unwrap_or(p.batch_size.min(1000)).max(1);
    spec.max_ack_pending = n
        .max_ack_pending
        .unwrap_or((p.batch_size as i64 * 2).max(spec.fetch_batch as i64));
    spec.deliver_new = matches!(n.deliver_policy, DeliverPolicy::New);
    if n.create_consumer {
        ensure_consumer(&bus, &spec).await?;
    }
    let mut consumer = Consumer::bind(&bus, spec).await?;
    let dlq_subject = match (&p.on_error.policy, &p.on_error.dlq) {
        (Policy::DLQ, Some(d)) if d.kind == "nats" => d.nats.as_ref().map(|n| n.subject.clone()),
        (Policy::DLQ, _) => return Err(RunError::Config("on_error.dlq must be a `nats` sink".into())),
        _ => None,
    };
    let dlq_pub = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));

    let mut handler = BatchHandler::new(&p.handler, &file.commands)?;
    let mut sink = open_sink(&file)?;
    let mut committed = match &sink {
        SinkImpl::Lake { lake, .. } => lake
            .committed_position(&n.stream, &n.consumer, n.partition)?
            .unwrap_or(0),
        _ => 0,
    };
    stats.committed_seq.store(committed, Ordering::Relaxed);
    if matches!(sink, SinkImpl::Lake { .. }) {
        // Resume in stream order right after what the lake holds. Without this, messages a
        // crashed run had taken (ack pending) come back only after ack_wait — after newer ones
        // were committed — and would look like duplicates of the newer position.
        let next = (committed > 0).then_some(committed + 1);
        if let Err(e) = consumer.reset(next).await {
            if matches!(n.deliver_policy, DeliverPolicy::All) {
                return Err(e.into());
            }
            tracing::warn!(error = %e, "could not reset the consumer (deliver_policy is not `all`); redeliveries after a crash may arrive out of order");
        }
    }
    tracing::info!(stream = %n.stream, consumer = %n.consumer, committed, "pipeline started");

    let ctx = Ctx {
        policy: p.on_error.policy,
        dlq_subject,
        dlq_pub: &dlq_pub,
        stats: &stats,
        pipeline: p.name.clone().unwrap_or_else(|| n.consumer.clone()),
    };
    while !*shutdown.borrow() {
        let batch = consumer.next_batch(p.batch_size, p.flush_interval()).await?;
        if batch.is_empty() {
            if shutdown.has_changed().unwrap_or(true) && *shutdown.borrow_and_update() {
                break;
            }
            continue;
        }
        stats.messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Redeliveries of what the lake already holds: ack and drop.
        let (old, fresh): (Vec<Delivery>, Vec<Delivery>) = batch
            .messages
            .into_iter()
            .partition(|d| d.stream_sequence <= committed);
        if !old.is_empty() {
            stats
                .duplicates_dropped
                .fetch_add(old.len() as u64, Ordering::Relaxed);
            Batch { messages: old }.ack_all().await?;
        }
        if fresh.is_empty() {
            continue;
        }
        let first_seq = fresh.first().map(|d| d.stream_sequence).unwrap_or(0);
        let last_seq = fresh.last().map(|d| d.stream_sequence).unwrap_or(0);

        // Decode envelopes.
        let mut payloads: Vec<Bytes> = Vec::with_capacity(fresh.len());
        let mut metas = Vec::with_capacity(fresh.len());
        let mut rows_of: Vec<usize> = Vec::with_capacity(fresh.len());
        let mut failed: Vec<(usize, &'static str, String)> = Vec::new();
        for (i, d) in fresh.iter().enumerate() {
            let body = match n.payload {
                PayloadFormat::Raw => Ok(d.payload.clone()),
                PayloadFormat::Envelope => Envelope::decode(&d.payload)
                    .map(|e| e.payload().clone())
                    .map_err(|e| e.to_string()),
            };
            match body {
                Ok(b) => {
                    rows_of.push(i);
                    payloads.push(b);
                    metas.push(meta_of(d));
                }
                Err(e) => failed.push((i, "decode", e)),
            }
        }
        // Keep the batch alive while the handler and the commit run.
        let ticker = progress_ticker(&fresh, n.ack_wait);
        let outcome = run_batch(
            &ctx,
            &mut handler,
            &mut sink,
            &fresh,
            &payloads,
            &metas,
            &rows_of,
            failed,
            OffsetRecord::new(&n.stream, &n.consumer, n.partition, first_seq, last_seq),
        )
        .await;
        ticker.abort();
        let rows = match outcome {
            Ok(rows) => rows,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                // Nothing was committed and nothing is acked: the server redelivers after ack_wait.
                return Err(e);
            }
        };
        Batch { messages: fresh }.ack_all().await?;
        committed = committed.max(last_seq);
        stats.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.committed_seq.store(committed, Ordering::Relaxed);
    }
    tracing::info!(committed, "pipeline drained and stopped");
    Ok(())
}

/// Handler → failure policy → sink commit, for one batch. Returns the rows written.
#[allow(clippy::too_many_arguments)]
async fn run_batch(
    ctx: &Ctx<'_>,
    handler: &mut BatchHandler,
    sink: &mut SinkImpl,
    fresh: &[Delivery],
    payloads: &[Bytes],
    metas: &[serde_json::Value],
    rows_of: &[usize],
    mut failed: Vec<(usize, &'static str, String)>,
    offsets: OffsetRecord,
) -> Result<usize, RunError> {
    let inv = tokio::task::block_in_place(|| handler.invoke_with_meta(payloads, Some(metas)));
    let batches = match inv {
        Ok(inv) => {
            for (i, why) in &inv.rejected {
                failed.push((rows_of[*i], "decode", why.clone()));
            }
            inv.batches
        }
        Err(e) => {
            // The SQL failed on the whole batch: every message of it failed in the handler.
            for i in rows_of {
                failed.push((*i, "handler", e.to_string()));
            }
            Vec::new()
        }
    };
    // Policies are applied before anything is committed: RAISE stops here with nothing written.
    if !failed.is_empty() {
        ctx.handle_failures(fresh, &failed).await?;
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    tokio::task::block_in_place(|| -> Result<(), RunError> {
        match sink {
            SinkImpl::Lake {
                lake,
                table,
                schedule,
            } => {
                if rows > 0 {
                    if let Some(b) = batches.first() {
                        lake.ensure_table(table, &b.schema())?;
                    }
                    lake.write_batch(table, &batches, &offsets)?;
                } else {
                    lake.write_offsets_only(&offsets)?;
                }
                if let Some(r) = lake.maintain_if_due(schedule)? {
                    tracing::info!(?r, "lake maintenance");
                }
            }
            SinkImpl::Console => {
                for line in json_lines(&batches).map_err(RunError::Config)? {
                    println!("{line}");
                }
            }
            SinkImpl::Noop => {}
        }
        Ok(())
    })?;
    Ok(rows)
}

struct Ctx<'a> {
    policy: Policy,
    dlq_subject: Option<String>,
    dlq_pub: &'a Publisher,
    stats: &'a RunStats,
    pipeline: String,
}

impl Ctx<'_> {
    async fn handle_failures(
        &self,
        msgs: &[Delivery],
        failed: &[(usize, &'static str, String)],
    ) -> Result<(), RunError> {
        self.stats
            .errors
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        for (i, phase, error) in failed {
            let Some(d) = msgs.get(*i) else { continue };
            match self.policy {
                Policy::RAISE => {
                    return Err(RunError::Raise {
                        seq: d.stream_sequence,
                        subject: d.subject.clone(),
                        phase,
                        error: error.clone(),
                    });
                }
                Policy::IGNORE => {
                    tracing::warn!(seq = d.stream_sequence, phase, %error, "ignored a failed message");
                }
                Policy::DLQ => {
                    let subject = self
                        .dlq_subject
                        .clone()
                        .unwrap_or_else(|| format!("lt.dlq.{}", self.pipeline));
                    let letter = DeadLetter {
                        stream: d.stream.clone(),
                        consumer: self.pipeline.clone(),
                        subject: d.subject.clone(),
                        stream_seq: d.stream_sequence,
                        deliveries: d.deliveries.max(0) as u64,
                        reason: format!("{phase}: {error}"),
                        payload: d.payload.clone(),
                        original_missing: false,
                    };
                    let mut h = dlq_headers(d.headers.as_ref(), &letter);
                    h.insert("Lt-Dlq-Error", error.as_str());
                    h.insert("Lt-Dlq-Phase", *phase);
                    h.insert(
                        "Lt-Dlq-Timestamp",
                        crate::envelope::now_nanos().to_string().as_str(),
                    );
                    let msg = OutgoingMessage::new(subject, d.payload.clone())
                        .with_headers(h)
                        .with_msg_id(format!(
                            "flow-dlq:{}:{}:{}",
                            d.stream, self.pipeline, d.stream_sequence
                        ));
                    self.dlq_pub.publish(msg).await?;
                    self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

fn progress_ticker(msgs: &[Delivery], ack_wait: Duration) -> tokio::task::JoinHandle<()> {
    let msgs: Vec<Delivery> = msgs.to_vec();
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            for m in &msgs {
                let _ = m.progress().await;
            }
        }
    })
}
