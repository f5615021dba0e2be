"""Langtian for Python: events over NATS, lake queries as pandas DataFrames, tables for the UI.

Five lines::

    import langtian
    lt = langtian.connect()                       # lt up's NATS: nats://127.0.0.1:14222
    df = lt.query("SELECT device_id, channel, max(capacity) AS ah FROM lake.battery_samples GROUP BY ALL")
    lt.publish_frame("capacity", df)              # shows up in the UI's analysis view
    print(lt.stream_frame("lt.evt.battery.>", max_messages=100).head())

asyncio: ``langtian.aio.connect()``. Errors: :mod:`langtian.errors`.
"""

from ._native import __version__
from .client import Client, LiveGroup, Message, connect, decode
from . import errors
from .errors import *  # noqa: F403  (the exception classes, listed in errors.__all__)

__all__ = ["__version__", "Client", "LiveGroup", "Message", "connect", "decode", *errors.__all__]
