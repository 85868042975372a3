"""The shipped sample data: clean, in session, DST-correct, reproducible from its script."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from contextlib import aclosing
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from engine.clock import SimClock
from engine.marketdata import (
    BarValidator,
    CsvBarProvider,
    read_assets_csv,
    sample_assets_path,
    sample_bars_path,
)
from events.catalogue import BarReceived
from events.market import Bar
from projections.calendar import NEW_YORK

ROOT = Path(__file__).resolve().parents[2]


async def load() -> list[Bar]:
    async with aclosing(CsvBarProvider(sample_bars_path()).stream()) as items:
        out = [b async for b in items]
    assert all(isinstance(b, Bar) for b in out)
    return out  # type: ignore[return-value]


async def test_every_sample_bar_passes_the_validator_without_gaps():
    bars = await load()
    clock = SimClock(bars[0].start)
    v = BarValidator(clock)
    for b in bars:
        clock.set(b.end)
        (event,) = v.validate(b)
        assert isinstance(event, BarReceived)
    assert v.accepted == len(bars) == 5 * 5 * 390 and v.gaps == 0


async def test_regular_session_in_new_york_across_the_dst_change():
    bars = await load()
    per_day = Counter((b.symbol, b.start.astimezone(NEW_YORK).date()) for b in bars)
    assert set(per_day.values()) == {390} and len(per_day) == 25
    local = {b.start.astimezone(NEW_YORK).time() for b in bars}
    assert min(local) == time(9, 30) and max(local) == time(15, 59)
    first = sorted({b.start for b in bars if b.start.astimezone(NEW_YORK).time() == time(9, 30)})
    # EDT until 2026-11-01, EST after: the open moves from 13:30 to 14:30 UTC
    assert [t.strftime("%m-%d %H:%M") for t in first] == [
        "10-28 13:30", "10-29 13:30", "10-30 13:30", "11-02 14:30", "11-03 14:30"]


async def test_sample_prices_volumes_and_assets():
    bars = await load()
    by_sym: dict[str, list[Bar]] = {}
    for b in bars:
        by_sym.setdefault(b.symbol, []).append(b)
    spy = by_sym["SPY"]
    assert min(b.low for b in spy) > Decimal(200)  # a $200 account cannot buy a whole share
    assert Decimal(550) < spy[0].open < Decimal(650)
    for sym_bars in by_sym.values():
        assert all(b.vwap is not None and b.low <= b.vwap <= b.high for b in sym_bars)
        assert all(b.trade_count and b.trade_count > 0 for b in sym_bars)
        day = sym_bars[:390]
        open_vol = sum(b.volume for b in day[:30])
        lunch_vol = sum(b.volume for b in day[180:210])
        close_vol = sum(b.volume for b in day[-30:])
        assert open_vol > Decimal("1.5") * lunch_vol  # U-shaped volume
        assert close_vol > Decimal("1.3") * lunch_vol
    assets = {a.symbol: a for a in read_assets_csv(sample_assets_path(),
                                                   datetime(2026, 10, 28, tzinfo=UTC))}
    assert set(assets) == set(by_sym)
    assert assets["SPY"].fractionable and not assets["F"].fractionable
    assert all(a.tradable for a in assets.values())


def test_sample_script_reproduces_the_shipped_files(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_sample_data",
                                                  ROOT / "scripts" / "make_sample_data.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_sample_data", mod)  # dataclasses look it up
    spec.loader.exec_module(mod)
    assert mod.main(["--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "bars.csv").read_bytes() == sample_bars_path().read_bytes()
    assert (tmp_path / "assets.csv").read_bytes() == sample_assets_path().read_bytes()
    assert sample_bars_path().stat().st_size < 2_000_000
    assert mod.main(["--out-dir", str(tmp_path / "other"), "--seed", "7"]) == 0
    assert (tmp_path / "other" / "bars.csv").read_bytes() != sample_bars_path().read_bytes()


def test_sample_minutes_are_contiguous():
    # cheap structural check without parsing: consecutive rows per symbol are 1 minute apart
    lines = sample_bars_path().read_text().splitlines()[1:]
    last: dict[str, datetime] = {}
    for line in lines:
        sym, ts = line.split(",", 2)[:2]
        t = datetime.fromisoformat(ts)
        prev = last.get(sym)
        if prev is not None and prev.astimezone(NEW_YORK).date() == t.astimezone(NEW_YORK).date():
            assert t - prev == timedelta(minutes=1)
        last[sym] = t
