from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.base import NaiveDatetimeError, tag_of
from events.catalogue import ALL_EVENT_TYPES, FillReceived, OrderIntent, RejectReason
from events.codec import Codec, default_codec
from events.errors import DecodeError, SchemaTooNewError
from events.market import Bar

decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=9,
                min_value=Decimal("-1e12"), max_value=Decimal("1e12")),
    st.decimals(allow_nan=False, allow_infinity=False),  # any exponent, fractional shares
)
aware = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))


@st.composite
def bars(draw: st.DrawFn) -> Bar:
    lo = draw(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(100000), places=4))
    o = lo + draw(st.decimals(min_value=0, max_value=100, places=4))
    c = lo + draw(st.decimals(min_value=0, max_value=100, places=4))
    h = max(o, c) + draw(st.decimals(min_value=0, max_value=10, places=4))
    return Bar(symbol=draw(st.text(min_size=1, max_size=6)), start=draw(aware),
               interval_s=draw(st.integers(1, 86400)), open=o, high=h, low=lo, close=c,
               volume=draw(st.decimals(min_value=0, max_value=10**9, places=3)),
               vwap=draw(st.none() | st.just(c)), trade_count=draw(st.none() | st.integers(0, 10**6)),
               provider=draw(st.text(max_size=8)))


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is str:
        return st.text(max_size=20)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**62), 2**62)
    if tp is Decimal:
        return decimals
    if tp is datetime:
        return aware
    if tp is Bar:
        return bars()
    if tp is RejectReason:
        return st.builds(RejectReason, code=st.text(max_size=10), message=st.text(max_size=20),
                         values=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):  # a nested record
        return events_of(tp)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    if tp is type(None):
        return st.none()
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):  # nested (legs, take-profit)
        return events_of(tp)
    raise NotImplementedError(tp)


def events_of(cls: type) -> st.SearchStrategy[Any]:
    fields = {f.name: strategy_for(f.type) for f in msgspec.structs.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_type_round_trips_exactly(cls: type) -> None:
    codec = default_codec()

    @settings(max_examples=40, deadline=None)
    @given(events_of(cls))
    def check(event: Any) -> None:
        payload = codec.encode(event)
        back = codec.decode(tag_of(cls), cls.SCHEMA_VERSION, payload, seq=1)
        assert back == event
        assert type(back) is cls
        assert codec.encode(back) == payload  # byte-identical, Decimal exponents kept
        for f in msgspec.structs.fields(cls):
            v = getattr(back, f.name)
            if isinstance(v, datetime):
                assert v.tzinfo is UTC

    check()


def test_catalogue_covers_design_notes() -> None:
    tags = {tag_of(c) for c in ALL_EVENT_TYPES}
    for needed in ["bar", "data_rejected", "intent", "risk_approved", "risk_rejected",
                   "order_submit_requested", "order_submitted", "order_accepted", "fill",
                   "order_canceled", "order_rejected", "order_expired", "order_replaced",
                   "order_submit_ambiguous", "run_started", "recovery_completed",
                   "trading_state", "kill_switch_engaged", "kill_switch_verified",
                   "discrepancy", "position_adjusted", "orphan_adopted", "orphan_canceled",
                   "illegal_transition", "unknown_broker_message"]:
        assert needed in tags


def test_fractional_and_exponent_preserved() -> None:
    ev = FillReceived(ts=datetime(2026, 1, 2, tzinfo=UTC), client_order_id="c", broker_order_id="b",
                      execution_id="x", symbol="AAPL", side="buy", qty=Decimal("0.000000001"),
                      price=Decimal("187.2300"), broker_time=datetime(2026, 1, 2, tzinfo=UTC))
    back = default_codec().decode("fill", 1, default_codec().encode(ev))
    assert str(back.qty) == "1E-9" and str(back.price) == "187.2300"  # type: ignore[attr-defined]


def test_naive_datetime_refused_with_clear_error() -> None:
    with pytest.raises(NaiveDatetimeError, match=r"OrderIntent\.ts must be timezone-aware"):
        OrderIntent(ts=datetime(2026, 1, 2, 10, 0), intent_id="i", strategy="s", symbol="A",
                    side="buy", qty=Decimal(1))
    with pytest.raises(NaiveDatetimeError, match="signal_time"):
        OrderIntent(ts=datetime(2026, 1, 2, tzinfo=UTC), intent_id="i", strategy="s", symbol="A",
                    side="buy", qty=Decimal(1), signal_time=datetime(2026, 1, 2))


def test_aware_non_utc_is_normalised_to_utc() -> None:
    est = timezone(timedelta(hours=-5))
    ev = OrderIntent(ts=datetime(2026, 1, 2, 10, 0, tzinfo=est), intent_id="i", strategy="s",
                     symbol="A", side="buy", qty=Decimal(1))
    assert ev.ts == datetime(2026, 1, 2, 15, 0, tzinfo=UTC) and ev.ts.tzinfo is UTC


def test_decode_refuses_naive_timestamp_in_payload() -> None:
    raw = msgspec.msgpack.encode({"type": "run_ended", "ts": "2026-01-02T10:00:00", "run_id": "r"})
    with pytest.raises(DecodeError, match="seq 7"):
        default_codec().decode("run_ended", 1, raw, seq=7)


# --- upcasting -------------------------------------------------------------------------------


class PingV2(msgspec.Struct, frozen=True, kw_only=True, tag="ping", tag_field="type"):
    """Test-only event whose v1 had `amount` as a float-ish string called `amt`."""

    SCHEMA_VERSION: typing.ClassVar[int] = 2
    ts: datetime
    amount: Decimal
    note: str = ""


def test_upcaster_turns_old_rows_into_current_type() -> None:
    def v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        d["amount"] = d.pop("amt")
        return d

    codec = Codec(types=[PingV2], upcasters={("ping", 1): v1_to_v2})  # type: ignore[list-item]
    old = msgspec.msgpack.encode({"type": "ping", "ts": datetime(2026, 1, 1, tzinfo=UTC),
                                  "amt": "1.50"})
    ev = codec.decode("ping", 1, old, seq=3)
    assert isinstance(ev, PingV2) and ev.amount == Decimal("1.50")
    with pytest.raises(DecodeError, match="seq 4: no upcaster"):
        Codec(types=[PingV2], upcasters={}).decode("ping", 1, old, seq=4)  # type: ignore[list-item]


def test_newer_schema_row_is_refused_naming_seq() -> None:
    payload = default_codec().encode(
        FillReceived(ts=datetime(2026, 1, 2, tzinfo=UTC), client_order_id="c", broker_order_id="b",
                     execution_id="x", symbol="A", side="buy", qty=Decimal(1), price=Decimal(1),
                     broker_time=datetime(2026, 1, 2, tzinfo=UTC)))
    with pytest.raises(SchemaTooNewError, match="seq 42: fill was written with schema v9"):
        default_codec().decode("fill", 9, payload, seq=42)
    with pytest.raises(DecodeError, match="seq 5: unknown event type 'martian'"):
        default_codec().decode("martian", 1, payload, seq=5)


def test_a_run_started_written_before_the_fill_model_still_decodes() -> None:
    """RunStarted gained `fill_model` (optional, at the end): rows written before it replay."""
    import msgpack

    from events.catalogue import FillModel, RunStarted
    from events.codec import default_codec

    old = msgpack.packb({"type": "run_started", "ts": "2026-11-23T14:30:00Z", "run_id": "r1",
                         "code_version": "0.1.0", "settings_hash": "abc", "mode": "backtest"})
    e = default_codec().decode("run_started", 1, old)
    assert isinstance(e, RunStarted) and e.run_id == "r1" and e.fill_model is None
    new = RunStarted(ts=e.ts, run_id="r2", code_version="0.1.0", settings_hash="abc",
                     mode="backtest", fill_model=FillModel(
                         fill_rule="x", slippage_bps=Decimal(2), fee_per_share=Decimal(0),
                         fee_bps=Decimal(0), min_fee=Decimal(0),
                         volume_participation=Decimal("0.1"), zero_volume="no_fill",
                         time_in_force="day"))
    again = default_codec().decode("run_started", 1, default_codec().encode(new))
    assert again == new
