"""The Python SDK against real services (see conftest.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import langtian
import langtian.aio

from conftest import LT_BIN, Platform, free_port, open_lake_with_duckdb, until


def test_query_returns_a_dataframe_with_typed_columns(lt):
    df = lt.query(
        "SELECT device_id, channel, count(*) AS n, max(voltage) AS v FROM lake.battery_samples "
        "WHERE device_id = ? GROUP BY ALL ORDER BY channel",
        ["cycler-00"],
    )
    assert list(df.columns) == ["device_id", "channel", "n", "v"]
    assert len(df) == 16 and df["device_id"].eq("cycler-00").all()
    # 64 channels share the 20,000 samples round-robin: 313 or 312 each.
    assert df["n"].between(312, 313).all()
    assert df["n"].sum() == lt.query("SELECT count(*) AS n FROM lake.battery_samples WHERE device_id = 'cycler-00'")["n"][0]
    assert pd.api.types.is_float_dtype(df["v"]) and df["v"].between(2.5, 4.3).all()
    assert df.attrs["truncated"] is None


def test_a_million_row_query(lt):
    sql = (
        "SELECT i, i * 2 AS j, i % 7 AS k, i::DOUBLE / 3 AS x, 'r' || (i % 100) AS s, i % 2 = 0 AS even, "
        "i + 1 AS a, i + 2 AS b, i + 3 AS c, i + 4 AS d FROM range(1000000) t(i)"
    )
    df = lt.query(sql)
    assert df.shape == (1_000_000, 10)
    assert int(df["i"].sum()) == 999_999 * 1_000_000 // 2
    assert df["s"].iloc[123_456] == "r56" and bool(df["even"].iloc[10])


def test_bad_sql_raises_query_error_with_duckdb_message(lt):
    with pytest.raises(langtian.QueryError) as e:
        lt.query("SELEC 1")
    assert e.value.code == "parse"
    assert "syntax error" in str(e.value)
    with pytest.raises(langtian.QueryError) as e:
        lt.query("SELECT no_such_column FROM lake.battery_samples")
    assert "no_such_column" in str(e.value)


@pytest.mark.parametrize(
    "sql",
    ["CREATE TABLE t (i INTEGER)", "DELETE FROM lake.battery_samples", "INSERT INTO lake.battery_samples SELECT * FROM lake.battery_samples", "ATTACH ':memory:' AS m"],
)
def test_ddl_and_dml_are_rejected(lt, sql):
    with pytest.raises(langtian.QueryRejected) as e:
        lt.query(sql)
    assert e.value.code == "not_read_only"
    # Nothing changed.
    assert lt.query("SELECT count(*) AS n FROM lake.battery_samples")["n"][0] == 20_000


def test_timeout_is_honoured(lt):
    t0 = time.monotonic()
    with pytest.raises(langtian.QueryTimeout) as e:
        lt.query("SELECT count(*) FROM range(100000000000) a", timeout=0.5)
    took = time.monotonic() - t0
    assert e.value.code == "timeout" and isinstance(e.value, TimeoutError)
    assert took < 5, f"interrupted after {took:.1f} s"


def test_row_limit_cuts_and_says_so(lt):
    df = lt.query("SELECT * FROM lake.battery_samples", max_rows=100)
    assert len(df) == 100 and df.attrs["truncated"] == "rows"


def test_publish_then_subscribe_round_trip(lt):
    sub = lt.subscribe("lt.evt.note.>")
    receipt = lt.publish("note", {"text": "hello", "n": 1}, source="pytest", event_id="pytest-note-1")
    assert receipt["stream"] and receipt["sequence"] > 0 and not receipt["duplicate"]
    m = sub.next(timeout=5)
    assert m is not None
    assert (m["subject"], m["event_type"], m["source"], m["event_id"]) == ("lt.evt.note.pytest", "note", "pytest", "pytest-note-1")
    assert langtian.decode(m) == {"text": "hello", "n": 1}
    # The same event id again: JetStream de-duplicates it.
    assert lt.publish("note", {"text": "hello", "n": 1}, source="pytest", event_id="pytest-note-1")["duplicate"]
    sub.close()


def test_an_nkey_seed_connects_as_that_lt_up_service(platform):
    # lt up keeps each service's NKey seed; with one, the SDK is that NATS user and the server
    # enforces its permissions: the collector may store events but not publish market data.
    seed = (platform.dir / "nats" / "keys" / "collector.nk").read_text()
    # Without its inbox prefix, the collector's user may not read the PubAck's inbox: a typed error.
    wrong_inbox = langtian.connect(platform.url, nkey_seed=seed, name="pytest-default-inbox")
    with pytest.raises(langtian.PublishError, match="_LT.<user>"):
        wrong_inbox.publish("note", {"n": 0}, source="pytest-nkey")
    collector = langtian.connect(platform.url, nkey_seed=seed, inbox_prefix="_LT.collector", name="pytest-as-collector")
    assert collector.publish("note", {"n": 1}, source="pytest-nkey")["sequence"] > 0
    with pytest.raises(langtian.PublishError, match="not allowed"):
        collector.publish("x", b"1", qos=1, subject="xy.md.tick.pytest.0")
    with pytest.raises(langtian.ConnectError):
        langtian.connect(platform.url, nkey_seed="SUnotaseed", timeout=2)


def test_publish_errors_are_typed(lt):
    with pytest.raises(langtian.PublishError):
        lt.publish("x", b"1", qos=1, subject="lt.analysis.nowhere")  # no stream captures it (a subject lt up's local user may publish)
    with pytest.raises(langtian.PublishError):
        lt.publish("x", b"1", qos=7)
    with pytest.raises(langtian.EnvelopeError):
        lt.publish("", b"1")


def test_stream_frame_collects_decoded_events(lt):
    stop = threading.Event()

    def send():
        i = 0
        while not stop.is_set():
            lt.publish("reading", {"sensor": f"s{i % 3}", "value": i}, qos=0, source="frame")
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        df = lt.stream_frame("lt.evt.reading.>", max_messages=20, timeout=10)
    finally:
        stop.set()
        t.join()
    assert len(df) == 20
    assert {"subject", "event_id", "event_type", "source", "time", "sensor", "value"} <= set(df.columns)
    assert df["event_type"].eq("reading").all() and str(df["time"].dtype).startswith("datetime64")


def test_battery_sample_payloads_decode():
    # ChannelSample{device_id: "d1", channel: 3, voltage: 3.7} in protobuf wire format.
    body = b"\x0a\x02d1" + b"\x10\x03" + b"\x31" + struct.pack("<d", 3.7)
    m = {"content_type": "application/x-protobuf; messageType=langtian.battery.v1.ChannelSample", "payload": body}
    d = langtian.decode(m)
    assert (d["device_id"], d["channel"], d["voltage"]) == ("d1", 3, 3.7)
    with pytest.raises(langtian.EnvelopeError):
        langtian.decode({**m, "payload": b"\xff\xff"})


def test_publish_frame_arrives_as_the_same_table(lt):
    df = pd.DataFrame({"channel": ["c1", "c2", "c3"], "fade": [0.91, 0.88, None], "cycles": [100, 200, 300]})
    sub = lt.subscribe("lt.analysis.>")
    sent = lt.publish_frame("capacity_fade", df)
    assert sent["subject"] == "lt.analysis.capacity_fade" and sent["rows"] == 3
    m = sub.next(timeout=5)
    assert m is not None and m["subject"] == "lt.analysis.capacity_fade"
    back = pa.ipc.open_stream(m["payload"]).read_all().to_pandas()
    pd.testing.assert_frame_equal(back, df)
    sub.close()
    with pytest.raises(langtian.FrameError) as e:
        lt.publish_frame("bad.name", df)
    assert e.value.code == "bad_name"
    big = pd.DataFrame({"x": range(300_000)})
    with pytest.raises(langtian.FrameError) as e:
        lt.publish_frame("big", big)
    assert e.value.code == "too_large"


def test_nodes_and_watch_nodes(lt):
    nodes = lt.nodes()
    assert any(n["role"] == "lt-up" for n in nodes), nodes
    first = next(lt.watch_nodes(timeout=5))
    assert first[0] == "joined" and first[1]["node_id"]


def test_asyncio_variants(platform):
    async def go():
        lt = await langtian.aio.connect(platform.url)
        df = await lt.query("SELECT count(*) AS n FROM lake.battery_samples")
        got = []

        async def listen():
            async for m in lt.subscribe("lt.evt.async.>"):
                got.append(m)
                return

        task = asyncio.create_task(listen())
        # Publish until the listener has one (its subscription starts in a worker thread).
        for _ in range(50):
            await lt.publish("async", {"ok": True}, qos=0)
            if task.done():
                break
            await asyncio.sleep(0.1)
        await asyncio.wait_for(task, 5)
        return int(df["n"][0]), got

    n, got = asyncio.run(go())
    assert n == 20_000 and got and got[0]["event_type"] == "async"


def test_no_service_and_no_server_are_typed():
    with pytest.raises(langtian.ConnectError):
        langtian.connect("nats://127.0.0.1:1", timeout=1)


def test_query_equals_duckdbs_own_read_of_the_same_lake():
    p = Platform(samples=5_000)
    sql = "SELECT device_id, channel, count(*) AS n, round(avg(voltage), 9) AS v, max(seq) AS last FROM lake.battery_samples GROUP BY ALL ORDER BY ALL"
    try:
        ours = p.client.query(sql)
    finally:
        p.stop()
    theirs = open_lake_with_duckdb(p.lake_dir).execute(sql).df()
    assert len(ours) == 64
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)


def test_the_capacity_fade_example_runs_and_draws(tmp_path):
    """docs/examples/capacity_fade.py on a day of cycling: 16 channels, one sample per 10 s of
    cell time for 24 h (8,640 samples each)."""
    import subprocess
    import sys
    from pathlib import Path

    p = Platform(samples=16 * 8640, sim={"--channels": "4", "--sample-interval": "10s"})
    try:
        out = tmp_path / "capacity_fade.png"
        example = Path(__file__).resolve().parents[3] / "docs" / "examples" / "capacity_fade.py"
        r = subprocess.run(
            [sys.executable, str(example), "--url", p.url, "--out", str(out), "--publish"],
            capture_output=True, text=True, timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert "16 cells" in r.stdout and "lt.analysis.capacity_fade" in r.stdout, r.stdout
        assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The example's own table: every cell lost capacity over the day (the simulator fades
        # 0.07–0.13 % per cycle); it printed the median rate.
        rates = [float(l.split()[-1]) for l in r.stdout.splitlines() if l.startswith("cycler-")]
        assert len(rates) == 16, r.stdout
        assert sum(x > 0 for x in rates) >= 14, rates
        median = float(r.stdout.split("median fade: ")[1].split()[0])
        assert 0.03 < median < 0.2, r.stdout
        artefacts = os.environ.get("LANGTIAN_ARTIFACTS")
        if artefacts:
            Path(artefacts).mkdir(parents=True, exist_ok=True)
            (Path(artefacts) / "capacity_fade.png").write_bytes(out.read_bytes())
    finally:
        p.stop()


def test_tls_ca_trusts_lt_up_with_nats_tls():
    # lt up --nats-tls requires TLS with its own local CA: without the CA the server's certificate
    # is not trusted (a connect error); with tls_ca the client connects and stores an event.
    data = Path(tempfile.mkdtemp(prefix="lt-pytest-tls-"))
    port = free_port()
    proc = subprocess.Popen(
        [LT_BIN, "up", "--data-dir", str(data), "--nats-port", str(port), "--nats-http-port", str(free_port()),
         "--udp", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "--metrics-addr", "off",
         "--no-sim", "--no-live", "--no-flow", "--nats-tls"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out = ""
        for line in proc.stdout:  # provisioned and registered: the event stream exists
            out += line
            if "registered node" in line:
                break
        else:
            raise RuntimeError(f"lt up exited ({proc.wait()}):\n{out}")
        assert "NATS TLS: required" in out, out
        url = f"nats://127.0.0.1:{port}"
        with pytest.raises(langtian.ConnectError, match="UnknownIssuer"):
            langtian.connect(url, timeout=2)
        client = langtian.connect(url, tls_ca=str(data / "nats" / "tls" / "ca.pem"), name="pytest-tls")
        assert client.publish("note", {"n": 1}, source="pytest-tls")["sequence"] > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def live_platform():
    p = Platform(samples=0, live=True)
    yield p
    p.stop()


def test_live_group_follows_the_aggregator_into_a_dataframe(live_platform):
    lt = live_platform.client
    # Which groups exist: the subject of the first delta names one (xy.md.tick.<group>.<shard>).
    sub = lt.subscribe("xy.md.tick.>")
    first = sub.next(timeout=30)
    sub.close()
    assert first is not None, "no tick delta from lt up's aggregator"
    group = first["subject"].split(".")[3]

    ticks = lt.live(group)
    assert (ticks.kind, ticks.group) == ("ticks", group)
    assert len(ticks) > 0, "the snapshot holds the group's instruments"
    before = {r["symbol"]: r["seq"] for r in ticks.records()}
    assert ticks.follow(seconds=1.5) > 0, "deltas applied"
    df = ticks.to_pandas()
    assert {"venue", "symbol", "last", "bid", "ask", "volume", "seq", "ts_exchange"} <= set(df.columns)
    assert len(df) == len(ticks) and df["symbol"].is_unique
    assert (df["venue"].str.lower() == group).all()
    assert str(df["ts_exchange"].dtype).startswith("datetime64")
    after = dict(zip(df["symbol"], df["seq"]))
    assert all(after[s] >= seq for s, seq in before.items()), "sequences only move forward"
    assert any(after[s] > seq for s, seq in before.items()), "ticks kept coming"
    key = f"{df['venue'][0]}.{df['symbol'][0]}"
    assert ticks.get(key)["symbol"] == df["symbol"][0]
    assert ticks.get("NOPE.x") is None
    assert ticks.stats["applied"] > 0 and ticks.stats["rejected"] == 0, ticks.stats
    assert group in repr(ticks)

    # Reference data of the same venue: a contract per instrument (published before any tick).
    contracts = lt.live(group, kind="contracts").to_pandas()
    assert set(df["symbol"]) <= set(contracts["symbol"]), "every ticking instrument has its contract"
    assert (contracts["multiplier"] > 0).all()

    # The battery channels (lt up's simulator: 2 cyclers × 8 channels), group `cells`.
    cells = lt.live("cells", kind="battery")
    until("every channel in the battery group", lambda: cells.follow(0.2) >= 0 and len(cells) == 16)
    r = cells.records()[0]
    assert cells.get(f"{r['device_id']}/{r['channel']}") == r
    assert len({(x["device_id"], x["channel"]) for x in cells.records()}) == 16

    # asyncio: the same group, awaited.
    async def follow_async():
        alt = await langtian.aio.connect(live_platform.url)
        g = await alt.live(group)
        return await g.follow(0.5), len(g)

    applied, n = asyncio.run(follow_async())
    assert applied > 0 and n >= len(ticks)

    with pytest.raises(langtian.LiveError) as e:
        lt.live("nowhere")
    assert e.value.code == "no_snapshot" and "nowhere" in str(e.value)
    with pytest.raises(langtian.LiveError) as e:
        lt.live(group, kind="bonds")
    assert e.value.code == "bad_kind"
    with pytest.raises(langtian.LiveError) as e:
        lt.live("a.b")
    assert e.value.code == "bad_group"
