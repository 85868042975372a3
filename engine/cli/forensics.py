"""The forensics command line: `python -m engine.replay <log> <command> [options]`, over
`replay.forensics` (timeline, state, explain, verify, diff-broker) and `replay.backtest.report`.

It only reads: the log is opened read-only (`LogReader`, `mode=ro`) and sees committed rows,
so it is safe on the log of a running service.

Exit codes: 0 ok; 1 a check failed or found nothing (verify found corruption, diff-broker
found differences, explain found no such id, the log is damaged); 2 usage error (bad
arguments, no such log, unreadable snapshot file); `engine.cli.common.exit_code` is the map.
`--verbose` adds the traceback to errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence
from contextlib import aclosing
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from engine.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    UsageError,
    exit_code,
)
from engine.cli.options import as_of_options, json_option, no_plots_option, verbose_option
from events.errors import CorruptLogError, DecodeError
from events.store import LogReader
from events.times import parse_utc
from replay.forensics.explain import explain
from replay.forensics.queries import (
    TimelineFilter,
    event_json,
    iter_timeline,
    resolve_types,
    state_at,
    to_json,
)
from replay.forensics.render import (
    TIMELINE_HEADER,
    render_diff,
    render_explain,
    render_state,
    render_verify,
    timeline_line,
)
from replay.forensics.verify import diff_broker, load_broker_snapshot, verify_log

EPILOG = """\
commands:
  timeline     events in seq order (filters combine with AND)
  state        every projection as of --at-seq N or --at TIME (default: the end)
  explain ID   the causal chain behind a client order id or an intent id
  verify       hash chain and decode of every row; exit 1 at the first bad row
  diff-broker  the log's positions vs a broker snapshot file; exit 1 on any difference
  report       backtest report: table (or --json), and with --out DIR: JSON, PNG plots, HTML

times are ISO 8601 with a zone, e.g. 2026-11-23T15:00:00Z

broker snapshot format (diff-broker):
  {"taken_at": "2026-11-23T21:00:00Z",
   "positions": [{"symbol": "AAPL", "qty": "10", "avg_entry_price": "101.2"}]}
  or Alpaca's GET /v2/positions answer (a JSON list; "side": "short" marks shorts).
  qty is signed (negative: short); numbers may be strings or JSON numbers.
"""


def _instant(value: str | None, flag: str) -> datetime | None:
    """A forensics time flag: it must carry its zone (an instant typed during an incident is
    too easily local time)."""
    return parse_utc(value, what=flag, naive_as_utc=False) if value else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.replay", description="Forensics over a MiniQuantDesk event log "
        "(read-only; safe on a running service's log).", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="path of the event log (SQLite file)")
    verbose_option(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand must not reset --verbose given before it.
    verbose_option(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    t = sub.add_parser("timeline", parents=[common], help="events in seq order")
    t.add_argument("--symbol")
    t.add_argument("--intent", help="an intent id: the intent, its decision and its orders")
    t.add_argument("--order", help="a client order id")
    t.add_argument("--type", action="append", default=[], dest="types",
                   help="event type, a tag (fill) or class name (FillReceived); repeatable, "
                        "or comma-separated")
    t.add_argument("--from-seq", type=int, default=1)
    t.add_argument("--to-seq", type=int)
    t.add_argument("--since", help="recorded at or after this time")
    t.add_argument("--until", help="recorded at or before this time")
    t.add_argument("--limit", type=int)
    json_option(t, "JSON lines: the event plus its seq")

    s = sub.add_parser("state", parents=[common], help="every projection as of a seq or time")
    as_of_options(s)
    s.add_argument("--snapshot", action="store_true",
                   help="start from the saved snapshot if it matches (default: full replay)")
    json_option(s)

    x = sub.add_parser("explain", parents=[common], help="the causal chain behind an order")
    x.add_argument("id", metavar="ORDER", help="client order id or intent id")
    json_option(x)

    v = sub.add_parser("verify", parents=[common], help="hash chain and decode of every row")
    json_option(v)

    d = sub.add_parser("diff-broker", parents=[common], help="log positions vs broker snapshot")
    d.add_argument("snapshot", metavar="SNAPSHOT.json")
    as_of_options(d)
    d.add_argument("--price-tolerance", default="0.0001",
                   help="relative tolerance for average prices (default 0.0001 = 1 bp)")
    json_option(d)

    r = sub.add_parser("report", parents=[common], help="backtest report")
    r.add_argument("--out", help="directory for report.json, PNG plots and report.html")
    r.add_argument("--risk-free", type=float, default=0.0, help="annual rate, e.g. 0.04")
    r.add_argument("--periods-per-year", type=float,
                   help="override the annualisation (default: from the bar interval)")
    r.add_argument("--starting-equity", help="if the log has no account snapshot")
    r.add_argument("--to-seq", type=int)
    no_plots_option(r, "with --out: JSON only")
    r.add_argument("--max-trades", type=int, default=20, help="trades shown in the table")
    json_option(r, "print the JSON report")
    return p


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    if not text.endswith("\n"):
        out.write("\n")


def _dec(text: str, what: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{what}: {text!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise UsageError(f"{what}: {text!r} must be a finite number >= 0")
    return d


async def _timeline(reader: LogReader, a: argparse.Namespace, out: TextIO) -> int:
    # Resolved before the header is printed, so a bad type is a clean usage error.
    types = resolve_types((t for arg in a.types for t in arg.split(",") if t.strip()),
                          reader.codec)
    flt = TimelineFilter(
        symbol=a.symbol, intent=a.intent, order=a.order, types=types, from_seq=a.from_seq,
        to_seq=a.to_seq, since=_instant(a.since, "--since"),
        until=_instant(a.until, "--until"), limit=a.limit)
    if not a.json:
        _write(out, TIMELINE_HEADER)
    n = 0
    async with aclosing(iter_timeline(reader, flt)) as entries:
        async for entry in entries:
            n += 1
            if a.json:
                out.write(event_json(entry.seq, entry.event).decode() + "\n")
            else:
                out.write(timeline_line(entry) + "\n")
    if not a.json and n == 0:
        _write(out, "(no matching events)")
    return EXIT_OK


async def _dispatch(a: argparse.Namespace, out: TextIO) -> int:
    path = Path(a.log)
    if not path.exists():
        raise UsageError(f"{path}: no such event log")
    if a.command == "verify":
        rep = await verify_log(path)
        _write(out, to_json(rep).decode() if a.json else render_verify(rep))
        return EXIT_OK if rep.ok else EXIT_CHECK_FAILED
    if a.command == "report":
        return await _report(a, out)
    async with LogReader(path) as reader:
        if a.command == "timeline":
            return await _timeline(reader, a, out)
        if a.command == "state":
            at = _instant(a.at, "--at")
            view = await state_at(reader, at_seq=a.at_seq, at=at, use_snapshot=a.snapshot)
            _write(out, to_json(view).decode() if a.json else render_state(view))
            return EXIT_OK
        if a.command == "explain":
            x = await explain(reader, a.id)
            _write(out, to_json(x).decode() if a.json else render_explain(x))
            return EXIT_OK
        if a.command == "diff-broker":
            snap = load_broker_snapshot(a.snapshot)
            at = _instant(a.at, "--at")
            tol = _dec(a.price_tolerance, "--price-tolerance")
            diff = await diff_broker(reader, snap, at_seq=a.at_seq, at=at, price_tolerance=tol)
            _write(out, to_json(diff).decode() if a.json else render_diff(diff))
            return EXIT_OK if diff.ok else EXIT_CHECK_FAILED
    raise UsageError(f"unknown command {a.command!r}")  # argparse prevents this


async def _report(a: argparse.Namespace, out: TextIO) -> int:
    from replay.backtest.report import build_report_async, render_table

    start = _dec(a.starting_equity, "--starting-equity") if a.starting_equity else None
    rep = await build_report_async(a.log, risk_free=a.risk_free, periods_per_year=a.periods_per_year,
                             starting_equity=start, to_seq=a.to_seq)
    written: list[Path] = []
    if a.out:
        written.append(rep.write_json(Path(a.out) / "report.json"))
        if not a.no_plots:
            from replay.backtest.plots import write_html, write_plots

            written += write_plots(rep, a.out)
            written.append(write_html(rep, a.out))
    if a.json:
        _write(out, rep.to_json())
    else:
        _write(out, render_table(rep, max_trades=a.max_trades))
        for p in written:
            _write(out, f"wrote {p}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    try:
        return asyncio.run(main_async(argv, out=out, err=err))
    except KeyboardInterrupt:
        return 130


async def main_async(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
                     err: TextIO | None = None) -> int:
    """`main` for callers already inside an event loop (e.g. another async CLI)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return await _dispatch(a, out)
    except (CorruptLogError, DecodeError) as e:
        return _fail(err, f"{e} (run `python -m engine.replay {a.log} verify`)",
                     exit_code(e, reading_a_log=True), a.verbose, cause=e)
    except BrokenPipeError:
        # `... timeline | head`: the reader left; say nothing. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:
        code = exit_code(e, reading_a_log=True)
        if code == EXIT_RUNTIME:
            raise
        return _fail(err, e, code, a.verbose)


def _fail(err: TextIO, e: object, code: int, verbose: bool,
          cause: BaseException | None = None) -> int:
    exc = cause if cause is not None else e if isinstance(e, BaseException) else None
    if verbose and exc is not None:
        traceback.print_exception(exc, file=err)
    err.write(f"error: {e}\n")
    return code
