//! The client side of `lt.query.v1`.

use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

use super::{
    ErrorCode, HEADER_CHUNK, HEADER_ERROR, HEADER_LAST, HEADER_ROWS, HEADER_TRUNCATED, QUERY_SUBJECT,
    QueryError, QueryFailure, QueryRequest,
};
use crate::bus::Bus;

/// A query's answer.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Row count.
    pub rows: u64,
    /// `Some("rows" | "bytes")` when a limit cut the result.
    pub truncated: Option<String>,
    /// Messages it came in.
    pub chunks: u64,
}

/// Runs `req` on the query service at [`QUERY_SUBJECT`].
pub async fn query(bus: &Bus, req: &QueryRequest) -> Result<QueryResult, QueryError> {
    query_on(bus, QUERY_SUBJECT, req).await
}

fn header<'a>(m: &'a async_nats::Message, k: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(k).map(|v| v.as_str())
}

/// Decodes one Arrow IPC chunk into `batches` (taking the schema from the first).
fn read_chunk(
    bytes: &[u8],
    index: u64,
    schema: &mut Option<SchemaRef>,
    batches: &mut Vec<RecordBatch>,
) -> Result<(), QueryError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| QueryError::Protocol(format!("chunk {index} is not Arrow IPC: {e}")))?;
    schema.get_or_insert_with(|| reader.schema());
    for b in reader {
        batches.push(b.map_err(|e| QueryError::Protocol(format!("chunk {index}: {e}")))?);
    }
    Ok(())
}

/// Runs `req` on the query service at `subject`.
pub async fn query_on(bus: &Bus, subject: &str, req: &QueryRequest) -> Result<QueryResult, QueryError> {
    let mut schema: Option<SchemaRef> = None;
    let mut batches = Vec::new();
    let mut failed = None;
    let done = query_chunks_on(bus, subject, req, |index, bytes| {
        if failed.is_none()
            && let Err(e) = read_chunk(bytes.as_ref(), index, &mut schema, &mut batches)
        {
            failed = Some(e);
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    let schema = schema.ok_or_else(|| QueryError::Protocol("answer without a schema".into()))?;
    let rows = done
        .rows
        .unwrap_or_else(|| batches.iter().map(|b: &RecordBatch| b.num_rows() as u64).sum());
    Ok(QueryResult {
        schema,
        batches,
        rows,
        truncated: done.truncated,
        chunks: done.chunks,
    })
}

/// How an answer ended (see [`query_chunks_on`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunksDone {
    /// Rows the service says it sent (absent from old services).
    pub rows: Option<u64>,
    /// `Some("rows" | "bytes")` when a limit cut the result.
    pub truncated: Option<String>,
    /// Messages the answer came in.
    pub chunks: u64,
}

/// Runs `req` on the query service at `subject` and hands every non-empty chunk (one Arrow IPC
/// stream each, schema first) to `on_chunk` as it arrives, undecoded — for clients that read
/// Arrow themselves (the Python SDK gives them to pyarrow without another copy).
pub async fn query_chunks_on(
    bus: &Bus,
    subject: &str,
    req: &QueryRequest,
    mut on_chunk: impl FnMut(u64, bytes::Bytes),
) -> Result<ChunksDone, QueryError> {
    let client = bus.client();
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| QueryError::Nats(e.to_string()))?;
    let body = serde_json::to_vec(req).map_err(|e| QueryError::Protocol(e.to_string()))?;
    client
        .publish_with_reply(subject.to_owned(), inbox, body.into())
        .await
        .map_err(|e| QueryError::Nats(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| QueryError::Nats(e.to_string()))?;
    // Between two messages: the query's own time plus room for the service to start it.
    let gap = req.timeout().unwrap_or(Duration::from_secs(60)) + Duration::from_secs(10);
    let mut expected = 0u64;
    loop {
        let m = match tokio::time::timeout(gap, sub.next()).await {
            Err(_) => return Err(QueryError::Timeout(gap)),
            Ok(None) => return Err(QueryError::Nats("reply subscription closed".into())),
            Ok(Some(m)) => m,
        };
        if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(QueryError::NoService {
                subject: subject.to_owned(),
            });
        }
        let index: u64 = header(&m, HEADER_CHUNK)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| QueryError::Protocol(format!("reply without a valid {HEADER_CHUNK} header")))?;
        if index != expected {
            return Err(QueryError::Protocol(format!(
                "chunk {index} arrived, expected {expected} (a chunk was lost)"
            )));
        }
        expected += 1;
        if let Some(code) = header(&m, HEADER_ERROR) {
            let failure = serde_json::from_slice::<QueryFailure>(&m.payload).unwrap_or(QueryFailure {
                code: ErrorCode::parse(code).unwrap_or(ErrorCode::Execution),
                message: String::from_utf8_lossy(&m.payload).into_owned(),
            });
            return Err(QueryError::Failed(failure));
        }
        let last = header(&m, HEADER_LAST) == Some("1");
        let rows = header(&m, HEADER_ROWS).and_then(|v| v.parse().ok());
        let truncated = header(&m, HEADER_TRUNCATED).map(str::to_owned);
        if !m.payload.is_empty() {
            on_chunk(index, m.payload);
        }
        if last {
            return Ok(ChunksDone {
                rows,
                truncated,
                chunks: expected,
            });
        }
    }
}

/// Runs `req` on the lake directly, in this process (no service; the lake must not be open in
/// another process — DuckDB allows one process per DuckDB-file catalog).
pub fn query_local(lake: crate::lake::LakeConfig, req: &QueryRequest) -> Result<QueryResult, QueryError> {
    let unavailable = |m: String| QueryError::Failed(QueryFailure::new(ErrorCode::Unavailable, m));
    if let crate::lake::Catalog::DuckDb(p) = &lake.catalog
        && !p.exists()
    {
        return Err(unavailable(format!(
            "no lake at {} (start `lt up` once, or point --lake at a lake directory)",
            p.display()
        )));
    }
    let opened = crate::lake::Lake::open(lake).map_err(|e| {
        let m = e.to_string();
        if m.contains("lock") {
            unavailable(format!(
                "{m}\nhint: another process writes this lake; while `lt up` runs, query through it (drop --local)"
            ))
        } else {
            unavailable(m)
        }
    })?;
    let limits = super::Limits {
        max_rows: req.max_rows.unwrap_or(u64::MAX),
        max_bytes: req.max_bytes.unwrap_or(u64::MAX),
        timeout: req.timeout().unwrap_or(Duration::from_secs(3600)),
        chunk_bytes: 64 << 20,
    };
    let mut chunks = Vec::new();
    let done = super::execute(opened.connection(), req, limits, &mut |c| {
        chunks.push(c);
        true
    })
    .map_err(QueryError::Failed)?;
    let mut schema = None;
    let mut batches = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        read_chunk(c, i as u64, &mut schema, &mut batches)?;
    }
    Ok(QueryResult {
        schema: schema.ok_or_else(|| QueryError::Protocol("no schema".into()))?,
        batches,
        rows: done.rows,
        truncated: done.truncated.map(str::to_owned),
        chunks: done.chunks,
    })
}
