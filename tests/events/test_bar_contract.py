"""A bar exists only if it is sane, and a refused one names its fault: the quick path every
sane bar takes must accept exactly what the full checks accept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.market import Bar, BarError

T = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
# Mostly sane values, so that bars which break one rule only are common.
prices = st.one_of(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(3), places=2),
    st.decimals(min_value=Decimal(-5), max_value=Decimal(20), places=2),
    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal(0),
                     Decimal("sNaN")]),
)


def expected_code(symbol: str, interval: int, o: Decimal, h: Decimal, lo: Decimal,
                  c: Decimal, vol: Decimal, vwap: Decimal | None,
                  trades: int | None) -> str | None:
    """The contract, rule by rule in its order of precedence."""
    if not symbol:
        return "EMPTY_SYMBOL"
    if interval <= 0:
        return "BAD_INTERVAL"
    for v in (o, h, lo, c):
        if not v.is_finite():
            return "NON_FINITE_PRICE"
        if v <= 0:
            return "NON_POSITIVE_PRICE"
    if h < lo:
        return "HIGH_BELOW_LOW"
    if h < o or h < c:
        return "HIGH_BELOW_OPEN_CLOSE"
    if lo > o or lo > c:
        return "LOW_ABOVE_OPEN_CLOSE"
    if not vol.is_finite():
        return "BAD_VOLUME"
    if vol < 0:
        return "NEGATIVE_VOLUME"
    if vwap is not None and (not vwap.is_finite() or vwap <= 0):
        return "BAD_VWAP"
    if trades is not None and trades < 0:
        return "NEGATIVE_TRADE_COUNT"
    return None


FIELDS = ("symbol", "interval_s", "open", "high", "low", "close", "volume", "vwap",
          "trade_count")
SPECIAL = st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"),
                          Decimal("-Infinity"), Decimal(0), Decimal(-1)])
WRONG = {"symbol": st.just(""), "interval_s": st.sampled_from([-60, 0]),
         "trade_count": st.integers(-3, -1)}


@st.composite
def bar_fields(draw: st.DrawFn) -> dict[str, object]:
    """A sane bar's fields, then up to two of them replaced by anything (often wrong)."""
    lo = draw(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5), places=2))
    o, c = (lo + draw(st.decimals(min_value=0, max_value=2, places=2)) for _ in range(2))
    h = max(o, c) + draw(st.decimals(min_value=0, max_value=2, places=2))
    kw: dict[str, object] = {
        "symbol": "AAPL", "interval_s": 60, "open": o, "high": h, "low": lo, "close": c,
        "volume": draw(st.decimals(min_value=0, max_value=100, places=0)),
        "vwap": draw(st.one_of(st.none(), st.just(lo))),
        "trade_count": draw(st.one_of(st.none(), st.integers(0, 5)))}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
        kw[name] = draw(WRONG.get(name, st.one_of(SPECIAL, prices)))
    return kw


@settings(max_examples=400)
@given(kw=bar_fields())
def test_a_bar_is_accepted_exactly_when_every_rule_holds(kw: dict[str, object]) -> None:
    want = expected_code(*(kw[f] for f in FIELDS))  # type: ignore[arg-type]
    if want is None:
        bar = Bar(start=T, **kw)  # type: ignore[arg-type]
        assert (bar.open, bar.high, bar.low, bar.close) == (kw["open"], kw["high"], kw["low"],
                                                            kw["close"])
    else:
        with pytest.raises(BarError) as err:
            Bar(start=T, **kw)  # type: ignore[arg-type]
        assert err.value.code == want


def test_a_start_in_another_zone_is_kept_as_utc_and_a_naive_one_refused() -> None:
    ny = timezone(timedelta(hours=-5))
    kw = {"symbol": "AAPL", "interval_s": 60, "open": Decimal(1), "high": Decimal(2),
          "low": Decimal(1), "close": Decimal(2), "volume": Decimal(0)}
    bar = Bar(start=datetime(2026, 1, 5, 9, 30, tzinfo=ny), **kw)  # type: ignore[arg-type]
    assert bar.start == T and bar.start.tzinfo is UTC
    with pytest.raises(BarError) as err:
        Bar(start=datetime(2026, 1, 5, 14, 30), **kw)  # type: ignore[arg-type]
    assert err.value.code == "NAIVE_TIMESTAMP"


ODD = [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal(0),
       Decimal(-1), Decimal("0.5"), Decimal("1.5"), Decimal("2.5"), Decimal(9)]
SANE = {"symbol": "AAPL", "interval_s": 60, "open": Decimal(1), "high": Decimal(2),
        "low": Decimal("0.75"), "close": Decimal("1.25"), "volume": Decimal(10),
        "vwap": Decimal(1), "trade_count": 3}


@pytest.mark.parametrize("name", FIELDS)
def test_each_field_alone_out_of_line_is_judged_like_the_full_checks(name: str) -> None:
    values: list[object] = {"symbol": ["", "A"], "interval_s": [-60, 0, 1],
                            "trade_count": [-1, 0, None]}.get(name, [*ODD, None])
    for value in values:
        if value is None and name not in ("vwap", "trade_count"):
            continue
        kw = {**SANE, name: value}
        want = expected_code(*(kw[f] for f in FIELDS))  # type: ignore[arg-type]
        try:
            Bar(start=T, **kw)  # type: ignore[arg-type]
            got = None
        except BarError as e:
            got = e.code
        assert got == want, (name, value)
