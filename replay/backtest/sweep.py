"""Parameter sweeps: a grid of strategy parameters, one full backtest per point, run across all
cores (processes) — or on a Ray cluster when asked (`pip install miniquantdesk[ray]`); both
paths call the same `run_point`, so a result does not depend on where it ran.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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


def run_point(settings_json: str, strategy: str, params: dict[str, Any],
              data: str | list[str], out_log: str, start: datetime | None, end: datetime | None,
              index: int = 0, updates: Any = None, verbose: bool = False) -> dict[str, Any]:
    """One backtest and its headline figures. Runs in a worker process (or a Ray task).
    `updates` (a queue, optional) receives (index, bars so far) for a progress display."""
    from replay.backtest.driver import run_backtest
    from replay.backtest.outcome import refusals
    from replay.backtest.report import build_report

    if not verbose:  # a worker's fills are not news; its figures are
        logging.getLogger().setLevel(logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    settings = settings.model_copy(update={"strategies": (
        settings.strategies[0].model_copy(update={"name": strategy, "params": params}),)})
    paths = [Path(d) for d in ([data] if isinstance(data, str) else data)]
    progress = None
    if updates is not None:
        def progress(n: int) -> None:
            updates.put((index, n))
    result = asyncio.run(run_backtest(settings, paths, Path(out_log), start=start, end=end,
                                      progress=progress, progress_every=2_000))
    report = build_report(Path(out_log))
    figures = json.loads(report.to_json())
    summary = figures.get("summary", figures)
    refused = asyncio.run(refusals(Path(out_log)))
    return {"params": params, "log": out_log, "bars": result.bars, "intents": result.intents,
            **{k: summary.get(k) for k in ("total_return", "max_drawdown", "sharpe", "trades",
                                           "win_rate", "fees", "final_equity")},
            "refused": refused.refused, "open_at_end": len(result.open_orders)}


def run_sweep(settings: Settings, strategy: str, grid: dict[str, list[Any]],
              data: Path | Sequence[Path], out_dir: Path, *, processes: int | None = None,
              use_ray: bool = False, start: datetime | None = None,
              end: datetime | None = None, base_params: dict[str, Any] | None = None,
              on_progress: Callable[[int, int], None] | None = None,
              on_done: Callable[[int, dict[str, Any]], None] | None = None,
              verbose: bool = False) -> list[dict[str, Any]]:
    """One backtest per grid point (`base_params` under each point). `on_progress(i, bars)`
    and `on_done(i, row)` report per point (progress only on local processes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_json = settings.model_dump_json()
    files = [str(p) for p in ([data] if isinstance(data, Path) else data)]
    jobs = []
    for i, params in enumerate(points(grid)):
        log = out_dir / f"{strategy}-{i:04d}.sqlite"
        if log.exists():
            raise FileExistsError(f"{log} exists; use a fresh --out directory")
        jobs.append((settings_json, strategy, {**(base_params or {}), **params}, files,
                     str(log), start, end, i))
    if use_ray:
        rows = _run_on_ray(jobs, verbose)
        for i, row in enumerate(rows):
            if on_done is not None:
                on_done(i, row)
    else:
        rows = _run_on_processes(jobs, processes, on_progress, on_done, verbose)
    return sorted(rows, key=lambda r: (r.get("sharpe") is None, -(r.get("sharpe") or 0)))


def _run_on_processes(jobs: list[tuple[Any, ...]], processes: int | None,
                      on_progress: Callable[[int, int], None] | None,
                      on_done: Callable[[int, dict[str, Any]], None] | None,
                      verbose: bool) -> list[dict[str, Any]]:
    workers = min(processes or os.cpu_count() or 1, len(jobs))
    manager = multiprocessing.Manager() if on_progress is not None else None
    try:
        updates = manager.Queue() if manager is not None else None
        rows: list[dict[str, Any] | None] = [None] * len(jobs)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_job, job, updates, verbose): job[7] for job in jobs}
            pending = set(futures)
            while pending:
                # Wake for finished points, and every 0.2 s for the progress display.
                done, pending = wait(pending, timeout=0.2 if updates is not None else None,
                                     return_when=FIRST_COMPLETED)
                _drain(updates, on_progress)
                for f in done:
                    i = futures[f]
                    row = rows[i] = f.result()
                    if on_done is not None:
                        on_done(i, row)
        return [r for r in rows if r is not None]
    finally:
        if manager is not None:
            manager.shutdown()


def _run_job(job: tuple[Any, ...], updates: Any, verbose: bool) -> dict[str, Any]:
    settings_json, strategy, params, data, log, start, end, index = job
    return run_point(settings_json, strategy, params, data, log, start, end, index, updates,
                     verbose)


def _drain(updates: Any, on_progress: Callable[[int, int], None] | None) -> None:
    if updates is None or on_progress is None:
        return
    while True:
        try:
            i, n = updates.get_nowait()
        except queue.Empty:
            return
        on_progress(i, n)


def _run_on_ray(jobs: list[tuple[Any, ...]], verbose: bool = False) -> list[dict[str, Any]]:
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
        return list(ray.get([remote.remote(*job, None, verbose) for job in jobs]))
    finally:
        if started:
            ray.shutdown()
