"""A simulated fill is recorded after the bar that priced it: the step driver records the bar,
then the simulated broker fills against it. So every fill's nearest preceding bar row of its
symbol is its bar — the one whose open (market orders, gapped stops) or whose range holding
the stop/limit price priced it — and forensics finds that bar there."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from engine.config import load_settings
from engine.marketdata.assets import sample_bars_path
from engine.rebuild import rebuild_from_path
from engine.strategies import VwapMeanReversion
from events.catalogue import BarReceived, FillReceived
from events.market import Bar
from events.store import LogReader
from replay.backtest.driver import run_backtest
from replay.forensics.explain import explain

START = datetime(2026, 10, 28, 13, 30, tzinfo=UTC)
END = datetime(2026, 10, 29, 13, 30, tzinfo=UTC)


def priced_by(fill: FillReceived, bar: Bar, stop: Decimal | None,
              limit: Decimal | None) -> bool:
    """Without slippage a fill is at the bar's open, or at its order's stop or limit price
    inside the bar's range."""
    if fill.price == bar.open:
        return True
    return any(p is not None and p == fill.price and bar.low <= p <= bar.high
               for p in (stop, limit))


async def test_every_fill_follows_the_bar_that_priced_it(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, sim={"slippage_bps": 0})
    res = await run_backtest(settings, sample_bars_path(), tmp_path / "bt.sqlite",
                             strategies=[VwapMeanReversion({})], start=START, end=END)
    orders = (await rebuild_from_path(res.log_path, use_snapshot=False)).orders.orders
    last_bar: dict[str, tuple[int, Bar]] = {}
    checked: list[tuple[int, FillReceived, int]] = []
    kinds: set[str] = set()
    async with LogReader(res.log_path) as r:
        async for seq, e in r.read():
            if isinstance(e, BarReceived):
                last_bar[e.bar.symbol] = (seq, e.bar)
            elif isinstance(e, FillReceived):
                assert e.symbol in last_bar, f"fill at seq {seq} before any bar of {e.symbol}"
                bar_seq, bar = last_bar[e.symbol]
                o = orders[e.client_order_id]
                assert bar.start <= e.broker_time <= bar.end, (seq, e, bar)
                assert priced_by(e, bar, o.stop_price, o.limit_price), (seq, e, bar, o)
                kinds.add(o.order_type)
                checked.append((seq, e, bar_seq))
        assert len(checked) >= 4, "the sample day must make the strategy trade"
        # the protective stops and the entries both filled, so both pricing rules ran
        assert "market" in kinds and kinds & {"stop", "stop_limit", "trailing_stop"}, kinds
        # forensics' fill bar is that preceding row
        for seq, fill, bar_seq in checked[:10]:
            chain = await explain(r, fill.client_order_id)
            fill_bars = [s.seq for s in chain.steps if s.role == "fill_bar"]
            assert bar_seq in fill_bars, (seq, fill_bars)
