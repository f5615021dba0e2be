"""The synchronous client: events over NATS, lake queries as DataFrames, tables for the UI."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd
import pyarrow as pa

from . import _native

__all__ = ["Client", "LiveGroup", "Message", "connect"]

#: What :meth:`Client.subscribe` yields: the envelope's fields (``event_id``, ``event_type``,
#: ``source``, ``timestamp_ns``, ``content_type``, ``payload`` bytes, ``subject``), or
#: ``{"subject", "payload", "envelope": False}`` for a message that is not an envelope.
Message = dict


def _encode_payload(payload: Any, content_type: str | None) -> tuple[bytes, str]:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_type or "application/octet-stream"
    if isinstance(payload, str):
        return payload.encode(), content_type or "text/plain; charset=utf-8"
    return json.dumps(payload, separators=(",", ":"), default=str).encode(), content_type or "application/json"


def decode(message: Message) -> dict:
    """The payload of ``message`` as a dict: JSON objects and battery samples are expanded,
    other payloads are kept under ``payload``."""
    ct = message.get("content_type") or ""
    body = message.get("payload", b"")
    if "json" in ct:
        try:
            value = json.loads(body)
        except ValueError:
            return {"payload": body}
        return value if isinstance(value, dict) else {"value": value}
    known = _native.decode_payload(ct, body)
    return known if known is not None else {"payload": body}


class Client:
    """A connection to the platform's NATS.

    >>> import langtian
    >>> lt = langtian.connect("nats://127.0.0.1:14222")      # lt up's embedded server
    >>> df = lt.query("SELECT device_id, avg(voltage) AS v FROM lake.battery_samples GROUP BY ALL")
    """

    def __init__(self, url: str = "nats://127.0.0.1:14222", **options: Any) -> None:
        self._native = _native.Client(url, **options)

    @property
    def url(self) -> str:
        return self._native.url

    def __repr__(self) -> str:
        return f"langtian.Client({self.url!r})"

    # -- events --------------------------------------------------------------------------------
    def publish(
        self,
        event_type: str,
        payload: Any,
        *,
        qos: int = 1,
        source: str = "python",
        content_type: str | None = None,
        subject: str | None = None,
        prefix: str = "lt.evt",
        event_id: str | None = None,
        partition_key: str | None = None,
    ) -> dict:
        """Wraps ``payload`` (dict/list → JSON, str, bytes) in an envelope and publishes it on
        ``<prefix>.<event_type>.<source>`` (or ``subject``). QoS 1 and 2 wait for JetStream's
        acknowledgement and return ``{"stream", "sequence", "duplicate", "event_id", "subject"}``;
        a given ``event_id`` makes a retry a no-op within the stream's duplicate window.

        >>> lt.publish("note.created", {"text": "hello"})["sequence"]
        """
        body, ct = _encode_payload(payload, content_type)
        return self._native.publish(
            event_type, body, ct, source=source, qos=qos, prefix=prefix, subject=subject,
            event_id=event_id, partition_key=partition_key,
        )

    def subscribe(self, subject: str, *, queue: str | None = None) -> "_native.Subscription":
        """Live messages on ``subject`` (wildcards allowed) as dicts; iterate, or call
        ``.next(timeout)`` which returns ``None`` when nothing came in time. ``close()`` ends it.

        >>> for m in lt.subscribe("lt.evt.>"):
        ...     print(m["event_type"], langtian.decode(m))
        """
        return self._native.subscribe(subject, queue=queue)

    def stream_frame(self, subject: str, max_messages: int = 1000, timeout: float = 5.0) -> pd.DataFrame:
        """Collects up to ``max_messages`` events from ``subject`` for at most ``timeout``
        seconds into a DataFrame: one row per event with ``subject``, ``event_id``,
        ``event_type``, ``source``, ``time`` and the decoded payload's fields as columns.
        """
        sub = self.subscribe(subject)
        rows: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while len(rows) < max_messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                m = sub.next(timeout=left)
                if m is None:
                    break
                row = {k: m.get(k) for k in ("subject", "event_id", "event_type", "source", "timestamp_ns")}
                row.update(decode(m))
                rows.append(row)
        finally:
            sub.close()
        df = pd.DataFrame(rows)
        if "timestamp_ns" in df:
            df.insert(4, "time", pd.to_datetime(df.pop("timestamp_ns"), unit="ns", utc=True))
        return df

    # -- the lake ------------------------------------------------------------------------------
    def query_arrow(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> pa.Table:
        """Runs one SELECT on the lake through the query service (``lt.query.v1``) and returns
        a pyarrow Table read straight from the Arrow IPC chunks (no row-by-row conversion).
        ``params`` fill ``?`` placeholders. ``table.schema.metadata[b"truncated"]`` is set when a
        limit cut the result."""
        chunks, rows, truncated = self._native.query_ipc(
            sql, json.dumps(list(params)) if params is not None else None,
            max_rows=max_rows, max_bytes=max_bytes, timeout=timeout,
        )
        tables = [pa.ipc.open_stream(pa.py_buffer(c)).read_all() for c in chunks]
        if not tables:
            return pa.table({})
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if truncated:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"truncated": truncated.encode()})
        return table

    def query(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> pd.DataFrame:
        """Like :meth:`query_arrow`, as a pandas DataFrame (numeric columns keep the Arrow
        buffers: ``split_blocks=True``). ``df.attrs["truncated"]`` is ``"rows"``/``"bytes"``
        when a limit cut the result.

        >>> lt.query("SELECT channel, max(capacity) AS ah FROM lake.battery_samples WHERE device_id = ? GROUP BY 1", ["cycler-00"])
        """
        table = self.query_arrow(sql, params, max_rows=max_rows, max_bytes=max_bytes, timeout=timeout)
        truncated = (table.schema.metadata or {}).get(b"truncated")
        df = table.to_pandas(split_blocks=True, self_destruct=True)
        df.attrs["truncated"] = truncated.decode() if truncated else None
        return df

    # -- tables for the UI ---------------------------------------------------------------------
    def publish_frame(self, name: str, df: "pd.DataFrame | pa.Table") -> dict:
        """Publishes a DataFrame (or pyarrow Table) as one Arrow IPC message on
        ``lt.analysis.<name>``, where the web UI's analysis view shows it. Names are 1–64 of
        ``A–Z a–z 0–9 _ -``; the table must fit the server's max payload (1 MiB by default).

        >>> lt.publish_frame("capacity_fade", fade_df)
        """
        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return self._native.publish_frame_ipc(name, sink.getvalue().to_pybytes(), table.num_rows)

    # -- discovery -----------------------------------------------------------------------------
    def nodes(self, *, bucket: str | None = None) -> list[dict]:
        """The registered services (KV ``lt_nodes``): ``node_id``, ``role``, ``host``,
        ``version``, ``last_seen_ms``, ``load``, ``endpoints``, ``metadata``."""
        return json.loads(self._native.nodes_json(bucket=bucket))

    def watch_nodes(self, *, bucket: str | None = None, timeout: float | None = None) -> Iterator[tuple[str, dict]]:
        """Yields ``(kind, info)`` as nodes join, heart-beat (``updated``) and leave; the nodes
        present when it starts come first as ``joined``. Stops after ``timeout`` seconds
        without a change (never with ``None``)."""
        w = self._native.watch_nodes(bucket=bucket)
        while True:
            got = w.next(timeout)
            if got is None:
                return
            kind, info = got
            yield kind, json.loads(info)

    # -- live state from the aggregator -------------------------------------------------------
    def live(self, group: str, *, kind: str = "ticks", bucket: str = "md_snapshots") -> "LiveGroup":
        """Follows one group of the aggregator live — what the UI's grids show: its snapshot
        (a fresh one from the aggregator, else the copy in KV) and then every delta. ``kind`` is
        ``ticks`` (groups are venues in lower case: ``shfe``, ``dce``), ``contracts`` (same
        groups) or ``battery`` (group ``cells``). Raises :class:`LiveError` when no aggregator
        has seen the group.

        >>> shfe = lt.live("shfe")
        >>> shfe.follow(seconds=2)                   # apply deltas for two seconds
        >>> shfe.to_pandas().head()                  # one row per instrument, latest values
        """
        return LiveGroup(self._native.live(group, kind=kind, bucket=bucket))

    def flush(self) -> None:
        """Waits until everything published has reached the server."""
        self._native.flush()


class LiveGroup:
    """One group of the aggregator, kept current from its deltas (see :meth:`Client.live`).
    A gap (a lost delta, a restarted aggregator) is noticed by version and the snapshot read
    again, as the UI does; ``stats["resyncs"]`` counts those."""

    def __init__(self, native: "_native.Live") -> None:
        self._native = native

    @property
    def kind(self) -> str:
        return self._native.kind

    @property
    def group(self) -> str:
        return self._native.group

    @property
    def stats(self) -> dict:
        """``applied`` and ``stale`` deltas, ``resyncs`` after gaps, ``rejected`` messages."""
        return self._native.stats

    def __len__(self) -> int:
        return len(self._native)

    def __repr__(self) -> str:
        return f"LiveGroup(kind={self.kind!r}, group={self.group!r}, records={len(self)})"

    def next(self, timeout: float | None = None) -> dict | None:
        """Applies the next delta and says what happened: ``{"kind": "applied", "shard",
        "keys"}``, ``{"kind": "stale"}`` or ``{"kind": "resynced", "snapshot_version"}``;
        ``None`` when ``timeout`` seconds pass first."""
        return self._native.next(timeout)

    def follow(self, seconds: float) -> int:
        """Applies every delta that arrives during ``seconds``; returns how many were applied."""
        deadline = time.monotonic() + max(0.0, seconds)
        applied = 0
        while (left := deadline - time.monotonic()) > 0:
            update = self._native.next(left)
            if update is not None and update["kind"] == "applied":
                applied += 1
        return applied

    def get(self, key: str) -> dict | None:
        """One record by key: ``shfe.rb2501`` (ticks, contracts), ``cycler-01/3`` (battery)."""
        return self._native.get(key)

    def records(self) -> list[dict]:
        """Every record now, sorted by key."""
        return self._native.records()

    def to_pandas(self) -> pd.DataFrame:
        """Every record now as a DataFrame, one row per key (timestamps as UTC datetimes)."""
        df = pd.DataFrame(self._native.records())
        for col in ("ts_exchange", "ts_arrival", "ts", "ts_device", "ts_received"):
            if col in df.columns:
                df[col] = pd.to_datetime(df[col], unit="ns", utc=True)
        return df


def connect(url: str = "nats://127.0.0.1:14222", **options: Mapping[str, Any]) -> Client:
    """Connects to the platform's NATS (``lt up`` serves ``nats://127.0.0.1:14222``). Options:
    ``name``, ``token``, ``user``/``password``, ``creds`` (file), ``nkey_seed`` (``SU…``, e.g. the
    text of ``lt up``'s ``.langtian/nats/keys/<service>.nk``) with ``inbox_prefix`` (``_LT.<service>``,
    the inbox its permissions allow), ``tls_ca`` (a CA certificate file to trust; the connection then
    requires TLS — for ``lt up --nats-tls``: ``.langtian/nats/tls/ca.pem``), ``timeout`` (seconds)."""
    return Client(url, **options)
