"""Strategies by name: the built-ins plus third-party ones from the entry-point group
`miniquantdesk.strategies`.

A registry is an ordinary object; `default_registry()` builds a fresh one each call (no
module-level state). Entry points are only listed when the registry is built and only
imported when their name is asked for, so one broken plugin cannot stop the others.

A third-party package registers a strategy in its pyproject.toml:

    [project.entry-points."miniquantdesk.strategies"]
    my_breakout = "my_package.breakout:Breakout"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .base import NAME_RE, Strategy, StrategyConfigError, StrategyParams
from .sma_crossover import SmaCrossover
from .vwap_mean_reversion import VwapMeanReversion

ENTRY_POINT_GROUP = "miniquantdesk.strategies"
BUILTINS: tuple[type[Strategy], ...] = (VwapMeanReversion, SmaCrossover)


class StrategyRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type[Strategy]] = {}
        self._lazy: dict[str, EntryPoint] = {}
        self.load_errors: dict[str, str] = {}

    def register(self, cls: type[Strategy], name: str | None = None) -> None:
        key = name or cls.name
        if not isinstance(cls, type) or not issubclass(cls, Strategy):
            raise TypeError(f"{cls!r} is not a Strategy subclass")
        if not NAME_RE.match(key or ""):
            raise ValueError(f"strategy name {key!r} must match {NAME_RE.pattern}")
        existing = self._classes.get(key)
        if existing is not None and existing is not cls:
            raise ValueError(f"a strategy named {key!r} is already registered "
                             f"({existing.__module__}.{existing.__qualname__})")
        self._classes[key] = cls
        self._lazy.pop(key, None)

    def add_entry_points(self, eps: Iterable[EntryPoint]) -> None:
        """Make entry points known by name; each is imported on first use."""
        for ep in eps:
            taken = self._classes.get(ep.name)
            if taken is not None:
                if ep.value != f"{taken.__module__}:{taken.__qualname__}":
                    self.load_errors[ep.name] = (f"entry point {ep.value!r} ignored: the name "
                                                 "is taken by a built-in strategy")
                continue
            if ep.name in self._lazy and self._lazy[ep.name].value != ep.value:
                self.load_errors[ep.name] = (f"two entry points are named {ep.name!r} "
                                             f"({self._lazy[ep.name].value}, {ep.value})")
                continue
            self._lazy[ep.name] = ep

    def names(self) -> list[str]:
        return sorted({*self._classes, *self._lazy})

    def get(self, name: str) -> type[Strategy]:
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        ep = self._lazy.get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise StrategyConfigError(name, [f"unknown strategy (known: {known})"])
        try:
            loaded = ep.load()
        except Exception as e:  # a plugin can fail in any way; say which and how
            why = f"cannot load entry point {ep.value!r}: {type(e).__name__}: {e}"
            raise StrategyConfigError(name, [why]) from e
        if not isinstance(loaded, type) or not issubclass(loaded, Strategy):
            why = f"entry point {ep.value!r} is not a Strategy subclass"
            raise StrategyConfigError(name, [why])
        self.register(loaded, name)
        return loaded

    def params_model(self, name: str) -> type[StrategyParams]:
        return self.get(name).Params

    def create(self, name: str, params: Mapping[str, Any] | StrategyParams | None = None, *,
               instance_name: str | None = None) -> Strategy:
        """A new strategy instance. Raises `StrategyConfigError` naming an unknown strategy
        or every bad/unknown parameter key."""
        cls = self.get(name)
        # The default instance name is the name it was asked for (an entry point's name may
        # differ from the class's own `name`); intent ids carry it.
        return cls(params, instance_name=instance_name or name)


def default_registry(*, entry_points_group: str | None = ENTRY_POINT_GROUP) -> StrategyRegistry:
    """A fresh registry with the built-ins and (unless the group is None) the installed
    entry points of `miniquantdesk.strategies`."""
    reg = StrategyRegistry()
    for cls in BUILTINS:
        reg.register(cls)
    if entry_points_group is not None:
        reg.add_entry_points(entry_points(group=entry_points_group))
    return reg
