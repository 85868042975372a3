"""Intent -> risk gate -> execution: the one path every order takes (live, paper, backtest)."""

from __future__ import annotations

from engine.execution.service import ExecutionService
from engine.risk.gate import RiskGate
from events.catalogue import OrderIntent, RiskApproved
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
            await self.execution.execute(decision)
        return decision
