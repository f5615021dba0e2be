//! The query service on `lt.query.v1` against a real nats-server and a real DuckLake: results
//! equal DuckDB's own read, chunks respect max_payload, only reads run, errors are typed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use langtian_core::lake::{Lake, LakeConfig, OffsetRecord};
use langtian_core::query::{
    ErrorCode, QueryError, QueryRequest, QueryResult, QueryService, QueryServiceConfig, query, query_local,
};
use langtian_core::testkit::TestServer;
use tokio::sync::watch;

fn rows(first: u64, n: u64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("voltage", DataType::Float64, false),
    ]));
    let seq: Vec<u64> = (first..first + n).collect();
    let dev: Vec<String> = seq.iter().map(|s| format!("cycler-{:02}", s % 7)).collect();
    let volt: Vec<f64> = seq.iter().map(|s| 3.0 + (*s % 1000) as f64 / 1000.0).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt64Array::from(seq)) as ArrayRef,
            Arc::new(StringArray::from(dev)),
            Arc::new(Float64Array::from(volt)),
        ],
    )
    .unwrap()
}

fn write(lake: &mut Lake, first: u64, n: u64) {
    let b = rows(first, n);
    lake.ensure_table("samples", &b.schema()).unwrap();
    lake.write_batch(
        "samples",
        &[b],
        &OffsetRecord::new("S", "c", 0, first, first + n - 1),
    )
    .unwrap();
}

fn failed(e: QueryError) -> ErrorCode {
    match e {
        QueryError::Failed(f) => f.code,
        other => panic!("expected a query failure, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_service_answers_reads_in_chunks_and_refuses_the_rest() {
    // A small max_payload so that results span many chunks.
    let srv = TestServer::start_with(|c| c.max_payload = Some(64 * 1024))
        .await
        .unwrap();
    let bus = common::bus(&srv.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LakeConfig::local(dir.path());
    let mut writer = Lake::open(cfg.clone()).unwrap();
    write(&mut writer, 1, 100_000);

    let (stop_tx, stop_rx) = watch::channel(false);
    let svc = QueryService::new(bus.clone(), cfg.clone(), QueryServiceConfig::default());
    let task = tokio::spawn(svc.run(stop_rx));

    // 1. The answer equals DuckDB's own read of the same lake.
    let sql = "SELECT device, count(*)::BIGINT AS n, round(avg(voltage), 6) AS v FROM lake.samples GROUP BY device ORDER BY device";
    let first = QueryRequest::new(sql);
    let r = common::retry_until(Duration::from_secs(10), || query(&bus, &first)).await;
    let direct: Vec<(String, i64, f64)> = {
        let mut st = writer.connection().prepare(sql).unwrap();
        st.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let b = arrow::compute::concat_batches(&r.schema, &r.batches).unwrap();
    let dev = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
    let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
    let got: Vec<(String, i64, f64)> = (0..b.num_rows())
        .map(|i| (dev.value(i).to_owned(), n.value(i), v.value(i)))
        .collect();
    assert_eq!(got, direct);

    // 2. A large result comes in chunks under max_payload and reassembles exactly.
    let all = query(
        &bus,
        &QueryRequest::new("SELECT * FROM lake.samples ORDER BY seq"),
    )
    .await
    .unwrap();
    assert_eq!(all.rows, 100_000);
    assert!(all.chunks > 10, "{} chunks", all.chunks);
    let seqs: Vec<u64> = all
        .batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(seqs, (1..=100_000).collect::<Vec<u64>>());

    // 3. The service shares the writer's DuckDB instance: a new commit is visible at once.
    write(&mut writer, 100_001, 10);
    let c = query(&bus, &QueryRequest::new("SELECT count(*) AS n FROM lake.samples"))
        .await
        .unwrap();
    assert_eq!(first_i64(&c), 100_010);

    // 4. Limits, parameters.
    let mut req = QueryRequest::new("SELECT seq FROM lake.samples WHERE device = ? ORDER BY seq");
    req.params = vec![serde_json::json!("cycler-03")];
    req.max_rows = Some(5);
    let r = query(&bus, &req).await.unwrap();
    assert_eq!((r.rows, r.truncated.as_deref()), (5, Some("rows")));

    // 5. Only reads; errors carry DuckDB's message and a code.
    let e = query(&bus, &QueryRequest::new("SELEC 1")).await.unwrap_err();
    assert_eq!(failed(e), ErrorCode::Parse);
    for write_sql in [
        "DELETE FROM lake.samples",
        "INSERT INTO lake.samples VALUES (1, 'x', 1.0)",
        "DROP TABLE lake.samples",
        "CREATE TABLE lake.t AS SELECT 1",
        "SELECT 1; DELETE FROM lake.samples",
    ] {
        let e = query(&bus, &QueryRequest::new(write_sql)).await.unwrap_err();
        assert_eq!(failed(e), ErrorCode::NotReadOnly, "{write_sql}");
    }
    match query(&bus, &QueryRequest::new("SELECT * FROM lake.nope"))
        .await
        .unwrap_err()
    {
        QueryError::Failed(f) => {
            assert_eq!(f.code, ErrorCode::Execution);
            assert!(f.message.contains("nope"), "{}", f.message);
        }
        other => panic!("{other}"),
    }
    let mut slow = QueryRequest::new("SELECT count(*) FROM range(100000000000) a");
    slow.timeout_ms = Some(300);
    assert_eq!(failed(query(&bus, &slow).await.unwrap_err()), ErrorCode::Timeout);
    let count = writer
        .connection()
        .query_row("SELECT count(*) FROM lake.samples", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(count, 100_010, "nothing was changed");

    // 6. A bad request body gets a structured error too.
    let reply = bus
        .client()
        .request("lt.query.v1", "not json".into())
        .await
        .unwrap();
    let h = reply.headers.unwrap();
    assert_eq!(h.get("Lt-Query-Error").map(|v| v.as_str()), Some("bad_request"));

    let _ = stop_tx.send(true);
    task.await.unwrap().unwrap();
    // 7. Nobody listening: a clear NoService.
    assert!(matches!(
        query(&bus, &QueryRequest::new("SELECT 1")).await.unwrap_err(),
        QueryError::NoService { .. }
    ));
    drop(writer);

    // 8. Without a service, the same query runs on the lake file directly.
    let r = tokio::task::spawn_blocking(move || {
        query_local(cfg, &QueryRequest::new("SELECT count(*) FROM lake.samples"))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first_i64(&r), 100_010);
}

/// The first value of the first column (a count).
fn first_i64(r: &QueryResult) -> i64 {
    r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_frame_reaches_a_subscriber_as_the_same_table() {
    use futures::StreamExt as _;
    use langtian_core::query::{FrameError, publish_frame};

    let srv = TestServer::start_with(|c| c.max_payload = Some(64 * 1024))
        .await
        .unwrap();
    let bus = common::bus(&srv.url()).await;
    let mut sub = bus.client().subscribe("lt.analysis.>").await.unwrap();
    bus.client().flush().await.unwrap();

    let table = rows(1, 500);
    let sent = publish_frame(&bus, "fade", &table.schema(), std::slice::from_ref(&table))
        .await
        .unwrap();
    assert_eq!((sent.subject.as_str(), sent.rows), ("lt.analysis.fade", 500));
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "lt.analysis.fade");
    assert_eq!(msg.payload.len(), sent.bytes);
    let back: Vec<RecordBatch> =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(msg.payload.to_vec()), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(back, vec![table.clone()]);

    // Larger than the server's max_payload: refused with the sizes, nothing sent.
    let big = rows(1, 20_000);
    match publish_frame(&bus, "big", &big.schema(), std::slice::from_ref(&big)).await {
        Err(FrameError::TooLarge { bytes, max, .. }) => assert!(bytes > max && max == 64 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A name that is not one subject token.
    assert!(matches!(
        publish_frame(&bus, "a.b", &table.schema(), &[]).await,
        Err(FrameError::BadName { .. })
    ));
    bus.client().flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "nothing else was published"
    );
}
