"""The loss limits' "tighter of dollars and percent" rule."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.risk.limits import RiskLimits, _tighter

money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e9"), places=2)
pcts = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(1), places=4)


@given(usd=st.none() | money, pct=st.none() | pcts, equity=money)
def test_tighter_is_the_smallest_limit_set_and_the_dollar_one_on_a_tie(usd, pct, equity):
    options = [x for x in (usd, pct * equity if pct is not None else None) if x is not None]
    if not options:
        with pytest.raises(ValueError):
            _tighter(usd, pct, equity)
        return
    got = _tighter(usd, pct, equity)
    assert got == min(options)
    assert str(got) == str(min(options))  # the same Decimal (it is quoted in the trip's reason)


def test_daily_and_weekly_limits_take_the_tighter():
    lim = RiskLimits(daily_loss_limit=Decimal(50), daily_loss_limit_pct=Decimal("0.03"),
                     weekly_loss_limit=None, weekly_loss_limit_pct=Decimal("0.05"))
    assert lim.daily_limit(Decimal(1000)) == Decimal(30)  # 3% of 1000 beats $50
    assert lim.daily_limit(Decimal(10000)) == Decimal(50)
    assert lim.weekly_limit(Decimal(1000)) == Decimal(50)
