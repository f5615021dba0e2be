"""Real services for the SDK tests: `lt up` (embedded nats-server, collector, flow into a local
DuckLake, query service) on free ports, fed by `lt sim battery`. Nothing is mocked.

LT_BIN names the lt binary (default: the shared cargo target dir's debug build)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import langtian

TARGET = Path(os.environ.get("LANGTIAN_TARGET_DIR") or os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache/langtian/target")
LT_BIN = os.environ.get("LT_BIN", str(TARGET / "debug" / "lt"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(what: str, cond, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except langtian.LangtianError as e:  # not ready yet (no service, lake still empty)
            last_error = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


class Platform:
    """One `lt up` with its data dir; `samples` battery samples sent and committed to the lake."""

    def __init__(self, samples: int, sim: dict[str, str] | None = None, live: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lt-pytest-"))
        self.nats_port, self.udp_port = free_port(), free_port(socket.SOCK_DGRAM)
        self.url = f"nats://127.0.0.1:{self.nats_port}"
        self.proc = subprocess.Popen(
            [LT_BIN, "up", "--data-dir", str(self.dir), "--nats-port", str(self.nats_port),
             "--nats-http-port", str(free_port()), "--udp", f"127.0.0.1:{self.udp_port}",
             "--metrics-addr", "off",
             # The live path (simulators, aggregator, gateway) only where a test follows it.
             *(["--tick-rate", "400", "--rate", "200", "--devices", "2", "--channels", "8",
                "--gateway-addr", f"127.0.0.1:{free_port()}"] if live else ["--no-sim", "--no-live"])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output = ""
        for line in self.proc.stdout:  # until the query service is up (it prints its subject)
            self.output += line
            if "query service on" in line:
                break
        else:
            raise RuntimeError(f"lt up exited ({self.proc.wait()}):\n{self.output}")
        self.client = langtian.connect(self.url)
        self.samples = samples
        if samples:
            opts = {"--rate": "20000", "--devices": "4", "--channels": "16", **(sim or {})}
            subprocess.run(
                [LT_BIN, "sim", "battery", "--to", f"127.0.0.1:{self.udp_port}", "--count", str(samples),
                 *[x for kv in opts.items() for x in kv]],
                check=True, capture_output=True, timeout=120,
            )
            until(
                f"{samples} samples in the lake",
                lambda: self.client.query("SELECT count(*) AS n FROM lake.battery_samples")["n"][0] == samples,
                timeout=60,
            )

    @property
    def lake_dir(self) -> Path:
        return self.dir / "lake"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def open_lake_with_duckdb(lake_dir: Path):
    """DuckDB's own Python package on the lake `lt up` wrote (read-only; `lt up` must be stopped)."""
    import duckdb

    con = duckdb.connect()
    ext = os.environ.get("LANGTIAN_DUCKDB_EXTENSION_DIR")
    if ext:
        con.execute(f"SET extension_directory = '{ext}'")
    con.execute("LOAD ducklake")
    con.execute(f"ATTACH 'ducklake:{lake_dir / 'meta.ducklake'}' AS lake (DATA_PATH '{lake_dir / 'data'}', READ_ONLY)")
    return con


@pytest.fixture(scope="session")
def platform():
    p = Platform(samples=20_000)
    yield p
    p.stop()


@pytest.fixture()
def lt(platform) -> langtian.Client:
    return platform.client
