"""Incremental indicators agree with a naive recomputation over the whole window."""

from __future__ import annotations

import statistics
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.strategies.indicators import RollingZ, SessionVwap, Sma, SmaPair, ZThreshold

D = Decimal
values = st.decimals(min_value=D("-5"), max_value=D("5"), places=4, allow_nan=False)


def reference_z(window: list[Decimal], x: Decimal) -> float | None:
    """z by the textbook formula (sample standard deviation), in float."""
    xs = [float(v) for v in window]
    sd = statistics.stdev(xs)
    return None if sd == 0 else (float(x) - statistics.mean(xs)) / sd


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(values, min_size=1, max_size=60), window=st.integers(2, 12),
       t=st.sampled_from([D("-2.5"), D("-1"), D("-0.5"), D(0), D("0.5"), D("1.5"), D(3)]))
def test_rolling_z_agrees_with_the_textbook_formula(xs, window, t):
    z = RollingZ(window)
    for i, x in enumerate(xs):
        z.push(x)
        win = xs[max(0, i + 1 - window):i + 1]
        if len(win) < window:
            assert z.z_at_most(x, t) is False and z.z_at_least(x, t) is False
            continue
        ref = reference_z(win, x)
        if ref is None:  # undefined: neither test holds
            assert z.zscore(x) is None
            assert z.z_at_most(x, t) is False and z.z_at_least(x, t) is False
            continue
        assert z.zscore(x) == pytest.approx(ref, rel=1e-9, abs=1e-9)
        if abs(ref - float(t)) > 1e-9:  # away from the boundary a float is decisive
            assert z.z_at_most(x, t) is (ref <= float(t))
            assert z.z_at_least(x, t) is (ref >= float(t))
        assert float(z.mean()) == pytest.approx(statistics.mean(map(float, win)))


def test_prepared_thresholds_give_the_same_answers():
    z = RollingZ(4)
    for v in ("0.1", "-0.3", "0.2", "-1.2"):
        z.push(D(v))
    for t in (D(-2), D("-1.2"), D(0), D("0.7")):
        th = ZThreshold(t, 4)
        assert z.z_at_most(D("-1.2"), th) is z.z_at_most(D("-1.2"), t)
        assert z.z_at_least(D("-1.2"), th) is z.z_at_least(D("-1.2"), t)
    assert z.z_at_most(D("-1.2"), ZThreshold(D(-1), 9)) is z.z_at_most(D("-1.2"), D(-1))


def test_rolling_z_boundaries_are_exact():
    z = RollingZ(2)
    z.push(D(0))
    z.push(D(2))  # mean 1, sample sd sqrt(2): z(2) = 1/sqrt(2), z(0) = -1/sqrt(2)
    # thresholds a hair either side of +-0.7071067811865475
    assert z.z_at_most(D(2), D("0.70710679")) is True
    assert z.z_at_most(D(2), D("0.70710678")) is False
    assert z.z_at_least(D(0), D("-0.70710679")) is True
    assert z.z_at_least(D(0), D("-0.70710678")) is False
    z3 = RollingZ(3)
    for v in (0, 0, 3):
        z3.push(D(v))  # mean 1, sd sqrt(3): z(3) = 2/sqrt(3)... and z(1) = 0 exactly
    assert z3.z_at_least(D(1), D(0)) is True and z3.z_at_most(D(1), D(0)) is True


def test_rolling_z_known_values():
    z = RollingZ(5)
    for x in ("0", "0.01", "-0.002", "0.01"):
        z.push(D(x))
    assert not z.full and z.zscore(D(0)) is None
    z.push(D("-0.4"))
    win = [0, 0.01, -0.002, 0.01, -0.4]
    expected = (-0.4 - statistics.mean(win)) / statistics.stdev(win)
    assert z.zscore(D("-0.4")) == pytest.approx(expected)
    assert z.z_at_most(D("-0.4"), D("-1.78")) is True
    assert z.z_at_most(D("-0.4"), D("-1.79")) is False
    z.reset()
    assert z.count == 0 and z.mean() is None


def test_rolling_z_of_a_constant_is_undefined():
    z = RollingZ(3)
    for _ in range(5):
        z.push(D("1.5"))
    assert z.zscore(D("1.5")) is None
    assert z.z_at_most(D("1.5"), D(-2)) is False and z.z_at_least(D("1.5"), D(-2)) is False
    assert z.z_at_most(D("1.5"), D(2)) is False and z.z_at_least(D("1.5"), D(2)) is False


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2),
                   min_size=1, max_size=80), window=st.integers(1, 15))
def test_sma_is_exact(xs, window):
    sma = Sma(window)
    for i, x in enumerate(xs):
        sma.push(x)
        win = xs[max(0, i + 1 - window):i + 1]
        assert sma.total == sum(win)  # exact, not approximately
        assert sma.value == (sum(win) / window if len(win) == window else None)


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(st.decimals(min_value=D("0.01"), max_value=D("100000"), places=4),
                   min_size=1, max_size=120),
       fast=st.integers(1, 20), extra=st.integers(1, 20))
def test_sma_pair_is_two_smas(xs, fast, extra):
    """The shared ring gives the very Decimals two separate averages give, bar by bar."""
    slow = fast + extra
    pair, f, s = SmaPair(fast, slow), Sma(fast), Sma(slow)
    for x in xs:
        pair.push(x)
        f.push(x)
        s.push(x)
        assert (pair.fast_total, pair.slow_total, pair.full) == (f.total, s.total, s.full)
        assert str(pair.fast_total) == str(f.total) and str(pair.slow_total) == str(s.total)


def test_sma_pair_needs_fast_below_slow():
    for fast, slow in ((0, 5), (5, 5), (6, 5)):
        with pytest.raises(ValueError):
            SmaPair(fast, slow)


def test_session_vwap():
    v = SessionVwap()
    assert v.update(D(10), D(0)) is None  # no volume, no price yet
    assert v.update(D(10), D(100)) == D(10)
    assert v.update(D(13), D(200)) == D(12)
    v.reset()
    assert v.value is None and v.update(D(5), D(1)) == D(5)


def test_windows_must_be_sensible():
    with pytest.raises(ValueError):
        RollingZ(1)
    with pytest.raises(ValueError):
        Sma(0)
