"""Type stubs of the Rust extension (see src/lib.rs); use the wrappers in langtian.client."""

import os
from typing import Iterator

__version__: str

class Client:
    def __init__(
        self,
        url: str = "nats://127.0.0.1:14222",
        *,
        name: str | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        creds: str | None = None,
        nkey_seed: str | None = None,
        inbox_prefix: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
    ) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def max_payload(self) -> int: ...
    def publish(
        self,
        event_type: str,
        payload: bytes,
        content_type: str,
        *,
        source: str = "python",
        qos: int = 1,
        prefix: str = "lt.evt",
        subject: str | None = None,
        event_id: str | None = None,
        partition_key: str | None = None,
    ) -> dict: ...
    def subscribe(self, subject: str, *, queue: str | None = None) -> Subscription: ...
    def query_ipc(
        self,
        sql: str,
        params_json: str | None = None,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
        subject: str | None = None,
    ) -> tuple[list[bytes], int, str | None]: ...
    def publish_frame_ipc(self, name: str, ipc: bytes, rows: int | None = None) -> dict: ...
    def nodes_json(self, *, bucket: str | None = None) -> str: ...
    def watch_nodes(self, *, bucket: str | None = None) -> NodeWatch: ...
    def flush(self) -> None: ...

class Subscription:
    @property
    def subject(self) -> str: ...
    def next(self, timeout: float | None = None) -> dict | None: ...
    def __iter__(self) -> Iterator[dict]: ...
    def __next__(self) -> dict: ...
    def close(self) -> None: ...

class NodeWatch:
    def next(self, timeout: float | None = None) -> tuple[str, str] | None: ...

def decode_payload(content_type: str, payload: bytes) -> dict | None: ...
