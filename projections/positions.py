"""Positions as a fold over fills and broker adjustments.

Long and short, fractional quantities, average cost, realized P&L net of fees. A fill that
crosses zero closes the old position (realizing its P&L) and opens the remainder at the fill
price. An adjustment from reconciliation sets quantity and cost to the broker's and never
invents P&L.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from events.catalogue import FillReceived, PositionAdjusted
from events.vocabulary import ZERO


class Position(msgspec.Struct, kw_only=True):
    symbol: str
    qty: Decimal = ZERO
    avg_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    updated_seq: int = 0

    @property
    def is_flat(self) -> bool:
        return self.qty == 0

    def market_value(self, price: Decimal) -> Decimal:
        return self.qty * price

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return (price - self.avg_cost) * self.qty


class PositionsState(msgspec.Struct, kw_only=True):
    positions: dict[str, Position] = {}


def apply_fill(state: PositionsState, seq: int, e: FillReceived) -> tuple[Decimal, Decimal, Decimal]:
    """Book one (already de-duplicated) fill.

    Returns (realized P&L of this fill net of its fee, quantity before, quantity after).
    """
    pos = state.positions.get(e.symbol)
    if pos is None:
        pos = state.positions[e.symbol] = Position(symbol=e.symbol)
    before = pos.qty
    signed = e.qty if e.side == "buy" else -e.qty
    realized = -e.fee
    if before == 0 or (before > 0) == (signed > 0):
        total = abs(before) + e.qty
        pos.avg_cost = (abs(before) * pos.avg_cost + e.qty * e.price) / total
        pos.qty = before + signed
    else:
        closed = min(abs(before), e.qty)
        direction = 1 if before > 0 else -1
        realized += closed * (e.price - pos.avg_cost) * direction
        pos.qty = before + signed
        if pos.qty == 0:
            pos.avg_cost = ZERO
        elif (pos.qty > 0) != (before > 0):  # flipped: the remainder opens at this price
            pos.avg_cost = e.price
    pos.realized_pnl += realized
    pos.fees += e.fee
    pos.updated_seq = seq
    return realized, before, pos.qty


def apply_adjustment(state: PositionsState, seq: int, e: PositionAdjusted) -> None:
    pos = state.positions.get(e.symbol)
    if pos is None:
        pos = state.positions[e.symbol] = Position(symbol=e.symbol)
    pos.qty = e.qty_after
    pos.avg_cost = e.avg_price if e.qty_after != 0 else ZERO
    pos.updated_seq = seq


def position_qty(state: PositionsState, symbol: str) -> Decimal:
    pos = state.positions.get(symbol)
    return pos.qty if pos is not None else ZERO

