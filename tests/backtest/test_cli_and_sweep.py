"""`python -m engine backtest` and parameter sweeps (local processes, and Ray when installed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.marketdata.assets import sample_bars_path
from replay.backtest.sweep import parse_grid, points, run_sweep
from tests.service.procs import cli

DAY = {"start": datetime(2026, 10, 28, 13, 30, tzinfo=UTC),
           "end": datetime(2026, 10, 28, 20, 0, tzinfo=UTC)}


@pytest.mark.slow
def test_backtest_command_writes_report_and_plots(tmp_path: Path) -> None:
    r = cli(tmp_path, "backtest", "--strategy", "vwap_mean_reversion", "--data",
            str(sample_bars_path()), "--from", "2026-10-28", "--to", "2026-10-29",
            "--cash", "200", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "vwap_mean_reversion-bars" / "report.json").read_text())
    assert report["summary"]["trades"] > 0
    pngs = list((tmp_path / "out" / "vwap_mean_reversion-bars").glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert (tmp_path / "out" / "vwap_mean_reversion-bars" / "report.html").stat().st_size > 1000
    bad = cli(tmp_path, "backtest", "--strategy", "nope", "--data", str(sample_bars_path()))
    assert bad.returncode == 2 and "unknown strategy" in bad.stderr
    bad = cli(tmp_path, "backtest", "--strategy", "vwap_mean_reversion", "--data",
              str(sample_bars_path()), "--from", "last week")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --from: 'last week' is not an ISO 8601 time (e.g. 2026-11-23T15:00:00Z)"]


def test_grid_parsing() -> None:
    grid = parse_grid(["fast=5,10", "slow=30"])
    assert grid == {"fast": [5, 10], "slow": [30]}
    assert points(grid) == [{"fast": 5, "slow": 30}, {"fast": 10, "slow": 30}]
    with pytest.raises(ValueError):
        parse_grid(["fast"])


@pytest.mark.slow
def test_sweep_on_processes_matches_single_runs(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    rows = run_sweep(settings, "sma_crossover", {"fast": [5, 10], "slow": [30]},
                     sample_bars_path(), tmp_path / "sweep", processes=2, **DAY)
    assert len(rows) == 2 and {tuple(r["params"].items()) for r in rows} == {
        (("fast", 5), ("slow", 30)), (("fast", 10), ("slow", 30))}
    again = run_sweep(settings, "sma_crossover", {"fast": [5]}, sample_bars_path(),
                      tmp_path / "again", processes=1, **DAY)
    by_params = {json.dumps(r["params"], sort_keys=True): r for r in rows}
    one = by_params[json.dumps({"fast": 5, "slow": 30}, sort_keys=True)]
    # the grid point and the lone run of the same parameters agree (slow=30 is the default)
    assert one["total_return"] == again[0]["total_return"] and one["bars"] == again[0]["bars"]


@pytest.mark.slow
def test_sweep_on_a_local_ray_instance(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    settings = load_settings(data_dir=tmp_path)
    local = run_sweep(settings, "sma_crossover", {"fast": [5, 10]}, sample_bars_path(),
                      tmp_path / "local", processes=2, **DAY)
    on_ray = run_sweep(settings, "sma_crossover", {"fast": [5, 10]}, sample_bars_path(),
                       tmp_path / "ray", use_ray=True, **DAY)
    key = lambda r: json.dumps(r["params"], sort_keys=True)
    assert {key(r): r["total_return"] for r in local} == {key(r): r["total_return"] for r in on_ray}
