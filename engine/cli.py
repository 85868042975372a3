"""`python -m engine <command>`: run, demo, backtest, sweep, config, status, halt, resume.

Errors are one clear line on stderr (`--verbose` for the traceback). Exit codes: 0 success,
1 the command ran but its check failed (e.g. a halt the broker did not confirm), 2 bad usage
or settings, 3 the engine could not run (log locked, broker unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from engine.config import Settings, SettingsError, load_settings
from engine.marketdata.types import DataFileError
from engine.strategies.base import StrategyConfigError
from replay.display import money, qty

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


class UsageError(Exception):
    pass


# --- logging -------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        seq = getattr(record, "seq", None)
        if seq is not None:
            out["seq"] = seq
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seq = getattr(record, "seq", None)
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        return base + (f" [seq {seq}]" if seq is not None else "")


def setup_logging(settings: Settings | None, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings is not None and settings.json_logs
                         else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = "DEBUG" if verbose else (settings.log_level if settings else "WARNING")
    root.setLevel(level)
    for noisy in ("websockets", "urllib3", "alpaca", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


# --- helpers ---------------------------------------------------------------------------------


def _money(d: Decimal | None) -> str:
    return money(d)


def _qty(d: Decimal) -> str:
    return qty(d)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"bad time {value!r}: use ISO format, e.g. 2026-10-28 or "
                         "2026-10-28T13:30:00Z") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--param {p!r}: use key=value")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def next_run_log(settings: Settings, stem: str) -> Path:
    """A fresh log for a replayed run: each demo/replay run keeps its own log."""
    runs = settings.data_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    taken = [int(p.stem.rsplit("-", 1)[-1]) for p in runs.glob(f"{stem}-*.sqlite")
             if p.stem.rsplit("-", 1)[-1].isdigit()]
    return runs / f"{stem}-{max(taken, default=0) + 1:04d}.sqlite"


# --- commands --------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    data = settings.public_dict()
    data["effective"] = {"log_path": str(settings.log_path), "mode": settings.mode}
    print(json.dumps(data, indent=2, default=str))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from engine.service import run_service
    from engine.sources import FILE_SOURCES

    if settings.broker == "alpaca" and not settings.alpaca.paper:
        print("*** LIVE TRADING: orders go to Alpaca with REAL MONEY "
              "(account size decides the small-account guards) ***", file=sys.stderr)
    replay = settings.broker == "simulated" and settings.data.source in FILE_SOURCES
    if replay and "log_level" not in settings.model_fields_set and not args.verbose:
        # An accelerated replay trades hundreds of times a second: its story is the summary
        # table at the end, not a line per fill.
        logging.getLogger().setLevel(logging.WARNING)
    if replay and settings.log_file is None:
        stem = "demo" if settings.data.source == "sample" else f"paper-{settings.data.source}"
        settings = settings.model_copy(update={"log_file": next_run_log(settings, stem)})
    print(f"MiniQuantDesk {settings.mode}: log {settings.log_path}", file=sys.stderr)
    bar = None
    if replay and sys.stderr.isatty():  # a long accelerated replay: show how far it is
        from engine.marketdata.assets import sample_bars_path
        from replay.backtest import count_rows
        from replay.progress import Progress

        bar = Progress()
        path = sample_bars_path() if settings.data.source == "sample" else settings.data.path
        bar.add("bars", "replay", count_rows(path) if path is not None and
                settings.data.source != "log" else None)
    try:
        result = anyio.run(functools.partial(
            run_service, settings,
            progress=(lambda n: bar.update("bars", n)) if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
    print(asyncio.run(summary_text(settings.log_path, settings, result.reason)))
    return EXIT_OK if result.reason in ("clean", "data finished", "signal") else EXIT_CHECK_FAILED


async def summary_text(log_path: Path, settings: Settings, reason: str) -> str:
    from collections import Counter

    from events.catalogue import AccountSnapshot, FillReceived, RiskRejected
    from events.store import LogReader
    from projections.protection import describe, protection_of
    from projections.state import rebuild

    async with LogReader(log_path) as r:
        proj = await rebuild(r)
        first_equity: Decimal | None = None
        fills = 0
        fees = Decimal(0)
        async for _, e in r.read(where="type IN ('account_snapshot', 'fill')"):
            if isinstance(e, AccountSnapshot) and first_equity is None:
                first_equity = e.equity
            elif isinstance(e, FillReceived):
                fills += 1
                fees += e.fee
    equity = proj.equity()
    rows = []
    stops = [o for o in proj.orders.orders.values() if o.protective and o.is_stop]
    for s, p in sorted(proj.positions.positions.items()):
        # An open position shows the stop protecting it now; a flat one its history.
        mine = [o for o in stops if o.symbol == s]
        stop = describe(protection_of(proj, s)) if p.qty else (
            f"{len(mine)} placed, {sum(1 for o in mine if o.filled_qty > 0)} hit" if mine else "-")
        rows.append([s, _qty(p.qty), _money(p.avg_cost if p.qty else None), stop,
                     _money(p.realized_pnl), _money(p.fees)])
    triggered = sum(1 for o in stops if o.filled_qty > 0)
    legs = sum(1 for o in stops if o.parent_id is not None)
    decisions = list(proj.risk.decisions.values())
    rejected = Counter(r.code for d in decisions if isinstance(d, RiskRejected) for r in d.reasons)
    change = equity - first_equity if first_equity else None
    pct = f" ({change / first_equity:+.2%})" if first_equity and change is not None else ""
    lines = [
        "",
        f"run finished: {reason}",
        f"equity      {_money(first_equity)} -> {_money(equity)}  change {_money(change)}{pct}",
        f"decisions   {len(decisions)} ({len(decisions) - sum(1 for d in decisions if isinstance(d, RiskRejected))} approved); "
        f"fills {fills}; fees {_money(fees)}; anomalies {len(proj.orders.anomalies)}",
        f"trading     {proj.risk.trading_state}; kill switch {proj.risk.kill_switch}",
    ]
    if rejected:
        lines.append("rejections  " + ", ".join(f"{k} x{v}" for k, v in rejected.most_common()))
    if stops:
        lines.append(f"protection  {len(stops)} stops at the broker ({legs} as legs of their "
                     f"entry); {triggered} triggered")
    if rows:
        lines += ["", table(["symbol", "qty", "avg cost", "stop", "realized P&L", "fees"],
                            rows)]
    lines += ["", f"event log   {log_path}",
              f"inspect     python -m engine.replay {log_path} timeline --limit 50"]
    return "\n".join(lines)


# Flags of backtest and sweep for the common knobs: flag -> (settings section, key). Values
# are validated like the settings they set, so a bad one is exit 2 with one line.
SIM_FLAGS = {"cash": "cash", "fee_per_share": "fee_per_share", "fee_bps": "fee_bps",
             "min_fee": "min_fee", "slippage_bps": "slippage_bps",
             "volume_participation": "volume_participation", "zero_volume": "zero_volume"}
DATA_FLAGS = {"assets": "assets_path", "tz": "timezone", "timeframe": "timeframe"}


def _flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_flag(model: type[Any], key: str, dest: str, value: Any) -> None:
    from pydantic import ValidationError

    if key not in model.model_fields:
        raise UsageError(f"{_flag_name(dest)}: this build has no setting {key} for it")
    try:
        model.model_validate({key: value})
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        raise UsageError(f"{_flag_name(dest)} {value!r}: "
                         f"{err['msg'].removeprefix('Value error, ')}") from None


def run_overrides(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Settings overrides from the backtest/sweep flags (validated one by one)."""
    from engine.config import DataSettings, SimSettings

    sim: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for dest, key in SIM_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            _check_flag(SimSettings, key, dest, value)
            sim[key] = value
    for dest, key in DATA_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            if dest == "assets" and not Path(value).is_file():
                raise UsageError(f"--assets {value}: no such file")
            if dest == "tz":
                from engine.marketdata.parse import resolve_tz

                try:
                    resolve_tz(value)
                except ValueError as e:
                    raise UsageError(f"--tz: {e}") from None
            _check_flag(DataSettings, key, dest, value)
            data[key] = value
    out: dict[str, Any] = {"broker": "simulated"}
    if sim:
        out["sim"] = sim
    if data:
        out["data"] = data
    return out


def strategy_params(args: argparse.Namespace) -> dict[str, Any]:
    params = parse_params(getattr(args, "param", []) or [])
    if getattr(args, "time_in_force", None):
        params["time_in_force"] = args.time_in_force
    return params


def check_strategy(name: str, params: dict[str, Any]) -> None:
    """Unknown strategies and bad parameters are usage errors, found before any work."""
    from engine.strategies.registry import default_registry

    default_registry().create(name, params)


def quiet_unless_verbose(args: argparse.Namespace, settings: Settings) -> None:
    """A backtest books thousands of fills: its story is the report, not a line per fill
    (`log_level` is the service's; --verbose shows everything here)."""
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)


def backtest_stem(strategy: str, paths: Sequence[Path]) -> str:
    """The default name of a backtest's log and report: the strategy and what it ran on.
    Several files are named by their stems (up to three) or else their folder; resolve() so
    files given relative to the working directory still have a folder name."""
    source = paths[0].stem if len(paths) == 1 else (
        "+".join(p.stem for p in paths) if len(paths) <= 3
        else paths[0].resolve().parent.name)
    return f"{strategy}-{source}"


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from replay import outcome
    from replay.backtest import count_rows, data_paths, run_backtest, stuck_orders_line
    from replay.progress import Progress

    paths = data_paths([Path(d) for d in args.data])
    for d in paths:
        if not d.exists():
            raise UsageError(f"--data {d}: no such file")
    params = strategy_params(args)
    check_strategy(args.strategy, params)
    overrides = run_overrides(args, settings)
    overrides["strategies"] = ({"name": args.strategy, "params": params},)
    settings = load_settings(**{**_settings_overrides(args), **overrides})
    quiet_unless_verbose(args, settings)
    out_dir = Path(args.out) if args.out else settings.data_dir / "backtests"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = backtest_stem(args.strategy, paths)
    log_path = next_free(out_dir / f"{stem}.sqlite")
    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    bar = Progress()
    bar.add("bars", "backtest", count_rows(paths) if bar.live else None)

    def notice(line: str) -> None:
        print(f"note: {line}", file=sys.stderr)

    try:
        result = asyncio.run(run_backtest(
            settings, paths, log_path, start=parse_time(args.from_) if args.from_ else None,
            end=parse_time(args.to) if args.to else None, symbols=symbols,
            progress=lambda n: bar.update("bars", n), notice=notice, symbol=args.symbol,
            progress_every=1_000 if bar.live else 10_000))
    finally:
        bar.close()
    from replay import plots
    from replay import report as rep

    report = rep.build_report(result.log_path)
    refused = asyncio.run(outcome.refusals(result.log_path))
    report_dir = log_path.with_suffix("")
    report_dir.mkdir(exist_ok=True)
    doc = json.loads(report.to_json())
    doc["run"] = {"refusals": refused.to_builtins(),
                  "open_at_end": [{"client_order_id": o.client_order_id, "symbol": o.symbol,
                                   "side": o.side, "status": o.status,
                                   "qty": None if o.qty is None else str(o.qty),
                                   "notional": None if o.notional is None else str(o.notional),
                                   "last_bar": o.last_bar.isoformat() if o.last_bar else None}
                                  for o in result.open_orders],
                  "default_assets": result.default_assets, "interval": result.interval,
                  "refused_rows": result.refused_rows}
    (report_dir / "report.json").write_text(json.dumps(doc, indent=2))
    written = []
    if not args.no_plots:
        written = [str(p) for p in plots.write_plots(report, report_dir)]
        written.append(str(plots.write_html(report, report_dir)))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(rep.render_table(report))
        print()
        for line in (refused.line(), stuck_orders_line(result.open_orders),
                     result.refused_rows_line()):
            if line:
                print(line)
        if result.bars and not refused.intents:
            print(f"the strategy sent no orders on {result.bars:,} bars (no signal, or no "
                  "size it could afford: see its parameters and --cash)")
        print(f"bars {result.bars:,}" + (f" ({result.interval})" if result.interval else "")
              + f"; log {result.log_path}; report {report_dir / 'report.json'}")
        for w in written:
            print(f"plot {w}")
    if refused.mostly_refused:
        print(f"error: {refused.verdict()}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


def next_free(path: Path) -> Path:
    if not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.stem}-{n}{path.suffix}").exists():
        n += 1
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from replay.backtest import data_paths
    from replay.progress import Progress
    from replay.sweep import parse_grid, points, run_sweep, sweep_table

    try:
        grid = parse_grid(args.grid)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.processes is not None and args.processes < 1:
        raise UsageError(f"--processes {args.processes}: must be at least 1")
    paths = data_paths([Path(d) for d in args.data])
    for d in paths:
        if not d.exists():
            raise UsageError(f"--data {d}: no such file")
    base = strategy_params(args)
    grid_points = points(grid)
    for point in grid_points:  # before any worker starts: a bad point is a usage error
        check_strategy(args.strategy, {**base, **point})
    overrides = run_overrides(args, settings)
    overrides["strategies"] = ({"name": args.strategy, "params": base},)
    settings = load_settings(**{**_settings_overrides(args), **overrides})
    quiet_unless_verbose(args, settings)
    # Several files relative to the working directory have no parent name: name them by
    # their stems instead, so the default name never ends in a bare dash.
    source = paths[0].stem if len(paths) == 1 else (
        paths[0].resolve().parent.name if paths[0].is_dir() or len(paths) > 3
        else "+".join(p.stem for p in paths))
    stem = f"{args.strategy}-{source}"
    out_dir = Path(args.out) if args.out else next_free(settings.data_dir / "sweeps" / stem)
    bar = Progress()
    if bar.live:
        bar.add("all", "sweep", len(grid_points))
        for i, point in enumerate(grid_points):
            bar.add(f"p{i}", "  " + ", ".join(f"{k}={v}" for k, v in point.items()), None)

    def on_progress(i: int, bars: int) -> None:
        bar.update(f"p{i}", bars)

    def on_done(i: int, row: dict[str, Any]) -> None:
        bar.advance("all")
        bar.update(f"p{i}", row.get("bars") or 0, total=row.get("bars") or 1)

    try:
        rows = run_sweep(settings, args.strategy, grid, paths, out_dir,
                         processes=args.processes, use_ray=args.ray,
                         start=parse_time(args.from_) if args.from_ else None,
                         end=parse_time(args.to) if args.to else None, base_params=base,
                         on_progress=on_progress if bar.live else None, on_done=on_done,
                         verbose=args.verbose)
    finally:
        bar.close(f"sweep: {len(grid_points)} point(s) of {args.strategy}")
    print(json.dumps(rows, default=str) if args.json else sweep_table(rows))
    if not args.json:
        print(f"\nlogs and reports in {out_dir}")
    return EXIT_OK


async def status_data(settings: Settings) -> dict[str, Any]:
    from events.catalogue import OrderIntent  # noqa: F401  (catalogue import for decoding)
    from events.store import LogReader
    from projections.calendar import trading_day
    from projections.protection import protection_of
    from projections.risk import day_trades_in_window, realized_in_week, realized_on
    from projections.state import rebuild

    path, why = status_log(settings)
    async with LogReader(path) as r:
        proj = await rebuild(r)
    now = datetime.now(UTC)  # the operator's "today": this is a CLI, not engine code
    today = trading_day(now)
    limits = settings.risk
    marks = {s: b.close for s, b in proj.market.last_bar.items()}
    equity = proj.equity()
    runs = proj.runs
    current = runs.runs.get(runs.current) if runs.current else None
    last_run = max(runs.runs.values(), key=lambda r: r.started_seq, default=None)
    return {
        "log": str(path), "log_chosen": why, "last_seq": proj.last_seq,
        "run": {"id": (current or last_run).run_id if (current or last_run) else None,  # type: ignore[union-attr]
                "running": current is not None,
                "ended": last_run.ended if last_run and current is None else None},
        "trading_state": proj.risk.trading_state, "reason": proj.risk.state_reason,
        "kill_switch": proj.risk.kill_switch,
        "kill_switch_note": _kill_note(proj.risk.kill_switch, proj.risk.kill_flatten),
        "positions": [{"symbol": s, "qty": str(p.qty), "avg_cost": str(p.avg_cost),
                       "realized_pnl": str(p.realized_pnl),
                       "last": str(marks[s]) if s in marks else None,
                       "protection": _protection_json(protection_of(proj, s))}
                      for s, p in sorted(proj.positions.positions.items()) if p.qty],
        "open_orders": [{"client_order_id": o.client_order_id, "symbol": o.symbol,
                         "side": o.side, "qty": str(o.qty) if o.qty is not None else None,
                         "status": o.status.value, "filled_qty": str(o.filled_qty),
                         "type": o.order_type,
                         "stop_price": str(o.stop_price) if o.stop_price is not None else None,
                         "parent": o.parent_id, "leg": o.leg_role or None}
                        for o in (proj.orders.orders[c] for c in sorted(proj.orders.open_ids))],
        "pnl": {"today": str(realized_on(proj.risk, today)),
                "today_limit": f"{limits.daily_limit(equity):.2f}" if equity > 0 else None,
                "week": str(realized_in_week(proj.risk, today)),
                "week_limit": f"{limits.weekly_limit(equity):.2f}" if equity > 0 else None},
        "day_trades": {"used": day_trades_in_window(proj.risk, today),
                       "mode": limits.day_trade_mode,
                       "limit": limits.day_trade_limit if limits.day_trade_mode == "limit" else None},
        "account": {"equity": str(equity), "cash": str(proj.account.cash_now)},
        "anomalies": len(proj.orders.anomalies),
    }


def _kill_note(state: str, flatten: bool) -> str:
    """Plain words for a halt the broker has not confirmed yet."""
    if state != "engaged":
        return ""
    what = "no open orders and flat positions" if flatten else "no open orders"
    return (f"HALT ENGAGED BUT NOT VERIFIED: the broker has not yet shown {what}; "
            "the service keeps cancelling" + (" and flattening" if flatten else "")
            + " until it does (at every start too)")


def _protection_json(p: Any) -> dict[str, Any]:
    return {"where": p.where, "stop": str(p.stop) if p.stop is not None else None,
            "distance": str(p.distance) if p.distance is not None else None,
            "covered": str(p.covered), "orders": list(p.orders)}


def _protection_cell(x: dict[str, Any]) -> str:
    if x["stop"] is None:
        return "NONE"
    where = "live at the broker" if x["where"] == "broker" else "engine-side only"
    covered = "" if Decimal(x["covered"]) >= abs(Decimal(x["qty"])) else f", covers {x['covered']}"
    return f"{Decimal(x['stop']):.2f} ({Decimal(x['distance']):.2f} away, {where}{covered})"


def run_logs(settings: Settings) -> list[Path]:
    """Every run's log under the data dir: the service's and the demo's/replays' (runs/)."""
    found = [settings.data_dir / "events.sqlite", *(settings.data_dir / "runs").glob("*.sqlite")]
    return [p for p in found if p.is_file()]


def _last_written(p: Path) -> float:
    wal = p.with_name(p.name + "-wal")
    return max(p.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)


def status_log(settings: Settings) -> tuple[Path, str]:
    """The log `status` reads, and why that one: the one given (--log / MQD_LOG_FILE), else
    the most recently written run under the data dir (the service's or the demo's)."""
    if settings.log_file is not None:
        if not settings.log_file.exists():
            raise UsageError(f"no event log at {settings.log_file}")
        return settings.log_file, "given"
    logs = run_logs(settings)
    if not logs:
        raise UsageError(f"no event log under {settings.data_dir} (has the engine run? "
                         "`python -m engine demo` makes one; or pass --log)")
    return max(logs, key=lambda p: (_last_written(p), str(p))), "most recent run"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    data = asyncio.run(status_data(settings))
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    run = data["run"]
    if data["log_chosen"] != "given":
        print(f"log       {data['log']} ({data['log_chosen']}; --log to choose another)")
    print(f"run       {run['id'] or '-'} "
          + ("(running)" if run["running"] else f"(ended: {run['ended'] or 'never started'})"))
    print(f"trading   {data['trading_state']} ({data['reason']}); kill switch {data['kill_switch']}")
    if data["kill_switch_note"]:
        print(f"          {data['kill_switch_note']}")
    p = data["pnl"]
    print(f"P&L       today {money(p['today'])} (limit -{money(p['today_limit'])}); "
          f"week {money(p['week'])} (limit -{money(p['week_limit'])})")
    dt = data["day_trades"]
    print(f"day trades {dt['used']} in 5 business days (guard: {dt['mode']}"
          + (f", limit {dt['limit']})" if dt["limit"] is not None else ")"))
    print(f"account   equity {money(data['account']['equity'])}; "
          f"cash {money(data['account']['cash'])}")
    if data["positions"]:
        print()
        print(table(["symbol", "qty", "avg cost", "last", "realized", "stop"],
                    [[x["symbol"], qty(x["qty"]), money(x["avg_cost"]), money(x["last"]),
                      money(x["realized_pnl"]),
                      _protection_cell({**x["protection"], "qty": x["qty"]})]
                     for x in data["positions"]]))
    if data["open_orders"]:
        print()
        print(table(["client order id", "symbol", "side", "type", "qty", "stop", "status",
                     "filled"],
                    [[o["client_order_id"] + (f" ({o['leg']} of {o['parent'][:12]}...)"
                                              if o["leg"] else ""),
                      o["symbol"], o["side"], o["type"], qty(o["qty"]), o["stop_price"] or "-",
                      o["status"], qty(o["filled_qty"])] for o in data["open_orders"]]))
    print(f"\nlog {data['log']} (seq {data['last_seq']}); anomalies {data['anomalies']}")
    return EXIT_OK


def _send_control(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall((json.dumps(request) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    result: dict[str, Any] = json.loads(buf)
    return result


async def _offline_command(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """No service is running: record the command in the log; the next start acts on it
    (a halted engine cancels at the broker during recovery and stays halted)."""
    from events.catalogue import KillSwitchEngaged, KillSwitchReleased
    from events.store import EventLog

    now = datetime.now(UTC)  # a CLI timestamp for an operator action
    async with EventLog.open(settings.log_path, synchronous=settings.synchronous) as log:
        if request["cmd"] == "halt":
            seq = await log.append(KillSwitchEngaged(ts=now, actor=request["actor"],
                                                     reason=request["reason"],
                                                     flatten=request.get("flatten", False)))
        else:
            seq = await log.append(KillSwitchReleased(ts=now, actor=request["actor"],
                                                      reason=request["reason"]))
    return {"ok": True, "offline": True, "seq": seq,
            "note": "no running service: recorded in the log; applied at the next start"}


def cmd_halt_resume(args: argparse.Namespace, settings: Settings) -> int:
    from engine.service import control_socket_path
    from events.store import writer_is_running

    request = {"cmd": args.command, "actor": args.actor, "reason": args.reason}
    if args.command == "halt":
        request["flatten"] = args.flatten
    sock = control_socket_path(settings)
    if writer_is_running(settings.log_path):
        if not sock.exists():
            raise RuntimeError(f"the engine is running but its control socket {sock} is missing")
        answer = _send_control(sock, request, timeout=args.timeout)
    else:
        if not settings.log_path.exists():
            raise UsageError(f"no event log at {settings.log_path}")
        answer = asyncio.run(_offline_command(settings, request))
    if args.json:
        print(json.dumps(answer))
    else:
        print(", ".join(f"{k}={v}" for k, v in answer.items()))
    return EXIT_OK if answer.get("ok") else EXIT_CHECK_FAILED


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from engine.dashboard.security import BindError
    from engine.dashboard.server import DashboardStartError, run_dashboard
    from engine.dashboard.setup import announce_token, build_config
    from engine.service import control_socket_path

    log_path, chosen = status_log(settings)  # --log, else the most recent run's
    settings = settings.model_copy(update={"log_file": log_path})
    bind = args.bind or settings.dashboard.bind
    try:
        cfg, host, port = build_config(
            log_path=log_path, socket_path=control_socket_path(settings),
            data_dir=settings.data_dir, limits=settings.risk, bind=bind,
            allow_remote=args.allow_remote or settings.dashboard.allow_remote)
    except BindError as e:
        raise UsageError(str(e)) from None
    announce_token(cfg.token)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            try:
                served = await tg.start(run_dashboard, cfg, host, port)
            except DashboardStartError as e:
                raise UsageError(str(e)) from None
            print(f"dashboard {served.url} (log {log_path}, {chosen}); Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(serve)
    return EXIT_OK


# --- parser ----------------------------------------------------------------------------------


def _global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after the command's name. On the
    subcommands their default is SUPPRESS, so a value given before the name is kept."""
    d: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show tracebacks, debug logs and every fill", **d)
    p.add_argument("--config", help="TOML settings file (default: mqd.toml, or $MQD_CONFIG)",
                   **d)
    p.add_argument("--data-dir", help="where logs and reports go (default: mqd-data)", **d)
    p.add_argument("--log", help="event log path (default: <data-dir>/events.sqlite; status: "
                                 "the most recent run's)", **d)


def _run_flags(p: argparse.ArgumentParser) -> None:
    """The knobs of a backtest (and of every point of a sweep)."""
    p.add_argument("--strategy", required=True)
    p.add_argument("--data", required=True, action="append",
                   help=".csv/.parquet bar file(s) in any row order, a directory of them, or "
                        "an event log (repeatable)")
    p.add_argument("--from", dest="from_", help="first bar start (ISO, UTC if no offset)")
    p.add_argument("--to", help="stop before this bar start")
    p.add_argument("--cash", help="starting cash of the simulated account (dollar risk limits "
                                  "not set otherwise scale with it)")
    p.add_argument("--param", action="append", default=[], help="strategy parameter key=value")
    p.add_argument("--time-in-force", choices=("day", "gtc"),
                   help="the strategy's orders' time in force (strategy parameter)")
    p.add_argument("--fee-per-share", help="$ per share filled")
    p.add_argument("--fee-bps", help="fee in basis points of the fill's notional")
    p.add_argument("--min-fee", help="$ at least per fill")
    p.add_argument("--slippage-bps", help="market fills move this much against the order")
    p.add_argument("--volume-participation",
                   help="most of a bar's volume one order may fill (0-1]")
    p.add_argument("--zero-volume", choices=("no_fill", "fill"),
                   help="a bar with volume 0 fills nothing, or fills at its open "
                        "(sim.zero_volume)")
    p.add_argument("--assets", help="symbol eligibility CSV (symbol,tradable,fractionable"
                                    "[,shortable]); unlisted symbols trade as whole shares")
    p.add_argument("--tz", help="time zone of naive timestamps in the bar files (IANA name)")
    p.add_argument("--timeframe", choices=("1m", "5m", "15m", "30m", "1h", "1d"),
                   help="bar interval (default: inferred from the rows; 1d: one bar per "
                        "trading session)")
    p.add_argument("--symbol", help="symbol of a file without a symbol column (default: "
                                    "from its file name)")
    p.add_argument("--out", help="directory for the log and report")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    _global_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", metavar="command")

    def command(name: str, helptext: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=helptext, parents=[common])

    runp = command("run", "run the engine (no settings: the demo on sample data)")
    demop = command("demo", "the embedded demo: $200 simulated account, sample data, VWAP")
    for rp in (runp, demop):
        rp.add_argument("--pace", type=float, default=None, metavar="SECONDS",
                        help="wall-clock seconds between replayed bars, to watch it trade")
        rp.add_argument("--dashboard", action="store_true",
                        help="serve the dashboard (dashboard.bind, default 127.0.0.1:8765)")
    c = command("config", "print the effective settings (secrets masked)")
    c.add_argument("--json", action="store_true", help="(always JSON)")
    b = command("backtest", "replay bars or a log through the engine")
    _run_flags(b)
    b.add_argument("--symbols", help="comma-separated symbols to trade")
    b.add_argument("--no-plots", action="store_true")
    w = command("sweep", "backtest a grid of strategy parameters in parallel")
    _run_flags(w)
    w.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable)")
    w.add_argument("--processes", type=int, default=None)
    w.add_argument("--ray", action="store_true", help="run on a Ray cluster (pip install .[ray])")
    s = command("status", "trading state, positions, orders, P&L vs limits")
    s.add_argument("--json", action="store_true")
    d = command("dashboard", "the operator's dashboard in the browser, on any log")
    d.add_argument("--bind", help="HOST:PORT (default: dashboard.bind, 127.0.0.1:8765)")
    d.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback bind (every request then needs the token)")
    for name, helptext in (("halt", "engage the kill switch"), ("resume", "release it")):
        h = command(name, helptext)
        h.add_argument("--reason", required=True)
        h.add_argument("--actor", default="operator")
        h.add_argument("--json", action="store_true")
        h.add_argument("--timeout", type=float, default=60.0)
        if name == "halt":
            h.add_argument("--flatten", action="store_true", help="also close every position")
    return p


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        out["data_dir"] = Path(args.data_dir)
    if getattr(args, "log", None):
        out["log_file"] = Path(args.log)
    return out


def _run_overrides(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """--pace / --dashboard of run and demo, merged over the settings they would load."""
    out: dict[str, Any] = {}
    if getattr(args, "pace", None) is not None or getattr(args, "dashboard", False):
        base = load_settings(**overrides)
        if args.pace is not None:
            if args.pace < 0:
                raise UsageError("--pace must be >= 0 seconds")
            out["data"] = base.data.model_copy(update={"pace_s": args.pace})
        if args.dashboard:
            out["dashboard"] = base.dashboard.model_copy(update={"enabled": True})
    return out


COMMANDS = {"run": cmd_run, "demo": cmd_run, "config": cmd_config, "backtest": cmd_backtest,
            "sweep": cmd_sweep, "status": cmd_status, "halt": cmd_halt_resume,
            "resume": cmd_halt_resume, "dashboard": cmd_dashboard}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    settings: Settings | None = None
    try:
        if args.config:
            import os

            os.environ["MQD_CONFIG"] = args.config
        overrides = _settings_overrides(args)
        if command == "demo":
            # The demo ignores configured brokers/data: it is always the embedded default.
            overrides.update(broker="simulated", data={"source": "sample"})
        overrides.update(_run_overrides(args, overrides))
        settings = load_settings(**overrides)
        setup_logging(settings, args.verbose)
        return COMMANDS[command](args, settings)
    except (SettingsError, UsageError, StrategyConfigError, DataFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line; --verbose for the rest
        if args.verbose:
            traceback.print_exc()
        leaf = _leaf(e)
        if isinstance(leaf, (SettingsError, UsageError, StrategyConfigError, DataFileError)):
            print(f"error: {leaf}", file=sys.stderr)
            return EXIT_USAGE
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME


def _leaf(e: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups from task groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _one_line(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return _one_line(e.exceptions[0])
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
