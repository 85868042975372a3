"""Forensics over an event log: "what happened, and why".

Every function here reads through a `LogReader` (a read-only connection that sees committed
rows only), so it is safe on the log of a running service. The functions return data
structures (msgspec structs, JSON-encodable as they are); `replay.render` turns them into text
and `engine.replay` (`python -m engine.replay`) is the command line over both.

- `iter_timeline` / `TimelineFilter`: events in seq order, filtered in SQL where the log has
  the columns for it (type, symbol, intent and client order id, ts, seq).
- `rebuild_at` / `state_view` / `state_at`: every projection as of a seq or a time.
- `explain`: the causal chain behind one order or intent, from the bar the strategy saw to
  the fills.
- `verify_log`: the hash chain and a full decode of every row.
- `load_broker_snapshot` / `diff_broker`: our positions against a broker's.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal Decimal as _D  # noqa: placeholder (replaced below)
