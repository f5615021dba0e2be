//! `lt_batch(slot)`: a DuckDB table function that scans the Arrow batch a handler has put in a
//! slot — the relation `batch` without copying the rows into a DuckDB table first.
//!
//! duckdb-rs's own `arrow` table function keeps every batch it is given for the life of the
//! process, so it cannot serve a stream; here the slot is emptied when the batch is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use arrow::record_batch::RecordBatch;
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{
    BindInfo, InitInfo, TableFunctionInfo, VTab, record_batch_to_duckdb_data_chunk,
    to_duckdb_logical_type_for_field,
};

/// The function's name in SQL.
pub(crate) const FUNCTION: &str = "lt_batch";

/// DuckDB's standard vector size: rows per output chunk.
const VECTOR: usize = 2048;

fn slots() -> &'static Mutex<HashMap<u64, RecordBatch>> {
    static SLOTS: OnceLock<Mutex<HashMap<u64, RecordBatch>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// One handler's slot; emptied on drop.
#[derive(Debug)]
pub(crate) struct Slot(u64);

impl Slot {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Slot(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn id(&self) -> u64 {
        self.0
    }

    /// Makes `b` what `lt_batch(id)` returns.
    pub(crate) fn put(&self, b: RecordBatch) {
        if let Ok(mut m) = slots().lock() {
            m.insert(self.0, b);
        }
    }

    /// Empties the slot (frees the batch).
    pub(crate) fn clear(&self) {
        if let Ok(mut m) = slots().lock() {
            m.remove(&self.0);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The table function.
#[derive(Debug)]
pub(crate) struct BatchScan;

/// What one scan reads.
#[derive(Debug)]
pub(crate) struct ScanBind {
    batch: RecordBatch,
}

/// Where a scan is.
#[derive(Debug)]
pub(crate) struct ScanInit {
    offset: AtomicUsize,
}

impl VTab for BatchScan {
    type BindData = ScanBind;
    type InitData = ScanInit;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, Box<dyn std::error::Error>> {
        let v = bind.get_parameter(0);
        if v.is_null() {
            return Err("lt_batch(slot): slot must not be NULL".into());
        }
        let id = v.to_uint64();
        let batch = slots()
            .lock()
            .map_err(|_| "lt_batch: slot table poisoned")?
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("lt_batch({id}): no batch loaded"))?;
        for f in batch.schema().fields() {
            bind.add_result_column(f.name(), to_duckdb_logical_type_for_field(f)?);
        }
        Ok(ScanBind { batch })
    }

    fn init(_: &InitInfo) -> Result<Self::InitData, Box<dyn std::error::Error>> {
        Ok(ScanInit {
            offset: AtomicUsize::new(0),
        })
    }

    fn func(
        func: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let b = &func.get_bind_data().batch;
        let offset = func.get_init_data().offset.fetch_add(VECTOR, Ordering::Relaxed);
        if offset >= b.num_rows() {
            output.set_len(0);
            return Ok(());
        }
        let len = VECTOR.min(b.num_rows() - offset);
        record_batch_to_duckdb_data_chunk(&b.slice(offset, len), output)?;
        Ok(())
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(vec![LogicalTypeHandle::from(LogicalTypeId::UBigint)])
    }
}
