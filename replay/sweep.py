"""Parameter sweeps: a grid of strategy parameters, one full backtest per point, run across all
cores (processes) — or on a Ray cluster when asked (`pip install miniquantdesk[ray]`); both
paths call the same `run_point`, so a result does not depend on where it ran.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.config import Settings


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """["entry_z=1.5,2", "exit_z=0"] -> {"entry_z": [1.5, 2], "exit_z": [0]}"""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid {spec!r}: use key=v1,v2,...")
        key, values = spec.split("=", 1)
        parsed = []
        for v in values.split(","):
            try:
                parsed.append(json.loads(v))
            except json.JSONDecodeError:
                parsed.append(v)
        grid[key.strip()] = parsed
    if not grid:
        raise ValueError("give at least one --grid key=v1,v2")
    return grid


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def run_point(settings_json: str, strategy: str, params: dict[str, Any], data: str,
              out_log: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """One backtest and its headline figures. Runs in a worker process (or a Ray task)."""
    from replay.backtest import run_backtest
    from replay.report import build_report

    settings = Settings.model_validate_json(settings_json)
    settings = settings.model_copy(update={"strategies": (
        settings.strategies[0].model_copy(update={"name": strategy, "params": params}),)})
    result = asyncio.run(run_backtest(settings, Path(data), Path(out_log), start=start, end=end))
    report = build_report(Path(out_log))
    figures = json.loads(report.to_json())
    summary = figures.get("summary", figures)
    return {"params": params, "log": out_log, "bars": result.bars, "intents": result.intents,
            **{k: summary.get(k) for k in ("total_return", "max_drawdown", "sharpe", "trades",
                                           "win_rate", "fees", "final_equity")}}


def run_sweep(settings: Settings, strategy: str, grid: dict[str, list[Any]], data: Path,
              out_dir: Path, *, processes: int | None = None, use_ray: bool = False,
              start: datetime | None = None, end: datetime | None = None) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_json = settings.model_dump_json()
    jobs = []
    for i, params in enumerate(points(grid)):
        log = out_dir / f"{strategy}-{i:04d}.sqlite"
        if log.exists():
            raise FileExistsError(f"{log} exists; use a fresh --out directory")
        jobs.append((settings_json, strategy, params, str(data), str(log), start, end))
    if use_ray:
        rows = _run_on_ray(jobs)
    else:
        workers = processes or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            rows = list(pool.map(run_point, *zip(*jobs)))
    return sorted(rows, key=lambda r: (r.get("sharpe") is None, -(r.get("sharpe") or 0)))


def _run_on_ray(jobs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'miniquantdesk[ray]'") from None
    started = not ray.is_initialized()
    if started:
        # RAY_ADDRESS (a cluster) if set, otherwise a local instance.
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True,
                 log_to_driver=False)
    try:
        remote = ray.remote(run_point)
        return list(ray.get([remote.remote(*job) for job in jobs]))
    finally:
        if started:
            ray.shutdown()


def sweep_table(rows: list[dict[str, Any]]) -> str:
    from engine.cli import table

    keys = sorted({k for r in rows for k in r["params"]})
    headers = [*keys, "return", "max dd", "sharpe", "trades", "win rate", "final equity"]
    body = [[*(r["params"].get(k) for k in keys), r.get("total_return"), r.get("max_drawdown"),
             r.get("sharpe"), r.get("trades"), r.get("win_rate"), r.get("final_equity")]
            for r in rows]
    return table(headers, body)
