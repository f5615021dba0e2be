//! DuckLake access: attach a lake, create tables from Arrow schemas, write a batch and its
//! JetStream position in ONE transaction, read the committed position back, and maintain the lake.
//!
//! The official DuckDB library is linked dynamically (`DUCKDB_LIB_DIR`, set up by
//! `scripts/setup.sh`) and the official extensions are loaded by path from the setup folder with
//! autoload and autoinstall off, so nothing is fetched at run time.
//!
//! Exactly once: [`Lake::write_batch`] appends the rows and an `ingest_offsets` row
//! `(stream, consumer, part, first_seq, last_seq, batch_id, rows, committed_at)` in one DuckLake
//! transaction (= one snapshot). The caller acks NATS only after it returns `Ok`; on start it reads
//! [`Lake::committed_position`] and drops redeliveries at or below it. INSERT/INSERT never
//! conflicts in DuckLake, so the offsets table is append-only.
//!
//! ```no_run
//! use langtian_core::lake::{Catalog, DataPath, Lake, LakeConfig, OffsetRecord};
//! # fn demo(batch: arrow::record_batch::RecordBatch) -> Result<(), langtian_core::lake::LakeError> {
//! let mut lake = Lake::open(LakeConfig::new(
//!     Catalog::DuckDb("lake/meta.ducklake".into()),
//!     DataPath::Local("lake/data".into()),
//! ))?;
//! lake.ensure_table("events", &batch.schema())?;
//! lake.write_batch("events", &[batch], &OffsetRecord::new("LT_EVENTS", "lake-writer", 0, 1, 500))?;
//! assert_eq!(lake.committed_position("LT_EVENTS", "lake-writer", 0)?, Some(500));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use duckdb::{Config, Connection, params};

/// Lake errors; each names the lake, table or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// An extension file is missing.
    #[error(
        "DuckDB extension `{name}` not found at {path} (run scripts/setup.sh or set LANGTIAN_DUCKDB_EXTENSION_DIR)"
    )]
    ExtensionMissing {
        /// Extension name.
        name: String,
        /// Where it was expected.
        path: String,
    },
    /// A DuckDB error while doing `what`.
    #[error("{what}: {source}")]
    DuckDb {
        /// What was being done.
        what: String,
        /// DuckDB's error.
        source: duckdb::Error,
    },
    /// An Arrow type that has no DuckDB column type here.
    #[error("table `{table}`, column `{column}`: Arrow type {data_type} is not supported")]
    UnsupportedType {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// The type.
        data_type: String,
    },
    /// A batch does not fit the table.
    #[error("table `{table}`: {reason}")]
    SchemaMismatch {
        /// Table.
        table: String,
        /// What does not fit.
        reason: String,
    },
    /// A name that cannot be used as an identifier.
    #[error("`{0}` is not a valid table name (letters, digits and _ only, not starting with a digit)")]
    BadName(String),
    /// A bad configuration value.
    #[error("lake configuration: {0}")]
    Config(String),
}

fn db(what: impl Into<String>) -> impl FnOnce(duckdb::Error) -> LakeError {
    let what = what.into();
    move |source| LakeError::DuckDb { what, source }
}

/// Where the lake's metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Catalog {
    /// A DuckDB file: one writing process (the default).
    DuckDb(PathBuf),
    /// A SQLite file: several processes on one host.
    Sqlite(PathBuf),
    /// A PostgreSQL database (libpq connection string, e.g. `dbname=lake host=127.0.0.1 port=5432 user=lt`):
    /// many writers and readers on many hosts.
    Postgres(String),
}

/// S3-compatible object storage settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3 {
    /// `s3://bucket/prefix/`.
    pub url: String,
    /// Access key id.
    pub key_id: String,
    /// Secret key.
    pub secret: String,
    /// Region.
    pub region: String,
    /// Endpoint `host:port` for S3-compatible servers (empty = AWS).
    pub endpoint: String,
    /// `path` or `vhost`.
    pub url_style: String,
    /// Use https.
    pub use_ssl: bool,
}

/// Where the lake's Parquet files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPath {
    /// A local directory.
    Local(PathBuf),
    /// Object storage.
    S3(S3),
}

impl Catalog {
    /// `postgres:<conninfo>`, `sqlite:<path>`, or a DuckDB file (`ducklake:<path>` or a path).
    pub fn parse(s: &str) -> Catalog {
        if let Some(rest) = s.strip_prefix("postgres:") {
            Catalog::Postgres(rest.to_owned())
        } else if let Some(rest) = s.strip_prefix("sqlite:") {
            Catalog::Sqlite(PathBuf::from(rest))
        } else {
            Catalog::DuckDb(PathBuf::from(s.strip_prefix("ducklake:").unwrap_or(s)))
        }
    }
}

/// How to open a lake.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// The catalog alias in SQL (`lake`).
    pub name: String,
    /// Metadata catalog.
    pub catalog: Catalog,
    /// Data files.
    pub data_path: DataPath,
    /// Directory holding `v1.5.5/linux_amd64/*.duckdb_extension`; default: `$LANGTIAN_DUCKDB_EXTENSION_DIR`
    /// (at run time, then as recorded at build time).
    pub extension_dir: Option<PathBuf>,
    /// DuckDB `memory_limit` (e.g. `1GB`).
    pub memory_limit: Option<String>,
    /// DuckDB `threads`.
    pub threads: Option<usize>,
    /// Attach the lake `READ_ONLY` (a query service next to a writer in another process, with a
    /// catalog that allows it: SQLite or PostgreSQL; or any lake nobody writes). The lake must
    /// exist; nothing is created.
    pub read_only: bool,
}

impl LakeConfig {
    /// A lake named `lake` with default extension dir and limits.
    pub fn new(catalog: Catalog, data_path: DataPath) -> Self {
        Self {
            name: "lake".into(),
            catalog,
            data_path,
            extension_dir: None,
            memory_limit: None,
            threads: None,
            read_only: false,
        }
    }

    /// The same lake, attached read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A local lake under `dir`: `dir/meta.ducklake` + `dir/data/`.
    pub fn local(dir: &Path) -> Self {
        Self::new(
            Catalog::DuckDb(dir.join("meta.ducklake")),
            DataPath::Local(dir.join("data")),
        )
    }
}

/// The DuckDB release this build targets; extensions must match it exactly.
pub const DUCKDB_VERSION: &str = "v1.5.5";

/// The directory with the official extensions.
pub fn default_extension_dir() -> Option<PathBuf> {
    std::env::var_os("LANGTIAN_DUCKDB_EXTENSION_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("LANGTIAN_DUCKDB_EXTENSION_DIR").map(PathBuf::from))
}

/// One batch's position in the source, written with the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRecord {
    /// JetStream stream.
    pub stream: String,
    /// Durable consumer.
    pub consumer: String,
    /// Partition (one writer per partition).
    pub part: i32,
    /// First stream sequence in the batch.
    pub first_seq: u64,
    /// Last stream sequence in the batch.
    pub last_seq: u64,
    /// Batch id (for audit).
    pub batch_id: String,
}

impl OffsetRecord {
    /// A record with a fresh batch id.
    pub fn new(
        stream: impl Into<String>,
        consumer: impl Into<String>,
        part: i32,
        first_seq: u64,
        last_seq: u64,
    ) -> Self {
        Self {
            stream: stream.into(),
            consumer: consumer.into(),
            part,
            first_seq,
            last_seq,
            batch_id: nuid::next().to_string(),
        }
    }
}

/// What a maintenance run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintenanceReport {
    /// Files written by flushing inlined data and merging.
    pub files_written: u64,
    /// Snapshots expired.
    pub snapshots_expired: u64,
    /// Old files deleted.
    pub files_deleted: u64,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// Maintenance settings.
#[derive(Debug, Clone)]
pub struct MaintenanceOptions {
    /// Expire snapshots older than this (DuckDB interval text, e.g. `7 days`).
    pub expire_older_than: String,
    /// Delete files scheduled for deletion older than this.
    pub cleanup_older_than: String,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        Self {
            expire_older_than: "7 days".into(),
            cleanup_older_than: "1 day".into(),
        }
    }
}

/// When maintenance is due. The lake's single writer calls [`Lake::maintain_if_due`] between
/// batches, so maintenance never races the writer's own commits.
#[derive(Debug, Clone)]
pub struct MaintenanceSchedule {
    /// Interval between runs; zero disables maintenance.
    pub every: std::time::Duration,
    /// What each run does.
    pub options: MaintenanceOptions,
    last: Instant,
}

impl MaintenanceSchedule {
    /// A schedule whose first run is due `every` from now.
    pub fn new(every: std::time::Duration, options: MaintenanceOptions) -> Self {
        Self {
            every,
            options,
            last: Instant::now(),
        }
    }

    /// Whether a run is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        !self.every.is_zero() && now.duration_since(self.last) >= self.every
    }
}

/// An attached DuckLake.
pub struct Lake {
    conn: Connection,
    cfg: LakeConfig,
    /// Column names of tables this handle created or wrote (saves two catalog queries per batch;
    /// dropped on any write error so an outside schema change is picked up).
    columns: std::collections::HashMap<String, Vec<String>>,
    /// Keeps the process-wide DuckDB instance of a DuckDB-file catalog alive (dropped after `conn`).
    _shared: Option<Arc<SharedDb>>,
}

/// One DuckDB instance per DuckDB-file catalog in this process: a second `Lake::open` of the
/// same catalog gets a new connection to the same instance (MVCC between them) instead of a
/// second instance on the same file, which DuckDB's per-process file lock would not stop and
/// which would read stale or torn state.
struct SharedDb {
    root: Mutex<Connection>,
    alias: String,
}

type Registry = Mutex<HashMap<PathBuf, Weak<SharedDb>>>;

fn open_instances() -> &'static Registry {
    static OPEN: OnceLock<Registry> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The registry key of a catalog file: its absolute path (the file may not exist yet).
fn instance_key(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    match (abs.parent().and_then(|d| d.canonicalize().ok()), abs.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => abs,
    }
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("name", &self.cfg.name)
            .field("catalog", &self.cfg.catalog)
            .finish()
    }
}

/// A SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn check_ident(name: &str) -> Result<(), LakeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(LakeError::BadName(name.to_owned()))
    }
}

/// Opens an in-memory DuckDB with autoload/autoinstall off and loads `extensions` by path from
/// `ext_dir` (default: [`default_extension_dir`]).
pub fn open_duckdb(ext_dir: Option<&Path>, extensions: &[&str]) -> Result<Connection, LakeError> {
    let config = Config::default()
        .enable_autoload_extension(false)
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .map_err(db("configuring DuckDB"))?;
    let conn = Connection::open_in_memory_with_flags(config).map_err(db("opening DuckDB"))?;
    if extensions.is_empty() {
        return Ok(conn);
    }
    let ext_dir = ext_dir
        .map(Path::to_path_buf)
        .or_else(default_extension_dir)
        .ok_or_else(|| {
            LakeError::Config(
                "no extension directory: run scripts/setup.sh or set LANGTIAN_DUCKDB_EXTENSION_DIR".into(),
            )
        })?
        .join(DUCKDB_VERSION)
        .join("linux_amd64");
    for name in extensions {
        let path = ext_dir.join(format!("{name}.duckdb_extension"));
        if !path.is_file() {
            return Err(LakeError::ExtensionMissing {
                name: (*name).into(),
                path: path.display().to_string(),
            });
        }
        conn.execute_batch(&format!("LOAD {}", sql_str(&path.display().to_string())))
            .map_err(db(format!("loading extension {}", path.display())))?;
    }
    Ok(conn)
}

/// Creates (or replaces) the S3 secret `lt_s3` on `conn` (needs `httpfs` loaded).
pub fn create_s3_secret(conn: &Connection, s3: &S3) -> Result<(), LakeError> {
    let mut secret = format!(
        "CREATE OR REPLACE SECRET lt_s3 (TYPE s3, PROVIDER config, KEY_ID {}, SECRET {}, REGION {}, URL_STYLE {}, USE_SSL {}",
        sql_str(&s3.key_id),
        sql_str(&s3.secret),
        sql_str(&s3.region),
        sql_str(&s3.url_style),
        s3.use_ssl
    );
    if !s3.endpoint.is_empty() {
        secret.push_str(&format!(", ENDPOINT {}", sql_str(&s3.endpoint)));
    }
    secret.push(')');
    conn.execute_batch(&secret).map_err(db("creating the S3 secret"))
}

/// `CREATE TABLE` column list (`"a" BIGINT, "b" VARCHAR`) for an Arrow schema.
pub fn columns_sql(schema: &Schema) -> Result<String, String> {
    schema
        .fields()
        .iter()
        .map(|f| {
            duckdb_type(f.data_type())
                .map(|t| format!("\"{}\" {t}", f.name().replace('"', "\"\"")))
                .ok_or_else(|| format!("column `{}` has unsupported type {}", f.name(), f.data_type()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join(", "))
}

impl Lake {
    /// Opens DuckDB in memory, loads the extensions by path, attaches the lake (creating it if
    /// absent) and makes sure `ingest_offsets` exists.
    ///
    /// A DuckDB-file catalog that is already open in this process is not opened twice: the new
    /// handle is another connection to the same DuckDB instance (so a query service and a
    /// writer in one process see each other's commits).
    pub fn open(cfg: LakeConfig) -> Result<Self, LakeError> {
        check_ident(&cfg.name)?;
        if cfg.read_only {
            return Self::open_read_only(cfg);
        }
        let key = match &cfg.catalog {
            Catalog::DuckDb(p) => {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| LakeError::Config(format!("creating {}: {e}", parent.display())))?;
                }
                Some(instance_key(p))
            }
            _ => None,
        };
        let Some(key) = key else {
            return Self::open_instance(cfg);
        };
        // Held across the open so two threads cannot both create an instance for one file.
        let mut open = open_instances()
            .lock()
            .map_err(|_| LakeError::Config("lake registry poisoned".into()))?;
        open.retain(|_, w| w.strong_count() > 0);
        if let Some(shared) = open.get(&key).and_then(Weak::upgrade) {
            if shared.alias != cfg.name {
                return Err(LakeError::Config(format!(
                    "catalog {} is already attached in this process as `{}`, not `{}`",
                    key.display(),
                    shared.alias,
                    cfg.name
                )));
            }
            let conn = shared
                .root
                .lock()
                .map_err(|_| LakeError::Config("lake registry poisoned".into()))?
                .try_clone()
                .map_err(db("connecting to the open lake"))?;
            return Ok(Self {
                conn,
                cfg,
                columns: Default::default(),
                _shared: Some(shared),
            });
        }
        let lake = Self::open_instance(cfg)?;
        let root = lake.conn.try_clone().map_err(db("connecting to the lake"))?;
        let shared = Arc::new(SharedDb {
            root: Mutex::new(root),
            alias: lake.cfg.name.clone(),
        });
        open.insert(key, Arc::downgrade(&shared));
        Ok(Self {
            _shared: Some(shared),
            ..lake
        })
    }

    /// A read-only instance of its own: never shared with (or created by) a writer.
    fn open_read_only(cfg: LakeConfig) -> Result<Self, LakeError> {
        if let Catalog::DuckDb(p) = &cfg.catalog {
            if !p.exists() {
                return Err(LakeError::Config(format!(
                    "no lake catalog at {} (read-only opens an existing lake; write it first)",
                    p.display()
                )));
            }
            let open = open_instances()
                .lock()
                .map_err(|_| LakeError::Config("lake registry poisoned".into()))?;
            if open.get(&instance_key(p)).and_then(Weak::upgrade).is_some() {
                return Err(LakeError::Config(format!(
                    "catalog {} is open read-write in this process; query through that handle",
                    p.display()
                )));
            }
        }
        Self::open_instance(cfg)
    }

    fn open_instance(cfg: LakeConfig) -> Result<Self, LakeError> {
        let mut needed = vec!["ducklake"];
        match &cfg.catalog {
            Catalog::DuckDb(_) => {}
            Catalog::Sqlite(_) => needed.push("sqlite_scanner"),
            Catalog::Postgres(_) => needed.push("postgres_scanner"),
        }
        if matches!(cfg.data_path, DataPath::S3(_)) {
            needed.push("httpfs");
        }
        let conn = open_duckdb(cfg.extension_dir.as_deref(), &needed)?;
        if let Some(m) = &cfg.memory_limit {
            conn.execute_batch(&format!("SET memory_limit = {}", sql_str(m)))
                .map_err(db("setting memory_limit"))?;
        }
        if let Some(t) = cfg.threads {
            conn.execute_batch(&format!("SET threads = {t}"))
                .map_err(db("setting threads"))?;
        }
        let data_path = match &cfg.data_path {
            DataPath::Local(p) => {
                if !cfg.read_only {
                    std::fs::create_dir_all(p)
                        .map_err(|e| LakeError::Config(format!("creating data path {}: {e}", p.display())))?;
                }
                let mut s = p.display().to_string();
                if !s.ends_with('/') {
                    s.push('/');
                }
                s
            }
            DataPath::S3(s3) => {
                create_s3_secret(&conn, s3)?;
                s3.url.clone()
            }
        };
        let (target, extra) = match &cfg.catalog {
            Catalog::DuckDb(p) => {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| LakeError::Config(format!("creating {}: {e}", parent.display())))?;
                }
                (format!("ducklake:{}", p.display()), String::new())
            }
            Catalog::Sqlite(p) => {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| LakeError::Config(format!("creating {}: {e}", parent.display())))?;
                }
                (
                    format!("ducklake:sqlite:{}", p.display()),
                    ", META_JOURNAL_MODE 'WAL', META_BUSY_TIMEOUT 5000".to_owned(),
                )
            }
            Catalog::Postgres(conninfo) => (format!("ducklake:postgres:{conninfo}"), String::new()),
        };
        let mode = if cfg.read_only { ", READ_ONLY" } else { "" };
        conn.execute_batch(&format!(
            "ATTACH {} AS {} (DATA_PATH {}{extra}{mode})",
            sql_str(&target),
            cfg.name,
            sql_str(&data_path)
        ))
        .map_err(db(format!("attaching DuckLake {target}")))?;
        let lake = Self {
            conn,
            cfg,
            columns: Default::default(),
            _shared: None,
        };
        if !lake.cfg.read_only {
            lake.ensure_offsets_table()?;
        }
        Ok(lake)
    }

    /// The configuration.
    pub fn config(&self) -> &LakeConfig {
        &self.cfg
    }

    /// The underlying connection (for queries).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn ensure_offsets_table(&self) -> Result<(), LakeError> {
        let n = &self.cfg.name;
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {n}.ingest_offsets(
                    stream VARCHAR NOT NULL, consumer VARCHAR NOT NULL, part INTEGER NOT NULL,
                    first_seq UBIGINT NOT NULL, last_seq UBIGINT NOT NULL,
                    batch_id VARCHAR, rows BIGINT, committed_at TIMESTAMPTZ);"
            ))
            .map_err(db("creating ingest_offsets"))?;
        // Keep the offset log in the catalog: never flushed to Parquet or compacted by bulk maintenance.
        self.conn
            .execute_batch(&format!(
                "CALL {n}.set_option('data_inlining_row_limit', 100000, table_name => 'ingest_offsets');
                 CALL {n}.set_option('auto_compact', false, table_name => 'ingest_offsets');"
            ))
            .map_err(db("setting ingest_offsets options"))?;
        Ok(())
    }

    /// Creates `table` with columns from `schema` unless it exists.
    pub fn ensure_table(&self, table: &str, schema: &Schema) -> Result<(), LakeError> {
        check_ident(table)?;
        if self.columns.contains_key(table) {
            return Ok(());
        }
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = duckdb_type(f.data_type()).ok_or_else(|| LakeError::UnsupportedType {
                    table: table.into(),
                    column: f.name().clone(),
                    data_type: f.data_type().to_string(),
                })?;
                Ok(format!(
                    "\"{}\" {ty}{}",
                    f.name().replace('"', "\"\""),
                    if f.is_nullable() { "" } else { " NOT NULL" }
                ))
            })
            .collect::<Result<Vec<_>, LakeError>>()?;
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {}.{table}({})",
                self.cfg.name,
                cols.join(", ")
            ))
            .map_err(db(format!("creating table {}.{table}", self.cfg.name)))
    }

    /// Column names of `table`, in table order.
    pub fn table_columns(&self, table: &str) -> Result<Vec<String>, LakeError> {
        check_ident(table)?;
        let mut stmt = self
            .conn
            .prepare("SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_name = ? ORDER BY ordinal_position")
            .map_err(db("reading table columns"))?;
        let rows = stmt
            .query_map(params![self.cfg.name, table], |r| r.get::<_, String>(0))
            .map_err(db(format!("reading columns of {table}")))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db(format!("reading columns of {table}")))
    }

    /// Appends `batches` to `table` and `offsets` to `ingest_offsets` in one transaction.
    /// Columns are matched by name; a missing or extra column is a [`LakeError::SchemaMismatch`].
    /// Returns the number of rows written. On error nothing is committed.
    pub fn write_batch(
        &mut self,
        table: &str,
        batches: &[RecordBatch],
        offsets: &OffsetRecord,
    ) -> Result<u64, LakeError> {
        check_ident(table)?;
        let columns = match self.columns.get(table) {
            Some(c) => c.clone(),
            None => self.table_columns(table)?,
        };
        if columns.is_empty() {
            return Err(LakeError::SchemaMismatch {
                table: table.into(),
                reason: "table does not exist (call ensure_table first)".into(),
            });
        }
        let ordered = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| project(table, b, &columns))
            .collect::<Result<Vec<_>, _>>()?;
        let rows: u64 = ordered.iter().map(|b| b.num_rows() as u64).sum();
        let name = self.cfg.name.clone();
        let result = self.append_in_tx(&name, table, ordered, offsets, rows);
        match &result {
            Ok(_) => {
                self.columns.insert(table.to_owned(), columns);
            }
            Err(_) => {
                self.columns.remove(table);
            }
        }
        result
    }

    fn append_in_tx(
        &mut self,
        name: &str,
        table: &str,
        ordered: Vec<RecordBatch>,
        offsets: &OffsetRecord,
        rows: u64,
    ) -> Result<u64, LakeError> {
        let tx = self.conn.transaction().map_err(db("BEGIN"))?;
        {
            let mut app = tx
                .appender_to_catalog_and_db(table, name, "main")
                .map_err(db(format!("opening an appender on {name}.{table}")))?;
            for b in ordered {
                app.append_record_batch(b)
                    .map_err(db(format!("appending to {name}.{table}")))?;
            }
            app.flush()
                .map_err(db(format!("flushing the appender of {name}.{table}")))?;
        }
        insert_offsets(&tx, name, offsets, rows)?;
        tx.commit()
            .map_err(db(format!("committing the batch into {name}.{table}")))?;
        Ok(rows)
    }

    /// Records a position without rows (e.g. a batch that produced no output), in one transaction.
    pub fn write_offsets_only(&mut self, offsets: &OffsetRecord) -> Result<(), LakeError> {
        insert_offsets(&self.conn, &self.cfg.name, offsets, 0)
    }

    /// The highest committed stream sequence for `(stream, consumer, part)`.
    pub fn committed_position(
        &self,
        stream: &str,
        consumer: &str,
        part: i32,
    ) -> Result<Option<u64>, LakeError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT max(last_seq) FROM {}.ingest_offsets WHERE stream = ? AND consumer = ? AND part = ?",
                    self.cfg.name
                ),
                params![stream, consumer, part],
                |r| r.get::<_, Option<u64>>(0),
            )
            .map_err(db(format!("reading the committed position of {stream}/{consumer}/{part}")))
    }

    /// Runs a query and returns Arrow batches.
    pub fn query_arrow(&self, sql: &str) -> Result<Vec<RecordBatch>, LakeError> {
        let mut stmt = self.conn.prepare(sql).map_err(db(format!("preparing `{sql}`")))?;
        let batches = stmt
            .query_arrow([])
            .map_err(db(format!("running `{sql}`")))?
            .collect();
        Ok(batches)
    }

    /// Flushes inlined data, merges adjacent files, expires old snapshots and deletes old files.
    pub fn maintain(&self, opts: &MaintenanceOptions) -> Result<MaintenanceReport, LakeError> {
        let started = Instant::now();
        let n = &self.cfg.name;
        let count = |sql: &str, what: &str| -> Result<u64, LakeError> {
            let mut stmt = self.conn.prepare(sql).map_err(db(what.to_owned()))?;
            let mut rows = stmt.query([]).map_err(db(what.to_owned()))?;
            let mut k = 0u64;
            while rows.next().map_err(db(what.to_owned()))?.is_some() {
                k += 1;
            }
            Ok(k)
        };
        let mut report = MaintenanceReport::default();
        report.files_written += count(
            &format!("CALL ducklake_flush_inlined_data({})", sql_str(n)),
            "flushing inlined data",
        )?;
        report.files_written += count(
            &format!("CALL ducklake_merge_adjacent_files({})", sql_str(n)),
            "merging adjacent files",
        )?;
        report.snapshots_expired = count(
            &format!(
                "CALL ducklake_expire_snapshots({}, older_than => now() - INTERVAL {})",
                sql_str(n),
                sql_str(&opts.expire_older_than)
            ),
            "expiring snapshots",
        )?;
        report.files_deleted = count(
            &format!(
                "CALL ducklake_cleanup_old_files({}, older_than => now() - INTERVAL {})",
                sql_str(n),
                sql_str(&opts.cleanup_older_than)
            ),
            "cleaning up old files",
        )?;
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Runs [`Lake::maintain`] when `schedule` says it is due; returns its report if it ran.
    pub fn maintain_if_due(
        &self,
        schedule: &mut MaintenanceSchedule,
    ) -> Result<Option<MaintenanceReport>, LakeError> {
        let now = Instant::now();
        if !schedule.due(now) {
            return Ok(None);
        }
        schedule.last = now;
        self.maintain(&schedule.options).map(Some)
    }

    /// Number of snapshots in the lake.
    pub fn snapshot_count(&self) -> Result<u64, LakeError> {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM {}.snapshots()", self.cfg.name),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|c| c as u64)
            .map_err(db("counting snapshots"))
    }
}

/// Appends one `ingest_offsets` row (inside the caller's transaction when `conn` is one).
fn insert_offsets(conn: &Connection, lake: &str, o: &OffsetRecord, rows: u64) -> Result<(), LakeError> {
    conn.execute(
        &format!("INSERT INTO {lake}.ingest_offsets VALUES (?, ?, ?, ?, ?, ?, ?, now())"),
        params![
            o.stream,
            o.consumer,
            o.part,
            o.first_seq,
            o.last_seq,
            o.batch_id,
            rows as i64
        ],
    )
    .map_err(db(format!(
        "recording {}/{} seq {}..={} in ingest_offsets",
        o.stream, o.consumer, o.first_seq, o.last_seq
    )))?;
    Ok(())
}

/// Reorders `b`'s columns to `columns` (by name).
fn project(table: &str, b: &RecordBatch, columns: &[String]) -> Result<RecordBatch, LakeError> {
    let schema = b.schema();
    let mut idx = Vec::with_capacity(columns.len());
    for c in columns {
        match schema.index_of(c) {
            Ok(i) => idx.push(i),
            Err(_) => {
                return Err(LakeError::SchemaMismatch {
                    table: table.into(),
                    reason: format!("batch has no column `{c}`"),
                });
            }
        }
    }
    if let Some(extra) = schema.fields().iter().find(|f| !columns.contains(f.name())) {
        return Err(LakeError::SchemaMismatch {
            table: table.into(),
            reason: format!("batch column `{}` is not in the table", extra.name()),
        });
    }
    b.project(&idx).map_err(|e| LakeError::SchemaMismatch {
        table: table.into(),
        reason: e.to_string(),
    })
}

/// The DuckDB column type for an Arrow type, if supported.
pub fn duckdb_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(unit, tz) => {
            let base = match unit {
                TimeUnit::Second => "TIMESTAMP_S",
                TimeUnit::Millisecond => "TIMESTAMP_MS",
                TimeUnit::Microsecond => "TIMESTAMP",
                TimeUnit::Nanosecond => "TIMESTAMP_NS",
            };
            match (tz, unit) {
                (Some(_), TimeUnit::Microsecond) => "TIMESTAMPTZ".into(),
                (Some(_), _) => return None,
                (None, _) => base.into(),
            }
        }
        DataType::Decimal128(p, s) if *p <= 38 => format!("DECIMAL({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) => format!("{}[]", duckdb_type(f.data_type())?),
        DataType::Struct(fields) => {
            let inner = fields
                .iter()
                .map(|f: &std::sync::Arc<Field>| {
                    Some(format!(
                        "\"{}\" {}",
                        f.name().replace('"', "\"\""),
                        duckdb_type(f.data_type())?
                    ))
                })
                .collect::<Option<Vec<_>>>()?;
            format!("STRUCT({})", inner.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                duckdb_type(kv[0].data_type())?,
                duckdb_type(kv[1].data_type())?
            ),
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn maps_arrow_types() {
        assert_eq!(duckdb_type(&DataType::Int64).as_deref(), Some("BIGINT"));
        assert_eq!(
            duckdb_type(&DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))).as_deref(),
            Some("TIMESTAMPTZ")
        );
        assert_eq!(
            duckdb_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)).as_deref(),
            Some("TIMESTAMP_NS")
        );
        let nested = DataType::Struct(
            vec![
                Field::new("a", DataType::Utf8, true),
                Field::new(
                    "b",
                    DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
                    true,
                ),
            ]
            .into(),
        );
        assert_eq!(
            duckdb_type(&nested).as_deref(),
            Some("STRUCT(\"a\" VARCHAR, \"b\" DOUBLE[])")
        );
        assert_eq!(duckdb_type(&DataType::Float16), None);
    }

    #[test]
    fn schedule_is_due_after_its_interval() {
        let s = MaintenanceSchedule::new(std::time::Duration::from_secs(60), MaintenanceOptions::default());
        assert!(!s.due(Instant::now()));
        assert!(s.due(Instant::now() + std::time::Duration::from_secs(61)));
        let off = MaintenanceSchedule::new(std::time::Duration::ZERO, MaintenanceOptions::default());
        assert!(!off.due(Instant::now() + std::time::Duration::from_secs(3600)));
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(check_ident("events_2026").is_ok());
        assert!(check_ident("1x").is_err());
        assert!(check_ident("a;drop").is_err());
        assert!(check_ident("").is_err());
    }
}
