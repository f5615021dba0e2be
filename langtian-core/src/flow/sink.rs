//! Pipeline sinks. [`Sink::write`] returns only when the destination holds every row of the
//! batch (no hollow success); the runner acknowledges the source after that.
//!
//! | type | guarantee | how |
//! |---|---|---|
//! | `ducklake` | exactly once | rows + `ingest_offsets` row in one DuckLake transaction |
//! | `parquet` | at least once, idempotent per batch | one file per batch named by its sequence range; local: temp file + fsync + atomic rename; S3: one PUT/multipart upload (visible only when complete); the file is read back and its row count checked |
//! | `nats` | at least once (deduplicated by the stream) | one JSON object per row, JetStream publish with QoS 1 and a `Nats-Msg-Id` of `<pipeline>:<stream>:<last_seq>:<row>`; every PubAck awaited |
//! | `console` | — | one JSON object per line on stdout |
//! | `noop` | — | drops the rows |

use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use duckdb::Connection;

use super::config::{PipelineFile, S3Settings};
use crate::bus::{Bus, BusError, OutgoingMessage, Publisher, PublisherConfig, Qos};
use crate::lake::{
    Catalog, DataPath, Lake, LakeConfig, LakeError, MaintenanceOptions, MaintenanceSchedule, OffsetRecord,
    S3, columns_sql, create_s3_secret, open_duckdb, sql_str,
};

/// Sink errors; each names the destination.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Configuration.
    #[error("sink configuration: {0}")]
    Config(String),
    /// The lake.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Writing a Parquet file.
    #[error("parquet sink {path}: {reason}")]
    Parquet {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Publishing to NATS.
    #[error("nats sink `{subject}`: {source}")]
    Nats {
        /// Subject.
        subject: String,
        /// Why.
        source: BusError,
    },
    /// Encoding rows as JSON.
    #[error("encoding rows as JSON: {0}")]
    Json(String),
}

/// An open sink.
pub enum Sink {
    /// DuckLake, exactly once.
    Lake {
        /// The lake.
        lake: Box<Lake>,
        /// Target table.
        table: String,
        /// Maintenance.
        schedule: MaintenanceSchedule,
    },
    /// Parquet files.
    Parquet(Box<ParquetWriter>),
    /// JetStream publish.
    Nats {
        /// Publisher (QoS 1).
        publisher: Box<Publisher>,
        /// Subject.
        subject: String,
        /// Pipeline name for message ids.
        pipeline: String,
    },
    /// stdout.
    Console,
    /// Nothing.
    Noop,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

fn s3_of(url: &str, c: &S3Settings) -> S3 {
    S3 {
        url: url.to_owned(),
        key_id: c.key_id.clone(),
        secret: c.secret.clone(),
        region: c.region.clone(),
        endpoint: c.endpoint.clone(),
        url_style: c.url_style.clone(),
        use_ssl: c.use_ssl,
    }
}

impl Sink {
    /// Opens the sink of `file`. `bus` is the source's connection, used by a `nats` sink without
    /// its own `servers`.
    pub async fn open(file: &PipelineFile, bus: Option<&Bus>) -> Result<Self, SinkError> {
        let s = &file.pipeline.sink;
        let pipeline = file.pipeline.name.clone().unwrap_or_else(|| "pipeline".into());
        match s.kind.as_str() {
            "ducklake" => {
                let d = s
                    .ducklake
                    .as_ref()
                    .ok_or_else(|| SinkError::Config("sink.ducklake missing".into()))?;
                let data_path = if d.data_path.starts_with("s3://") {
                    let c = d.s3.as_ref().ok_or_else(|| {
                        SinkError::Config("sink.ducklake.s3 credentials needed for an s3:// data_path".into())
                    })?;
                    DataPath::S3(s3_of(&d.data_path, c))
                } else {
                    DataPath::Local(PathBuf::from(&d.data_path))
                };
                let mut cfg = LakeConfig::new(Catalog::parse(&d.catalog), data_path);
                cfg.memory_limit = d.memory_limit.clone();
                cfg.threads = d.threads;
                let lake = tokio::task::block_in_place(|| Lake::open(cfg))?;
                Ok(Sink::Lake {
                    lake: Box::new(lake),
                    table: d.table.clone(),
                    schedule: MaintenanceSchedule::new(d.maintenance_interval, MaintenanceOptions::default()),
                })
            }
            "parquet" => {
                let pq = s
                    .parquet
                    .as_ref()
                    .ok_or_else(|| SinkError::Config("sink.parquet missing".into()))?;
                let s3 = match (pq.path.starts_with("s3://"), &pq.s3) {
                    (true, Some(c)) => Some(s3_of(&pq.path, c)),
                    (true, None) => {
                        return Err(SinkError::Config(
                            "sink.parquet.s3 credentials needed for an s3:// path".into(),
                        ));
                    }
                    (false, _) => None,
                };
                let w =
                    tokio::task::block_in_place(|| ParquetWriter::open(&pq.path, s3.as_ref(), &pipeline))?;
                Ok(Sink::Parquet(Box::new(w)))
            }
            "nats" => {
                let n = s
                    .nats
                    .as_ref()
                    .ok_or_else(|| SinkError::Config("sink.nats missing".into()))?;
                let bus = if n.servers.is_empty() {
                    bus.cloned().ok_or_else(|| {
                        SinkError::Config("sink.nats.servers is required when the source is not nats".into())
                    })?
                } else {
                    let mut o = crate::bus::BusOptions::new(&n.servers.join(","));
                    o.name = Some(format!("lt-flow-sink:{pipeline}"));
                    Bus::connect(&o).await.map_err(|source| SinkError::Nats {
                        subject: n.subject.clone(),
                        source,
                    })?
                };
                Ok(Sink::Nats {
                    publisher: Box::new(Publisher::new(bus, PublisherConfig::new(Qos::AtLeastOnce))),
                    subject: n.subject.clone(),
                    pipeline,
                })
            }
            "console" => Ok(Sink::Console),
            "noop" => Ok(Sink::Noop),
            other => Err(SinkError::Config(format!(
                "sink type `{other}` is not supported (supported: ducklake, parquet, nats, console, noop)"
            ))),
        }
    }

    /// `ducklake`, `parquet`, `nats`, `console` or `noop`.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Lake { .. } => "ducklake",
            Sink::Parquet(_) => "parquet",
            Sink::Nats { .. } => "nats",
            Sink::Console => "console",
            Sink::Noop => "noop",
        }
    }

    /// The committed position of `(stream, consumer, part)`, for sinks that store one (DuckLake).
    pub fn committed_position(
        &self,
        stream: &str,
        consumer: &str,
        part: i32,
    ) -> Result<Option<u64>, SinkError> {
        match self {
            Sink::Lake { lake, .. } => Ok(tokio::task::block_in_place(|| {
                lake.committed_position(stream, consumer, part)
            })?),
            _ => Ok(None),
        }
    }

    /// Whether the sink stores positions (exactly-once resume).
    pub fn stores_positions(&self) -> bool {
        matches!(self, Sink::Lake { .. })
    }

    /// Writes and flushes one batch; returns the rows the destination now holds from it.
    pub async fn write(
        &mut self,
        batches: &[RecordBatch],
        offsets: &OffsetRecord,
    ) -> Result<usize, SinkError> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        match self {
            Sink::Lake {
                lake,
                table,
                schedule,
            } => tokio::task::block_in_place(|| -> Result<(), SinkError> {
                if rows > 0 {
                    if let Some(b) = batches.first() {
                        lake.ensure_table(table, &b.schema())?;
                    }
                    lake.write_batch(table, batches, offsets)?;
                } else {
                    lake.write_offsets_only(offsets)?;
                }
                if let Some(r) = lake.maintain_if_due(schedule)? {
                    tracing::info!(?r, "lake maintenance");
                }
                Ok(())
            })?,
            Sink::Parquet(w) => {
                if rows > 0 {
                    tokio::task::block_in_place(|| w.write(batches, offsets))?;
                }
            }
            Sink::Nats {
                publisher,
                subject,
                pipeline,
            } => {
                let lines = json_lines(batches).map_err(SinkError::Json)?;
                let mut window = publisher.window();
                for (i, line) in lines.into_iter().enumerate() {
                    let id = format!("{pipeline}:{}:{}:{i}", offsets.stream, offsets.last_seq);
                    let msg = OutgoingMessage::new(subject.clone(), line.into_bytes()).with_msg_id(id);
                    window.send(msg).await.map_err(|source| SinkError::Nats {
                        subject: subject.clone(),
                        source,
                    })?;
                }
                // Flush: every PubAck, or an error.
                window.drain().await.map_err(|source| SinkError::Nats {
                    subject: subject.clone(),
                    source,
                })?;
            }
            Sink::Console => {
                use std::io::Write as _;
                let lines = json_lines(batches).map_err(SinkError::Json)?;
                let mut out = std::io::stdout().lock();
                for line in lines {
                    writeln!(out, "{line}").map_err(|e| SinkError::Json(e.to_string()))?;
                }
                out.flush().map_err(|e| SinkError::Json(e.to_string()))?;
            }
            Sink::Noop => {}
        }
        Ok(rows)
    }
}

/// Rows as JSON objects, one per line.
pub fn json_lines(batches: &[RecordBatch]) -> Result<Vec<String>, String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
        for b in batches {
            w.write(b).map_err(|e| e.to_string())?;
        }
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(String::from_utf8_lossy(&buf).lines().map(str::to_owned).collect())
}

/// Writes one Parquet file per batch through DuckDB's `COPY ... (FORMAT parquet)`.
#[derive(Debug)]
pub struct ParquetWriter {
    conn: Connection,
    /// Directory or `s3://bucket/prefix` (no trailing slash).
    base: String,
    s3: bool,
    pipeline: String,
}

impl ParquetWriter {
    /// Prepares a writer into `path` (a directory, created if missing, or an `s3://` prefix).
    pub fn open(path: &str, s3: Option<&S3>, pipeline: &str) -> Result<Self, SinkError> {
        let conn = match s3 {
            Some(cfg) => {
                let c = open_duckdb(None, &["httpfs"])?;
                create_s3_secret(&c, cfg)?;
                c
            }
            None => {
                std::fs::create_dir_all(path).map_err(|e| SinkError::Parquet {
                    path: path.to_owned(),
                    reason: format!("creating the directory: {e}"),
                })?;
                open_duckdb(None, &[])?
            }
        };
        if !pipeline
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(SinkError::Config(format!(
                "pipeline name `{pipeline}` must be letters, digits, - and _ to name parquet files"
            )));
        }
        Ok(Self {
            conn,
            base: path.trim_end_matches('/').to_owned(),
            s3: s3.is_some(),
            pipeline: pipeline.to_owned(),
        })
    }

    /// The file a batch goes to.
    pub fn file_name(&self, offsets: &OffsetRecord) -> String {
        format!(
            "{}/{}-{:020}-{:020}.parquet",
            self.base, self.pipeline, offsets.first_seq, offsets.last_seq
        )
    }

    fn write(&mut self, batches: &[RecordBatch], offsets: &OffsetRecord) -> Result<(), SinkError> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let target = self.file_name(offsets);
        let err = |reason: String| SinkError::Parquet {
            path: target.clone(),
            reason,
        };
        let cols = columns_sql(&first.schema()).map_err(&err)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        self.conn
            .execute_batch(&format!("CREATE OR REPLACE TEMP TABLE lt_pq_out({cols})"))
            .map_err(|e| err(e.to_string()))?;
        {
            let mut app = self.conn.appender("lt_pq_out").map_err(|e| err(e.to_string()))?;
            for b in batches {
                app.append_record_batch(b.clone())
                    .map_err(|e| err(e.to_string()))?;
            }
            app.flush().map_err(|e| err(e.to_string()))?;
        }
        // S3: a single object upload is atomic (the object appears only once complete).
        // Local: write a hidden temp file, fsync it, rename it into place, fsync the directory.
        let written_to = if self.s3 {
            target.clone()
        } else {
            let (dir, name) = target.rsplit_once('/').unwrap_or((".", target.as_str()));
            format!("{dir}/.{name}.tmp")
        };
        self.conn
            .execute_batch(&format!(
                "COPY lt_pq_out TO {} (FORMAT parquet, COMPRESSION zstd); DROP TABLE lt_pq_out;",
                sql_str(&written_to)
            ))
            .map_err(|e| err(format!("COPY: {e}")))?;
        if !self.s3 {
            let f =
                std::fs::File::open(&written_to).map_err(|e| err(format!("reopening the temp file: {e}")))?;
            f.sync_all().map_err(|e| err(format!("fsync: {e}")))?;
            std::fs::rename(&written_to, &target).map_err(|e| err(format!("rename: {e}")))?;
            if let Ok(d) = std::fs::File::open(&self.base) {
                let _ = d.sync_all();
            }
        }
        // No hollow success: the destination must hold every row.
        let back: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM read_parquet({})", sql_str(&target)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| err(format!("reading the file back: {e}")))?;
        if back as usize != rows {
            return Err(err(format!("file holds {back} rows, expected {rows}")));
        }
        Ok(())
    }
}
