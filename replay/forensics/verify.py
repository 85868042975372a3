"""Checks of a log: its hash chain and decode (`verify_log`, over `LogReader.verify`), and
its positions against a broker's snapshot (`diff_broker`)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from events.errors import CorruptLogError
from events.store import LogReader
from events.times import parse_utc
from events.vocabulary import ZERO
from projections.state import Projections
from replay.forensics.queries import ForensicsError, rebuild_at, seq_ts

# --- verify --------------------------------------------------------------------------------


class VerifyReport(msgspec.Struct, kw_only=True):
    ok: bool
    rows_checked: int
    last_good_seq: int
    first_bad_seq: int | None = None
    reason: str = ""


async def verify_log(path: str | Path) -> VerifyReport:
    """`LogReader.verify` on a file. A file too damaged to open is a bad log (first bad seq
    unknown), not an error: that is what the user asked to find out."""
    try:
        async with LogReader(path) as reader:
            v = await reader.verify()
    except CorruptLogError as e:
        return VerifyReport(ok=False, rows_checked=0, last_good_seq=0, first_bad_seq=e.seq,
                            reason=str(e))
    return VerifyReport(ok=v.ok, rows_checked=v.rows_checked, last_good_seq=v.last_seq,
                        first_bad_seq=v.first_bad_seq, reason=v.reason)


# --- positions against a broker snapshot ---------------------------------------------------


class BrokerSnapshot(msgspec.Struct, kw_only=True):
    """Positions as the broker reports them. `qty` is signed (negative: short)."""

    positions: dict[str, tuple[Decimal, Decimal]]  # symbol -> (qty, avg_entry_price)
    taken_at: datetime | None = None
    source: str = ""


def parse_broker_snapshot(data: Any, *, source: str = "") -> BrokerSnapshot:
    """Parse a snapshot: either our format

        {"taken_at": "2026-11-23T21:00:00Z",            (optional, ISO 8601 with zone)
         "positions": [{"symbol": "AAPL", "qty": "10", "avg_entry_price": "101.2"}, ...]}

    or Alpaca's own `GET /v2/positions` answer (a JSON list of position objects). Quantities
    are signed, or unsigned with `"side": "long" | "short"` as Alpaca sends them; numbers may
    be JSON strings or numbers (parsed exactly as Decimal)."""
    from engine.brokers.alpaca_parse import AlpacaParseError, parse_position

    taken_at: datetime | None = None
    if isinstance(data, dict):
        if "positions" not in data or not isinstance(data["positions"], list):
            raise ForensicsError(f"{source or 'snapshot'}: expected a \"positions\" list")
        items = data["positions"]
        raw_at = data.get("taken_at")
        if raw_at is not None:
            taken_at = parse_utc(str(raw_at), what="taken_at", naive_as_utc=False)
    elif isinstance(data, list):
        items = data
    else:
        raise ForensicsError(f"{source or 'snapshot'}: expected a JSON object or list")
    positions: dict[str, tuple[Decimal, Decimal]] = {}
    for i, item in enumerate(items):
        try:
            p = parse_position(item)
        except AlpacaParseError as e:
            raise ForensicsError(f"{source or 'snapshot'}: positions[{i}]: {e}") from None
        if p.symbol in positions:
            raise ForensicsError(f"{source or 'snapshot'}: {p.symbol} is listed twice")
        positions[p.symbol] = (p.qty, p.avg_entry_price)
    return BrokerSnapshot(positions=positions, taken_at=taken_at, source=source)


def load_broker_snapshot(path: str | Path) -> BrokerSnapshot:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ForensicsError(f"{p}: cannot read snapshot: {e.strerror or e}") from None
    try:
        # parse_float keeps prices exact: a float would turn 101.2 into 101.2000000000000028.
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as e:
        raise ForensicsError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    return parse_broker_snapshot(data, source=str(p))


class PositionDiff(msgspec.Struct, kw_only=True):
    symbol: str
    kind: str  # "qty" | "avg_price" | "missing_at_broker" | "missing_in_log"
    ours_qty: Decimal
    broker_qty: Decimal
    ours_avg: Decimal | None
    broker_avg: Decimal | None
    detail: str


class BrokerDiff(msgspec.Struct, kw_only=True):
    as_of_seq: int
    as_of_ts: datetime | None
    taken_at: datetime | None
    compared: int
    differences: list[PositionDiff]
    matches: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


def diff_positions(proj: Projections, snap: BrokerSnapshot, *,
                   price_tolerance: Decimal = Decimal("0.0001"),
                   as_of_ts: datetime | None = None) -> BrokerDiff:
    """Compare quantities exactly and average prices within `price_tolerance` (relative:
    brokers round their average entry price). Flat on both sides is not compared."""
    ours = {s: p for s, p in proj.positions.positions.items() if p.qty != 0}
    theirs = {s: v for s, v in snap.positions.items() if v[0] != 0}
    diffs: list[PositionDiff] = []
    matches: list[str] = []
    for sym in sorted(set(ours) | set(theirs)):
        o = ours.get(sym)
        t = theirs.get(sym)
        oq, oa = (o.qty, o.avg_cost) if o is not None else (ZERO, None)
        bq, ba = t if t is not None else (ZERO, None)
        if o is None:
            diffs.append(PositionDiff(symbol=sym, kind="missing_in_log", ours_qty=oq,
                                      broker_qty=bq, ours_avg=None, broker_avg=ba,
                                      detail=f"broker holds {bq}, the log is flat"))
        elif t is None:
            diffs.append(PositionDiff(symbol=sym, kind="missing_at_broker", ours_qty=oq,
                                      broker_qty=bq, ours_avg=oa, broker_avg=None,
                                      detail=f"the log holds {oq}, the broker is flat"))
        elif oq != bq:
            diffs.append(PositionDiff(symbol=sym, kind="qty", ours_qty=oq, broker_qty=bq,
                                      ours_avg=oa, broker_avg=ba,
                                      detail=f"log {oq} vs broker {bq} (off by {bq - oq})"))
        elif oa is not None and ba is not None and abs(oa - ba) > abs(ba) * price_tolerance:
            diffs.append(PositionDiff(symbol=sym, kind="avg_price", ours_qty=oq, broker_qty=bq,
                                      ours_avg=oa, broker_avg=ba,
                                      detail=f"average cost log {oa} vs broker {ba}"))
        else:
            matches.append(sym)
    return BrokerDiff(as_of_seq=proj.last_seq, as_of_ts=as_of_ts, taken_at=snap.taken_at,
                      compared=len(set(ours) | set(theirs)), differences=diffs, matches=matches)


async def diff_broker(reader: LogReader, snap: BrokerSnapshot, *, at_seq: int | None = None,
                      at: datetime | None = None,
                      price_tolerance: Decimal = Decimal("0.0001")) -> BrokerDiff:
    proj = await rebuild_at(reader, at_seq=at_seq, at=at)
    as_of = at if at is not None else await seq_ts(reader, proj.last_seq)
    return diff_positions(proj, snap, price_tolerance=price_tolerance, as_of_ts=as_of)


