//! Read-only SQL on the lake over NATS request/reply (`lt.query.v1`).
//!
//! A request is JSON ([`QueryRequest`]); the answer is one or more messages on the request's
//! reply subject, each an Arrow IPC stream (schema + record batches) no larger than the server's
//! `max_payload`. Headers say which chunk it is (`Lt-Query-Chunk`), mark the last one
//! (`Lt-Query-Last: 1`, with `Lt-Query-Rows` and, when a limit cut the result,
//! `Lt-Query-Truncated: rows|bytes`). A failure is a last message with `Lt-Query-Error: <code>`
//! and a JSON body `{"code": …, "message": …}` (see [`ErrorCode`]).
//!
//! Only read statements run: DuckDB's own parser decides (`json_serialize_sql` accepts exactly
//! the SELECT statements), and each query runs in a transaction that is rolled back, so even a
//! table function with side effects leaves nothing behind.
//!
//! ```no_run
//! # async fn demo(bus: langtian_core::bus::Bus) -> Result<(), langtian_core::query::QueryError> {
//! use langtian_core::query::{QueryRequest, query};
//! let result = query(&bus, &QueryRequest::new("SELECT count(*) AS n FROM lake.battery_samples")).await?;
//! println!("{} rows in {} batches", result.rows, result.batches.len());
//! # Ok(()) }
//! ```

mod client;
mod exec;
mod frame;
pub mod output;
mod service;

use std::time::Duration;

pub use client::{ChunksDone, QueryResult, query, query_chunks_on, query_local, query_on};
pub use exec::{Executed, Limits, execute, is_read_only};
pub use frame::{
    ANALYSIS_PREFIX, FrameError, PublishedFrame, analysis_subject, encode_ipc, publish_frame,
    publish_frame_ipc,
};
pub use service::{QueryConfigError, QueryService, QueryServiceConfig};

/// The request subject.
pub const QUERY_SUBJECT: &str = "lt.query.v1";

/// Header: 0-based chunk index.
pub const HEADER_CHUNK: &str = "Lt-Query-Chunk";
/// Header: `1` on the last message.
pub const HEADER_LAST: &str = "Lt-Query-Last";
/// Header: total rows sent (on the last message).
pub const HEADER_ROWS: &str = "Lt-Query-Rows";
/// Header: `rows` or `bytes` when a limit cut the result (on the last message).
pub const HEADER_TRUNCATED: &str = "Lt-Query-Truncated";
/// Header: the error code of a failed query.
pub const HEADER_ERROR: &str = "Lt-Query-Error";

/// A query.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One SELECT statement (the lake is attached as `lake`).
    pub sql: String,
    /// Values for `?` / `$1` placeholders (null, booleans, numbers, strings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<serde_json::Value>,
    /// Stop after this many rows (the service caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Stop after about this many bytes of Arrow data (the service caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Interrupt the query after this long (the service caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl QueryRequest {
    /// A request with the service's default limits.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
            max_rows: None,
            max_bytes: None,
            timeout_ms: None,
        }
    }

    /// The timeout, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// Why a query failed (stable strings on the wire; clients map them to exceptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is not valid JSON or has bad fields.
    BadRequest,
    /// DuckDB could not parse the SQL.
    Parse,
    /// The statement is not a read (e.g. INSERT, CREATE, COPY, several statements).
    NotReadOnly,
    /// DuckDB failed to bind or run it (unknown table, type error, …).
    Execution,
    /// The timeout interrupted it.
    Timeout,
    /// A single row is larger than the server's max_payload.
    TooLarge,
    /// The lake cannot be opened.
    Unavailable,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Parse => "parse",
            ErrorCode::NotReadOnly => "not_read_only",
            ErrorCode::Execution => "execution",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Parses a wire string.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ErrorCode::BadRequest,
            ErrorCode::Parse,
            ErrorCode::NotReadOnly,
            ErrorCode::Execution,
            ErrorCode::Timeout,
            ErrorCode::TooLarge,
            ErrorCode::Unavailable,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A failure with its code, as sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct QueryFailure {
    /// What kind of failure.
    pub code: ErrorCode,
    /// DuckDB's message or ours.
    pub message: String,
}

impl QueryFailure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Errors of the query client.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Nobody serves `lt.query.v1` (is `lt up` or `lt-query` running?).
    #[error(
        "no query service answers on `{subject}` (start `lt up`, or query the lake file directly with --local)"
    )]
    NoService {
        /// The subject asked.
        subject: String,
    },
    /// The service answered with an error.
    #[error("query failed ({}): {}", .0.code.as_str(), .0.message)]
    Failed(QueryFailure),
    /// No (further) answer in time.
    #[error("no answer from the query service within {0:?}")]
    Timeout(Duration),
    /// The answer does not follow the protocol.
    #[error("query protocol: {0}")]
    Protocol(String),
    /// NATS failed.
    #[error("NATS: {0}")]
    Nats(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_is_strict_and_compact() {
        let r: QueryRequest = serde_json::from_str(r#"{"sql":"SELECT 1","max_rows":5}"#).unwrap();
        assert_eq!(r.max_rows, Some(5));
        assert_eq!(
            serde_json::to_string(&QueryRequest::new("SELECT 1")).unwrap(),
            r#"{"sql":"SELECT 1"}"#
        );
        assert!(serde_json::from_str::<QueryRequest>(r#"{"sql":"x","limit":1}"#).is_err());
        for c in [
            "bad_request",
            "parse",
            "not_read_only",
            "execution",
            "timeout",
            "too_large",
            "unavailable",
        ] {
            assert_eq!(ErrorCode::parse(c).map(ErrorCode::as_str), Some(c));
        }
    }
}
