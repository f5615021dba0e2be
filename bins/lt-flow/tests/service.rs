//! The `lt-flow` service binary: a jsonl backfill into a real DuckLake, exit codes, --check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use langtian_core::lake::{Lake, LakeConfig};

fn lt_flow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lt-flow"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn backfills_a_jsonl_file_into_ducklake_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (1..=1234)
        .map(|i| format!("{{\"id\":{i},\"v\":{i}.25}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let file = dir.path().join("p.yml");
    std::fs::write(
        &file,
        format!(
            r#"
pipeline:
  name: backfill
  batch_size: 500
  source:
    type: jsonl
    jsonl: {{ path: "{input}" }}
  handler:
    type: handlers.InferredMemBatch
    sql: SELECT id, v * 4 AS v4 FROM batch
  sink:
    type: ducklake
    ducklake:
      catalog: "{d}/meta.ducklake"
      data_path: "{d}/data"
      table: t
"#,
            input = input.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = lt_flow(&["--check", f]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lt_flow(&[f, "--metrics-addr", "off", "--status-every", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("rows out 1234"), "{err}");
    let lake = Lake::open(LakeConfig::local(dir.path())).unwrap();
    let (n, sum): (i64, f64) = lake
        .connection()
        .query_row("SELECT count(*), sum(v4) FROM lake.t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, 1234);
    assert_eq!(sum, (1..=1234).map(|i| (i as f64 + 0.25) * 4.0).sum::<f64>());
}

#[test]
fn bad_config_exits_10_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "pipeline:\n  batch_size: 10\n  source:\n    type: kafka\n    kafka: {}\n  handler:\n    type: handlers.InferredMemBatch\n    sql: SELECT 1\n  sink:\n    type: console\n",
    )
    .unwrap();
    let o = lt_flow(&[file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(10));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yml:4"), "{err}");
    assert!(err.contains("available source types: nats, jsonl"), "{err}");

    // An infinite drain deadline is valid YAML: it used to pass the check and panic at start
    // (exit 101) turning into a Duration (the `flow_config` fuzz target checks this too).
    std::fs::write(
        &file,
        "pipeline:\n  batch_size: 10\n  drain_deadline_seconds: .inf\n  source:\n    type: jsonl\n    jsonl: {path: x.jsonl}\n  handler:\n    type: handlers.InferredMemBatch\n    sql: SELECT 1\n  sink:\n    type: console\n",
    )
    .unwrap();
    let o = lt_flow(&[file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(10), "{err}");
    assert!(
        err.contains("bad.yml:3") && err.contains("drain_deadline_seconds"),
        "{err}"
    );
}

/// `--var KEY=VALUE` fills the pipeline's Jinja variables (here the table and a multiplier);
/// an argument without `=` and a bad `--metrics-addr` are refused naming what is wrong.
#[test]
fn vars_fill_the_template_and_bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n").unwrap();
    let file = dir.path().join("p.yml");
    std::fs::write(
        &file,
        format!(
            r#"
pipeline:
  name: vars
  batch_size: 10
  source:
    type: jsonl
    jsonl: {{ path: "{input}" }}
  handler:
    type: handlers.InferredMemBatch
    sql: SELECT id * {{{{ factor }}}} AS x FROM batch
  sink:
    type: ducklake
    ducklake:
      catalog: "{d}/meta.ducklake"
      data_path: "{d}/data"
      table: "{{{{ table }}}}"
"#,
            input = input.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = lt_flow(&[
        f,
        "--var",
        "table=from_var",
        "--var",
        "factor=10",
        "--metrics-addr",
        "off",
        "--status-every",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lake = Lake::open(LakeConfig::local(dir.path())).unwrap();
    let sum: i64 = lake
        .connection()
        .query_row("SELECT sum(x)::BIGINT FROM lake.from_var", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, 60);

    let o = lt_flow(&[f, "--var", "no-equals-sign"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`no-equals-sign` is not KEY=VALUE"), "{err}");

    let o = lt_flow(&[
        f,
        "--var",
        "table=t",
        "--var",
        "factor=1",
        "--metrics-addr",
        "nowhere",
    ]);
    assert_eq!(o.status.code(), Some(10));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nowhere") && err.contains("use host:port or `off`"),
        "{err}"
    );
}
