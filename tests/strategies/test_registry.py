"""The strategy registry: built-ins, parameter validation, third-party entry points."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from engine.strategies import (
    SmaCrossover,
    StrategyConfigError,
    StrategyRegistry,
    VwapMeanReversion,
    default_registry,
)


def test_builtins_are_created_by_name_with_validated_params():
    reg = default_registry(entry_points_group=None)
    assert reg.names() == ["sma_crossover", "vwap_mean_reversion"]
    s = reg.create("vwap_mean_reversion", {"entry_z": 2.5, "symbols": ["AAPL", " MSFT", "AAPL"]})
    assert isinstance(s, VwapMeanReversion)
    assert s.params.entry_z == Decimal("2.5") and s.symbols == frozenset({"AAPL", "MSFT"})
    assert s.instance_name == "vwap_mean_reversion"
    assert isinstance(reg.create("sma_crossover", instance_name="sma_fast"), SmaCrossover)
    assert default_registry(entry_points_group=None) is not reg  # fresh each time


def test_unknown_parameter_is_named():
    reg = default_registry(entry_points_group=None)
    with pytest.raises(StrategyConfigError) as e:
        reg.create("vwap_mean_reversion", {"entryz": 2.0})
    msg = str(e.value)
    assert msg.startswith("vwap_mean_reversion: unknown parameter 'entryz' (known: ")
    assert "entry_z" in msg and e.value.problems == [msg.split(": ", 1)[1]]


def test_bad_values_are_named_with_what_was_given():
    reg = default_registry(entry_points_group=None)
    with pytest.raises(StrategyConfigError) as e:
        reg.create("vwap_mean_reversion", {"entry_z": -1, "window": "many"})
    assert "parameter 'entry_z': Input should be greater than 0 (got -1)" in str(e.value)
    assert "parameter 'window'" in str(e.value) and "'many'" in str(e.value)
    with pytest.raises(StrategyConfigError, match="exit_z .* must be below entry_z"):
        reg.create("vwap_mean_reversion", {"entry_z": 1, "exit_z": 1})
    with pytest.raises(StrategyConfigError, match=r"fast \(30\) must be below slow \(10\)"):
        reg.create("sma_crossover", {"fast": 30, "slow": 10})
    with pytest.raises(StrategyConfigError, match="parameters must be a mapping"):
        reg.create("sma_crossover", [("fast", 3)])  # type: ignore[arg-type]
    with pytest.raises(StrategyConfigError, match="instance name 'Bad:Name'"):
        reg.create("sma_crossover", instance_name="Bad:Name")


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(StrategyConfigError, match=r"^nope: unknown strategy \(known: "
                                                  r"sma_crossover, vwap_mean_reversion\)$"):
        default_registry(entry_points_group=None).create("nope")


def test_registering_twice_under_one_name_is_refused():
    reg = StrategyRegistry()
    reg.register(SmaCrossover)
    reg.register(SmaCrossover)  # the same class again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register(VwapMeanReversion, "sma_crossover")


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-looking third-party distribution with entry points, on sys.path."""
    pkg = tmp_path / "mqd_plugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from decimal import Decimal
        from pydantic import Field
        from engine.strategies import Strategy, StrategyParams

        class BreakoutParams(StrategyParams):
            lookback: int = Field(20, ge=2)

        class Breakout(Strategy):
            name = "breakout"
            Params = BreakoutParams

            def on_bar(self, bar, ctx):
                return [ctx.order("buy", qty=Decimal(1))]

        class NotAStrategy:
            pass
    """))
    (pkg / "broken.py").write_text("raise ImportError('missing dependency: talib')\n")
    dist = tmp_path / "mqd_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mqd-plugin-demo\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [miniquantdesk.strategies]
        breakout = mqd_plugin_demo:Breakout
        broken = mqd_plugin_demo.broken:Thing
        not_a_strategy = mqd_plugin_demo:NotAStrategy
        vwap_mean_reversion = mqd_plugin_demo:Breakout
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_third_party_strategies_come_from_entry_points(plugin_dist):
    reg = default_registry()
    assert {"breakout", "broken", "not_a_strategy"} <= set(reg.names())
    s = reg.create("breakout", {"lookback": 5})
    assert type(s).__name__ == "Breakout" and s.params.lookback == 5  # type: ignore[attr-defined]
    with pytest.raises(StrategyConfigError, match="breakout: unknown parameter 'lookbak'"):
        reg.create("breakout", {"lookbak": 5})
    # a broken plugin fails only when asked for, with the reason
    with pytest.raises(StrategyConfigError, match="cannot load entry point.*missing dependency"):
        reg.create("broken")
    with pytest.raises(StrategyConfigError, match="is not a Strategy subclass"):
        reg.create("not_a_strategy")
    # a plugin cannot take over a built-in's name
    assert isinstance(reg.create("vwap_mean_reversion"), VwapMeanReversion)
    assert "taken by a built-in" in reg.load_errors["vwap_mean_reversion"]


def test_builtins_declared_as_entry_points_are_not_conflicts(tmp_path, monkeypatch):
    """What the pyproject snippet for the built-ins produces once installed."""
    dist = tmp_path / "miniquantdesk_builtins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mqd-builtins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[miniquantdesk.strategies]\n"
        "vwap_mean_reversion = engine.strategies.vwap_mean_reversion:VwapMeanReversion\n"
        "sma_crossover = engine.strategies.sma_crossover:SmaCrossover\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = default_registry()
    assert reg.load_errors == {}
    assert reg.get("vwap_mean_reversion") is VwapMeanReversion
