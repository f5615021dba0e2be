//! Prometheus metrics of a pipeline, named as in sql-flow so that its dashboards work:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `message_count` | counter | pipeline, source | messages read (incl. redeliveries) |
//! | `error_count` | counter | pipeline, phase | failed messages: `source.decode`, `handler.invoke`, `sink.write` |
//! | `source_read_latency` | histogram (s) | pipeline, source | time to collect a batch |
//! | `batch_processing_latency` | histogram (s) | pipeline | decode + SQL + sink flush + commit of a batch |
//! | `sink_flush_latency` | histogram (s) | pipeline, sink | sink write + flush (+ commit) |
//! | `sink_flush_count` | counter | pipeline, sink | flushes |
//! | `sink_rows_written` | counter | pipeline, sink | rows the sink holds |
//! | `consumer_lag` | gauge | pipeline, stream, consumer | messages still to deliver |
//! | `committed_sequence` | gauge | pipeline, stream, consumer | highest committed stream sequence |
//! | `duplicates_dropped` | counter | pipeline | redeliveries at or below the committed sequence |
//! | `dead_letters` | counter | pipeline | dead letters published |
//! | `source_messages_expired` | counter | pipeline, stream, consumer | messages the stream's retention removed before they were read |

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Metric handles of one pipeline.
#[derive(Debug)]
pub struct FlowMetrics {
    pipeline: String,
    messages: Counter,
    read_latency: Histogram,
    batch_latency: Histogram,
    flush_latency: Histogram,
    flushes: Counter,
    rows: Counter,
    lag: Gauge,
    committed: Gauge,
    duplicates: Counter,
    dead_letters: Counter,
    expired: Counter,
}

impl FlowMetrics {
    /// Registers the metrics of pipeline `name`.
    pub fn new(name: &str, source: &str, sink: &str, stream: &str, consumer: &str) -> Self {
        let p = name.to_owned();
        let (src, snk) = (source.to_owned(), sink.to_owned());
        let (st, co) = (stream.to_owned(), consumer.to_owned());
        Self {
            messages: counter!("message_count", "pipeline" => p.clone(), "source" => src.clone()),
            read_latency: histogram!("source_read_latency", "pipeline" => p.clone(), "source" => src),
            batch_latency: histogram!("batch_processing_latency", "pipeline" => p.clone()),
            flush_latency: histogram!("sink_flush_latency", "pipeline" => p.clone(), "sink" => snk.clone()),
            flushes: counter!("sink_flush_count", "pipeline" => p.clone(), "sink" => snk.clone()),
            rows: counter!("sink_rows_written", "pipeline" => p.clone(), "sink" => snk),
            lag: gauge!("consumer_lag", "pipeline" => p.clone(), "stream" => st.clone(), "consumer" => co.clone()),
            committed: gauge!("committed_sequence", "pipeline" => p.clone(), "stream" => st.clone(), "consumer" => co.clone()),
            expired: counter!("source_messages_expired", "pipeline" => p.clone(), "stream" => st, "consumer" => co),
            duplicates: counter!("duplicates_dropped", "pipeline" => p.clone()),
            dead_letters: counter!("dead_letters", "pipeline" => p.clone()),
            pipeline: p,
        }
    }

    pub(crate) fn read(&self, n: usize, took: Duration) {
        self.messages.increment(n as u64);
        self.read_latency.record(took.as_secs_f64());
    }

    pub(crate) fn lag(&self, n: u64) {
        self.lag.set(n as f64);
    }

    pub(crate) fn committed(&self, seq: u64) {
        self.committed.set(seq as f64);
    }

    pub(crate) fn duplicates(&self, n: usize) {
        self.duplicates.increment(n as u64);
    }

    pub(crate) fn expired(&self, n: u64) {
        self.expired.increment(n);
    }

    pub(crate) fn dead_letter(&self) {
        self.dead_letters.increment(1);
    }

    pub(crate) fn error(&self, phase: &'static str, n: u64) {
        counter!("error_count", "pipeline" => self.pipeline.clone(), "phase" => phase).increment(n);
    }

    pub(crate) fn flushed(&self, rows: usize, took: Duration) {
        self.flushes.increment(1);
        self.rows.increment(rows as u64);
        self.flush_latency.record(took.as_secs_f64());
    }

    pub(crate) fn batch_done(&self, _rows: usize, took: Duration) {
        self.batch_latency.record(took.as_secs_f64());
    }
}
