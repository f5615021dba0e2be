//! Tables for the UI: an Arrow table published as one IPC stream on `lt.analysis.<name>`, where
//! the web UI's analysis view (and any subscriber) picks it up.
//!
//! ```no_run
//! # async fn demo(bus: langtian_core::bus::Bus, r: langtian_core::query::QueryResult) -> Result<(), langtian_core::query::FrameError> {
//! use langtian_core::query::publish_frame;
//! let sent = publish_frame(&bus, "capacity_fade", &r.schema, &r.batches).await?;
//! println!("{} rows, {} bytes on {}", sent.rows, sent.bytes, sent.subject);
//! # Ok(()) }
//! ```

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::bus::Bus;

/// Prefix of the subjects tables are published on.
pub const ANALYSIS_PREFIX: &str = "lt.analysis";

/// Why a table was not published.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The name cannot be one subject token.
    #[error("bad table name `{name}`: use 1–64 of A–Z a–z 0–9 _ - (it becomes lt.analysis.<name>)")]
    BadName {
        /// The name given.
        name: String,
    },
    /// Larger than the server accepts in one message.
    #[error(
        "table `{name}` is {bytes} bytes as Arrow IPC; the NATS server takes at most {max} per message (select fewer rows or columns)"
    )]
    TooLarge {
        /// The table's name.
        name: String,
        /// Its encoded size.
        bytes: usize,
        /// The server's max_payload.
        max: usize,
    },
    /// Arrow could not encode it, or the bytes given are not an Arrow IPC stream.
    #[error("table `{name}` as Arrow IPC: {source}")]
    Encode {
        /// The table's name.
        name: String,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
    /// NATS refused or the connection failed.
    #[error("publishing table `{name}` on {subject}: {message}")]
    Publish {
        /// The table's name.
        name: String,
        /// The subject.
        subject: String,
        /// What failed.
        message: String,
    },
}

/// What [`publish_frame`] sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedFrame {
    /// `lt.analysis.<name>`.
    pub subject: String,
    /// Rows in the table.
    pub rows: usize,
    /// Bytes of Arrow IPC.
    pub bytes: usize,
}

/// The subject a table named `name` goes to, after checking the name.
pub fn analysis_subject(name: &str) -> Result<String, FrameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(format!("{ANALYSIS_PREFIX}.{name}"))
    } else {
        Err(FrameError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Encodes `batches` as one Arrow IPC stream (schema first, then the batches).
pub fn encode_ipc(name: &str, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, FrameError> {
    let fail = |source| FrameError::Encode {
        name: name.to_owned(),
        source,
    };
    let mut w = StreamWriter::try_new(Vec::new(), schema).map_err(fail)?;
    for b in batches {
        w.write(b).map_err(fail)?;
    }
    w.finish().map_err(fail)?;
    w.into_inner().map_err(fail)
}

/// Publishes a table on `lt.analysis.<name>` (core NATS: subscribers that are listening get it;
/// the UI's feed worker keeps the latest per name for the tabs it serves).
pub async fn publish_frame(
    bus: &Bus,
    name: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<PublishedFrame, FrameError> {
    analysis_subject(name)?;
    let bytes = encode_ipc(name, schema, batches)?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    publish_frame_ipc(bus, name, bytes.into(), Some(rows)).await
}

/// Publishes a table that is already an Arrow IPC stream (e.g. from pyarrow). The stream is
/// checked to start with a schema; `rows` is reported back as given (counted when `None`).
pub async fn publish_frame_ipc(
    bus: &Bus,
    name: &str,
    ipc: bytes::Bytes,
    rows: Option<usize>,
) -> Result<PublishedFrame, FrameError> {
    let subject = analysis_subject(name)?;
    let reader = StreamReader::try_new(std::io::Cursor::new(ipc.as_ref()), None).map_err(|source| {
        FrameError::Encode {
            name: name.to_owned(),
            source,
        }
    })?;
    let rows = match rows {
        Some(r) => r,
        None => {
            let mut n = 0;
            for b in reader {
                n += b
                    .map_err(|source| FrameError::Encode {
                        name: name.to_owned(),
                        source,
                    })?
                    .num_rows();
            }
            n
        }
    };
    let max = bus.client().server_info().max_payload;
    if ipc.len() > max {
        return Err(FrameError::TooLarge {
            name: name.to_owned(),
            bytes: ipc.len(),
            max,
        });
    }
    let fail = |message: String| FrameError::Publish {
        name: name.to_owned(),
        subject: subject.clone(),
        message,
    };
    let n = ipc.len();
    bus.client()
        .publish(subject.clone(), ipc)
        .await
        .map_err(|e| fail(e.to_string()))?;
    bus.client().flush().await.map_err(|e| fail(e.to_string()))?;
    Ok(PublishedFrame {
        subject: subject.clone(),
        rows,
        bytes: n,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn names_become_one_subject_token() {
        assert_eq!(
            analysis_subject("capacity_fade-1").unwrap(),
            "lt.analysis.capacity_fade-1"
        );
        for bad in ["", "a.b", "a b", "x>", "*", &"n".repeat(65)] {
            assert!(
                matches!(analysis_subject(bad), Err(FrameError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_ipc_stream_reads_back_as_the_same_table() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("channel", DataType::Utf8, false),
            Field::new("fade", DataType::Float64, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["c1", "c2"])),
                Arc::new(Float64Array::from(vec![Some(0.5), None])),
            ],
        )
        .unwrap();
        let bytes = encode_ipc("t", &schema, std::slice::from_ref(&b)).unwrap();
        let back: Vec<RecordBatch> = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![b]);
    }
}
