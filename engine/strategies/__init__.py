"""Strategies: the interface, the context they see, the runner, the registry, and the
reference strategies (VWAP mean reversion, SMA crossover). No import-time side effects."""

from projections.orders import OrderView

from .base import Strategy, StrategyConfigError, StrategyParams
from .context import (
    AccountView,
    AssetView,
    BarHistory,
    IntentStatus,
    LookAheadError,
    PositionView,
    Size,
    StrategyContext,
    intent_id,
)
from .registry import ENTRY_POINT_GROUP, StrategyRegistry, default_registry
from .runner import StrategyRunner
from .sma_crossover import SmaCrossover, SmaCrossoverParams
from .vwap_mean_reversion import VwapMeanReversion, VwapMeanReversionParams

__all__ = [
    "ENTRY_POINT_GROUP",
    "AccountView",
    "AssetView",
    "BarHistory",
    "IntentStatus",
    "LookAheadError",
    "OrderView",
    "PositionView",
    "Size",
    "SmaCrossover",
    "SmaCrossoverParams",
    "Strategy",
    "StrategyConfigError",
    "StrategyContext",
    "StrategyParams",
    "StrategyRegistry",
    "StrategyRunner",
    "VwapMeanReversion",
    "VwapMeanReversionParams",
    "default_registry",
    "intent_id",
]
