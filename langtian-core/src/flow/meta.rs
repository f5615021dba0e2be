//! The `nats` column: where each row of `batch` came from.
//!
//! Every row gets a struct column `nats` with
//! `subject VARCHAR, stream_seq UBIGINT, timestamp TIMESTAMPTZ, deliveries BIGINT,
//! headers MAP(VARCHAR, VARCHAR)` — the JetStream provenance of the message (for the `jsonl`
//! source: subject `jsonl`, stream_seq = line number, deliveries 1). SQL reads it as
//! `nats.stream_seq` or `nats.headers['Nats-Msg-Id']`. A header with several values keeps the
//! first.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, MapFieldNames, StringBuilder, StructArray,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// The provenance of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMeta {
    /// Subject the message was published on.
    pub subject: String,
    /// Stream sequence (line number for `jsonl`).
    pub stream_seq: u64,
    /// Time the stream stored the message, µs since the Unix epoch.
    pub timestamp_us: i64,
    /// Delivery attempt, from 1.
    pub deliveries: i64,
    /// Message headers (name, first value).
    pub headers: Vec<(String, String)>,
}

impl SourceMeta {
    /// The provenance of a JetStream delivery.
    pub fn of_delivery(d: &crate::bus::Delivery) -> Self {
        let headers = d
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| v.first().map(|v| (k.to_string(), v.as_str().to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            subject: d.subject.clone(),
            stream_seq: d.stream_sequence,
            timestamp_us: d.published_ns / 1000,
            deliveries: d.deliveries,
            headers,
        }
    }
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

/// The Arrow type of the `nats` column.
pub fn meta_type() -> DataType {
    DataType::Struct(meta_fields())
}

fn meta_fields() -> Fields {
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
    vec![
        Field::new("subject", DataType::Utf8, true),
        Field::new("stream_seq", DataType::UInt64, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("deliveries", DataType::Int64, true),
        Field::new("headers", DataType::Map(Arc::new(entries), false), true),
    ]
    .into()
}

/// Builds the `nats` column for `metas` (one entry per row).
pub fn meta_column(metas: &[&SourceMeta]) -> Result<StructArray, String> {
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
        for (k, v) in &m.headers {
            headers.keys().append_value(k);
            headers.values().append_value(v);
        }
        headers
            .append(true)
            .map_err(|e| format!("building nats.headers: {e}"))?;
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(subject.finish()),
        Arc::new(seq.finish()),
        Arc::new(ts.finish()),
        Arc::new(deliveries.finish()),
        Arc::new(headers.finish()),
    ];
    StructArray::try_new(meta_fields(), arrays, None).map_err(|e| format!("building the nats column: {e}"))
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
            headers: vec![("Nats-Msg-Id".into(), "e-1".into())],
        };
        let b = SourceMeta {
            subject: "lt.evt.b".into(),
            stream_seq: 8,
            ..Default::default()
        };
        let col = meta_column(&[&a, &b]).unwrap();
        assert_eq!(col.len(), 2);
        assert_eq!(col.data_type(), &meta_type());
        let h = col.column_by_name("headers").unwrap();
        let h = h.as_any().downcast_ref::<MapArray>().unwrap();
        assert_eq!(h.value_length(0), 1);
        assert_eq!(h.value_length(1), 0);
        let keys = h.keys().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(keys.value(0), "Nats-Msg-Id");
        assert!(crate::lake::duckdb_type(&meta_type()).is_some());
    }
}
