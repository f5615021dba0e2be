//! JetStream's own state of its streams and durable consumers, read from the JetStream API
//! (`$JS.API.STREAM.LIST`, `$JS.API.CONSUMER.LIST.<stream>`) and rendered as Prometheus series.
//!
//! The numbers are the server's: how many messages a stream holds, what a consumer still has to
//! deliver, what waits for an ack, what was redelivered. The series are named as
//! prometheus-nats-exporter names them with `-jsz=all` (`jetstream_stream_total_messages`,
//! `jetstream_consumer_num_pending`, … with labels `stream_name` and `consumer_name`), so
//! dashboards and alerts written for it work unchanged. Ephemeral consumers (ordered consumers,
//! KV watchers) come and go with random names and are left out.
//!
//! ```no_run
//! # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::bus::BusError> {
//! use langtian_core::bus::JetStreamState;
//! let state = JetStreamState::read(&bus).await?;
//! for c in &state.consumers {
//!     println!("{}/{}: {} to deliver, {} awaiting an ack", c.stream, c.name, c.num_pending, c.num_ack_pending);
//! }
//! print!("{}", state.to_prometheus());
//! # Ok(()) }
//! ```

use std::fmt::Write as _;

use futures::TryStreamExt;

use super::Bus;
use super::error::{BusError, api};

/// One stream's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamState {
    /// The stream's name.
    pub name: String,
    /// Messages it holds.
    pub messages: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Sequence of its oldest message.
    pub first_seq: u64,
    /// Sequence of its newest message.
    pub last_seq: u64,
    /// Consumers on it (ephemeral ones included).
    pub consumers: u64,
}

/// One durable consumer's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerState {
    /// The stream it reads.
    pub stream: String,
    /// Its durable name.
    pub name: String,
    /// Messages matching its filter not yet delivered.
    pub num_pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub num_ack_pending: u64,
    /// Messages delivered more than once and not yet acknowledged.
    pub num_redelivered: u64,
    /// Pull requests waiting for messages (0 for a pull consumer: nobody is fetching).
    pub num_waiting: u64,
    /// Stream sequence of the last message delivered.
    pub delivered_stream_seq: u64,
    /// Stream sequence below which every message is acknowledged.
    pub ack_floor_stream_seq: u64,
}

/// Every stream's and durable consumer's state, sorted by name. `Display` writes it as a table
/// (what `lt streams` prints): a line per stream, its durable consumers indented under it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JetStreamState {
    /// The streams.
    pub streams: Vec<StreamState>,
    /// The durable consumers.
    pub consumers: Vec<ConsumerState>,
}

/// A series of [`JetStreamState::to_prometheus`]: its name, help text and value of one `T`.
pub type JetStreamSeries<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The stream series [`JetStreamState::to_prometheus`] writes.
pub const STREAM_SERIES: [JetStreamSeries<StreamState>; 5] = [
    (
        "jetstream_stream_total_messages",
        "Messages the stream holds",
        |s| s.messages,
    ),
    ("jetstream_stream_total_bytes", "Bytes the stream holds", |s| {
        s.bytes
    }),
    (
        "jetstream_stream_first_seq",
        "Sequence of the stream's oldest message",
        |s| s.first_seq,
    ),
    (
        "jetstream_stream_last_seq",
        "Sequence of the stream's newest message",
        |s| s.last_seq,
    ),
    (
        "jetstream_stream_consumer_count",
        "Consumers on the stream",
        |s| s.consumers,
    ),
];

/// The consumer series [`JetStreamState::to_prometheus`] writes.
pub const CONSUMER_SERIES: [JetStreamSeries<ConsumerState>; 6] = [
    (
        "jetstream_consumer_num_pending",
        "Messages not yet delivered to the consumer",
        |c| c.num_pending,
    ),
    (
        "jetstream_consumer_num_ack_pending",
        "Messages delivered and awaiting an ack",
        |c| c.num_ack_pending,
    ),
    (
        "jetstream_consumer_num_redelivered",
        "Messages redelivered and not yet acked",
        |c| c.num_redelivered,
    ),
    (
        "jetstream_consumer_num_waiting",
        "Pull requests waiting for messages",
        |c| c.num_waiting,
    ),
    (
        "jetstream_consumer_delivered_stream_seq",
        "Stream sequence of the last message delivered",
        |c| c.delivered_stream_seq,
    ),
    (
        "jetstream_consumer_ack_floor_stream_seq",
        "Stream sequence below which every message is acked",
        |c| c.ack_floor_stream_seq,
    ),
];

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl JetStreamState {
    /// Reads every stream the connection may list and the durable consumers of each: one
    /// `STREAM.LIST` page per 256 streams plus one `CONSUMER.LIST` per stream with consumers.
    pub async fn read(bus: &Bus) -> Result<Self, BusError> {
        let js = bus.jetstream();
        let infos: Vec<_> = js
            .streams()
            .try_collect()
            .await
            .map_err(|e| api("listing JetStream streams")(e.to_string()))?;
        let mut state = Self::default();
        for info in infos {
            let name = info.config.name.clone();
            let s = &info.state;
            state.streams.push(StreamState {
                name: name.clone(),
                messages: s.messages,
                bytes: s.bytes,
                first_seq: s.first_sequence,
                last_seq: s.last_sequence,
                consumers: count(s.consumer_count),
            });
            if s.consumer_count == 0 {
                continue;
            }
            let stream = js
                .get_stream_no_info(&name)
                .await
                .map_err(|e| api(format!("stream `{name}`"))(e.to_string()))?;
            let consumers: Vec<_> = stream
                .consumers()
                .try_collect()
                .await
                .map_err(|e| api(format!("listing the consumers of stream `{name}`"))(e.to_string()))?;
            for c in consumers {
                let Some(durable) = c.config.durable_name.clone() else {
                    continue;
                };
                state.consumers.push(ConsumerState {
                    stream: name.clone(),
                    name: durable,
                    num_pending: c.num_pending,
                    num_ack_pending: count(c.num_ack_pending),
                    num_redelivered: count(c.num_redelivered),
                    num_waiting: count(c.num_waiting),
                    delivered_stream_seq: c.delivered.stream_sequence,
                    ack_floor_stream_seq: c.ack_floor.stream_sequence,
                });
            }
        }
        state.streams.sort_by(|a, b| a.name.cmp(&b.name));
        state
            .consumers
            .sort_by(|a, b| (&a.stream, &a.name).cmp(&(&b.stream, &b.name)));
        Ok(state)
    }

    /// The state in Prometheus text format (gauges, one `# HELP`/`# TYPE` per series that has
    /// samples).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for (series, help, value) in STREAM_SERIES {
            let samples = self.streams.iter().map(|s| {
                let labels = format!("stream_name=\"{}\"", escape(&s.name));
                (labels, value(s))
            });
            write_gauge(&mut out, series, help, samples);
        }
        for (series, help, value) in CONSUMER_SERIES {
            let samples = self.consumers.iter().map(|c| {
                let labels = format!(
                    "stream_name=\"{}\",consumer_name=\"{}\"",
                    escape(&c.stream),
                    escape(&c.name)
                );
                (labels, value(c))
            });
            write_gauge(&mut out, series, help, samples);
        }
        out
    }
}

impl std::fmt::Display for JetStreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<24} {:>12} {:>12} {:>12} {:>12} {:>9}",
            "STREAM", "MESSAGES", "BYTES", "FIRST SEQ", "LAST SEQ", "CONSUMERS"
        )?;
        for s in &self.streams {
            writeln!(
                f,
                "{:<24} {:>12} {:>12} {:>12} {:>12} {:>9}",
                s.name,
                s.messages,
                bytes(s.bytes),
                s.first_seq,
                s.last_seq,
                s.consumers
            )?;
            for c in self.consumers.iter().filter(|c| c.stream == s.name) {
                writeln!(
                    f,
                    "  └ {}: {} to deliver · {} awaiting ack · {} redelivered · {} pull requests waiting · delivered up to {} · acked below {}",
                    c.name,
                    c.num_pending,
                    c.num_ack_pending,
                    c.num_redelivered,
                    c.num_waiting,
                    c.delivered_stream_seq,
                    c.ack_floor_stream_seq
                )?;
            }
        }
        Ok(())
    }
}

/// Bytes for people: `512 B`, `27.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One gauge's `# HELP`, `# TYPE` and samples; nothing when it has no samples.
fn write_gauge(out: &mut String, series: &str, help: &str, samples: impl Iterator<Item = (String, u64)>) {
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {series} {help}");
    let _ = writeln!(out, "# TYPE {series} gauge");
    for (labels, v) in samples {
        let _ = writeln!(out, "{series}{{{labels}}} {v}");
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JetStreamState {
        JetStreamState {
            streams: vec![StreamState {
                name: "LT_EVENTS".into(),
                messages: 7,
                bytes: 700,
                first_seq: 3,
                last_seq: 9,
                consumers: 2,
            }],
            consumers: vec![ConsumerState {
                stream: "LT_EVENTS".into(),
                name: "lake-writer".into(),
                num_pending: 4,
                num_ack_pending: 2,
                num_redelivered: 1,
                num_waiting: 0,
                delivered_stream_seq: 5,
                ack_floor_stream_seq: 3,
            }],
        }
    }

    #[test]
    fn every_field_lands_in_its_series_with_its_labels() {
        let text = sample().to_prometheus();
        for line in [
            "jetstream_stream_total_messages{stream_name=\"LT_EVENTS\"} 7",
            "jetstream_stream_total_bytes{stream_name=\"LT_EVENTS\"} 700",
            "jetstream_stream_first_seq{stream_name=\"LT_EVENTS\"} 3",
            "jetstream_stream_last_seq{stream_name=\"LT_EVENTS\"} 9",
            "jetstream_stream_consumer_count{stream_name=\"LT_EVENTS\"} 2",
            "jetstream_consumer_num_pending{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"} 4",
            "jetstream_consumer_num_ack_pending{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"} 2",
            "jetstream_consumer_num_redelivered{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"} 1",
            "jetstream_consumer_num_waiting{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"} 0",
            "jetstream_consumer_delivered_stream_seq{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"} 5",
            "jetstream_consumer_ack_floor_stream_seq{stream_name=\"LT_EVENTS\",consumer_name=\"lake-writer\"} 3",
            "# TYPE jetstream_consumer_num_pending gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 11);
    }

    #[test]
    fn no_consumers_no_consumer_series_and_nothing_at_all_when_empty() {
        let mut s = sample();
        s.consumers.clear();
        let text = s.to_prometheus();
        assert!(!text.contains("jetstream_consumer_"), "{text}");
        assert!(text.contains("jetstream_stream_total_messages"));
        assert_eq!(JetStreamState::default().to_prometheus(), "");
    }

    #[test]
    fn the_table_puts_each_consumer_under_its_stream() {
        let text = sample().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("STREAM"));
        assert!(
            lines[1].starts_with("LT_EVENTS") && lines[1].contains("700 B"),
            "{text}"
        );
        assert!(
            lines[2].contains("lake-writer: 4 to deliver · 2 awaiting ack · 1 redelivered"),
            "{text}"
        );
        assert_eq!(bytes(28_624_645), "27.3 MiB");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_series_is_in_the_field_dictionary() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dictionary = std::fs::read_to_string(root.join("../docs/metrics.md")).unwrap();
        let names = STREAM_SERIES
            .iter()
            .map(|s| s.0)
            .chain(CONSUMER_SERIES.iter().map(|s| s.0));
        for name in names {
            assert!(
                dictionary.contains(&format!("| `{name}` |")),
                "`{name}` is missing from docs/metrics.md"
            );
        }
    }
}
