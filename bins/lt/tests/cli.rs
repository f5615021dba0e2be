//! The `lt` binary against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::Duration;

use langtian_core::bus::{Bus, BusOptions, ConsumerSpec, StreamSpec, ensure_consumer, ensure_stream};
use langtian_core::discovery::{DiscoveryConfig, NodeInfo, Registry};
use langtian_core::testkit::TestServer;

fn lt(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(args)
        .env("LT_NATS_URL", url)
        .output()
        .expect("run lt")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn setup() -> (TestServer, Bus) {
    let srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    let mut s = StreamSpec::new("LT_EVENTS", vec!["lt.evt.>".into()]);
    s.duplicate_window = Duration::from_secs(120);
    ensure_stream(&bus, &s).await.unwrap();
    (srv, bus)
}

#[tokio::test]
async fn pub_reports_sequence_and_duplicates_then_sub_reads_them() {
    let (srv, bus) = setup().await;
    let url = srv.url();
    let o = lt(
        &url,
        &[
            "pub",
            "lt.evt.demo.cli",
            "hello {i}",
            "--qos",
            "2",
            "--msg-id",
            "m-{i}",
            "--count",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("stream LT_EVENTS seq 1"), "{out}");
    assert!(out.contains("stream LT_EVENTS seq 2"), "{out}");
    let o = lt(
        &url,
        &[
            "pub",
            "lt.evt.demo.cli",
            "hello again",
            "--qos",
            "2",
            "--msg-id",
            "m-0",
        ],
    );
    assert!(text(&o).contains("seq 1 [duplicate]"), "{}", text(&o));

    ensure_consumer(&bus, &ConsumerSpec::new("LT_EVENTS", "cli-test"))
        .await
        .unwrap();
    let o = lt(
        &url,
        &[
            "sub",
            "--stream",
            "LT_EVENTS",
            "--durable",
            "cli-test",
            "--count",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("hello 0 (seq 1, delivery 1)"), "{out}");
    assert!(out.contains("hello 1 (seq 2, delivery 1)"), "{out}");
    // Acked: a second read finds nothing new.
    let o = lt(
        &url,
        &[
            "sub",
            "--stream",
            "LT_EVENTS",
            "--durable",
            "cli-test",
            "--idle",
            "500ms",
        ],
    );
    assert!(text(&o).contains("0 message(s)"), "{}", text(&o));
}

#[tokio::test]
async fn pub_envelope_and_errors() {
    let (srv, _bus) = setup().await;
    let url = srv.url();
    let o = lt(
        &url,
        &[
            "pub",
            "lt.evt",
            "{\"v\":1}",
            "--envelope",
            "--event-type",
            "battery.sample",
            "--source",
            "dev9",
            "--msg-id",
            "dev9:1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("seq 1"));
    // No stream for the subject: a clear error and a failing exit code.
    let o = lt(&url, &["pub", "nowhere.at.all", "x", "--qos", "1"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no JetStream stream captures subject `nowhere.at.all`"),
        "{}",
        text(&o)
    );
    // QoS 2 without an id.
    let o = lt(&url, &["pub", "lt.evt.x.y", "x", "--qos", "2"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("deterministic message id"), "{}", text(&o));
    // Unreachable server.
    let o = lt("nats://127.0.0.1:1", &["pub", "a.b", "x"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("hint: start the platform with `lt up`"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn nodes_lists_registered_nodes() {
    let (srv, bus) = setup().await;
    let reg = Registry::provision(&bus, DiscoveryConfig::default())
        .await
        .unwrap();
    reg.register(NodeInfo::new("collector-7", "collector"))
        .await
        .unwrap();
    let o = lt(&srv.url(), &["nodes"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("collector-7") && out.contains("1 node(s)"), "{out}");
    let o = lt(&srv.url(), &["nodes", "--watch", "--json", "--count", "1"]);
    let out = text(&o);
    assert!(
        out.contains("\"event\":\"joined\"") && out.contains("collector-7"),
        "{out}"
    );
}

#[test]
fn flow_example_validate_and_invoke() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["flow", "example"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let file = dir.path().join("p.yml");
    std::fs::write(&file, &o.stdout).unwrap();
    let f = file.to_str().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["flow", "validate", f])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ok — source nats"), "{}", text(&o));

    let fixture = dir.path().join("f.jsonl");
    std::fs::write(&fixture, "{\"deviceId\":\"c9\",\"channel\":3,\"voltage\":3.9,\"current\":-1.5,\"temperature\":26,\"soc\":80,\"stepType\":\"STEP_TYPE_CC_DISCHARGE\",\"cycle\":1,\"capacity\":0.5,\"seq\":\"3\"}\nnot json\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["flow", "invoke", f, fixture.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("\"device_id\":\"c9\"") && out.contains("\"step\":\"cc_discharge\""),
        "{out}"
    );
    assert!(out.contains("line 2: rejected"), "{out}");
    assert!(
        out.contains("1 input row(s), 1 output row(s), 1 rejected"),
        "{out}"
    );

    // A typo in a key: the error names the key path and the line.
    let good = std::fs::read_to_string(&file).unwrap();
    let line_no = good.lines().position(|l| l.contains("max_ack_pending:")).unwrap() + 1;
    let bad = good.replace("max_ack_pending:", "max_ack_pendng:");
    std::fs::write(&file, bad).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["flow", "validate", f])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("pipeline.source.nats: unknown field `max_ack_pendng`"),
        "{out}"
    );
    assert!(out.contains(&format!("{f}:{line_no}:")), "{out}");
}

#[test]
fn a_malformed_log_filter_is_a_configuration_error_naming_it() {
    // No server needed: the filter is checked before anything connects.
    let o = lt("nats://127.0.0.1:1", &["--log", "langtian_core=loud", "nodes"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("lt: error: --log `langtian_core=loud`"), "{out}");
}

/// With `--log-format json` the error `lt` stops with is a JSON event (code `command_failed`,
/// the `error` field), like every other line on stderr.
#[test]
fn a_failed_command_is_a_json_event_when_logs_are_json() {
    let port = langtian_core::natsd::free_port().unwrap();
    let url = format!("nats://127.0.0.1:{port}"); // nothing listens there
    let o = lt(&url, &["--log-format", "json", "nodes"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let log = langtian_core::testkit::JsonLog::parse(stderr.lines()).unwrap();
    let failed = log
        .with_code("command_failed")
        .unwrap_or_else(|| panic!("no command_failed event in {stderr}"));
    assert_eq!(failed["level"], "ERROR");
    assert!(
        failed["fields"]["error"].as_str().unwrap().contains(&url),
        "{failed}"
    );
}

/// `--nats-tls` is about the embedded server: with `--nats-url` it is refused, not ignored.
#[test]
fn nats_tls_with_an_external_server_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let o = lt(
        "nats://127.0.0.1:1",
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "up",
            "--data-dir",
            data,
            "--nats-tls",
        ],
    );
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(text(&o).contains("pass its CA with --tls-ca"), "{}", text(&o));
}

/// A topology file that cannot work stops `lt up` before anything starts, with exit code 10 (as
/// for every binary's settings) and the key, the value and the file named.
#[test]
fn a_bad_topology_file_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("t.yaml");
    std::fs::write(
        &topology,
        "streams:\n  - name: A\n    subjects: [a]\n    max_msgs_per_subject: 0\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let o = lt(
        "nats://127.0.0.1:1",
        &[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--topology",
            topology.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("t.yaml")
            && out.contains("streams[0].max_msgs_per_subject is 0")
            && out.contains("stream `A`"),
        "{out}"
    );
    assert!(!data.join("nats").exists(), "nothing started: {out}");
}

/// `lt nats-access` writes users a real nats-server enforces: without a key the server refuses
/// the connection; the admin key provisions the topology (`lt provision`); the collector's key
/// (with its inbox prefix) may store events but not publish market ticks, which fails at once
/// with an error that says so.
#[tokio::test]
async fn nats_access_writes_users_that_the_server_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("access");
    let o = Command::new(env!("CARGO_BIN_EXE_lt"))
        .args(["nats-access", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("lt-gateway --nkey-seed-file"), "{}", text(&o));
    let conf = std::fs::read_to_string(out.join("accounts.conf")).unwrap();
    let srv = TestServer::start_with(|c| c.extra_config = Some(conf))
        .await
        .unwrap();
    let url = srv.url();
    let key = |u: &str| {
        out.join("keys")
            .join(format!("{u}.nk"))
            .to_str()
            .unwrap()
            .to_owned()
    };

    let o = lt(&url, &["provision"]);
    assert!(!o.status.success(), "no key, no entry: {}", text(&o));
    assert!(text(&o).to_lowercase().contains("authorization"), "{}", text(&o));
    assert!(
        text(&o).contains("--nkey-seed-file"),
        "the hint names the way in: {}",
        text(&o)
    );
    let o = lt(&url, &["--nkey-seed-file", &key("admin"), "provision"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("LT_EVENTS"), "{}", text(&o));

    let collector = [
        "--nkey-seed-file",
        &key("collector"),
        "--inbox-prefix",
        "_LT.collector",
    ];
    let o = lt(
        &url,
        &[&collector[..], &["pub", "lt.evt.note.cli", "hello"]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = lt(
        &url,
        &[&collector[..], &["pub", "xy.src.tick.shfe.cu2501", "fake"]].concat(),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not allowed"), "{}", text(&o));
}

/// `lt sim battery` sends what it says: every sample in decodable datagrams of at most
/// `--per-datagram` samples, to the UDP address given.
#[test]
fn sim_battery_sends_the_samples_it_reports_to_the_address_given() {
    use langtian_core::proto::battery::v1::ChannelSampleBatch;
    use prost::Message as _;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let to = sock.local_addr().unwrap().to_string();
    let o = lt(
        "nats://127.0.0.1:1",
        &[
            "sim",
            "battery",
            "--to",
            &to,
            "--devices",
            "2",
            "--channels",
            "3",
            "--rate",
            "5000",
            "--per-datagram",
            "4",
            "--count",
            "60",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("sent 60 samples"), "{}", text(&o));
    let (mut samples, mut buf) = (Vec::new(), vec![0u8; 65_536]);
    while samples.len() < 60 {
        let n = sock.recv(&mut buf).expect("a datagram from lt sim battery");
        let batch = ChannelSampleBatch::decode(&buf[..n]).unwrap();
        assert!(
            (1..=4).contains(&batch.samples.len()),
            "{} samples in a datagram",
            batch.samples.len()
        );
        samples.extend(batch.samples);
    }
    assert_eq!(samples.len(), 60);
    let channels: std::collections::BTreeSet<_> =
        samples.iter().map(|s| (s.device_id.clone(), s.channel)).collect();
    assert_eq!(channels.len(), 6, "2 cyclers × 3 channels");
}

/// `lt sim ticks` publishes `--count` ticks to XY_SRC, one subject per venue and symbol.
#[tokio::test]
async fn sim_ticks_publishes_the_count_to_xy_src() {
    let srv = TestServer::start().await.unwrap();
    let bus = Bus::connect(&BusOptions::new(&srv.url())).await.unwrap();
    langtian_core::bus::Topology::default_topology()
        .unwrap()
        .apply(&bus)
        .await
        .unwrap();
    let o = lt(
        &srv.url(),
        &[
            "sim",
            "ticks",
            "--venues",
            "2",
            "--symbols",
            "3",
            "--rate",
            "2000",
            "--count",
            "300",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("published 300 ticks"), "{}", text(&o));
    let mut stream = bus.jetstream().get_stream("XY_SRC").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 300);
    assert_eq!(info.state.subjects_count, 6, "2 venues × 3 symbols");
    // Each instrument's contract went first, to XY_REF; a second run's are duplicates there
    // (same message ids), and `--contracts-prefix off` sends none.
    assert!(text(&o).contains("6 contracts → xy.ref.contract"), "{}", text(&o));
    let again = ["sim", "ticks", "--venues", "2", "--symbols", "3", "--count", "1"];
    assert!(lt(&srv.url(), &again).status.success());
    let off = [&again[..], &["--contracts-prefix", "off"]].concat();
    let o = lt(&srv.url(), &off);
    assert!(
        o.status.success() && !text(&o).contains("contracts →"),
        "{}",
        text(&o)
    );
    let mut xy_ref = bus.jetstream().get_stream("XY_REF").await.unwrap();
    let info = xy_ref.info().await.unwrap();
    // (The stream keeps one per instrument anyway: its last sequence tells nothing was re-stored.)
    assert_eq!((info.state.messages, info.state.last_sequence), (6, 6));
}

/// Settings that cannot work are refused at once, naming the option, before anything is sent
/// or any server is contacted (a rate of 0 used to wait forever).
#[test]
fn sim_settings_that_cannot_work_are_refused_naming_the_option() {
    let cases: [(&[&str], &str); 7] = [
        (&["sim", "battery", "--rate", "0"], "`rate`"),
        (&["sim", "battery", "--rate", "NaN"], "`rate`"),
        (&["sim", "battery", "--channels", "0"], "`channels`"),
        (
            &["sim", "battery", "--per-datagram", "5000", "--channels", "5000"],
            "UDP limit",
        ),
        (
            &["sim", "battery", "--sample-interval", "0s"],
            "`sample-interval`",
        ),
        (&["sim", "ticks", "--dup-rate", "2"], "`dup-rate`"),
        (&["sim", "ticks", "--rate=-5"], "`rate`"),
    ];
    for (args, want) in cases {
        // No server listens on port 1: a refusal about the setting proves it came first.
        let child = Command::new(env!("CARGO_BIN_EXE_lt"))
            .args(args)
            .env("LT_NATS_URL", "nats://127.0.0.1:1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A refusal is immediate; one that never comes must fail the test, not hang it.
        let o = langtian_core::testkit::output_within(child, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{args:?} was not refused: {e}"));
        let out = text(&o);
        assert_eq!(o.status.code(), Some(10), "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: `{want}` not named in: {out}");
        assert!(!out.contains("connect"), "{args:?} tried the server: {out}");
    }
}

/// `lt up` refuses simulator and metrics settings that cannot work before it starts anything (no
/// data dir, no nats-server), naming the option; a negative tick rate is no longer taken as "no
/// ticks".
#[test]
fn up_refuses_simulator_settings_that_cannot_work_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--rate", "0"], "`rate`"),
        (&["--devices", "0"], "`devices`"),
        (&["--channels", "0"], "`channels`"),
        (&["--tick-rate=-1"], "--tick-rate"),
        (&["--jetstream-metrics-every", "0s"], "between 1s and 1h"),
        (
            &["--jetstream-metrics-every", "often"],
            "--jetstream-metrics-every",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["up", "--data-dir", data_s];
        args.extend_from_slice(extra);
        let o = lt("nats://127.0.0.1:1", &args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(10), "{extra:?}: {out}");
        assert!(out.contains(want), "{extra:?}: `{want}` not named in: {out}");
        assert!(
            !data.exists(),
            "{extra:?}: the data dir was created before the refusal"
        );
    }
}

/// Benchmark settings that would measure nothing are refused before a server starts, instead of
/// writing a results file of zeros.
#[test]
fn bench_settings_that_measure_nothing_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let out_s = out.path().to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["bench", "bus", "--quick", "--messages", "0"], "--messages"),
        (&["bench", "live", "--quick", "--clients", "0"], "--clients"),
        (&["bench", "live", "--quick", "--rates", "4000,0"], "--rates"),
    ];
    for (args, want) in cases {
        let mut args = args.to_vec();
        args.extend(["--out", out_s]);
        let o = lt("nats://127.0.0.1:1", &args);
        let text = text(&o);
        assert_eq!(o.status.code(), Some(10), "{args:?}: {text}");
        assert!(text.contains(want), "{args:?}: `{want}` not named in: {text}");
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "{args:?} wrote results"
        );
    }
}
