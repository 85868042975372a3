"""Log lines of the command line: JSON or text on stderr, as the settings say."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from engine.config import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        seq = getattr(record, "seq", None)
        if seq is not None:
            out["seq"] = seq
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seq = getattr(record, "seq", None)
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        return base + (f" [seq {seq}]" if seq is not None else "")


def setup_logging(settings: Settings | None, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings is not None and settings.json_logs
                         else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = "DEBUG" if verbose else (settings.log_level if settings else "WARNING")
    root.setLevel(level)
    for noisy in ("websockets", "urllib3", "alpaca", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


