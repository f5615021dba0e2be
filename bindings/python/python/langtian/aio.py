"""asyncio variants: the same calls, awaited (they run in a worker thread, the GIL released
while they wait on the network).

    >>> import langtian.aio
    >>> lt = await langtian.aio.connect()
    >>> df = await lt.query("SELECT count(*) AS n FROM lake.battery_samples")
    >>> async for m in lt.subscribe("lt.evt.>"):
    ...     print(m["event_type"])
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pandas as pd

from .client import Client as _SyncClient
from .client import LiveGroup as _SyncLiveGroup

__all__ = ["AsyncClient", "AsyncLiveGroup", "connect"]


class AsyncClient:
    """The asyncio face of :class:`langtian.Client`."""

    def __init__(self, sync: _SyncClient) -> None:
        self.sync = sync

    async def publish(self, event_type: str, payload: Any, **kw: Any) -> dict:
        return await asyncio.to_thread(self.sync.publish, event_type, payload, **kw)

    async def query(self, sql: str, params: Any = None, **kw: Any) -> pd.DataFrame:
        return await asyncio.to_thread(self.sync.query, sql, params, **kw)

    async def query_arrow(self, sql: str, params: Any = None, **kw: Any):
        return await asyncio.to_thread(self.sync.query_arrow, sql, params, **kw)

    async def stream_frame(self, subject: str, max_messages: int = 1000, timeout: float = 5.0) -> pd.DataFrame:
        return await asyncio.to_thread(self.sync.stream_frame, subject, max_messages, timeout)

    async def publish_frame(self, name: str, df: Any) -> dict:
        return await asyncio.to_thread(self.sync.publish_frame, name, df)

    async def nodes(self, **kw: Any) -> list[dict]:
        return await asyncio.to_thread(self.sync.nodes, **kw)

    async def subscribe(self, subject: str, *, poll: float = 0.25) -> AsyncIterator[dict]:
        """Messages on ``subject`` as an async iterator (each wait is at most ``poll`` seconds
        in a worker thread, so cancelling the task stops it promptly)."""
        sub = await asyncio.to_thread(self.sync.subscribe, subject)
        try:
            while True:
                m = await asyncio.to_thread(sub.next, poll)
                if m is not None:
                    yield m
        finally:
            await asyncio.to_thread(sub.close)

    async def watch_nodes(self, *, poll: float = 0.25, **kw: Any) -> AsyncIterator[tuple[str, dict]]:
        import json

        w = await asyncio.to_thread(self.sync._native.watch_nodes, **kw)
        while True:
            got = await asyncio.to_thread(w.next, poll)
            if got is not None:
                yield got[0], json.loads(got[1])


    async def live(self, group: str, **kw: Any) -> "AsyncLiveGroup":
        """:meth:`langtian.Client.live`, awaited; its waits are awaited too."""
        return AsyncLiveGroup(await asyncio.to_thread(self.sync.live, group, **kw))


class AsyncLiveGroup:
    """The asyncio face of :class:`langtian.LiveGroup`: ``await next(timeout)`` and
    ``await follow(seconds)``; reading the state (``to_pandas``, ``get``, ``len``) does not wait."""

    def __init__(self, sync: _SyncLiveGroup) -> None:
        self.sync = sync

    async def next(self, timeout: float | None = None) -> dict | None:
        return await asyncio.to_thread(self.sync.next, timeout)

    async def follow(self, seconds: float) -> int:
        return await asyncio.to_thread(self.sync.follow, seconds)

    def to_pandas(self) -> pd.DataFrame:
        return self.sync.to_pandas()

    def records(self) -> list[dict]:
        return self.sync.records()

    def get(self, key: str) -> dict | None:
        return self.sync.get(key)

    @property
    def stats(self) -> dict:
        return self.sync.stats

    def __len__(self) -> int:
        return len(self.sync)


async def connect(url: str = "nats://127.0.0.1:14222", **options: Any) -> AsyncClient:
    """Connects (in a worker thread) and returns an :class:`AsyncClient`."""
    return AsyncClient(await asyncio.to_thread(_SyncClient, url, **options))
