"""`config`, `status`, `halt` and `resume`: what the engine is doing, and the kill switch."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.cli.common import EXIT_CHECK_FAILED, EXIT_OK, UsageError
from engine.config import Settings
from replay.backtest.display import money, qty, table


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    data = settings.public_dict()
    data["effective"] = {"log_path": str(settings.log_path), "mode": settings.mode}
    print(json.dumps(data, indent=2, default=str))
    return EXIT_OK


async def status_data(settings: Settings) -> dict[str, Any]:
    from engine.rebuild import rebuild
    from events.catalogue import OrderIntent  # noqa: F401  (catalogue import for decoding)
    from events.store import LogReader
    from projections.calendar import trading_day
    from projections.protection import protection_of
    from projections.risk import day_trades_in_window, realized_in_week, realized_on

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


