"""The strategy interface: what a strategy implements and how its parameters are declared.

A strategy is a class with a registry `name`, a pydantic `Params` model (unknown keys and bad
values are refused with an error naming the key) and `on_bar`. It returns order intents built
through its `StrategyContext`; it never sees the broker or the projections themselves, only
read-only views and bars up to the clock.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from events.catalogue import FillReceived, OrderIntent
from events.market import Bar

if TYPE_CHECKING:
    from .context import StrategyContext

# Instance names appear in every intent id ("name:SYMBOL:stamp:n"), so keep them short and
# free of the ':' separator.
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


class StrategyConfigError(ValueError):
    """Unknown strategy or bad parameters; the message names the strategy and every bad key."""

    def __init__(self, strategy: str, problems: Sequence[str]) -> None:
        self.strategy = strategy
        self.problems = list(problems)
        super().__init__(f"{strategy}: " + "; ".join(self.problems))


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: tuple[str, ...] = ()
    """Symbols this strategy trades; empty means every symbol the runner feeds it."""

    time_in_force: Literal["day", "gtc"] = "day"
    """Of the orders it sends unless it says otherwise. "day" orders expire at the session's
    end, so a signal on its last bar never fills; "gtc" ones rest until the next session's
    open. Fractional orders must be day orders (Alpaca's rule), so a "gtc" strategy sizes in
    whole shares."""

    @field_validator("symbols")
    @classmethod
    def _clean_symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for s in v:
            s = s.strip()
            if not s or ":" in s or " " in s:
                raise ValueError(f"bad symbol {s!r}")
            out.append(s)
        return tuple(dict.fromkeys(out))


def _describe(model: type[BaseModel], err: ValidationError) -> list[str]:
    known = ", ".join(sorted(model.model_fields))
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(params)"
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown parameter {key!r} (known: {known})")
        else:
            problems.append(f"parameter {key!r}: {e['msg']} (got {e.get('input')!r})")
    return problems


def validate_params(strategy: str, model: type[StrategyParams],
                    raw: StrategyParams | Mapping[str, Any] | None) -> StrategyParams:
    if isinstance(raw, model):
        return raw
    if isinstance(raw, StrategyParams):
        raw = raw.model_dump()
    if raw is not None and not isinstance(raw, Mapping):
        got = type(raw).__name__
        raise StrategyConfigError(strategy, [f"parameters must be a mapping, got {got}"])
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as e:
        raise StrategyConfigError(strategy, _describe(model, e)) from None


class Strategy(ABC):
    """Subclass, set `name` and `Params`, implement `on_bar`.

    Every hook returns the intents to send (an empty sequence, or None, for none). Hooks run on
    the engine's event loop: they must be quick and must not block or do I/O.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams | Mapping[str, Any] | None = None, *,
                 instance_name: str | None = None) -> None:
        label = instance_name or self.name or type(self).__name__
        self.params = validate_params(label, self.Params, params)
        self.instance_name = instance_name or self.name
        if not NAME_RE.match(self.instance_name):
            raise StrategyConfigError(label, [
                f"instance name {self.instance_name!r} must match {NAME_RE.pattern}"])
        syms = self.params.symbols
        self.symbols: frozenset[str] | None = frozenset(syms) if syms else None

    def on_start(self, ctx: StrategyContext) -> Sequence[OrderIntent] | None:
        """Once, before the first bar."""
        return None

    @abstractmethod
    def on_bar(self, bar: Bar, ctx: StrategyContext) -> Sequence[OrderIntent] | None:
        """A validated, closed bar of a symbol this strategy trades."""

    def on_fill(self, fill: FillReceived, ctx: StrategyContext) -> Sequence[OrderIntent] | None:
        """A fill of one of this strategy's orders (already folded into the views)."""
        return None

    def on_stop(self, ctx: StrategyContext) -> Sequence[OrderIntent] | None:
        """Once, when the runner stops."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.instance_name!r} {self.params!r}>"
