"""What a backtest's user must be told besides the figures: which intents were refused and
why, orders the data ended under, and whether the run mostly failed to trade.

Counts come from the log (every decision is there), so they hold for any backtest log."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.catalogue import OrderIntent, OrderRejected, RiskRejected
from events.store import LogReader

# What to change when most intents fail for a reason (the first matching code wins).
HINTS = {
    "SYMBOL_UNKNOWN": "list the symbols in an assets file (--assets)",
    "SYMBOL_NOT_TRADABLE": "the assets file marks them not tradable (--assets)",
    "NOT_FRACTIONABLE": "size whole shares (qty) or mark the symbol fractionable (--assets)",
    "BELOW_ONE_SHARE": "one share costs more than the order's dollars: raise --cash or the "
                       "strategy's size",
    "ORDER_NOTIONAL_LIMIT": "raise risk.max_order_notional (TOML or MQD_RISK__MAX_ORDER_NOTIONAL)",
    "SYMBOL_EXPOSURE_LIMIT": "raise risk.max_symbol_exposure",
    "GROSS_EXPOSURE_LIMIT": "raise risk.max_gross_exposure",
    "NOTIONAL_EXCEEDS_CASH": "raise --cash or size orders smaller",
    "NOTIONAL_EXCEEDS_BUYING_POWER": "raise --cash or size orders smaller",
    "MAX_OPEN_POSITIONS": "raise risk.max_open_positions or trade fewer symbols",
    "STALE_DATA": "the bars have gaps longer than risk.stale_after_bars intervals",
    "DAILY_LOSS_LIMIT": "the daily loss limit halted trading (risk.daily_loss_limit_pct)",
    "SHORTING_DISABLED": "shorting is off (risk.allow_short) or the symbol is not shortable",
    "DAY_TRADE_LIMIT": "the day-trade guard refused them (risk.day_trade_mode)",
    "POTENTIAL_WASH_TRADE": "the strategy sends opposite orders while one is still open",
}
MOSTLY = 0.5


@dataclass
class Refusals:
    intents: int = 0
    risk_rejected: int = 0
    broker_rejected: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)  # a refusal may have several

    @property
    def refused(self) -> int:
        return self.risk_rejected + self.broker_rejected

    @property
    def mostly_refused(self) -> bool:
        return self.intents > 0 and self.refused > self.intents * MOSTLY

    def to_builtins(self) -> dict[str, Any]:
        return {"intents": self.intents, "refused_by_risk": self.risk_rejected,
                "refused_by_broker": self.broker_rejected,
                "by_reason": dict(self.by_reason.most_common())}

    def line(self) -> str | None:
        """'refused 40 of 49 intents: SYMBOL_UNKNOWN 40, ...' (None when none was)."""
        if not self.refused:
            return None
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.by_reason.most_common())
        return f"refused {self.refused:,} of {self.intents:,} intents: {reasons}"

    def verdict(self) -> str:
        """The one-line explanation of a mostly refused run."""
        top = self.by_reason.most_common(1)[0][0] if self.by_reason else "BROKER_REJECTED"
        hint = HINTS.get(top, "see engine/risk/codes.py")
        return (f"most intents were refused ({self.refused:,} of {self.intents:,}, mostly "
                f"{top}): {hint}")


async def refusals(log_path: Path) -> Refusals:
    out = Refusals()
    async with LogReader(log_path) as r:
        async for _, e in r.read(types=("intent", "risk_rejected", "order_rejected")):
            if isinstance(e, OrderIntent):
                out.intents += 1
            elif isinstance(e, RiskRejected):
                out.risk_rejected += 1
                out.by_reason.update({x.code for x in e.reasons})
            elif isinstance(e, OrderRejected):
                out.broker_rejected += 1
                out.by_reason["BROKER_REJECTED"] += 1
    return out
