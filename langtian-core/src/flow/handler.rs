//! Handlers: turn a batch of message payloads into an Arrow relation named `batch` (or the
//! configured table) inside DuckDB, run the pipeline's SQL over it and return the rows of the last
//! statement.
//!
//! - `handlers.InferredMemBatch`: JSON objects; the Arrow schema is inferred over the **whole**
//!   batch (a field first seen in the last message still becomes a column; int and float widen to
//!   double; nested objects become structs, arrays lists).
//! - `handlers.StructuredBatch`: declared columns (JSON payloads are cast to them; unknown fields
//!   ignored, missing ones NULL) and/or `message_type`: protobuf payloads decoded with the
//!   descriptors of `proto/` (e.g. `langtian.battery.v1.ChannelSample`), binary or in the
//!   canonical protobuf JSON form.
//!
//! A payload that cannot be decoded is reported per message in [`Invocation::rejected`]; the rest
//! of the batch still runs. SQL errors fail the whole batch.
//!
//! ```no_run
//! use langtian_core::flow::config::Handler;
//! use langtian_core::flow::handler::BatchHandler;
//! # fn demo() -> Result<(), langtian_core::flow::handler::HandlerError> {
//! let cfg = Handler { kind: "handlers.InferredMemBatch".into(), sql: "SELECT count(*) AS n FROM batch".into(),
//!                     table: None, schema: vec![], message_type: None };
//! let mut h = BatchHandler::new(&cfg, &[])?;
//! let out = h.invoke(&[br#"{"a":1}"#.as_slice(), br#"{"a":2.5,"b":"x"}"#.as_slice()])?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use duckdb::{Config, Connection};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::config::{Column, Command, Handler};
use crate::lake::columns_sql;

/// Handler errors.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Bad handler configuration.
    #[error("handler configuration: {0}")]
    Config(String),
    /// A start-up command failed.
    #[error("command `{name}` failed: {source}")]
    Command {
        /// The command's name.
        name: String,
        /// DuckDB's error.
        source: duckdb::Error,
    },
    /// The SQL failed on this batch.
    #[error("SQL failed on a batch of {rows} rows: {source}")]
    Sql {
        /// Rows in the batch.
        rows: usize,
        /// DuckDB's error.
        source: duckdb::Error,
    },
    /// Building the Arrow relation failed.
    #[error("building the `{relation}` relation: {reason}")]
    Relation {
        /// Relation name.
        relation: String,
        /// Why.
        reason: String,
    },
}

/// The result of one invocation.
#[derive(Debug, Default)]
pub struct Invocation {
    /// Rows of the last SQL statement.
    pub batches: Vec<RecordBatch>,
    /// Payloads that could not be decoded: (index in the input, why).
    pub rejected: Vec<(usize, String)>,
    /// Rows that went into the relation.
    pub input_rows: usize,
}

impl Invocation {
    /// Total output rows.
    pub fn output_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

enum Decode {
    Json,
    Proto(MessageDescriptor),
}

/// Runs one pipeline's handler over batches.
pub struct BatchHandler {
    conn: Connection,
    relation: String,
    statements: Vec<String>,
    declared: Vec<Column>,
    decode: Decode,
    meta_use: super::meta::MetaUse,
    /// Schema of the relation as last created (reused while batches keep it).
    loaded_schema: Option<SchemaRef>,
    /// Per decoded schema: the indices of the columns the SQL reads (`None`: all).
    pushdown: std::collections::HashMap<SchemaRef, Option<Vec<usize>>>,
    /// Flat protobuf: which fields of the message to decode (`None`: all).
    proto_mask: Option<Vec<bool>>,
    /// Whether the last invocation ran on a narrowed relation.
    narrowed_last: bool,
    /// Set after a narrowed run failed: always load everything.
    narrowing_off: bool,
    /// The slot `lt_batch` reads the current batch from.
    slot: super::batch_scan::Slot,
    /// When the relation is a view over `lt_batch`: the schema it was made for.
    view_of: Option<SchemaRef>,
}

impl std::fmt::Debug for BatchHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchHandler")
            .field("relation", &self.relation)
            .finish()
    }
}

impl BatchHandler {
    /// Opens an in-memory DuckDB, runs the start-up `commands` and prepares the handler.
    pub fn new(cfg: &Handler, commands: &[Command]) -> Result<Self, HandlerError> {
        let config = Config::default()
            .enable_autoload_extension(false)
            .and_then(|c| c.with("autoinstall_known_extensions", "false"))
            .map_err(|e| HandlerError::Config(e.to_string()))?;
        let conn =
            Connection::open_in_memory_with_flags(config).map_err(|e| HandlerError::Config(e.to_string()))?;
        Self::with_connection(conn, cfg, commands)
    }

    /// Like [`BatchHandler::new`] on an existing connection.
    pub fn with_connection(
        conn: Connection,
        cfg: &Handler,
        commands: &[Command],
    ) -> Result<Self, HandlerError> {
        for c in commands {
            conn.execute_batch(&c.sql)
                .map_err(|source| HandlerError::Command {
                    name: c.name.clone(),
                    source,
                })?;
        }
        conn.register_table_function::<super::batch_scan::BatchScan>(super::batch_scan::FUNCTION)
            .map_err(|e| HandlerError::Config(format!("registering {}: {e}", super::batch_scan::FUNCTION)))?;
        let structured = match cfg.kind.as_str() {
            "handlers.InferredMemBatch" => false,
            "handlers.StructuredBatch" => true,
            other => return Err(HandlerError::Config(format!("unknown handler type `{other}`"))),
        };
        let relation = cfg.table.clone().unwrap_or_else(|| "batch".into());
        if relation.is_empty() || !relation.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(HandlerError::Config(format!(
                "relation name `{relation}` must be letters, digits and _"
            )));
        }
        for c in &cfg.schema {
            if c.name.contains('"') {
                return Err(HandlerError::Config(format!(
                    "column name `{}` may not contain '\"'",
                    c.name
                )));
            }
        }
        let decode = match (&cfg.message_type, structured) {
            (Some(t), true) => {
                let pool = DescriptorPool::decode(crate::proto::DESCRIPTOR_SET)
                    .map_err(|e| HandlerError::Config(format!("loading contract descriptors: {e}")))?;
                let d = pool.get_message_by_name(t).ok_or_else(|| {
                    let known: Vec<String> = pool.all_messages().map(|m| m.full_name().to_owned()).collect();
                    HandlerError::Config(format!(
                        "message type `{t}` is not in the contracts; known: {}",
                        known.join(", ")
                    ))
                })?;
                Decode::Proto(d)
            }
            (Some(_), false) => {
                return Err(HandlerError::Config(
                    "message_type needs handlers.StructuredBatch".into(),
                ));
            }
            _ => Decode::Json,
        };
        let statements = split_sql(&cfg.sql);
        if statements.is_empty() {
            return Err(HandlerError::Config("handler.sql has no statement".into()));
        }
        let meta_use = super::meta::MetaUse::of_sql(&cfg.sql);
        Ok(Self {
            conn,
            relation,
            meta_use,
            loaded_schema: None,
            pushdown: Default::default(),
            proto_mask: None,
            narrowed_last: false,
            narrowing_off: false,
            slot: super::batch_scan::Slot::new(),
            view_of: None,
            statements,
            declared: if structured {
                cfg.schema.clone()
            } else {
                Vec::new()
            },
            decode,
        })
    }

    /// The DuckDB connection (for sinks that share it).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Decodes `payloads`, loads them as the relation and runs the SQL.
    pub fn invoke<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<Invocation, HandlerError> {
        self.invoke_with_meta(payloads, None)
    }

    /// Like [`BatchHandler::invoke`], adding `meta[i]` to row `i` as the struct column `nats`
    /// (see [`super::meta`]) when given.
    ///
    /// Only the columns the SQL reads are decoded (flat protobuf) and loaded (learnt from
    /// DuckDB's plan, see [`BatchHandler::columns_read`]). If the SQL ever fails on a narrowed
    /// relation, the batch runs again on everything and this handler stops narrowing: the plan
    /// reading can cost speed, never a result.
    pub fn invoke_with_meta<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
        meta: Option<&[&super::meta::SourceMeta]>,
    ) -> Result<Invocation, HandlerError> {
        let narrow = !self.narrowing_off;
        match self.invoke_once(payloads, meta, narrow) {
            Err(HandlerError::Sql { source, .. }) if narrow && self.narrowed_last => {
                tracing::warn!(code = "sql_narrowing_failed", error = %source, "SQL failed on the narrowed relation; running it on all columns from now on");
                self.narrowing_off = true;
                self.pushdown.clear();
                self.proto_mask = None;
                self.invoke_once(payloads, meta, false)
            }
            r => r,
        }
    }

    fn invoke_once<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
        meta: Option<&[&super::meta::SourceMeta]>,
        narrow: bool,
    ) -> Result<Invocation, HandlerError> {
        let rel_err = |reason: String| HandlerError::Relation {
            relation: self.relation.clone(),
            reason,
        };
        self.narrowed_last = false;
        let (decoded, rejected) = match &self.decode {
            // Flat protobuf messages go straight into Arrow columns.
            Decode::Proto(d) if super::proto_arrow::is_flat(d) => {
                let mask = if narrow { self.proto_mask.as_deref() } else { None };
                self.narrowed_last |= mask.is_some();
                super::proto_arrow::decode_flat(d, payloads, mask).map_err(rel_err)?
            }
            _ => {
                let mut rejected = Vec::new();
                let mut values = Vec::with_capacity(payloads.len());
                for (i, p) in payloads.iter().enumerate() {
                    match self.decode_one(p.as_ref()) {
                        Ok(v) => values.push(v),
                        Err(why) => rejected.push((i, why)),
                    }
                }
                (to_record_batch(&values).map_err(rel_err)?, rejected)
            }
        };
        let inferred = match (decoded, meta) {
            (Some(b), Some(meta)) if self.meta_use != super::meta::MetaUse::None => {
                Some(with_meta_column(b, meta, &rejected, self.meta_use).map_err(rel_err)?)
            }
            (b, _) => b,
        };
        let input_rows = inferred.as_ref().map(RecordBatch::num_rows).unwrap_or(0);
        let mut planning = false;
        let relation = match inferred {
            Some(b) if narrow && self.declared.is_empty() => Some(match self.pushdown.get(&b.schema()) {
                Some(Some(keep)) => {
                    self.narrowed_last = true;
                    b.project(keep).map_err(|e| rel_err(e.to_string()))?
                }
                Some(None) => b,
                None => {
                    planning = true;
                    self.load(Some(&b))?;
                    let keep = self.columns_read(&b.schema());
                    if let (Decode::Proto(d), Some(k)) = (&self.decode, &keep)
                        && self.proto_mask.is_none()
                    {
                        // Later batches decode only these fields of the message.
                        let n = d.fields().len();
                        let mut mask = vec![false; n];
                        for i in k.iter().filter(|i| **i < n) {
                            mask[*i] = true;
                        }
                        if mask.iter().any(|m| !m) && mask.iter().any(|m| *m) {
                            self.proto_mask = Some(mask);
                        }
                    }
                    self.pushdown.insert(b.schema(), keep);
                    b
                }
            }),
            other => other,
        };
        match &relation {
            // The plan is read from a real table; afterwards DuckDB scans the Arrow batch in place.
            Some(b) if self.declared.is_empty() && !planning => self.load_view(b)?,
            _ => self.load(relation.as_ref())?,
        }
        let batches = self.run_sql(input_rows);
        self.slot.clear();
        let batches = batches?;
        Ok(Invocation {
            batches: batches.into_iter().filter(|b| b.num_rows() > 0).collect(),
            rejected,
            input_rows,
        })
    }

    /// Runs the statements over the loaded relation; the rows of the last one.
    fn run_sql(&self, input_rows: usize) -> Result<Vec<RecordBatch>, HandlerError> {
        let (last, rest) = self
            .statements
            .split_last()
            .ok_or_else(|| HandlerError::Config("no SQL".into()))?;
        for s in rest {
            self.conn.execute_batch(s).map_err(|source| HandlerError::Sql {
                rows: input_rows,
                source,
            })?;
        }
        let mut stmt = self.conn.prepare(last).map_err(|source| HandlerError::Sql {
            rows: input_rows,
            source,
        })?;
        match stmt.query_arrow([]) {
            Ok(a) => Ok(a.collect()),
            Err(duckdb::Error::InvalidColumnType(..)) | Err(duckdb::Error::ExecuteReturnedResults) => {
                Ok(Vec::new())
            }
            Err(source) => Err(HandlerError::Sql {
                rows: input_rows,
                source,
            }),
        }
    }

    /// Which columns of `schema` (loaded as the relation) the handler's SQL reads, from the scan
    /// projections in DuckDB's own plan (`EXPLAIN (FORMAT JSON)`). `None` (load everything) when
    /// the SQL has several statements, the plan cannot be read, or it names something unknown.
    fn columns_read(&self, schema: &Schema) -> Option<Vec<usize>> {
        let [stmt] = self.statements.as_slice() else {
            return None;
        };
        // Plan without the optimizers that hide columns from the scan's projection list
        // (filters pushed into the scan, late materialization) or that depend on this batch's
        // data (statistics propagation can drop a filter that is always true here).
        let before: String = self
            .conn
            .query_row("SELECT current_setting('disabled_optimizers')", [], |r| r.get(0))
            .ok()?;
        let off =
            "filter_pushdown,late_materialization,statistics_propagation,filter_pullup,cte_filter_pusher";
        let set = if before.trim().is_empty() {
            off.to_owned()
        } else {
            format!("{before},{off}")
        };
        self.conn
            .execute_batch(&format!(
                "SET disabled_optimizers = {}",
                crate::lake::sql_str(&set)
            ))
            .ok()?;
        let plan: Option<String> = self
            .conn
            .query_row(&format!("EXPLAIN (FORMAT JSON) {stmt}"), [], |r| r.get(1))
            .ok();
        self.conn
            .execute_batch(&format!(
                "SET disabled_optimizers = {}",
                crate::lake::sql_str(&before)
            ))
            .ok()?;
        let plan = plan?;
        let plan: serde_json::Value = serde_json::from_str(&plan).ok()?;
        let suffix = format!(".{}", self.relation);
        let mut scans = 0usize;
        let mut keep = std::collections::BTreeSet::new();
        let mut stack = vec![&plan];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Array(a) => stack.extend(a.iter()),
                serde_json::Value::Object(o) => {
                    if let Some(c) = o.get("children") {
                        stack.push(c);
                    }
                    let Some(info) = o.get("extra_info").and_then(|e| e.as_object()) else {
                        continue;
                    };
                    let Some(table) = info.get("Table").and_then(|t| t.as_str()) else {
                        continue;
                    };
                    if !(table == self.relation || table.ends_with(&suffix)) {
                        continue;
                    }
                    scans += 1;
                    if info.contains_key("Filters") {
                        return None;
                    }
                    let projections: Vec<&str> = match info.get("Projections") {
                        Some(serde_json::Value::String(s)) => s.lines().filter(|l| !l.is_empty()).collect(),
                        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).collect(),
                        None => return None, // a scan that does not say what it reads
                        Some(_) => return None,
                    };
                    for p in projections {
                        let i = schema.fields().iter().position(|f| {
                            p == f.name()
                                || p.strip_prefix(f.name().as_str())
                                    .is_some_and(|r| r.starts_with('.'))
                        })?;
                        keep.insert(i);
                    }
                }
                _ => {}
            }
        }
        if scans == 0 || keep.len() == schema.fields().len() {
            return None;
        }
        if keep.is_empty() {
            keep.insert(0); // e.g. count(*): one column keeps the row count
        }
        Some(keep.into_iter().collect())
    }

    fn decode_one(&self, p: &[u8]) -> Result<serde_json::Value, String> {
        match &self.decode {
            Decode::Json => {
                let v: serde_json::Value = serde_json::from_slice(p).map_err(|e| format!("not JSON: {e}"))?;
                if v.is_object() {
                    Ok(v)
                } else {
                    Err("JSON payload is not an object".into())
                }
            }
            Decode::Proto(d) => {
                // Binary protobuf, or its canonical JSON mapping (handy for JSONL fixtures).
                let m = if p.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                    let mut de = serde_json::Deserializer::from_slice(p);
                    DynamicMessage::deserialize(d.clone(), &mut de)
                        .map_err(|e| format!("not a {} in JSON form: {e}", d.full_name()))?
                } else {
                    DynamicMessage::decode(d.clone(), p)
                        .map_err(|e| format!("not a {}: {e}", d.full_name()))?
                };
                let opts = SerializeOptions::new()
                    .stringify_64_bit_integers(false)
                    .use_proto_field_name(true)
                    .skip_default_fields(false);
                m.serialize_with_options(serde_json::value::Serializer, &opts)
                    .map_err(|e| format!("converting {}: {e}", d.full_name()))
            }
        }
    }

    /// (Re)creates the relation and appends the decoded rows.
    /// Makes the relation a view over `lt_batch` showing `b` (no copy of the rows).
    fn load_view(&mut self, b: &RecordBatch) -> Result<(), HandlerError> {
        self.slot.put(b.clone());
        if self.view_of.as_ref() == Some(&b.schema()) {
            return Ok(());
        }
        let rel = self.relation.clone();
        let sql_err = |e: duckdb::Error| HandlerError::Relation {
            relation: rel.clone(),
            reason: e.to_string(),
        };
        if self.view_of.take().is_some() {
            self.conn
                .execute_batch(&format!("DROP VIEW IF EXISTS \"{rel}\""))
                .map_err(sql_err)?;
        } else {
            self.conn
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS \"{rel}\"; DROP TABLE IF EXISTS \"{rel}__raw\";"
                ))
                .map_err(sql_err)?;
        }
        self.loaded_schema = None;
        self.conn
            .execute_batch(&format!(
                "CREATE VIEW \"{rel}\" AS SELECT * FROM {}({}::UBIGINT)",
                super::batch_scan::FUNCTION,
                self.slot.id()
            ))
            .map_err(sql_err)?;
        self.view_of = Some(b.schema());
        Ok(())
    }

    fn load(&mut self, batch: Option<&RecordBatch>) -> Result<(), HandlerError> {
        if self.view_of.take().is_some() {
            let rel = &self.relation;
            self.conn
                .execute_batch(&format!("DROP VIEW IF EXISTS \"{rel}\""))
                .map_err(|e| HandlerError::Relation {
                    relation: rel.clone(),
                    reason: e.to_string(),
                })?;
        }
        // Same columns as the previous batch: empty the relation and append (much cheaper than
        // dropping and creating it for every batch).
        if self.declared.is_empty()
            && let (Some(b), Some(prev)) = (batch, &self.loaded_schema)
            && b.schema() == *prev
        {
            let rel = &self.relation;
            let reused = self
                .conn
                .execute_batch(&format!("TRUNCATE \"{rel}\""))
                .and_then(|()| {
                    let mut app = self.conn.appender(rel)?;
                    app.append_record_batch(b.clone())?;
                    app.flush()
                });
            if reused.is_ok() {
                return Ok(());
            }
        }
        self.loaded_schema = None;
        let rel = &self.relation;
        let rel_err = |reason: String| HandlerError::Relation {
            relation: rel.clone(),
            reason,
        };
        let sql_err = |e: duckdb::Error| rel_err(e.to_string());
        self.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS \"{rel}\"; DROP TABLE IF EXISTS \"{rel}__raw\";"
            ))
            .map_err(sql_err)?;
        let raw_name = if self.declared.is_empty() {
            rel.clone()
        } else {
            format!("{rel}__raw")
        };
        if let Some(b) = batch {
            let cols = columns_sql(&b.schema()).map_err(rel_err)?;
            self.conn
                .execute_batch(&format!("CREATE TABLE \"{raw_name}\"({cols})"))
                .map_err(sql_err)?;
            let mut app = self.conn.appender(&raw_name).map_err(sql_err)?;
            app.append_record_batch(b.clone()).map_err(sql_err)?;
            app.flush().map_err(sql_err)?;
            drop(app);
            if self.declared.is_empty() {
                self.loaded_schema = Some(b.schema());
            }
        } else if self.declared.is_empty() {
            // An empty batch: an empty relation so that the SQL still runs.
            self.conn
                .execute_batch(&format!("CREATE TABLE \"{rel}\"(_empty BOOLEAN)"))
                .map_err(sql_err)?;
        }
        if !self.declared.is_empty() {
            let decl: Vec<String> = self
                .declared
                .iter()
                .map(|c| format!("\"{}\" {}", c.name, c.data_type))
                .collect();
            self.conn
                .execute_batch(&format!("CREATE TABLE \"{rel}\"({})", decl.join(", ")))
                .map_err(sql_err)?;
            if let Some(b) = batch {
                let schema = b.schema();
                let present: Vec<String> = self
                    .declared
                    .iter()
                    .filter(|c| schema.index_of(&c.name).is_ok())
                    .map(|c| format!("\"{}\"", c.name))
                    .collect();
                if !present.is_empty() {
                    let list = present.join(", ");
                    self.conn
                        .execute_batch(&format!(
                            "INSERT INTO \"{rel}\"({list}) SELECT {list} FROM \"{rel}__raw\"; DROP TABLE \"{rel}__raw\";"
                        ))
                        .map_err(|e| rel_err(format!("casting to the declared schema: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

/// Appends the `nats` column: `meta` holds one entry per payload, `rejected` the payloads that
/// produced no row.
fn with_meta_column(
    b: RecordBatch,
    meta: &[&super::meta::SourceMeta],
    rejected: &[(usize, String)],
    meta_use: super::meta::MetaUse,
) -> Result<RecordBatch, String> {
    let kept: Vec<&super::meta::SourceMeta> = if rejected.is_empty() {
        meta.to_vec()
    } else {
        let skip: std::collections::HashSet<usize> = rejected.iter().map(|(i, _)| *i).collect();
        meta.iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, m)| *m)
            .collect()
    };
    if kept.len() != b.num_rows() {
        return Err(format!(
            "{} metadata entries for {} decoded rows",
            kept.len(),
            b.num_rows()
        ));
    }
    let with_headers = meta_use == super::meta::MetaUse::Full;
    let col = super::meta::meta_column(&kept, with_headers)?;
    let schema = b.schema();
    let mut fields: Vec<Arc<Field>> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != "nats")
        .cloned()
        .collect();
    let mut arrays: Vec<arrow::array::ArrayRef> = schema
        .fields()
        .iter()
        .zip(b.columns())
        .filter(|(f, _)| f.name() != "nats")
        .map(|(_, a)| a.clone())
        .collect();
    fields.push(Arc::new(Field::new(
        "nats",
        super::meta::meta_type(with_headers),
        true,
    )));
    arrays.push(Arc::new(col));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}

/// JSON objects → one RecordBatch with a schema inferred over all of them (`None` if empty).
pub fn to_record_batch(values: &[serde_json::Value]) -> Result<Option<RecordBatch>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    let inferred = arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
        .map_err(|e| format!("inferring the schema: {e}"))?;
    if inferred.fields().is_empty() {
        return Ok(None);
    }
    let schema: SchemaRef = Arc::new(Schema::new(replace_null(inferred.fields())));
    let mut decoder = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(values.len().max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder
        .serialize(values)
        .map_err(|e| format!("decoding rows: {e}"))?;
    decoder.flush().map_err(|e| format!("decoding rows: {e}"))
}

/// Columns that were null in every row have type Null, which tables cannot hold: use VARCHAR.
fn replace_null(fields: &Fields) -> Vec<Field> {
    fields
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Null => DataType::Utf8,
                DataType::Struct(inner) => DataType::Struct(replace_null(inner).into()),
                DataType::List(item) => DataType::List(Arc::new(
                    replace_null(&vec![item.as_ref().clone()].into()).remove(0),
                )),
                other => other.clone(),
            };
            Field::new(f.name(), t, true)
        })
        .collect()
}

/// Splits SQL into statements on `;`, ignoring semicolons in quotes and comments.
pub fn split_sql(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    let mut prev = ' ';
                    for n in chars.by_ref() {
                        if prev == '*' && n == '/' {
                            break;
                        }
                        prev = n;
                    }
                    cur.push(' ');
                }
                ';' => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_owned());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        let s = split_sql("CREATE TABLE t AS SELECT 'a;b' AS x; -- c;d\nSELECT \"q;r\" FROM t /* ; */ ;  ");
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].contains("'a;b'"));
        assert!(s[1].starts_with("SELECT \"q;r\" FROM t"));
        assert!(split_sql("  ;; ").is_empty());
    }

    #[test]
    fn schema_is_inferred_over_the_whole_batch() {
        let vals: Vec<serde_json::Value> = vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": 2.5, "b": null}),
            serde_json::json!({"a": 3, "c": {"d": "x"}}),
        ];
        let b = to_record_batch(&vals).unwrap().unwrap();
        let s = b.schema();
        assert_eq!(s.field_with_name("a").unwrap().data_type(), &DataType::Float64);
        assert_eq!(s.field_with_name("b").unwrap().data_type(), &DataType::Utf8);
        assert!(matches!(
            s.field_with_name("c").unwrap().data_type(),
            DataType::Struct(_)
        ));
        assert_eq!(b.num_rows(), 3);
    }
}
