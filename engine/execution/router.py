"""Intent -> risk gate -> execution: the one path every order takes (live, paper, backtest).

An approved order that closes a position its protection still guards (a strategy's exit
while a stop or a bracket's legs are live) first cancels that protection: the broker holds
the shares for the stop (Alpaca refuses the exit otherwise), and a stop left behind a
closed position would open a new one when it triggers."""

from __future__ import annotations

from engine.execution.service import ExecutionService
from engine.risk.gate import RiskGate
from events.catalogue import OrderIntent, RiskApproved
from projections.orders import open_orders
from projections.positions import position_qty
from projections.risk import Decision


class OrderRouter:
    def __init__(self, gate: RiskGate, execution: ExecutionService) -> None:
        self.gate = gate
        self.execution = execution

    async def route(self, intent: OrderIntent, *, flatten: bool = False) -> Decision:
        """Ask the gate; send what it approves. Returns the (durable) decision.
        `flatten` is for the kill switch only (see `RiskGate.submit`)."""
        decision = await self.gate.submit(intent, flatten=flatten)
        if isinstance(decision, RiskApproved):
            if decision.reduce_only and not decision.protective:
                await self._release_protection(decision)
            await self.execution.execute(decision)
        return decision

    async def _release_protection(self, d: RiskApproved) -> None:
        proj = self.gate.projections
        pos = position_qty(proj.positions, d.symbol)
        if pos == 0 or d.qty is None or d.qty < abs(pos):
            return  # only a full close leaves protection with nothing to protect
        closing = "sell" if pos > 0 else "buy"
        for o in open_orders(proj.orders, d.symbol):
            if o.protective and o.side == closing and o.client_order_id != d.client_order_id:
                await self.execution.cancel(o.client_order_id,
                                            reason=f"closing the position ({d.client_order_id})")
