"""Exceptions raised by the Langtian SDK.

Every error is a :class:`LangtianError` with a short machine-readable ``code`` next to the
message; catch the subclasses for the cases you handle::

    try:
        df = lt.query("SELEC 1")
    except langtian.QueryError as e:
        print(e.code, e)        # parse  Parser Error: syntax error at or near "SELEC"
"""

from __future__ import annotations

import builtins

__all__ = [
    "LangtianError",
    "ConnectError",
    "PublishError",
    "EnvelopeError",
    "QueryError",
    "QueryRejected",
    "QueryTimeout",
    "NoServiceError",
    "FrameError",
    "LiveError",
]


class LangtianError(Exception):
    """Base class of every SDK error. ``code`` says what kind of failure it was."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class ConnectError(LangtianError):
    """NATS could not be reached, or the connection failed."""


class PublishError(LangtianError):
    """An event was not stored (no stream for the subject, no PubAck, bad QoS)."""


class EnvelopeError(LangtianError):
    """An event could not be wrapped or unwrapped (missing type or source, too large)."""


class QueryError(LangtianError):
    """The query failed: ``code`` is ``parse``, ``execution``, ``bad_request``, ``too_large``,
    ``unavailable`` …; the message is DuckDB's own."""


class QueryRejected(QueryError):
    """The statement is not a read (DDL, DML, …): the service runs only SELECTs."""


class QueryTimeout(QueryError, builtins.TimeoutError):
    """The query ran longer than its timeout (it was interrupted), or no answer came in time."""


class NoServiceError(LangtianError):
    """Nobody serves ``lt.query.v1`` (start ``lt up`` or ``lt-query``)."""


class FrameError(LangtianError):
    """A table for the UI was refused: bad name, larger than the server's max payload, not Arrow."""


class LiveError(LangtianError):
    """A live group could not be followed: ``code`` is ``bad_kind`` or ``bad_group`` for a
    wrong argument, ``no_snapshot`` when no aggregator has seen the group, ``nats`` when NATS
    failed."""
