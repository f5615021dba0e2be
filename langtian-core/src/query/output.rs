//! Writing a query result for people and tools: a readable table, CSV, JSON lines or Parquet.
//! Files are written by DuckDB's own `COPY … TO` from an in-memory copy of the result.

use std::io::Write;
use std::path::Path;

use arrow::record_batch::RecordBatch;

use super::QueryResult;
use crate::lake::{columns_sql, open_duckdb, sql_str};

/// Output formats of `lt query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A boxed table (at most `max_table_rows` rows are drawn).
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per row.
    Json,
    /// Parquet (needs a file).
    Parquet,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" | "jsonl" => Ok(Self::Json),
            "parquet" => Ok(Self::Parquet),
            o => Err(format!("unknown format `{o}` (table, csv, json or parquet)")),
        }
    }
}

/// Draws `result` as a table with at most `max_rows` rows, followed by a row count line.
pub fn format_table(result: &QueryResult, max_rows: usize) -> Result<String, String> {
    let mut shown: Vec<RecordBatch> = Vec::new();
    let mut left = max_rows;
    for b in &result.batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        shown.push(b.slice(0, n));
        left -= n;
    }
    if shown.is_empty() {
        shown.push(RecordBatch::new_empty(result.schema.clone()));
    }
    let table = arrow::util::pretty::pretty_format_batches(&shown).map_err(|e| e.to_string())?;
    let drawn: usize = shown.iter().map(RecordBatch::num_rows).sum();
    let mut footer = format!("{} row{}", result.rows, if result.rows == 1 { "" } else { "s" });
    if (drawn as u64) < result.rows {
        footer.push_str(&format!(" ({drawn} shown; --max-rows or --format csv for all)"));
    }
    if let Some(t) = &result.truncated {
        footer.push_str(&format!(" — cut by the {t} limit"));
    }
    Ok(format!("{table}\n{footer}"))
}

/// Writes `result` as CSV, JSON lines or Parquet to `file`, or to stdout when `file` is `None`
/// (not for Parquet).
pub fn write_file(result: &QueryResult, format: OutputFormat, file: Option<&Path>) -> Result<(), String> {
    let fmt = match format {
        OutputFormat::Csv => "FORMAT csv, HEADER",
        OutputFormat::Json => "FORMAT json",
        OutputFormat::Parquet => "FORMAT parquet",
        OutputFormat::Table => return Err("a table is printed, not written; use format_table".into()),
    };
    // DuckDB writes files; for stdout it writes a temp file that is copied over (opening
    // /dev/stdout would start at offset 0 when stdout is redirected to a file).
    let tmp = match (file, format) {
        (Some(_), _) => None,
        (None, OutputFormat::Parquet) => return Err("--format parquet needs --output FILE".into()),
        (None, _) => Some(tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?),
    };
    let target = match (&tmp, file) {
        (Some(t), _) => t.path().display().to_string(),
        (None, Some(p)) => p.display().to_string(),
        (None, None) => return Err("no output".into()),
    };
    let conn = open_duckdb(None, &[]).map_err(|e| e.to_string())?;
    let cols = columns_sql(&result.schema).map_err(|e| format!("cannot write this result as a file: {e}"))?;
    conn.execute_batch(&format!("CREATE TABLE result ({cols})"))
        .map_err(|e| e.to_string())?;
    {
        let mut app = conn.appender("result").map_err(|e| e.to_string())?;
        for b in &result.batches {
            app.append_record_batch(b.clone()).map_err(|e| e.to_string())?;
        }
        app.flush().map_err(|e| e.to_string())?;
    }
    conn.execute_batch(&format!("COPY result TO {} ({fmt})", sql_str(&target)))
        .map_err(|e| format!("writing {target}: {e}"))?;
    if let Some(t) = tmp {
        let mut f = std::fs::File::open(t.path()).map_err(|e| format!("reading {target}: {e}"))?;
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut f, &mut out).map_err(|e| format!("writing stdout: {e}"))?;
        out.flush().map_err(|e| format!("writing stdout: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn result(n: i64, truncated: Option<&str>) -> QueryResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let batch = |from: i64, to: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..to)),
                    Arc::new(StringArray::from_iter_values((from..to).map(|i| format!("n{i}")))),
                ],
            )
            .unwrap()
        };
        // Two batches, so that a cut can fall inside the second one.
        QueryResult {
            schema: schema.clone(),
            batches: vec![batch(0, n / 2), batch(n / 2, n)],
            rows: n as u64,
            truncated: truncated.map(str::to_owned),
            chunks: 1,
        }
    }

    #[test]
    fn every_format_name_parses_and_an_unknown_one_lists_them() {
        for (s, f) in [
            ("table", OutputFormat::Table),
            ("csv", OutputFormat::Csv),
            ("json", OutputFormat::Json),
            ("jsonl", OutputFormat::Json),
            ("parquet", OutputFormat::Parquet),
        ] {
            assert_eq!(s.parse::<OutputFormat>(), Ok(f));
        }
        let e = "xlsx".parse::<OutputFormat>().unwrap_err();
        assert!(e.contains("`xlsx`") && e.contains("parquet"), "{e}");
    }

    #[test]
    fn a_table_draws_at_most_max_rows_and_says_what_was_left_out() {
        let t = format_table(&result(10, Some("rows")), 7).unwrap();
        assert!(t.contains("| n6 ") && !t.contains("| n7 "), "{t}");
        assert!(
            t.ends_with("10 rows (7 shown; --max-rows or --format csv for all) — cut by the rows limit"),
            "{t}"
        );
        let all = format_table(&result(10, None), usize::MAX).unwrap();
        assert!(all.contains("| n9 ") && all.ends_with("\n10 rows"), "{all}");
        // No rows: the header is still drawn.
        let empty = format_table(&result(0, None), 5).unwrap();
        assert!(empty.contains("| id") && empty.ends_with("0 rows"), "{empty}");
        let one = format_table(&result(1, None), 5).unwrap();
        assert!(one.ends_with("\n1 row"), "{one}");
    }

    #[test]
    fn parquet_and_csv_files_hold_every_row_as_duckdb_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let r = result(1000, None);
        let conn = open_duckdb(None, &[]).unwrap();
        for (format, name, reader) in [
            (OutputFormat::Parquet, "r.parquet", "read_parquet"),
            (OutputFormat::Csv, "r.csv", "read_csv"),
            (OutputFormat::Json, "r.jsonl", "read_json"),
        ] {
            let path = dir.path().join(name);
            write_file(&r, format, Some(&path)).unwrap();
            let (n, sum, last): (i64, i64, String) = conn
                .query_row(
                    &format!(
                        "SELECT count(*), sum(id)::BIGINT, max_by(name, id) FROM {reader}({})",
                        sql_str(&path.display().to_string())
                    ),
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .unwrap();
            assert_eq!((n, sum, last.as_str()), (1000, 999 * 1000 / 2, "n999"), "{name}");
        }
    }

    #[test]
    fn parquet_needs_a_file_and_a_table_is_not_written() {
        let r = result(3, None);
        let e = write_file(&r, OutputFormat::Parquet, None).unwrap_err();
        assert!(e.contains("--output"), "{e}");
        let e = write_file(&r, OutputFormat::Table, Some(Path::new("/tmp/x"))).unwrap_err();
        assert!(e.contains("format_table"), "{e}");
        let e = write_file(&r, OutputFormat::Csv, Some(Path::new("/nonexistent/dir/r.csv"))).unwrap_err();
        assert!(e.contains("/nonexistent/dir/r.csv"), "{e}");
    }
}
