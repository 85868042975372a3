"""`run` and `demo`: the service on the configured broker and data, and its summary at the end."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from engine.cli.common import EXIT_CHECK_FAILED, EXIT_OK, UsageError
from engine.config import Settings, load_settings
from replay.backtest.display import money, qty, table


def next_run_log(settings: Settings, stem: str) -> Path:
    """A fresh log for a replayed run: each demo/replay run keeps its own log."""
    runs = settings.data_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    taken = [int(p.stem.rsplit("-", 1)[-1]) for p in runs.glob(f"{stem}-*.sqlite")
             if p.stem.rsplit("-", 1)[-1].isdigit()]
    return runs / f"{stem}-{max(taken, default=0) + 1:04d}.sqlite"


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
        from replay.backtest.driver import count_rows
        from replay.backtest.progress import Progress

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

    from engine.rebuild import rebuild
    from events.catalogue import AccountSnapshot, FillReceived, RiskRejected
    from events.store import LogReader
    from projections.protection import describe, protection_of

    async with LogReader(log_path) as r:
        proj = await rebuild(r)
        first_equity: Decimal | None = None
        fills = 0
        fees = Decimal(0)
        async for _, e in r.read(types=("account_snapshot", "fill")):
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
        rows.append([s, qty(p.qty), money(p.avg_cost if p.qty else None), stop,
                     money(p.realized_pnl), money(p.fees)])
    triggered = sum(1 for o in stops if o.filled_qty > 0)
    legs = sum(1 for o in stops if o.parent_id is not None)
    decisions = list(proj.risk.decisions.values())
    rejected = Counter(r.code for d in decisions if isinstance(d, RiskRejected) for r in d.reasons)
    change = equity - first_equity if first_equity else None
    pct = f" ({change / first_equity:+.2%})" if first_equity and change is not None else ""
    approved = len(decisions) - sum(1 for d in decisions if isinstance(d, RiskRejected))
    lines = [
        "",
        f"run finished: {reason}",
        f"equity      {money(first_equity)} -> {money(equity)}  change {money(change)}{pct}",
        (f"decisions   {len(decisions)} ({approved} approved); "
         f"fills {fills}; fees {money(fees)}; anomalies {len(proj.orders.anomalies)}"),
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
def pace_overrides(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
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


