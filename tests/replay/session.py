"""A scripted session through the real engine slice (gate, execution, SimulatedBroker,
projections, on-disk log), recording the live projections' fingerprint after every step so
tests can compare "state as of seq N" against what the engine itself held at N."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from engine.brokers.simulated import SimConfig
from events.catalogue import RiskApproved, RiskRejected
from tests.execution.simworld import SimWorld, mk_bar, sim_world

D = Decimal


@dataclass
class Session:
    path: Path
    # seq -> fingerprint / AAPL qty of the live projections when the log ended at that seq
    fingerprints: dict[int, str] = field(default_factory=dict)
    aapl_qty: dict[int, Decimal] = field(default_factory=dict)
    buy: RiskApproved | None = None
    rejected: RiskRejected | None = None
    limit: RiskApproved | None = None
    replacement: str | None = None
    canceled: RiskApproved | None = None
    last_seq: int = 0


async def _checkpoint(w: SimWorld, s: Session) -> None:
    await w.log.flush()
    seq = w.log.last_seq
    assert w.proj.last_seq == seq  # the subscriber folded everything committed
    s.fingerprints[seq] = w.proj.fingerprint()
    pos = w.proj.positions.positions.get("AAPL")
    s.aapl_qty[seq] = pos.qty if pos is not None else D(0)


async def run_session(path: Path) -> Session:
    s = Session(path=path)
    cfg = SimConfig(fee_bps=D(5), min_fee=D("0.01"))
    async with sim_world(path, cash="10000", config=cfg) as w:
        await _checkpoint(w, s)
        closes = [101, 102, 104, 103, 100, 99, 102, 105, 107, 106]
        for i, c in enumerate(closes):
            o = c - 1
            await w.bar(mk_bar("AAPL", i, str(o), h=str(c + 1), lo=str(o - 1), c=str(c)))
            await w.bar(mk_bar("WHOLE", i, "50", c="50"))
            await _checkpoint(w, s)
            if i == 1:
                d = await w.order(qty="10", intent_id="buy-1")
                assert isinstance(d, RiskApproved)
                s.buy = d
            elif i == 2:
                d = await w.order(qty="1000000", intent_id="too-big")
                assert isinstance(d, RiskRejected)
                s.rejected = d
                lim = await w.order(qty="3", intent_id="lim-1", order_type="limit",
                                    limit_price=D("100.5"))
                assert isinstance(lim, RiskApproved), lim
                s.limit = lim
            elif i == 3:
                assert s.limit is not None
                s.replacement = await w.execution.replace(s.limit.client_order_id,
                                                          limit_price=D("100"))
                await w.pump()
                assert s.replacement is not None
                c2 = await w.order(symbol="WHOLE", qty="2", intent_id="cancel-me",
                                   order_type="limit", limit_price=D("49.5"))
                assert isinstance(c2, RiskApproved)
                s.canceled = c2
                await w.execution.cancel(c2.client_order_id, reason="changed my mind")
                await w.pump()
            elif i == 5:
                await w.order(side="sell", qty="13", intent_id="sell-1")
            elif i == 7:
                await w.order(qty="4", intent_id="buy-2")
            await _checkpoint(w, s)
        s.last_seq = w.log.last_seq
    return s
