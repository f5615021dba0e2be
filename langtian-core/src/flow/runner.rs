//! The pipeline loop: pull a batch → drop what the sink already has → decode and run the
//! handler's SQL → apply the error policy → write and flush the sink (for DuckLake: rows and the
//! batch's position in one transaction) → ack. Nothing is acked before the sink has every row; a
//! crash before that leaves the messages unacked (redelivered), a crash after it leaves them
//! acked or dropped on redelivery.
//!
//! A partial batch runs when `flush_interval_seconds` have passed since its first message. On
//! shutdown the batch being collected is processed at once (drain); [`drain_within`] bounds how
//! long that may take.
//!
//! Error policies: RAISE (stop, ack nothing), IGNORE (count, ack), DLQ (dead letter to a `nats`
//! dlq sink with the error, phase, time and NATS provenance, then ack).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use tokio::sync::watch;

use super::config::{PayloadFormat, PipelineFile, Policy};
use super::handler::{BatchHandler, HandlerError};
use super::metrics::FlowMetrics;
use super::sink::{Sink, SinkError};
use super::source::{Pulled, Source, SourceError, SourceMessage};
use crate::bus::{
    Bus, BusError, BusOptions, DeadLetter, OutgoingMessage, Publisher, PublisherConfig, Qos, dlq_headers,
};
use crate::envelope::Envelope;
use crate::lake::OffsetRecord;

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration that cannot run.
    #[error("pipeline configuration: {0}")]
    Config(String),
    /// NATS.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The source.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sink (nothing of the batch was acknowledged).
    #[error(transparent)]
    Sink(#[from] SinkError),
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
        /// source.decode | handler.invoke.
        phase: &'static str,
        /// The error.
        error: String,
    },
    /// Shutdown did not finish within the drain deadline.
    #[error(
        "drain incomplete: the batch in progress did not finish within {0:?}; it was not acknowledged and will be redelivered"
    )]
    DrainTimeout(Duration),
    /// The final acks could not be flushed to the server (they are redelivered and dropped as
    /// duplicates on the next start).
    #[error("flushing the last acks to NATS: {0}")]
    AckFlush(String),
    /// The pipeline task panicked or was cancelled.
    #[error("pipeline task ended abnormally: {0}")]
    Task(String),
}

impl RunError {
    /// Process exit code (sql-flow's taxonomy): 10 configuration, 12 sink, 15 drain incomplete,
    /// 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) | RunError::Handler(HandlerError::Config(_)) => 10,
            RunError::Sink(SinkError::Config(_)) => 10,
            RunError::Sink(_) => 12,
            RunError::DrainTimeout(_) => 15,
            _ => 1,
        }
    }
}

/// Live counters of a running pipeline (the same figures are exported as Prometheus metrics).
#[derive(Debug, Default)]
pub struct RunStats {
    /// Messages received (including redeliveries).
    pub messages: AtomicU64,
    /// Rows written to the sink.
    pub rows_out: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Redelivered messages dropped because the sink already had them.
    pub duplicates_dropped: AtomicU64,
    /// Errors by any phase.
    pub errors: AtomicU64,
    /// Dead letters published.
    pub dead_letters: AtomicU64,
    /// Highest committed stream sequence.
    pub committed_seq: AtomicU64,
    /// Messages the source still has to deliver (JetStream pending), at the last batch.
    pub lag: AtomicU64,
    /// Messages the stream's retention removed after the committed position before they were
    /// read (seen when the pipeline starts).
    pub expired: AtomicU64,
    /// 1 while the loop is running (for `/healthz`).
    pub running: AtomicU64,
}

/// How long the source waits for a first message before the loop checks for shutdown again.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs `file`'s pipeline until `shutdown` turns true (the batch being collected is processed
/// first) or, for a `jsonl` source, until the file is consumed.
pub async fn run_pipeline(
    file: PipelineFile,
    stats: Arc<RunStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let p = &file.pipeline;
    let (mut source, consumer, partition, payload_fmt) = match p.source.kind.as_str() {
        "nats" => {
            let n = p
                .source
                .nats
                .as_ref()
                .ok_or_else(|| RunError::Config("source type nats needs a `nats:` block".into()))?;
            (
                Source::nats(n, p).await?,
                n.consumer.clone(),
                n.partition,
                n.payload,
            )
        }
        "jsonl" => {
            let j = p
                .source
                .jsonl
                .as_ref()
                .ok_or_else(|| RunError::Config("source type jsonl needs a `jsonl:` block".into()))?;
            (
                Source::jsonl(&j.path)?,
                p.name.clone().unwrap_or_else(|| "jsonl".into()),
                0,
                PayloadFormat::Raw,
            )
        }
        other => {
            return Err(RunError::Config(format!(
                "source type `{other}` is not supported (supported: nats, jsonl)"
            )));
        }
    };
    let name = p.name.clone().unwrap_or_else(|| consumer.clone());
    let stream = source.stream_name().to_owned();
    let metrics = FlowMetrics::new(&name, &p.source.kind, &p.sink.kind, &stream, &consumer);
    let dlq = open_dlq(&file, source.bus()).await?;
    let mut handler = BatchHandler::new(&p.handler, &file.commands)?;
    let mut sink = Sink::open(&file, source.bus()).await?;
    let mut committed = sink
        .committed_position(&stream, &consumer, partition)?
        .unwrap_or(0);
    if sink.stores_positions() {
        // Resume in stream order right after what the sink holds. Without this, messages a
        // crashed run had taken (ack pending) come back only after ack_wait — after newer ones
        // were committed — and would look like duplicates of the newer position.
        let expired = source.resume_after(committed).await?;
        if expired > 0 {
            stats.expired.fetch_add(expired, Ordering::Relaxed);
            metrics.expired(expired);
            tracing::warn!(
                code = "source_messages_expired",
                stream = %stream,
                consumer = %consumer,
                committed,
                lost = expired,
                "the stream no longer holds messages after the committed position: its retention removed them before they were read"
            );
        }
    }
    stats.committed_seq.store(committed, Ordering::Relaxed);
    metrics.committed(committed);
    stats.running.store(1, Ordering::Relaxed);
    let span = tracing::info_span!("pipeline", name = %name, stream = %stream, consumer = %consumer);
    async {
        tracing::info!(committed, sink = sink.kind(), "pipeline started");
        let ctx = Ctx {
            policy: p.on_error.policy,
            dlq,
            stats: &stats,
            metrics: &metrics,
            pipeline: name.clone(),
            stream: stream.clone(),
        };
        // The source runs in its own task, one batch ahead: while batch N is decoded, run through
        // SQL and committed, batch N+1 is being pulled. Acks of N are sent while N+1 is processed.
        // Order per batch is unchanged (commit, then ack); a prefetched batch is only delivered,
        // never acked, until its own commit.
        let (batch_tx, mut batch_rx) =
            tokio::sync::mpsc::channel::<Result<(Pulled, Duration), SourceError>>(1);
        let (batch_size, linger) = (p.batch_size, p.flush_interval());
        let source_bus = source.bus().cloned();
        let keep_headers = super::meta::MetaUse::of_sql(&p.handler.sql) == super::meta::MetaUse::Full
            || p.on_error.policy == Policy::DLQ;
        let mut stop = shutdown.clone();
        let puller = tokio::spawn(async move {
            while !*stop.borrow() {
                // Pull only when the processor has taken the previous batch: at most one batch
                // waits while another is processed (bounded memory).
                let Ok(permit) = batch_tx.reserve().await else {
                    break;
                };
                let t0 = Instant::now();
                match source.pull(batch_size, IDLE_POLL, linger, &mut stop).await {
                    Ok(mut pulled) => {
                        if !keep_headers {
                            // Neither the SQL nor a dead letter can use them: free them now.
                            pulled.messages.iter_mut().for_each(|m| m.meta.headers = None);
                        }
                        let exhausted = pulled.exhausted;
                        if !pulled.is_empty() {
                            permit.send(Ok((pulled, t0.elapsed())));
                        }
                        if exhausted {
                            break;
                        }
                    }
                    Err(e) => {
                        permit.send(Err(e));
                        break;
                    }
                }
            }
        });
        let result = async {
            let mut pending_ack: Option<tokio::task::JoinHandle<Result<(), SourceError>>> = None;
            while let Some(item) = batch_rx.recv().await {
                let (mut pulled, read_took) = item?;
                if let Some(lag) = pulled.lag {
                    stats.lag.store(lag, Ordering::Relaxed);
                    metrics.lag(lag);
                }
                metrics.read(pulled.len(), read_took);
                stats.messages.fetch_add(pulled.len() as u64, Ordering::Relaxed);
                // Redeliveries of what the sink already holds: ack and drop.
                let old = pulled.split_committed(committed);
                if !old.is_empty() {
                    stats
                        .duplicates_dropped
                        .fetch_add(old.len() as u64, Ordering::Relaxed);
                    metrics.duplicates(old.len());
                    old.ack().await?;
                }
                if pulled.is_empty() {
                    continue;
                }
                let started = Instant::now();
                let first_seq = pulled.messages.first().map(|m| m.meta.stream_seq).unwrap_or(0);
                let last_seq = pulled.messages.last().map(|m| m.meta.stream_seq).unwrap_or(0);
                // Keep the batch alive while the handler and the commit run.
                let ticker = progress_ticker(&pulled, source_ack_wait(&file));
                let outcome = run_batch(
                    &ctx,
                    &mut handler,
                    &mut sink,
                    &pulled.messages,
                    payload_fmt,
                    OffsetRecord::new(&stream, &consumer, partition, first_seq, last_seq),
                )
                .await;
                ticker.abort();
                // On error nothing was committed and nothing is acked: the server redelivers.
                let rows = outcome?;
                if let Some(h) = pending_ack.take() {
                    h.await.map_err(|e| RunError::Task(e.to_string()))??;
                }
                pending_ack = Some(tokio::spawn(pulled.ack()));
                committed = committed.max(last_seq);
                stats.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.committed_seq.store(committed, Ordering::Relaxed);
                metrics.batch_done(rows, started.elapsed());
                metrics.committed(committed);
                tracing::debug!(
                    first_seq,
                    last_seq,
                    rows,
                    read_ms = read_took.as_millis() as u64,
                    process_ms = started.elapsed().as_millis() as u64,
                    "batch committed"
                );
            }
            if let Some(h) = pending_ack.take() {
                h.await.map_err(|e| RunError::Task(e.to_string()))??;
            }
            // Acks are fire-and-forget publishes: make sure the server has them before we return.
            if let Some(b) = &source_bus {
                b.client()
                    .flush()
                    .await
                    .map_err(|e| RunError::AckFlush(e.to_string()))?;
            }
            Ok(())
        }
        .await;
        drop(batch_rx);
        if result.is_err() {
            puller.abort();
        }
        let _ = puller.await;
        stats.running.store(0, Ordering::Relaxed);
        match &result {
            Ok(()) => tracing::info!(committed, "pipeline drained and stopped"),
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(code = "pipeline_stopped", committed, error = %e, "pipeline stopped");
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Waits for a pipeline task after shutdown was signalled; gives up after `deadline` (the batch
/// in progress is then abandoned unacknowledged and will be redelivered).
pub async fn drain_within(
    task: &mut tokio::task::JoinHandle<Result<(), RunError>>,
    deadline: Duration,
) -> Result<(), RunError> {
    match tokio::time::timeout(deadline, &mut *task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(RunError::Task(e.to_string())),
        Err(_) => {
            task.abort();
            Err(RunError::DrainTimeout(deadline))
        }
    }
}

fn source_ack_wait(file: &PipelineFile) -> Duration {
    file.pipeline
        .source
        .nats
        .as_ref()
        .map(|n| n.ack_wait)
        .unwrap_or(Duration::from_secs(60))
}

struct Dlq {
    subject: String,
    publisher: Publisher,
}

async fn open_dlq(file: &PipelineFile, bus: Option<&Bus>) -> Result<Option<Dlq>, RunError> {
    let p = &file.pipeline;
    if p.on_error.policy != Policy::DLQ {
        return Ok(None);
    }
    let name = p.name.clone().unwrap_or_else(|| "pipeline".into());
    let (subject, servers) = match &p.on_error.dlq {
        Some(d) if d.kind == "nats" => match &d.nats {
            Some(n) => (n.subject.clone(), n.servers.clone()),
            None => return Err(RunError::Config("on_error.dlq needs a `nats:` block".into())),
        },
        Some(_) => return Err(RunError::Config("on_error.dlq must be a `nats` sink".into())),
        None => (format!("lt.dlq.{name}"), Vec::new()),
    };
    let bus = match (servers.is_empty(), bus) {
        (true, Some(b)) => b.clone(),
        (true, None) => {
            return Err(RunError::Config(
                "on_error.dlq.nats.servers is required when the source is not nats".into(),
            ));
        }
        (false, _) => {
            let mut o = BusOptions::new(&servers.join(","));
            o.name = Some(format!("lt-flow-dlq:{name}"));
            Bus::connect(&o).await?
        }
    };
    Ok(Some(Dlq {
        subject,
        publisher: Publisher::new(bus, PublisherConfig::new(Qos::AtLeastOnce)),
    }))
}

/// Decode → handler → failure policy → sink write and flush, for one batch. Returns the rows
/// written.
async fn run_batch(
    ctx: &Ctx<'_>,
    handler: &mut BatchHandler,
    sink: &mut Sink,
    msgs: &[SourceMessage],
    payload_fmt: PayloadFormat,
    offsets: OffsetRecord,
) -> Result<usize, RunError> {
    let mut payloads: Vec<Bytes> = Vec::with_capacity(msgs.len());
    let mut metas = Vec::with_capacity(msgs.len());
    let mut rows_of: Vec<usize> = Vec::with_capacity(msgs.len());
    let mut failed: Vec<(usize, &'static str, String)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let body = match payload_fmt {
            PayloadFormat::Raw => Ok(m.body.clone()),
            PayloadFormat::Envelope => Envelope::decode(&m.body)
                .map(|e| e.payload().clone())
                .map_err(|e| e.to_string()),
        };
        match body {
            Ok(b) => {
                rows_of.push(i);
                payloads.push(b);
                metas.push(&m.meta);
            }
            Err(e) => failed.push((i, "source.decode", e)),
        }
    }
    let th = Instant::now();
    let inv = tokio::task::block_in_place(|| handler.invoke_with_meta(&payloads, Some(&metas)));
    let handler_took = th.elapsed();
    let batches: Vec<RecordBatch> = match inv {
        Ok(inv) => {
            for (i, why) in &inv.rejected {
                failed.push((rows_of[*i], "source.decode", why.clone()));
            }
            inv.batches
        }
        Err(e) => {
            // The SQL failed on the whole batch: every message of it failed in the handler.
            for i in &rows_of {
                failed.push((*i, "handler.invoke", e.to_string()));
            }
            Vec::new()
        }
    };
    // Policies are applied before anything is committed: RAISE stops here with nothing written.
    if !failed.is_empty() {
        ctx.handle_failures(msgs, &failed).await?;
    }
    let t = Instant::now();
    match sink.write(&batches, &offsets).await {
        Ok(rows) => {
            ctx.metrics.flushed(rows, t.elapsed());
            tracing::debug!(
                handler_ms = handler_took.as_millis() as u64,
                sink_ms = t.elapsed().as_millis() as u64,
                "batch written"
            );
            Ok(rows)
        }
        Err(e) => {
            ctx.metrics.error("sink.write", 1);
            Err(e.into())
        }
    }
}

struct Ctx<'a> {
    policy: Policy,
    dlq: Option<Dlq>,
    stats: &'a RunStats,
    metrics: &'a FlowMetrics,
    pipeline: String,
    stream: String,
}

impl Ctx<'_> {
    async fn handle_failures(
        &self,
        msgs: &[SourceMessage],
        failed: &[(usize, &'static str, String)],
    ) -> Result<(), RunError> {
        self.stats
            .errors
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        for (_, phase, _) in failed {
            self.metrics.error(phase, 1);
        }
        for (i, phase, error) in failed {
            let Some(m) = msgs.get(*i) else { continue };
            match (self.policy, &self.dlq) {
                (Policy::RAISE, _) => {
                    return Err(RunError::Raise {
                        seq: m.meta.stream_seq,
                        subject: m.meta.subject.clone(),
                        phase,
                        error: error.clone(),
                    });
                }
                (Policy::IGNORE, _) | (Policy::DLQ, None) => {
                    tracing::warn!(code = "message_ignored", seq = m.meta.stream_seq, phase, %error, "ignored a failed message");
                }
                (Policy::DLQ, Some(dlq)) => {
                    self.dead_letter(dlq, m, phase, error).await?;
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        dlq: &Dlq,
        m: &SourceMessage,
        phase: &str,
        error: &str,
    ) -> Result<(), RunError> {
        let stream = self.stream.clone();
        let letter = DeadLetter {
            stream: stream.clone(),
            consumer: self.pipeline.clone(),
            subject: m.meta.subject.clone(),
            stream_seq: m.meta.stream_seq,
            deliveries: m.meta.deliveries.max(0) as u64,
            reason: format!("{phase}: {error}"),
            payload: m.body.clone(),
            original_missing: false,
        };
        let mut h = dlq_headers(m.meta.headers.as_ref(), &letter);
        h.insert("Lt-Dlq-Error", error);
        h.insert("Lt-Dlq-Phase", phase);
        h.insert(
            "Lt-Dlq-Timestamp",
            crate::envelope::now_nanos().to_string().as_str(),
        );
        let msg = OutgoingMessage::new(dlq.subject.clone(), m.body.clone())
            .with_headers(h)
            .with_msg_id(format!(
                "flow-dlq:{}:{}:{}",
                stream, self.pipeline, m.meta.stream_seq
            ));
        dlq.publisher.publish(msg).await?;
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.metrics.dead_letter();
        Ok(())
    }
}

fn progress_ticker(pulled: &Pulled, ack_wait: Duration) -> tokio::task::JoinHandle<()> {
    let msgs = pulled.deliveries().clone();
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        if msgs.is_empty() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            for m in msgs.iter() {
                let _ = m.progress().await;
            }
        }
    })
}
