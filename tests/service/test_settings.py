from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import SettingsError, load_settings
from tests.service.procs import cli

SECRET = "sk-THIS-IS-THE-SECRET-9f8e7d"
KEY = "AK-THE-KEY-ID-123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("MQD_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no stray mqd.toml / .env


@pytest.mark.parametrize("env,expected", [
    ({"MQD_RISK__MAX_ORDER_NOTIONAL": "-5"},
     "risk.max_order_notional (env MQD_RISK__MAX_ORDER_NOTIONAL): Input should be greater than 0 (got '-5')"),
    ({"MQD_RISK__MAX_ORDER_NOTIONAL": "abc"}, "Input should be a valid decimal (got 'abc')"),
    ({"MQD_RISK__MAX_ORDER_NOTIONAL": "900", "MQD_RISK__MAX_SYMBOL_EXPOSURE": "100"},
     "max_order_notional (900) is larger than max_symbol_exposure (100)"),
    ({"MQD_RISK__DAY_TRADE_MODE": "sometimes"}, "risk.day_trade_mode"),
    ({"MQD_BROKER": "robinhood"}, "broker (env MQD_BROKER): Input should be 'simulated' or 'alpaca'"),
    ({"MQD_BROKER": "alpaca"}, "broker=alpaca needs alpaca.key_id and alpaca.secret_key"),
    ({"MQD_BROKER": "alpaca", "MQD_ALPACA__KEY_ID": KEY, "MQD_ALPACA__SECRET_KEY": SECRET,
      "MQD_ALPACA__PAPER": "false"}, "trades real money: set live_trading=true"),
    ({"MQD_LIVE_TRADING": "true"}, "live_trading=true only makes sense with broker=alpaca"),
    ({"MQD_DATA__SOURCE": "csv"}, "data.source=csv needs data.path"),
    ({"MQD_SIM__CASH": "0"}, "sim.cash (env MQD_SIM__CASH): Input should be greater than 0"),
    ({"MQD_UNKNOWN_THING": "1"}, "MQD_UNKNOWN_THING: not a setting"),
    ({"MQD_RISK__MAX_ORDER_NOTIONALL": "5"}, "MQD_RISK__MAX_ORDER_NOTIONALL: not a setting"),
])
def test_invalid_settings_are_explained(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        expected: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert expected in str(e.value)
    assert SECRET not in str(e.value) and KEY not in str(e.value)


def test_toml_and_dotenv_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqd.toml").write_text('[risk]\nmax_open_positions = 2\n[sim]\ncash = "300"\n')
    (tmp_path / ".env").write_text("MQD_RISK__MAX_OPEN_POSITIONS=4\n")
    s = load_settings()
    assert s.risk.max_open_positions == 4 and str(s.sim.cash) == "300"  # .env beats toml
    monkeypatch.setenv("MQD_RISK__MAX_OPEN_POSITIONS", "1")
    assert load_settings().risk.max_open_positions == 1  # environment beats both


def test_secrets_never_printed(tmp_path: Path) -> None:
    env = {"MQD_BROKER": "alpaca", "MQD_ALPACA__KEY_ID": KEY, "MQD_ALPACA__SECRET_KEY": SECRET,
           "MQD_ALPACA__REST_URL": "http://127.0.0.1:9", "MQD_ALPACA__STREAM_URL": "ws://127.0.0.1:9/s",
           "MQD_ALPACA__REQUEST_TIMEOUT_S": "1"}
    r = cli(tmp_path, "config", extra=env)
    assert r.returncode == 0 and "**********" in r.stdout
    assert SECRET not in r.stdout + r.stderr and KEY not in r.stdout + r.stderr
    bad = cli(tmp_path, "--verbose", "status", extra={**env, "MQD_RISK__MAX_OPEN_POSITIONS": "0"})
    assert bad.returncode == 2
    assert SECRET not in bad.stdout + bad.stderr
