"""A fake Alpaca (Trading API v2, trade-updates stream, market data) for alpaca-py 0.44 tests.

See README.md in this directory.
"""

from .broker import ApiError
from .control import FakeAlpacaClient, FakeAlpacaControlError, FakeAlpacaProcess
from .server import CONTROL_METHODS, DEFAULT_KEY, DEFAULT_SECRET, ROUTE_NAMES, FakeAlpaca
from .streams import Collector, StreamThread, start_stream_task, stop_stream_task

__all__ = [
    "CONTROL_METHODS",
    "DEFAULT_KEY",
    "DEFAULT_SECRET",
    "ROUTE_NAMES",
    "ApiError",
    "Collector",
    "FakeAlpaca",
    "FakeAlpacaClient",
    "FakeAlpacaControlError",
    "FakeAlpacaProcess",
    "StreamThread",
    "start_stream_task",
    "stop_stream_task",
]
