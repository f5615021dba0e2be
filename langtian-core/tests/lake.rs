//! DuckLake through the official libduckdb + extensions: exactly-once batch writes, resume,
//! failures commit nothing, type round trips, maintenance, and an independent reader (the stock
//! Python DuckDB 1.5.5 with the same ducklake extension).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, ListArray, StringArray, StructArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use langtian_core::lake::{Catalog, DataPath, Lake, LakeConfig, LakeError, MaintenanceOptions, OffsetRecord};

fn events(first_seq: u64, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("device", DataType::Utf8, true),
        Field::new("voltage", DataType::Float64, true),
    ]));
    let seq: Vec<u64> = (first_seq..first_seq + n as u64).collect();
    let dev: Vec<Option<String>> = (0..n)
        .map(|i| {
            if i % 10 == 3 {
                None
            } else {
                Some(format!("d{}", i % 4))
            }
        })
        .collect();
    let volt: Vec<f64> = (0..n).map(|i| 3.0 + i as f64 / 1000.0).collect();
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

fn count(lake: &Lake, sql: &str) -> i64 {
    lake.connection()
        .query_row(sql, [], |r| r.get::<_, i64>(0))
        .unwrap()
}

fn exercise(cfg: LakeConfig) {
    {
        let mut lake = Lake::open(cfg.clone()).unwrap();
        let b1 = events(1, 500);
        lake.ensure_table("events", &b1.schema()).unwrap();
        assert_eq!(lake.committed_position("S", "c", 0).unwrap(), None);
        assert_eq!(
            lake.write_batch("events", &[b1], &OffsetRecord::new("S", "c", 0, 1, 500))
                .unwrap(),
            500
        );
        lake.write_batch(
            "events",
            &[events(501, 250), events(751, 250)],
            &OffsetRecord::new("S", "c", 0, 501, 1000),
        )
        .unwrap();
        assert_eq!(lake.committed_position("S", "c", 0).unwrap(), Some(1000));
        assert_eq!(lake.committed_position("S", "other", 0).unwrap(), None);
        assert_eq!(count(&lake, "SELECT count(*) FROM lake.events"), 1000);
        assert_eq!(count(&lake, "SELECT count(DISTINCT seq) FROM lake.events"), 1000);
        assert_eq!(
            count(&lake, "SELECT count(*) FROM lake.events WHERE device IS NULL"),
            100
        );

        // pipeline.commit.nothing_on_failure: a batch the table rejects commits neither rows nor offsets.
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::UInt64, true),
            Field::new("device", DataType::Utf8, true),
            Field::new("voltage", DataType::Float64, true),
        ]));
        let bad = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(vec![Some(2000), None])) as ArrayRef, // NULL into NOT NULL
                Arc::new(StringArray::from(vec!["x", "y"])),
                Arc::new(Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .unwrap();
        let err = lake
            .write_batch("events", &[bad], &OffsetRecord::new("S", "c", 0, 1001, 1002))
            .unwrap_err();
        assert!(matches!(err, LakeError::DuckDb { .. }), "{err}");
        let wrong = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("seq", DataType::UInt64, false)])),
            vec![Arc::new(UInt64Array::from(vec![5u64])) as ArrayRef],
        )
        .unwrap();
        let err = lake
            .write_batch("events", &[wrong], &OffsetRecord::new("S", "c", 0, 1001, 1001))
            .unwrap_err();
        assert!(err.to_string().contains("batch has no column `device`"), "{err}");
        assert_eq!(count(&lake, "SELECT count(*) FROM lake.events"), 1000);
        assert_eq!(lake.committed_position("S", "c", 0).unwrap(), Some(1000));
    }
    // source.resume.from_committed: a new process reads the position from the lake.
    let lake = Lake::open(cfg).unwrap();
    assert_eq!(lake.committed_position("S", "c", 0).unwrap(), Some(1000));
    assert_eq!(count(&lake, "SELECT count(*) FROM lake.events"), 1000);
}

#[test]
fn duckdb_catalog_exactly_once_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    exercise(LakeConfig::local(dir.path()));
    stock_duckdb_reads(
        &format!("ducklake:{}", dir.path().join("meta.ducklake").display()),
        &dir.path().join("data"),
        &[],
        "1000 1000",
    );
}

#[test]
fn sqlite_catalog_exactly_once_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LakeConfig::new(
        Catalog::Sqlite(dir.path().join("meta.sqlite")),
        DataPath::Local(dir.path().join("data")),
    );
    exercise(cfg);
    stock_duckdb_reads(
        &format!("ducklake:sqlite:{}", dir.path().join("meta.sqlite").display()),
        &dir.path().join("data"),
        &["sqlite_scanner"],
        "1000 1000",
    );
}

#[test]
fn types_round_trip_with_nulls_timestamps_and_nesting() {
    let dir = tempfile::tempdir().unwrap();
    let mut lake = Lake::open(LakeConfig::local(dir.path())).unwrap();
    let ts = TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None, Some(0)])
        .with_timezone("UTC");
    let list = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
        Some(vec![Some(1.5), None]),
        None,
        Some(vec![]),
    ]);
    let inner = StructArray::from(vec![
        (
            Arc::new(Field::new("name", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("n", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])) as ArrayRef,
        ),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("values", list.data_type().clone(), true),
        Field::new("meta", inner.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ts), Arc::new(list), Arc::new(inner)],
    )
    .unwrap();
    lake.ensure_table("typed", &schema).unwrap();
    lake.write_batch(
        "typed",
        std::slice::from_ref(&batch),
        &OffsetRecord::new("S", "t", 0, 1, 3),
    )
    .unwrap();
    let back = lake
        .query_arrow("SELECT ts, \"values\", meta FROM lake.typed")
        .unwrap();
    let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
    assert_eq!(back.num_rows(), 3);
    // Timestamps: same instants; DuckDB reports the zone as "Etc/UTC", an alias of "UTC".
    let got_ts = back
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    let want_ts = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(
        got_ts.iter().collect::<Vec<_>>(),
        want_ts.iter().collect::<Vec<_>>()
    );
    assert!(
        matches!(got_ts.timezone(), Some("UTC" | "Etc/UTC")),
        "{:?}",
        got_ts.timezone()
    );
    for (i, col) in ["values", "meta"].iter().enumerate().map(|(i, c)| (i + 1, c)) {
        let got = back.column(i);
        let want = batch.column(i);
        assert_eq!(got.null_count(), want.null_count(), "nulls of {col}");
        assert_eq!(got.to_data().len(), want.to_data().len());
        assert_eq!(
            format!("{:?}", got.as_ref()),
            format!("{:?}", want.as_ref()),
            "values of {col}"
        );
    }
}

#[test]
fn maintenance_compacts_and_keeps_data_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut lake = Lake::open(LakeConfig::local(dir.path())).unwrap();
    lake.ensure_table("events", &events(1, 1).schema()).unwrap();
    for i in 0..20u64 {
        lake.write_batch(
            "events",
            &[events(i * 100 + 1, 100)],
            &OffsetRecord::new("S", "m", 0, i * 100 + 1, i * 100 + 100),
        )
        .unwrap();
    }
    let files_before = count(
        &lake,
        "SELECT count(*) FROM ducklake_list_files('lake', 'events')",
    );
    let mut schedule = langtian_core::lake::MaintenanceSchedule::new(
        std::time::Duration::from_millis(1),
        MaintenanceOptions {
            expire_older_than: "0 seconds".into(),
            cleanup_older_than: "0 seconds".into(),
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(5)); // let the 1 ms interval pass
    let report = lake.maintain_if_due(&mut schedule).unwrap().expect("due");
    let files_after = count(
        &lake,
        "SELECT count(*) FROM ducklake_list_files('lake', 'events')",
    );
    assert!(
        files_after < files_before,
        "merge reduced {files_before} files to {files_after} ({report:?})"
    );
    assert!(report.snapshots_expired > 0, "{report:?}");
    assert_eq!(count(&lake, "SELECT count(*) FROM lake.events"), 2000);
    assert_eq!(lake.committed_position("S", "m", 0).unwrap(), Some(2000));
}

#[test]
fn missing_extension_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LakeConfig::local(dir.path());
    cfg.extension_dir = Some(dir.path().join("nowhere"));
    let err = Lake::open(cfg).unwrap_err();
    assert!(
        matches!(&err, LakeError::ExtensionMissing { name, .. } if name == "ducklake"),
        "{err}"
    );
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
}

/// Reads the lake with the stock Python DuckDB (installed by scripts/setup.sh) and compares
/// `count(*) count(DISTINCT seq)` of `events` with `expect`.
fn stock_duckdb_reads(attach: &str, data: &Path, extra_ext: &[&str], expect: &str) {
    stock_duckdb_reads_with(attach, &format!("{}/", data.display()), extra_ext, "", expect)
}

/// Like [`stock_duckdb_reads`] with any data path (e.g. `s3://…`) and SQL run before ATTACH.
fn stock_duckdb_reads_with(attach: &str, data_path: &str, extra_ext: &[&str], pre_sql: &str, expect: &str) {
    let python = std::env::var("LANGTIAN_PYTHON")
        .ok()
        .or_else(|| option_env!("LANGTIAN_PYTHON").map(str::to_owned))
        .expect("LANGTIAN_PYTHON (run scripts/setup.sh)");
    let ext = langtian_core::lake::default_extension_dir()
        .unwrap()
        .join("v1.5.5/linux_amd64");
    let mut loads = String::new();
    for e in std::iter::once(&"ducklake").chain(extra_ext) {
        loads.push_str(&format!(
            "con.execute(\"LOAD '{}/{e}.duckdb_extension'\")\n",
            ext.display()
        ));
    }
    if !pre_sql.is_empty() {
        loads.push_str(&format!("con.execute({pre_sql:?})\n"));
    }
    let script = format!(
        "import duckdb\ncon = duckdb.connect(config={{'autoload_known_extensions': False, 'autoinstall_known_extensions': False}})\n{loads}con.execute(\"ATTACH '{attach}' AS lake (DATA_PATH '{data_path}', READ_ONLY)\")\nr = con.execute('SELECT count(*), count(DISTINCT seq) FROM lake.events').fetchone()\nprint(r[0], r[1])\n"
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stock duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expect);
}

#[tokio::test]
async fn postgres_catalog_exactly_once_and_resume() {
    let pg = langtian_core::testkit::TestPostgres::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = LakeConfig::new(
        Catalog::Postgres(pg.conninfo()),
        DataPath::Local(dir.path().join("data")),
    );
    tokio::task::spawn_blocking(move || exercise(cfg)).await.unwrap();
    stock_duckdb_reads(
        &format!("ducklake:postgres:{}", pg.conninfo()),
        &dir.path().join("data"),
        &["postgres_scanner"],
        "1000 1000",
    );
}

#[tokio::test]
async fn s3_data_path_exactly_once_and_resume() {
    let s3 = langtian_core::testkit::TestS3::start("lakebucket").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = LakeConfig::new(
        Catalog::Sqlite(dir.path().join("meta.sqlite")),
        DataPath::S3(langtian_core::lake::S3 {
            url: "s3://lakebucket/lake/".into(),
            key_id: langtian_core::testkit::TestS3::KEY_ID.into(),
            secret: langtian_core::testkit::TestS3::SECRET.into(),
            region: "us-east-1".into(),
            endpoint: s3.endpoint(),
            url_style: "path".into(),
            use_ssl: false,
        }),
    );
    tokio::task::spawn_blocking(move || exercise(cfg)).await.unwrap();
    // The stock DuckDB + ducklake + httpfs reads the lake from the bucket.
    let secret = format!(
        "CREATE SECRET s (TYPE s3, PROVIDER config, KEY_ID '{}', SECRET '{}', REGION 'us-east-1', ENDPOINT '{}', URL_STYLE 'path', USE_SSL false)",
        langtian_core::testkit::TestS3::KEY_ID,
        langtian_core::testkit::TestS3::SECRET,
        s3.endpoint()
    );
    let attach = format!("ducklake:sqlite:{}", dir.path().join("meta.sqlite").display());
    stock_duckdb_reads_with(
        &attach,
        "s3://lakebucket/lake/",
        &["sqlite_scanner", "httpfs"],
        &secret,
        "1000 1000",
    );
    // The Parquet files are in the bucket, not on local disk.
    let mut parquet = 0;
    let mut stack = vec![s3.root().join("lakebucket")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                parquet += 1;
            }
        }
    }
    assert!(
        parquet >= 2,
        "expected Parquet files in the bucket, found {parquet}"
    );
}
