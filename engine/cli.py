"""`python -m engine <command>`: run, demo, backtest, sweep, config, status, halt, resume.

Errors are one clear line on stderr (`--verbose` for the traceback). Exit codes: 0 success,
1 the command ran but its check failed (e.g. a halt the broker did not confirm), 2 bad usage
or settings, 3 the engine could not run (log locked, broker unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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
from engine.strategies.base import StrategyConfigError

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
    return "-" if d is None else f"{d:,.2f}"


def _qty(d: Decimal) -> str:
    s = format(d.normalize(), "f")
    return s if len(s) < 14 else f"{d:.6f}"


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
    result = anyio.run(run_service, settings)
    print(asyncio.run(summary_text(settings.log_path, settings, result.reason)))
    return EXIT_OK if result.reason in ("clean", "data finished", "signal") else EXIT_CHECK_FAILED


async def summary_text(log_path: Path, settings: Settings, reason: str) -> str:
    from collections import Counter

    from events.catalogue import AccountSnapshot, FillReceived, RiskRejected
    from events.store import LogReader
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
    for s, p in sorted(proj.positions.positions.items()):
        rows.append([s, _qty(p.qty), _money(p.avg_cost if p.qty else None),
                     _money(p.realized_pnl), _money(p.fees)])
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
    if rows:
        lines += ["", table(["symbol", "qty", "avg cost", "realized P&L", "fees"], rows)]
    lines += ["", f"event log   {log_path}",
              f"inspect     python -m engine.replay {log_path} timeline --limit 50"]
    return "\n".join(lines)


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from replay.backtest import count_rows, run_backtest, stderr_progress

    data = Path(args.data)
    if not data.exists():
        raise UsageError(f"--data {data}: no such file")
    overrides: dict[str, Any] = {}
    if args.cash is not None:
        overrides["sim"] = settings.sim.model_copy(update={"cash": Decimal(args.cash)})
    overrides["strategies"] = ({"name": args.strategy, "params": parse_params(args.param)},)
    settings = load_settings(**{**_settings_overrides(args), **overrides,
                                "broker": "simulated"})
    out_dir = Path(args.out) if args.out else settings.data_dir / "backtests"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{args.strategy}-{data.stem}"
    log_path = next_free(out_dir / f"{stem}.sqlite")
    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    result = asyncio.run(run_backtest(
        settings, data, log_path, start=parse_time(args.from_) if args.from_ else None,
        end=parse_time(args.to) if args.to else None, symbols=symbols,
        progress=stderr_progress(count_rows(data))))
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    from replay import plots
    from replay import report as rep

    report = rep.build_report(result.log_path)
    report_dir = log_path.with_suffix("")
    report_dir.mkdir(exist_ok=True)
    (report_dir / "report.json").write_text(report.to_json())
    written = []
    if not args.no_plots:
        written = [str(p) for p in plots.write_plots(report, report_dir)]
        written.append(str(plots.write_html(report, report_dir)))
    if args.json:
        print(report.to_json())
    else:
        print(rep.render_table(report))
        print(f"\nbars {result.bars:,}; log {result.log_path}; report {report_dir / 'report.json'}")
        for w in written:
            print(f"plot {w}")
    return EXIT_OK


def next_free(path: Path) -> Path:
    if not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.stem}-{n}{path.suffix}").exists():
        n += 1
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from replay.sweep import parse_grid, run_sweep, sweep_table

    grid = parse_grid(args.grid)
    data = Path(args.data)
    if not data.exists():
        raise UsageError(f"--data {data}: no such file")
    out_dir = Path(args.out) if args.out else settings.data_dir / "sweeps"
    rows = run_sweep(settings, args.strategy, grid, data, out_dir, processes=args.processes,
                     use_ray=args.ray, start=parse_time(args.from_) if args.from_ else None,
                     end=parse_time(args.to) if args.to else None)
    print(json.dumps(rows, default=str) if args.json else sweep_table(rows))
    return EXIT_OK


async def status_data(settings: Settings) -> dict[str, Any]:
    from events.catalogue import OrderIntent  # noqa: F401  (catalogue import for decoding)
    from events.store import LogReader
    from projections.calendar import trading_day
    from projections.risk import day_trades_in_window, realized_in_week, realized_on
    from projections.state import rebuild

    path = settings.log_path
    if not path.exists():
        raise UsageError(f"no event log at {path} (has the engine run? see --log / MQD_LOG_FILE)")
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
        "log": str(path), "last_seq": proj.last_seq,
        "run": {"id": (current or last_run).run_id if (current or last_run) else None,  # type: ignore[union-attr]
                "running": current is not None,
                "ended": last_run.ended if last_run and current is None else None},
        "trading_state": proj.risk.trading_state, "reason": proj.risk.state_reason,
        "kill_switch": proj.risk.kill_switch,
        "kill_switch_note": _kill_note(proj.risk.kill_switch, proj.risk.kill_flatten),
        "positions": [{"symbol": s, "qty": str(p.qty), "avg_cost": str(p.avg_cost),
                       "realized_pnl": str(p.realized_pnl),
                       "last": str(marks[s]) if s in marks else None}
                      for s, p in sorted(proj.positions.positions.items()) if p.qty],
        "open_orders": [{"client_order_id": o.client_order_id, "symbol": o.symbol,
                         "side": o.side, "qty": str(o.qty) if o.qty is not None else None,
                         "status": o.status.value, "filled_qty": str(o.filled_qty)}
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


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    data = asyncio.run(status_data(settings))
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    run = data["run"]
    print(f"run       {run['id'] or '-'} "
          + ("(running)" if run["running"] else f"(ended: {run['ended'] or 'never started'})"))
    print(f"trading   {data['trading_state']} ({data['reason']}); kill switch {data['kill_switch']}")
    if data["kill_switch_note"]:
        print(f"          {data['kill_switch_note']}")
    p = data["pnl"]
    print(f"P&L       today {p['today']} (limit -{p['today_limit']}); "
          f"week {p['week']} (limit -{p['week_limit']})")
    dt = data["day_trades"]
    print(f"day trades {dt['used']} in 5 business days (guard: {dt['mode']}"
          + (f", limit {dt['limit']})" if dt["limit"] is not None else ")"))
    print(f"account   equity {data['account']['equity']}; cash {data['account']['cash']}")
    if data["positions"]:
        print()
        print(table(["symbol", "qty", "avg cost", "last", "realized"],
                    [[x["symbol"], x["qty"], x["avg_cost"], x["last"] or "-", x["realized_pnl"]]
                     for x in data["positions"]]))
    if data["open_orders"]:
        print()
        print(table(["client order id", "symbol", "side", "qty", "status", "filled"],
                    [[o["client_order_id"], o["symbol"], o["side"], o["qty"], o["status"],
                      o["filled_qty"]] for o in data["open_orders"]]))
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


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--config", help="TOML settings file (default: mqd.toml, or $MQD_CONFIG)")
    p.add_argument("--data-dir", help="where logs and reports go (default: mqd-data)")
    p.add_argument("--log", help="event log path (default: <data-dir>/events.sqlite)")
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.add_parser("run", help="run the engine (no settings: the demo on sample data)")
    sub.add_parser("demo", help="the embedded demo: $200 simulated account, sample data, VWAP")
    c = sub.add_parser("config", help="print the effective settings (secrets masked)")
    c.add_argument("--json", action="store_true", help="(always JSON)")
    b = sub.add_parser("backtest", help="replay bars or a log through the engine")
    b.add_argument("--strategy", required=True)
    b.add_argument("--data", required=True, help=".csv, .parquet or an event log")
    b.add_argument("--from", dest="from_", help="first bar start (ISO, UTC if no offset)")
    b.add_argument("--to", help="stop before this bar start")
    b.add_argument("--cash", help="starting cash of the simulated account")
    b.add_argument("--param", action="append", default=[], help="strategy parameter key=value")
    b.add_argument("--symbols", help="comma-separated symbols to trade")
    b.add_argument("--out", help="directory for the log and report")
    b.add_argument("--json", action="store_true")
    b.add_argument("--no-plots", action="store_true")
    w = sub.add_parser("sweep", help="backtest a grid of strategy parameters in parallel")
    w.add_argument("--strategy", required=True)
    w.add_argument("--data", required=True)
    w.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable)")
    w.add_argument("--from", dest="from_")
    w.add_argument("--to")
    w.add_argument("--processes", type=int, default=None)
    w.add_argument("--ray", action="store_true", help="run on a Ray cluster (pip install .[ray])")
    w.add_argument("--out")
    w.add_argument("--json", action="store_true")
    s = sub.add_parser("status", help="trading state, positions, orders, P&L vs limits")
    s.add_argument("--json", action="store_true")
    for name, helptext in (("halt", "engage the kill switch"), ("resume", "release it")):
        h = sub.add_parser(name, help=helptext)
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


COMMANDS = {"run": cmd_run, "demo": cmd_run, "config": cmd_config, "backtest": cmd_backtest,
            "sweep": cmd_sweep, "status": cmd_status, "halt": cmd_halt_resume,
            "resume": cmd_halt_resume}


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
        settings = load_settings(**overrides)
        setup_logging(settings, args.verbose)
        return COMMANDS[command](args, settings)
    except (SettingsError, UsageError, StrategyConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line; --verbose for the rest
        if args.verbose:
            traceback.print_exc()
        leaf = _leaf(e)
        if isinstance(leaf, (SettingsError, UsageError, StrategyConfigError)):
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
