//! Handlers over real DuckDB: schema inference over the whole batch, declared schemas, protobuf
//! payloads by message type, multi-statement SQL, per-message rejects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use langtian_core::flow::config::{Column, Command, Handler};
use langtian_core::flow::handler::{BatchHandler, HandlerError};
use langtian_core::proto::battery::v1::ChannelSample;
use prost::Message as _;

fn handler(kind: &str, sql: &str) -> Handler {
    Handler {
        kind: kind.into(),
        sql: sql.into(),
        table: None,
        schema: vec![],
        message_type: None,
    }
}

fn col<'a, T: 'static>(inv: &'a langtian_core::flow::handler::Invocation, name: &str) -> &'a T {
    let b = &inv.batches[0];
    b.column(b.schema().index_of(name).unwrap())
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

#[test]
fn inferred_batch_sees_fields_that_appear_late_and_runs_multi_statement_sql() {
    let cfg = handler(
        "handlers.InferredMemBatch",
        "CREATE OR REPLACE TEMP TABLE s AS SELECT device, sum(v) AS total, count(extra) AS with_extra FROM batch GROUP BY device;
         SELECT * FROM s ORDER BY device",
    );
    let mut h = BatchHandler::new(&cfg, &[]).unwrap();
    let payloads: Vec<&[u8]> = vec![
        br#"{"device":"a","v":1}"#,
        br#"{"device":"b","v":2.5}"#,
        br#"{"device":"a","v":3,"extra":{"k":"late field"}}"#,
        b"not json",
        br#"[1,2]"#,
    ];
    let inv = h.invoke(&payloads).unwrap();
    assert_eq!(inv.input_rows, 3);
    assert_eq!(
        inv.rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(inv.rejected[0].1.contains("not JSON"));
    assert_eq!(inv.output_rows(), 2);
    let total = col::<Float64Array>(&inv, "total");
    assert_eq!((total.value(0), total.value(1)), (4.0, 2.5));
    let extra = col::<Int64Array>(&inv, "with_extra");
    assert_eq!(
        extra.value(0),
        1,
        "a field seen only in the last row is still a column"
    );
    // The relation is rebuilt per batch: a second batch with another shape works.
    let inv = h.invoke(&[br#"{"device":"z","v":10}"#.as_slice()]);
    let err = inv.unwrap_err();
    assert!(matches!(err, HandlerError::Sql { .. }), "{err}");
    assert!(
        err.to_string().contains("extra"),
        "`extra` is absent now, so the SQL fails: {err}"
    );
}

#[test]
fn structured_batch_casts_to_declared_columns() {
    let mut cfg = handler(
        "handlers.StructuredBatch",
        "SELECT id, ts + INTERVAL 1 HOUR AS ts2, note FROM batch ORDER BY id",
    );
    cfg.schema = vec![
        Column {
            name: "id".into(),
            data_type: "BIGINT".into(),
        },
        Column {
            name: "ts".into(),
            data_type: "TIMESTAMP".into(),
        },
        Column {
            name: "note".into(),
            data_type: "VARCHAR".into(),
        },
    ];
    let mut h = BatchHandler::new(&cfg, &[]).unwrap();
    let inv = h
        .invoke(&[
            br#"{"id":2,"ts":"2026-01-01 10:00:00","ignored":true}"#.as_slice(),
            br#"{"id":1,"ts":"2026-01-01 11:30:00","note":"n"}"#.as_slice(),
        ])
        .unwrap();
    assert_eq!(inv.output_rows(), 2);
    let note = col::<StringArray>(&inv, "note");
    assert_eq!(note.value(0), "n");
    assert!(note.is_null(1), "missing field → NULL");
    assert!(
        inv.batches[0]
            .schema()
            .field_with_name("ts2")
            .unwrap()
            .data_type()
            .to_string()
            .contains("Timestamp")
    );
}

#[test]
fn structured_batch_decodes_protobuf_by_message_type() {
    let mut cfg = handler(
        "handlers.StructuredBatch",
        "SELECT device_id, count(*) AS n, avg(voltage) AS v, max(seq) AS last_seq FROM batch GROUP BY device_id ORDER BY device_id",
    );
    cfg.message_type = Some("langtian.battery.v1.ChannelSample".into());
    let mut h = BatchHandler::new(&cfg, &[]).unwrap();
    let mk = |dev: &str, v: f64, seq: u64| {
        ChannelSample {
            device_id: dev.into(),
            voltage: v,
            seq,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let payloads = vec![
        mk("c1", 3.5, 1),
        mk("c1", 3.7, 2),
        mk("c2", 4.0, 9),
        vec![0xff, 0xff, 0xff],
    ];
    let inv = h.invoke(&payloads).unwrap();
    assert_eq!(inv.rejected.len(), 1);
    assert!(inv.rejected[0].1.contains("langtian.battery.v1.ChannelSample"));
    let v = col::<Float64Array>(&inv, "v");
    assert!((v.value(0) - 3.6).abs() < 1e-9);
    assert_eq!(inv.output_rows(), 2);

    let mut bad = cfg.clone();
    bad.message_type = Some("langtian.battery.v1.Nope".into());
    let err = BatchHandler::new(&bad, &[]).unwrap_err();
    assert!(err.to_string().contains("not in the contracts"), "{err}");
}

#[test]
fn commands_run_first_and_bad_ones_are_named() {
    let cfg = handler(
        "handlers.InferredMemBatch",
        "SELECT b.v * f.k AS x FROM batch b, factor f",
    );
    let cmds = vec![Command {
        name: "factor table".into(),
        sql: "CREATE TABLE factor AS SELECT 10 AS k".into(),
    }];
    let mut h = BatchHandler::new(&cfg, &cmds).unwrap();
    let inv = h.invoke(&[br#"{"v":4}"#.as_slice()]).unwrap();
    assert_eq!(col::<Int64Array>(&inv, "x").value(0), 40);
    let bad = vec![Command {
        name: "broken".into(),
        sql: "CREAT TABLE".into(),
    }];
    let err = BatchHandler::new(&cfg, &bad).unwrap_err();
    assert!(err.to_string().contains("command `broken` failed"), "{err}");
}

#[test]
fn an_empty_batch_still_runs_the_sql() {
    let mut h = BatchHandler::new(
        &handler("handlers.InferredMemBatch", "SELECT count(*) AS n FROM batch"),
        &[],
    )
    .unwrap();
    let none: Vec<&[u8]> = vec![b"garbage"];
    let inv = h.invoke(&none).unwrap();
    assert_eq!(inv.input_rows, 0);
    assert_eq!(col::<Int64Array>(&inv, "n").value(0), 0);
}

#[test]
fn the_example_pipeline_parses_and_invokes_over_a_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.yml");
    std::fs::write(&path, langtian_core::flow::EXAMPLE_PIPELINE).unwrap();
    let file = langtian_core::flow::config::PipelineFile::load(&path, &Default::default()).unwrap();
    assert_eq!(file.pipeline.batch_size, 5000);
    let fixture = dir.path().join("samples.jsonl");
    std::fs::write(
        &fixture,
        "{\"deviceId\":\"c1\",\"channel\":1,\"voltage\":3.7,\"current\":1.5,\"temperature\":25.0,\"soc\":50,\"stepType\":\"STEP_TYPE_CC_CHARGE\",\"cycle\":1,\"capacity\":0.5,\"seq\":\"1\"}\n\
         {\"deviceId\":\"c1\",\"channel\":2,\"voltage\":3.6,\"current\":0,\"temperature\":24.5,\"soc\":40,\"stepType\":\"STEP_TYPE_PAUSE\",\"cycle\":1,\"capacity\":0.5,\"seq\":\"2\"}\n",
    )
    .unwrap();
    let inv = langtian_core::flow::invoke_jsonl(&file, &fixture).unwrap();
    let lines = langtian_core::flow::sink::json_lines(&inv.batches).unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("\"step\":\"cc_charge\""), "{}", lines[0]);
    assert!(lines[1].contains("\"step\":\"pause\""), "{}", lines[1]);
}

#[test]
fn each_batch_sees_only_its_own_rows_when_the_relation_is_reused_or_rebuilt() {
    let mut h = BatchHandler::new(
        &handler(
            "handlers.InferredMemBatch",
            "SELECT count(*) AS n, sum(a) AS s, max(b) AS b FROM batch",
        ),
        &[],
    )
    .unwrap();
    let n_s = |inv: &langtian_core::flow::handler::Invocation| {
        let b = &inv.batches[0];
        let n = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        let s = b
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0);
        (n, s)
    };
    // Same schema twice (relation emptied and reused), then a new column (rebuilt), then the
    // old schema again (rebuilt again).
    let inv = h
        .invoke(&[br#"{"a":1.0,"b":"x"}"#.as_slice(), br#"{"a":2.0,"b":"y"}"#])
        .unwrap();
    assert_eq!(n_s(&inv), (2, 3.0));
    let inv = h.invoke(&[br#"{"a":10.0,"b":"z"}"#.as_slice()]).unwrap();
    assert_eq!(n_s(&inv), (1, 10.0));
    let inv = h
        .invoke(&[
            br#"{"a":5.0,"b":"q","c":true}"#.as_slice(),
            br#"{"a":6.0,"b":"r"}"#,
        ])
        .unwrap();
    assert_eq!(n_s(&inv), (2, 11.0));
    let inv = h.invoke(&[br#"{"a":7.0,"b":"s"}"#.as_slice()]).unwrap();
    assert_eq!(n_s(&inv), (1, 7.0));
}

/// The relation holds only the columns DuckDB's plan reads; results are the same as on the full
/// relation, including filters that one batch would let the optimizer drop, `count(*)`, struct
/// fields, and `* EXCLUDE` (which fails on a narrowed relation and falls back to all columns).
#[test]
fn narrowed_relation_gives_the_same_results() {
    let cases: &[(&str, &[&[u8]], &str)] = &[
        (
            "SELECT a FROM batch WHERE c > 0 ORDER BY a",
            &[br#"{"a":1,"b":"x","c":5.0}"#, br#"{"a":2,"b":"y","c":6.0}"#],
            r#"[{"a":1},{"a":2}]"#,
        ),
        (
            "SELECT count(*) AS n FROM batch",
            &[br#"{"a":1,"b":"x","c":5.0}"#],
            r#"[{"n":1}]"#,
        ),
        (
            "SELECT * EXCLUDE (b, c) FROM batch ORDER BY a",
            &[br#"{"a":1,"b":"x","c":5.0}"#],
            r#"[{"a":1}]"#,
        ),
        (
            "SELECT s.k AS k FROM batch WHERE b = 'x'",
            &[br#"{"a":1,"b":"x","c":5.0,"s":{"k":"v","z":1}}"#],
            r#"[{"k":"v"}]"#,
        ),
    ];
    for (sql, first, expect_first) in cases {
        let mut h = BatchHandler::new(&handler("handlers.InferredMemBatch", sql), &[]).unwrap();
        let out = |inv: &langtian_core::flow::handler::Invocation| {
            let lines = langtian_core::flow::sink::json_lines(&inv.batches).unwrap();
            let v: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            serde_json::to_string(&v).unwrap()
        };
        // First batch: planned on the full relation.
        assert_eq!(out(&h.invoke(first).unwrap()), *expect_first, "{sql}");
        // Later batches with the same schema run narrowed; a row that the first batch's data
        // would have let a data-dependent optimizer ignore must still be filtered correctly.
        let second: Vec<Vec<u8>> = first
            .iter()
            .map(|p| {
                let mut v: serde_json::Value = serde_json::from_slice(p).unwrap();
                v["c"] = serde_json::json!(-1.0);
                v["b"] = serde_json::json!("nope");
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
        let inv = h.invoke(&second).unwrap();
        let got = out(&inv);
        let expect_second = match *sql {
            s if s.contains("c > 0") || s.contains("b = 'x'") => "[]".to_owned(),
            _ => expect_first.to_string(),
        };
        assert_eq!(got, expect_second, "{sql}");
        // And the first batch again.
        assert_eq!(
            out(&h.invoke(first).unwrap()),
            *expect_first,
            "{sql} (third batch)"
        );
    }
}

/// Protobuf payloads: after the first batch only the fields the SQL reads are decoded; results
/// stay right, and SQL that breaks on a narrowed relation falls back to all fields.
#[test]
fn structured_protobuf_decodes_only_what_the_sql_reads() {
    let mut sim = langtian_core::sim::BatterySim::new(2, 4, 11);
    for sql in [
        "SELECT device_id, voltage FROM batch WHERE current > -1e9 ORDER BY device_id, channel",
        "SELECT * EXCLUDE (energy, capacity) FROM batch ORDER BY device_id, channel",
    ] {
        let mut cfg = handler("handlers.StructuredBatch", sql);
        cfg.message_type = Some("langtian.battery.v1.ChannelSample".into());
        let mut h = BatchHandler::new(&cfg, &[]).unwrap();
        for round in 0..3 {
            let samples = sim.step(1_000_000_000);
            let payloads: Vec<Vec<u8>> = samples.iter().map(|s| s.encode_to_vec()).collect();
            let inv = h.invoke(&payloads).unwrap();
            assert_eq!(inv.output_rows(), samples.len(), "{sql} round {round}");
            let v = col::<Float64Array>(&inv, "voltage");
            let mut expect: Vec<&ChannelSample> = samples.iter().collect();
            expect.sort_by(|a, b| (&a.device_id, a.channel).cmp(&(&b.device_id, b.channel)));
            for (i, s) in expect.iter().enumerate() {
                assert_eq!(v.value(i), s.voltage, "{sql} round {round} row {i}");
            }
        }
    }
}
