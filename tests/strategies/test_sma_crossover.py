"""SMA crossover on a constructed series."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from engine.clock import SimClock
from engine.marketdata import BarValidator
from engine.strategies import SmaCrossover, StrategyConfigError, StrategyRunner

from .helpers import Book, drive, mkbar, ny

D = Decimal


def run(params: dict, closes: list[str]) -> list[tuple]:
    clock = SimClock(ny(9, 0))
    book = Book(clock)
    book.account("10000")
    book.asset("AAPL")
    runner = StrategyRunner([SmaCrossover(params)], projections=book.proj, clock=clock)
    bars = [mkbar("AAPL", ny(10, 0) + timedelta(minutes=i), c) for i, c in enumerate(closes)]
    return [(i, o.side, o.qty, o.notional, o.reduce_only, o.intent_id[-6:])
            for i, o in drive(bars, runner, book, BarValidator(clock))]


# fast=2, slow=4: below, cross up at bar 5, equal at bar 8 (not a cross), cross down at 9
CLOSES = ["10", "9", "8", "7", "9", "11", "12", "12", "11", "10", "8", "7"]


def test_long_only_crossovers():
    assert run({"fast": 2, "slow": 4}, CLOSES) == [
        (5, "buy", None, D("1000.00"), False, "1505:0"),  # fast 10 > slow 8.75
        (9, "sell", D("83.333333333"), None, True, "1509:0"),  # bought at bar 6's open, 12
    ]


def test_fixed_qty_and_short_side():
    out = run({"fast": 2, "slow": 4, "qty": "3", "allow_short": True}, CLOSES)
    assert out == [(5, "buy", D(3), None, False, "1505:0"),
                   (9, "sell", D(3), None, True, "1509:0")]
    # from flat, a downward cross opens a short (whole shares), an upward one covers it
    out = run({"fast": 2, "slow": 4, "allow_short": True},
              ["7", "8", "9", "10", "8", "6", "5", "6", "8", "10"])
    assert out == [
        (5, "sell", D(166), None, False, "1505:0"),  # floor(10% of $10,000 / close 6)
        (8, "buy", D(166), None, True, "1508:0"),
    ]


def test_touching_is_not_crossing():
    # fast equals slow at bar 4 (7 + 10 == 9 + 8), then back below: no signal
    assert run({"fast": 2, "slow": 4}, ["10", "9", "8", "7", "10", "4"]) == []
    # ...but equal and then above is a cross, judged against the last non-zero difference
    assert [x[:2] for x in run({"fast": 2, "slow": 4}, ["10", "9", "8", "7", "10", "12"])] == [
        (5, "buy")]


def test_params():
    with pytest.raises(StrategyConfigError, match="fast"):
        SmaCrossover({"fast": 5, "slow": 5})
