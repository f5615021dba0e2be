//! Running one read-only query on a DuckDB connection and cutting the result into Arrow IPC
//! chunks. No NATS here: the service and `lt query --local` both use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use duckdb::Connection;

use super::{ErrorCode, QueryFailure, QueryRequest};

/// Whether `sql` is exactly one read statement, by DuckDB's own parser: `json_serialize_sql`
/// serialises SELECT statements only. `Err` carries the parser's message for bad SQL.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let conn = duckdb::Connection::open_in_memory()?;
/// use langtian_core::query::is_read_only;
/// assert!(is_read_only(&conn, "SELECT 42").is_ok());
/// assert!(is_read_only(&conn, "DELETE FROM t").is_err());
/// # Ok(()) }
/// ```
pub fn is_read_only(conn: &Connection, sql: &str) -> Result<(), QueryFailure> {
    let json: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0))
        .map_err(|e| QueryFailure::new(ErrorCode::Parse, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| QueryFailure::new(ErrorCode::Parse, format!("reading the parse tree: {e}")))?;
    if v.get("error").and_then(serde_json::Value::as_bool) == Some(true) {
        let kind = v.get("error_type").and_then(|t| t.as_str()).unwrap_or("");
        let msg = v
            .get("error_message")
            .and_then(|t| t.as_str())
            .unwrap_or("rejected by the parser")
            .to_owned();
        return Err(if kind == "parser" {
            QueryFailure::new(ErrorCode::Parse, msg)
        } else {
            QueryFailure::new(
                ErrorCode::NotReadOnly,
                format!("only a single SELECT statement is accepted; DuckDB parsed something else ({msg})"),
            )
        });
    }
    let n = v
        .get("statements")
        .and_then(|s| s.as_array())
        .map(Vec::len)
        .unwrap_or(0);
    if n != 1 {
        return Err(QueryFailure::new(
            ErrorCode::NotReadOnly,
            format!("exactly one SELECT statement is accepted, got {n}"),
        ));
    }
    Ok(())
}

/// Limits applied to one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Max rows sent.
    pub max_rows: u64,
    /// Max bytes of Arrow IPC sent (approximately; whole chunks).
    pub max_bytes: u64,
    /// Interrupt after.
    pub timeout: Duration,
    /// Max size of one chunk (the server's max_payload minus header room).
    pub chunk_bytes: usize,
}

/// What a finished query sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// Rows sent.
    pub rows: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// `Some("rows" | "bytes")` when a limit cut the result.
    pub truncated: Option<&'static str>,
}

fn to_value(v: &serde_json::Value, i: usize) -> Result<duckdb::types::Value, QueryFailure> {
    use duckdb::types::Value;
    Ok(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::BigInt(i),
            (None, Some(u), _) => Value::UBigInt(u),
            (_, _, Some(f)) => Value::Double(f),
            _ => {
                return Err(QueryFailure::new(
                    ErrorCode::BadRequest,
                    format!("parameter {} is not a usable number", i + 1),
                ));
            }
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        _ => {
            return Err(QueryFailure::new(
                ErrorCode::BadRequest,
                format!(
                    "parameter {} must be null, a boolean, a number or a string",
                    i + 1
                ),
            ));
        }
    })
}

fn ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, QueryFailure> {
    let fail =
        |e: arrow::error::ArrowError| QueryFailure::new(ErrorCode::Execution, format!("Arrow IPC: {e}"));
    let mut w = StreamWriter::try_new(Vec::new(), schema).map_err(fail)?;
    for b in batches {
        w.write(b).map_err(fail)?;
    }
    w.finish().map_err(fail)?;
    w.into_inner().map_err(fail)
}

/// Cuts batches into IPC chunks of at most `limit` bytes.
struct Chunker<'a> {
    schema: SchemaRef,
    limit: usize,
    pending: Vec<RecordBatch>,
    pending_est: usize,
    emit: &'a mut dyn FnMut(Vec<u8>) -> bool,
    sent_bytes: u64,
    chunks: u64,
    closed: bool,
}

impl Chunker<'_> {
    fn push(&mut self, b: RecordBatch) -> Result<(), QueryFailure> {
        self.pending_est += b.get_array_memory_size();
        self.pending.push(b);
        if self.pending_est >= self.limit / 2 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), QueryFailure> {
        let batches = std::mem::take(&mut self.pending);
        self.pending_est = 0;
        if batches.is_empty() {
            return Ok(());
        }
        self.send(batches)
    }

    fn send(&mut self, batches: Vec<RecordBatch>) -> Result<(), QueryFailure> {
        let bytes = ipc(&self.schema, &batches)?;
        if bytes.len() <= self.limit {
            self.sent_bytes += bytes.len() as u64;
            self.chunks += 1;
            if !(self.emit)(bytes) {
                self.closed = true;
            }
            return Ok(());
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows <= 1 {
            return Err(QueryFailure::new(
                ErrorCode::TooLarge,
                format!(
                    "one row is {} bytes as Arrow IPC, over the {} bytes a message may carry",
                    bytes.len(),
                    self.limit
                ),
            ));
        }
        let merged = arrow::compute::concat_batches(&self.schema, &batches)
            .map_err(|e| QueryFailure::new(ErrorCode::Execution, e.to_string()))?;
        let half = rows / 2;
        self.send(vec![merged.slice(0, half)])?;
        self.send(vec![merged.slice(half, rows - half)])
    }
}

/// Runs `req` on `conn` (after [`is_read_only`]) inside a transaction that is rolled back,
/// handing each Arrow IPC chunk to `emit` (which returns `false` when nobody listens any more).
/// An empty result still emits one chunk with the schema.
pub fn execute(
    conn: &Connection,
    req: &QueryRequest,
    limits: Limits,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<Executed, QueryFailure> {
    is_read_only(conn, &req.sql)?;
    let params = req
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| to_value(v, i))
        .collect::<Result<Vec<_>, _>>()?;
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(|e| QueryFailure::new(ErrorCode::Execution, e.to_string()))?;
    let result = run_in_tx(conn, req, &params, limits, emit);
    let _ = conn.execute_batch("ROLLBACK");
    result
}

fn run_in_tx(
    conn: &Connection,
    req: &QueryRequest,
    params: &[duckdb::types::Value],
    limits: Limits,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<Executed, QueryFailure> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let (cancel_tx, cancel_rx) = std::sync::mpsc::channel::<()>();
    let interrupt = conn.interrupt_handle();
    let flag = timed_out.clone();
    let timeout = limits.timeout;
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = cancel_rx.recv_timeout(timeout) {
            flag.store(true, Ordering::SeqCst);
            interrupt.interrupt();
        }
    });
    let outcome = (|| {
        let exec_err = |e: duckdb::Error| {
            if timed_out.load(Ordering::SeqCst) {
                QueryFailure::new(ErrorCode::Timeout, format!("interrupted after {timeout:?}"))
            } else {
                QueryFailure::new(ErrorCode::Execution, e.to_string())
            }
        };
        let mut stmt = conn.prepare(&req.sql).map_err(exec_err)?;
        let arrow = stmt
            .query_arrow(duckdb::params_from_iter(params.iter()))
            .map_err(exec_err)?;
        let schema = arrow.get_schema();
        let mut out = Executed::default();
        let mut chunker = Chunker {
            schema: schema.clone(),
            limit: limits.chunk_bytes.max(1024),
            pending: Vec::new(),
            pending_est: 0,
            emit,
            sent_bytes: 0,
            chunks: 0,
            closed: false,
        };
        for batch in arrow {
            if timed_out.load(Ordering::SeqCst) {
                return Err(QueryFailure::new(
                    ErrorCode::Timeout,
                    format!("interrupted after {timeout:?}"),
                ));
            }
            let left = limits.max_rows.saturating_sub(out.rows);
            let batch = if (batch.num_rows() as u64) > left {
                out.truncated = Some("rows");
                batch.slice(0, left as usize)
            } else {
                batch
            };
            out.rows += batch.num_rows() as u64;
            if batch.num_rows() > 0 {
                chunker.push(batch)?;
            }
            if chunker.sent_bytes >= limits.max_bytes {
                out.truncated = Some("bytes");
            }
            if out.truncated.is_some() || chunker.closed {
                break;
            }
        }
        chunker.flush()?;
        if chunker.chunks == 0 {
            chunker.send(vec![RecordBatch::new_empty(schema)])?;
        }
        out.chunks = chunker.chunks;
        Ok(out)
    })();
    let _ = cancel_tx.send(());
    let _ = watchdog.join();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_rows: 1_000_000,
            max_bytes: u64::MAX,
            timeout: Duration::from_secs(30),
            chunk_bytes: 64 * 1024,
        }
    }

    fn run(
        conn: &Connection,
        req: &QueryRequest,
        l: Limits,
    ) -> Result<(Executed, Vec<RecordBatch>), QueryFailure> {
        let mut chunks = Vec::new();
        let ex = execute(conn, req, l, &mut |c| {
            chunks.push(c);
            true
        })?;
        let mut batches = Vec::new();
        for c in chunks {
            assert!(c.len() <= l.chunk_bytes, "chunk of {} bytes", c.len());
            let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(c), None).unwrap();
            batches.extend(r.map(|b| b.unwrap()));
        }
        Ok((ex, batches))
    }

    #[test]
    fn reads_only_by_duckdbs_parser() {
        let conn = Connection::open_in_memory().unwrap();
        for ok in [
            "SELECT 1",
            "select 1;",
            "WITH t AS (SELECT 1) SELECT * FROM t",
            "FROM range(3)",
            "DESCRIBE SELECT 1",
        ] {
            assert!(
                is_read_only(&conn, ok).is_ok(),
                "{ok}: {:?}",
                is_read_only(&conn, ok)
            );
        }
        for (bad, code) in [
            ("DELETE FROM t", ErrorCode::NotReadOnly),
            ("CREATE TABLE t(a INT)", ErrorCode::NotReadOnly),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", ErrorCode::NotReadOnly),
            ("SELECT 1; DROP TABLE t", ErrorCode::NotReadOnly),
            ("ATTACH 'x.db'", ErrorCode::NotReadOnly),
            ("SELEC 1", ErrorCode::Parse),
        ] {
            assert_eq!(is_read_only(&conn, bad).map_err(|e| e.code), Err(code), "{bad}");
        }
    }

    #[test]
    fn chunks_fit_the_limit_and_reassemble() {
        let conn = Connection::open_in_memory().unwrap();
        let req = QueryRequest::new("SELECT i, i * 2 AS j, 'row ' || i AS s FROM range(100000) t(i)");
        let (ex, batches) = run(&conn, &req, limits()).unwrap();
        assert_eq!(ex.rows, 100_000);
        assert!(ex.chunks > 10, "{ex:?}");
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 100_000);
    }

    #[test]
    fn limits_params_and_empty_results() {
        let conn = Connection::open_in_memory().unwrap();
        let mut req = QueryRequest::new("SELECT i FROM range(5000) t(i) WHERE i >= ?");
        req.params = vec![serde_json::json!(1000)];
        let mut l = limits();
        l.max_rows = 10;
        let (ex, batches) = run(&conn, &req, l).unwrap();
        assert_eq!((ex.rows, ex.truncated), (10, Some("rows")));
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
        let (ex, batches) = run(&conn, &QueryRequest::new("SELECT 1 AS a WHERE false"), limits()).unwrap();
        assert_eq!((ex.rows, ex.chunks), (0, 1));
        assert_eq!(batches[0].schema().field(0).name(), "a");
    }

    #[test]
    fn transactions_are_closed_and_errors_are_typed() {
        let conn = Connection::open_in_memory().unwrap();
        // The query ran inside a transaction that was rolled back: the connection is not left
        // in one (a second BEGIN would fail).
        run(&conn, &QueryRequest::new("SELECT 1"), limits()).unwrap();
        conn.execute_batch("BEGIN TRANSACTION; ROLLBACK").unwrap();
        let e = run(&conn, &QueryRequest::new("SELECT * FROM nope"), limits()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Execution);
        assert!(e.message.contains("nope"), "{}", e.message);
        let mut l = limits();
        l.timeout = Duration::from_millis(200);
        let slow = QueryRequest::new("SELECT count(*) FROM range(10000000000) a");
        assert_eq!(run(&conn, &slow, l).unwrap_err().code, ErrorCode::Timeout);
    }
}
