"""`backtest` and `sweep`: bar files or a log through the engine, one run or a parameter grid."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.cli.common import EXIT_CHECK_FAILED, EXIT_OK, UsageError, parse_params
from engine.cli.options import settings_overrides
from engine.config import Settings, load_settings
from events.times import parse_utc

SIM_FLAGS = {"cash": "cash", "fee_per_share": "fee_per_share", "fee_bps": "fee_bps",
             "min_fee": "min_fee", "slippage_bps": "slippage_bps",
             "volume_participation": "volume_participation", "zero_volume": "zero_volume"}
DATA_FLAGS = {"assets": "assets_path", "tz": "timezone", "timeframe": "timeframe"}


def _bound(value: str | None, flag: str) -> datetime | None:
    """A --from/--to bound: a date or a time; without a zone it is UTC (as --help says)."""
    return parse_utc(value, what=flag, naive_as_utc=True) if value else None


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
    from engine.sources import data_paths
    from replay.backtest import outcome
    from replay.backtest.driver import count_rows, run_backtest, stuck_orders_line
    from replay.backtest.progress import Progress

    paths = data_paths([Path(d) for d in args.data])
    for d in paths:
        if not d.exists():
            raise UsageError(f"--data {d}: no such file")
    params = strategy_params(args)
    check_strategy(args.strategy, params)
    overrides = run_overrides(args, settings)
    overrides["strategies"] = ({"name": args.strategy, "params": params},)
    settings = load_settings(**{**settings_overrides(args), **overrides})
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
            settings, paths, log_path, start=_bound(args.from_, "--from"),
            end=_bound(args.to, "--to"), symbols=symbols,
            progress=lambda n: bar.update("bars", n), notice=notice, symbol=args.symbol,
            progress_every=1_000 if bar.live else 10_000))
    finally:
        bar.close()
    from replay.backtest import plots
    from replay.backtest import report as rep

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
    from engine.sources import data_paths
    from replay.backtest.progress import Progress
    from replay.backtest.sweep import parse_grid, points, run_sweep

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
    settings = load_settings(**{**settings_overrides(args), **overrides})
    quiet_unless_verbose(args, settings)
    out_dir = Path(args.out) if args.out else next_free(
        settings.data_dir / "sweeps" / backtest_stem(args.strategy, paths))
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
                         start=_bound(args.from_, "--from"),
                         end=_bound(args.to, "--to"), base_params=base,
                         on_progress=on_progress if bar.live else None, on_done=on_done,
                         verbose=args.verbose)
    finally:
        bar.close(f"sweep: {len(grid_points)} point(s) of {args.strategy}")
    print(json.dumps(rows, default=str) if args.json else sweep_table(rows))
    if not args.json:
        print(f"\nlogs and reports in {out_dir}")
    return EXIT_OK


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The sweep's rows for people: rounded (the JSON keeps every digit)."""
    from replay.backtest.display import money, number, pct, table

    keys = sorted({k for r in rows for k in r["params"]})
    headers = [*keys, "return", "max dd", "sharpe", "trades", "win rate", "refused",
               "final equity"]
    body = [[*(r["params"].get(k) for k in keys), pct(r.get("total_return")),
             pct(r.get("max_drawdown")), number(r.get("sharpe")), r.get("trades"),
             pct(r.get("win_rate"), 1), r.get("refused", "-"), money(r.get("final_equity"))]
            for r in rows]
    return table(headers, body)
