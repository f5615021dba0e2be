//! The `nats` column: where each row of `batch` came from.
//!
//! Every row gets a struct column `nats` with
//! `subject VARCHAR, stream_seq UBIGINT, timestamp TIMESTAMPTZ, deliveries BIGINT,
//! headers MAP(VARCHAR, VARCHAR)` — the JetStream provenance of the message (for the `jsonl`
//! source: subject `jsonl`, stream_seq = line number, deliveries 1). SQL reads it as
//! `nats.stream_seq` or `nats.headers['Nats-Msg-Id']`. A header with several values keeps the
//! first.
//!
//! Building the column costs (the header map most: several strings per row), so it is built
//! only as far as the SQL can see it ([`MetaUse::of_sql`]): not at all when the SQL never says
//! `nats` and has no `*`; without `headers` when the SQL only reads fields like
//! `nats.stream_seq`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, MapFieldNames, StringBuilder, StructArray,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// The provenance of one message.
#[derive(Debug, Clone, Default)]
pub struct SourceMeta {
    /// Subject the message was published on.
    pub subject: String,
    /// Stream sequence (line number for `jsonl`).
    pub stream_seq: u64,
    /// Time the stream stored the message, µs since the Unix epoch.
    pub timestamp_us: i64,
    /// Delivery attempt, from 1.
    pub deliveries: i64,
    /// Message headers (each name with its first value goes into the map).
    pub headers: Option<async_nats::HeaderMap>,
}

impl SourceMeta {
    /// The provenance of a JetStream delivery; moves the subject and headers out of `d` (the
    /// delivery keeps what acking needs).
    pub fn take_from_delivery(d: &mut crate::bus::Delivery) -> Self {
        Self {
            subject: std::mem::take(&mut d.subject),
            stream_seq: d.stream_sequence,
            timestamp_us: d.published_ns / 1000,
            deliveries: d.deliveries,
            headers: d.headers.take(),
        }
    }
}

/// How much of the `nats` column a handler's SQL can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaUse {
    /// Not at all (no `nats`, no `*`).
    None,
    /// Single fields other than `headers` (`nats.stream_seq`, `nats.subject`, …).
    Fields,
    /// Everything (`headers` mentioned, `*`, or `nats` used as a whole).
    Full,
}

impl MetaUse {
    /// A conservative reading of `sql`: any doubt means [`MetaUse::Full`].
    pub fn of_sql(sql: &str) -> Self {
        let s = sql.to_ascii_lowercase();
        if s.contains('*') || s.contains("headers") {
            return MetaUse::Full;
        }
        let mut any = false;
        for (i, _) in s.match_indices("nats") {
            any = true;
            let next = s[i + 4..].trim_start().chars().next();
            if next != Some('.') {
                return MetaUse::Full; // the whole struct, or a name containing `nats`
            }
        }
        if any { MetaUse::Fields } else { MetaUse::None }
    }
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

/// The Arrow type of the `nats` column (with or without `headers`).
pub fn meta_type(with_headers: bool) -> DataType {
    DataType::Struct(meta_fields(with_headers))
}

fn meta_fields(with_headers: bool) -> Fields {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    let mut f = vec![
        Field::new("subject", DataType::Utf8, true),
        Field::new("stream_seq", DataType::UInt64, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("deliveries", DataType::Int64, true),
    ];
    if with_headers {
        f.push(Field::new(
            "headers",
            DataType::Map(Arc::new(entries), false),
            true,
        ));
    }
    f.into()
}

/// Builds the `nats` column for `metas` (one entry per row).
pub fn meta_column(metas: &[&SourceMeta], with_headers: bool) -> Result<StructArray, String> {
    let n = metas.len();
    let mut subject = StringBuilder::with_capacity(n, n * 16);
    let mut seq = UInt64Builder::with_capacity(n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut deliveries = Int64Builder::with_capacity(n);
    let mut headers = MapBuilder::new(
        Some(map_field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for m in metas {
        subject.append_value(&m.subject);
        seq.append_value(m.stream_seq);
        ts.append_value(m.timestamp_us);
        deliveries.append_value(m.deliveries);
        if !with_headers {
            continue;
        }
        if let Some(h) = &m.headers {
            for (k, vs) in h.iter() {
                if let Some(v) = vs.first() {
                    let k: &str = k.as_ref();
                    headers.keys().append_value(k);
                    headers.values().append_value(v.as_str());
                }
            }
        }
        headers
            .append(true)
            .map_err(|e| format!("building nats.headers: {e}"))?;
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(subject.finish()),
        Arc::new(seq.finish()),
        Arc::new(ts.finish()),
        Arc::new(deliveries.finish()),
    ];
    if with_headers {
        arrays.push(Arc::new(headers.finish()));
    }
    StructArray::try_new(meta_fields(with_headers), arrays, None)
        .map_err(|e| format!("building the nats column: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, MapArray, StringArray};

    #[test]
    fn builds_one_struct_per_row_with_headers() {
        let a = SourceMeta {
            subject: "lt.evt.a".into(),
            stream_seq: 7,
            timestamp_us: 1_700_000_000_000_000,
            deliveries: 2,
            headers: Some({
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", "e-1");
                h
            }),
        };
        let b = SourceMeta {
            subject: "lt.evt.b".into(),
            stream_seq: 8,
            ..Default::default()
        };
        let col = meta_column(&[&a, &b], true).unwrap();
        assert_eq!(col.len(), 2);
        assert_eq!(col.data_type(), &meta_type(true));
        let lean = meta_column(&[&a, &b], false).unwrap();
        assert!(lean.column_by_name("headers").is_none());
        let h = col.column_by_name("headers").unwrap();
        let h = h.as_any().downcast_ref::<MapArray>().unwrap();
        assert_eq!(h.value_length(0), 1);
        assert_eq!(h.value_length(1), 0);
        let keys = h.keys().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(keys.value(0), "Nats-Msg-Id");
        assert!(crate::lake::duckdb_type(&meta_type(true)).is_some());
    }

    #[test]
    fn sql_decides_how_much_of_the_column_is_built() {
        assert_eq!(MetaUse::of_sql("SELECT k FROM batch"), MetaUse::None);
        assert_eq!(
            MetaUse::of_sql("SELECT nats.stream_seq AS s FROM batch"),
            MetaUse::Fields
        );
        assert_eq!(
            MetaUse::of_sql("SELECT NATS . subject FROM batch"),
            MetaUse::Fields
        );
        assert_eq!(
            MetaUse::of_sql("SELECT nats.headers['a'] FROM batch"),
            MetaUse::Full
        );
        assert_eq!(MetaUse::of_sql("SELECT * FROM batch"), MetaUse::Full);
        assert_eq!(MetaUse::of_sql("SELECT to_json(nats) FROM batch"), MetaUse::Full);
        assert_eq!(MetaUse::of_sql("SELECT count(*) FROM batch"), MetaUse::Full);
    }
}
