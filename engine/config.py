"""Settings: environment (prefix `MQD_`, nested keys with `__`), a `.env` file and a TOML file
(`mqd.toml`, or the path in `MQD_CONFIG`), validated at startup with messages a trader
understands. Secrets are `SecretStr`: never printed, logged or stored; the "run started" event
stores a hash of the non-secret settings only.

With no settings at all the engine runs the embedded demo: the simulated broker, a $200
account, the shipped sample bars, VWAP mean reversion.
"""

from __future__ import annotations

import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from engine.risk.limits import RiskLimits

D = Decimal


class AlpacaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: SecretStr | None = None
    secret_key: SecretStr | None = None
    paper: bool = True
    rest_url: str | None = Field(None, description="override the REST base URL (tests, proxies)")
    stream_url: str | None = Field(None, description="override the trade-updates websocket URL")
    data_rest_url: str | None = None
    data_stream_url: str | None = None
    data_feed: Literal["iex", "sip"] = "iex"
    request_timeout_s: float = Field(10.0, gt=0, le=120)
    reconnect_min_backoff_s: float = Field(1.0, gt=0)
    reconnect_max_backoff_s: float = Field(30.0, gt=0)

    @property
    def has_credentials(self) -> bool:
        return bool(self.key_id and self.key_id.get_secret_value()
                    and self.secret_key and self.secret_key.get_secret_value())


class SimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cash: Decimal = Field(D(200), gt=0, description="starting cash of the simulated account")
    slippage_bps: Decimal = Field(D(2), ge=0, le=500)
    fee_per_share: Decimal = Field(D(0), ge=0)
    fee_bps: Decimal = Field(D(0), ge=0, le=100)
    min_fee: Decimal = Field(D(0), ge=0)
    volume_participation: Decimal = Field(D("0.1"), gt=0, le=1)
    fill_at_signal_close: bool = Field(
        False, description="LOOKS AHEAD: fill market orders at the signal bar's close")
    zero_volume: Literal["no_fill", "fill"] = Field(
        "no_fill", description="a bar with volume 0: fills nothing (no_fill), or fills "
                               "orders in full at its prices as any bar would (fill)")


class DataSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["sample", "csv", "parquet", "log", "alpaca", "synthetic"] = "sample"
    path: Path | None = Field(None, description="bar file or event log for csv/parquet/log")
    assets_path: Path | None = Field(None, description="symbol eligibility CSV for the simulated broker (default: the sample's)")
    timezone: str | None = Field(None, description="zone for naive timestamps in bar files")
    timeframe: Literal["1m", "5m", "15m", "30m", "1h", "1d"] | None = Field(
        None, description="bar interval of bar files (default: inferred from the rows; "
                          "1d = one bar per trading session)")
    symbols: tuple[str, ...] = ()
    interval_s: int = Field(60, ge=1, le=86400, description="bar length of the synthetic feed")
    seed: int = Field(7, description="seed of the synthetic feed")
    pace_s: float = Field(0.0, ge=0, le=60, description=(
        "wall-clock seconds between bars of a replay (0: as fast as it goes), to watch a demo"))


class StrategySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    instance: str | None = None
    params: dict[str, Any] = {}


class ReconcileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(30.0, gt=0, description="continuous reconciliation period")
    unexplained_position: Literal["adopt", "refuse"] = "adopt"
    foreign_orders: Literal["cancel", "leave"] = "leave"
    max_mismatch_value: Decimal = Field(D(500), gt=0)
    missing_protection: Literal["restore", "halt", "alert"] | None = Field(
        None, description="a position's stop gone at the broker: re-place it, halt, or only "
                          "record it (default: restore when risk.require_protection, else alert)")


class KillSwitchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    on_loss_limit: bool = True
    max_broker_errors: int = Field(5, ge=1, description="errors within the window that trip it")
    broker_error_window_s: float = Field(60.0, gt=0)
    flatten: bool = False
    cancel_on_shutdown: bool = False
    retry_interval_s: float = Field(
        15.0, gt=0, description="pause between kill-switch rounds until the broker confirms")


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="serve the operator's dashboard inside the service")
    bind: str = Field("127.0.0.1:8765", description="HOST:PORT to listen on")
    allow_remote: bool = Field(
        False, description="required to bind anywhere but loopback (the token is then needed "
                           "for every request)")
    poll_s: float = Field(0.25, gt=0, le=10, description="how often it looks for new events")

    @model_validator(mode="after")
    def _bind_ok(self) -> DashboardSettings:
        from engine.dashboard.security import parse_bind

        parse_bind(self.bind, allow_remote=self.allow_remote)
        return self


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Secret: a webhook URL often carries its credential in the path (Slack, Discord).
    webhook_url: tuple[SecretStr, ...] = Field(
        (), description="webhooks that receive a JSON POST per alert (any number)")
    queue_size: int = Field(100, ge=1, le=100_000,
                            description="alerts waiting per webhook; the oldest is dropped")
    max_attempts: int = Field(5, ge=1, le=50)
    backoff_s: float = Field(1.0, gt=0, le=300, description="first retry delay (doubles)")
    timeout_s: float = Field(5.0, gt=0, le=120)
    stream_down_s: float = Field(60.0, gt=0, description="alert when the broker stream is "
                                                          "down longer than this")
    kill_verify_s: float = Field(60.0, gt=0, description="alert when an engaged kill switch "
                                                          "is not verified within this")

    @model_validator(mode="after")
    def _urls_ok(self) -> NotifySettings:
        from urllib.parse import urlsplit

        for url in self.webhook_url:
            u = urlsplit(url.get_secret_value())
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError("notify.webhook_url entries must be http(s)://host/... URLs")
        return self


def _default_strategies() -> tuple[StrategySettings, ...]:
    return (StrategySettings(name="vwap_mean_reversion"),)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MQD_", env_nested_delimiter="__", env_file=".env", extra="forbid",
        frozen=True, toml_file="mqd.toml")

    broker: Literal["simulated", "alpaca"] = "simulated"
    live_trading: bool = Field(False, description="real money: required with alpaca paper=false")
    data_dir: Path = Path("mqd-data")
    log_file: Path | None = Field(None, description="event log (default: <data_dir>/events.sqlite)")
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    snapshot_every: int = Field(100_000, ge=1000, description="events between projection snapshots")
    json_logs: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    alpaca: AlpacaSettings = AlpacaSettings()
    sim: SimSettings = SimSettings()
    data: DataSettings = DataSettings()
    risk: RiskLimits = RiskLimits(
        max_order_notional=D(200), max_symbol_exposure=D(200), max_gross_exposure=D(400),
        max_open_positions=3)
    strategies: tuple[StrategySettings, ...] = Field(default_factory=_default_strategies)
    reconcile: ReconcileSettings = ReconcileSettings()
    kill_switch: KillSwitchSettings = KillSwitchSettings()
    dashboard: DashboardSettings = DashboardSettings()
    notify: NotifySettings = NotifySettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("MQD_CONFIG") or "mqd.toml"
        return (init_settings, env_settings, dotenv_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=toml), file_secret_settings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.broker == "alpaca":
            if not self.alpaca.has_credentials:
                raise ValueError("broker=alpaca needs alpaca.key_id and alpaca.secret_key "
                                 "(MQD_ALPACA__KEY_ID / MQD_ALPACA__SECRET_KEY)")
            if not self.alpaca.paper and not self.live_trading:
                raise ValueError("alpaca.paper=false trades real money: set live_trading=true "
                                 "(MQD_LIVE_TRADING=true) to confirm")
        if self.live_trading and (self.broker != "alpaca" or self.alpaca.paper):
            raise ValueError("live_trading=true only makes sense with broker=alpaca and "
                             "alpaca.paper=false")
        if self.data.source in ("csv", "parquet", "log") and self.data.path is None:
            raise ValueError(f"data.source={self.data.source} needs data.path")
        if not self.strategies:
            raise ValueError("configure at least one strategy")
        return self

    def risk_limits(self) -> RiskLimits:
        """The risk limits with `require_protection` resolved: unless set, on for a live
        broker (Alpaca) and off for the simulated one."""
        if self.risk.require_protection is not None:
            return self.risk
        return self.risk.model_copy(update={"require_protection": self.broker == "alpaca"})

    def missing_protection_policy(self) -> Literal["restore", "halt", "alert"]:
        """`reconcile.missing_protection` resolved: restore where protection is required."""
        if self.reconcile.missing_protection is not None:
            return self.reconcile.missing_protection
        return "restore" if self.risk_limits().require_protection else "alert"

    @property
    def log_path(self) -> Path:
        return self.log_file or self.data_dir / "events.sqlite"

    @property
    def mode(self) -> str:
        if self.broker == "simulated":
            return "paper-simulated"
        return "live" if not self.alpaca.paper else "paper-alpaca"

    def public_dict(self) -> dict[str, Any]:
        """Every setting, secrets masked ('**********' when set, None when not)."""
        data: dict[str, Any] = json.loads(self.model_dump_json())  # SecretStr dumps masked
        return data

    def fingerprint(self) -> str:
        """A hash of the non-secret settings (stored in RunStarted)."""
        data = self.public_dict()
        data.get("alpaca", {}).pop("key_id", None)
        data.get("alpaca", {}).pop("secret_key", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class SettingsError(ValueError):
    """Invalid settings, described for people: which key, what was wrong, what is allowed."""


def load_settings(**overrides: Any) -> Settings:
    unknown = unknown_environment_keys(os.environ)
    if unknown:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(
            f"{k}: not a setting (a typo? run `python -m engine config` to see them all)"
            for k in unknown))
    try:
        return scale_limits_to_cash(Settings(**overrides))
    except ValidationError as e:
        raise SettingsError(describe_validation_error(e)) from None


DEMO_CASH = D(200)
# The demo's dollar limits as multiples of its $200: what scales with another starting cash.
CASH_SCALED_LIMITS = {"max_order_notional": D(1), "max_symbol_exposure": D(1),
                      "max_gross_exposure": D(2)}


def scale_limits_to_cash(settings: Settings) -> Settings:
    """A simulated account given its own starting cash gets dollar limits in proportion (the
    demo's: order and symbol 1x cash, gross 2x), except the limits set explicitly — so
    `--cash 100000` does not inherit the $200 demo's $200 orders. A limit set explicitly stays;
    a scaled one is raised where needed to stay consistent with it (order <= symbol <= gross)."""
    if settings.broker != "simulated" or "cash" not in settings.sim.model_fields_set:
        return settings
    given = settings.risk.model_fields_set if "risk" in settings.model_fields_set else set()
    cash = settings.sim.cash
    values = {k: getattr(settings.risk, k) for k in CASH_SCALED_LIMITS}
    for k, mult in CASH_SCALED_LIMITS.items():
        if k not in given:
            values[k] = cash * mult
    order, symbol, gross = (values[k] for k in CASH_SCALED_LIMITS)
    if "max_symbol_exposure" not in given:
        symbol = max(symbol, order)
    if "max_gross_exposure" not in given:
        gross = max(gross, symbol)
    if "max_order_notional" not in given:
        order = min(order, symbol)
    scaled = {"max_order_notional": order, "max_symbol_exposure": symbol,
              "max_gross_exposure": gross}
    if all(scaled[k] == getattr(settings.risk, k) for k in scaled):
        return settings
    risk = RiskLimits.model_validate({**settings.risk.model_dump(), **scaled})
    return settings.model_copy(update={"risk": risk})


_NOT_SETTINGS = {"MQD_CONFIG"}


def unknown_environment_keys(env: Any) -> list[str]:
    """MQD_ variables that name no setting: silently ignoring a typo'd limit is how an
    account loses money, so they are errors."""
    out = []
    for key in sorted(env):
        if not key.startswith("MQD_") or key in _NOT_SETTINGS:
            continue
        model: Any = Settings
        for part in key[4:].lower().split("__"):
            fields = getattr(model, "model_fields", None)
            if fields is None:
                break  # a dict/list value given as JSON: not walked further
            if part not in fields:
                out.append(key)
                break
            model = fields[part].annotation
        # else: a complete, known path
    return out


def describe_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors(include_url=False, include_input=True):
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        secret = any(str(p) in ("key_id", "secret_key") for p in err["loc"])
        given = err.get("input")
        if err["loc"] and not secret and isinstance(given, (str, int, float)) and len(str(given)) < 80:
            msg += f" (got {given!r})"
        env = "MQD_" + "__".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
        where = f"{loc}" + (f" (env {env})" if env else "")
        lines.append(f"{where}: {msg}")
    return "invalid settings:\n  " + "\n  ".join(lines)
