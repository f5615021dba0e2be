//! The `lt-query` binary against a real nats-server and a real DuckLake written beforehand:
//! it answers reads on the lake attached READ_ONLY, refuses writes, registers in discovery,
//! stops on SIGTERM (exit 0); a missing lake exits 10 naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use langtian_core::bus::{Bus, BusOptions};
use langtian_core::discovery::{DiscoveryConfig, Registry};
use langtian_core::lake::{Lake, LakeConfig, OffsetRecord};
use langtian_core::query::{ErrorCode, QueryError, QueryRequest, query};
use langtian_core::testkit::{ChildGuard, TestServer};

fn write_lake(dir: &std::path::Path, n: u64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("device", DataType::Utf8, false),
    ]));
    let seq: Vec<u64> = (1..=n).collect();
    let dev: Vec<String> = seq.iter().map(|s| format!("d{}", s % 3)).collect();
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(UInt64Array::from(seq)), Arc::new(StringArray::from(dev))],
    )
    .unwrap();
    let mut lake = Lake::open(LakeConfig::local(dir)).unwrap();
    lake.ensure_table("samples", &b.schema()).unwrap();
    lake.write_batch("samples", &[b], &OffsetRecord::new("S", "c", 0, 1, n))
        .unwrap();
}

async fn until_answers(bus: &Bus, req: &QueryRequest) -> langtian_core::query::QueryResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match query(bus, req).await {
            Ok(r) => return r,
            Err(QueryError::NoService { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("query failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_read_only_lake_and_stops_on_sigterm() {
    let srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_lake(dir.path(), 1000);
    let child = Command::new(env!("CARGO_BIN_EXE_lt-query"))
        .args(["--nats-url", &srv.url(), "--lake"])
        .arg(dir.path())
        .args(["--node-id", "query-test"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);

    let r = until_answers(
        &bus,
        &QueryRequest::new("SELECT device, count(*)::BIGINT AS n FROM lake.samples GROUP BY 1 ORDER BY 1"),
    )
    .await;
    let b = &r.batches[0];
    let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!((b.num_rows(), n.value(0) + n.value(1) + n.value(2)), (3, 1000));

    // The attachment itself is read-only (not only the statement check).
    let ro = query(
        &bus,
        &QueryRequest::new("SELECT readonly FROM duckdb_databases() WHERE database_name = 'lake'"),
    )
    .await
    .unwrap();
    let col = ro.batches[0].column(0);
    assert!(
        col.as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .unwrap()
            .value(0),
        "lake attached READ_ONLY"
    );
    match query(&bus, &QueryRequest::new("DELETE FROM lake.samples")).await {
        Err(QueryError::Failed(f)) => assert_eq!(f.code, ErrorCode::NotReadOnly),
        other => panic!("expected not_read_only, got {other:?}"),
    }

    // Registered in discovery while it runs.
    let reg = Registry::open(&bus, DiscoveryConfig::default()).await.unwrap();
    let nodes = reg.nodes().await.unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n.node_id == "query-test" && n.role == "query"),
        "{nodes:?}"
    );

    // SIGTERM: exit 0, unregistered.
    let mut child = guard.take().unwrap();
    langtian_core::testkit::sigterm(&child).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let nodes = reg.nodes().await.unwrap();
    assert!(!nodes.iter().any(|n| n.node_id == "query-test"), "{nodes:?}");
}

#[test]
fn a_missing_lake_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lt-query"))
        .args(["--nats-url", "nats://127.0.0.1:1", "--lake"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no lake catalog at") && err.contains("nope"),
        "{err}"
    );
}

/// Settings that cannot work — limits of 0, a zero default timeout or one above the maximum, a
/// subject or queue group NATS would refuse — are configuration errors naming the setting, said
/// before the lake is opened or NATS contacted.
#[test]
fn settings_that_cannot_work_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        (&["--max-concurrent", "0"][..], "max_concurrent"),
        (&["--max-rows", "0"][..], "max_rows"),
        (&["--max-bytes", "0"][..], "max_bytes"),
        (&["--default-timeout", "0s"][..], "default_timeout"),
        (
            &["--default-timeout", "10s", "--max-timeout", "1s"][..],
            "max_timeout",
        ),
        (&["--subject", "lt..query"][..], "subject"),
        (&["--queue-group", "a b"][..], "queue_group"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lt-query"))
            .args(["--nats-url", "nats://127.0.0.1:1", "--lake"])
            .arg(dir.path().join("no-lake"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: `{want}` not named in: {err}");
        assert!(
            !err.contains("no lake catalog"),
            "{extra:?}: the lake was opened first: {err}"
        );
    }
}
