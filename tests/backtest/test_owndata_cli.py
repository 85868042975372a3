"""The CLI a user meets with their own data: `backtest --data mine.csv --cash 100000` trades
out of the box, flags are validated like settings, global options go anywhere, `status`
finds the latest run, sweeps check their points first and never reuse an output directory.
Every case runs the real CLI in a subprocess."""

from __future__ import annotations

import io
import json
import re
from datetime import date
from pathlib import Path

import pytest

from engine.cli.backtest import strategy_params
from engine.cli.main import build_parser
from engine.config import load_settings
from projections.calendar import business_days_from
from replay.backtest.progress import Progress
from tests.owndata import grouped, minute_rows, write_csv, yahoo_daily
from tests.service.procs import cli

DAYS = business_days_from(date(2026, 3, 2), 2)
QUIET = {"MQD_LOG_LEVEL": "INFO"}  # what procs sets: backtests stay quiet anyway


@pytest.fixture
def mine(tmp_path: Path) -> Path:
    """Two symbols the sample assets file does not know, rows grouped by symbol."""
    return write_csv(tmp_path / "mine.csv", grouped(minute_rows(["AAA", "BBB"], DAYS)))


def _report(out: Path) -> dict:
    [path] = out.glob("*/report.json")
    return json.loads(path.read_text())


def test_own_data_trades_out_of_the_box(tmp_path: Path, mine: Path) -> None:
    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(mine),
            "--cash", "100000", "--out", str(tmp_path / "out"), "--no-plots")
    assert r.returncode == 0, r.stderr[-2000:]
    notes = [x for x in r.stderr.splitlines() if "not in the assets file" in x]
    assert len(notes) == 1 and "AAA, BBB" in notes[0] and "whole-share" in notes[0]
    assert not [x for x in r.stderr.splitlines() if " fill " in x], "no line per fill"
    doc = _report(tmp_path / "out")
    assert doc["summary"]["trades"] > 5
    assert doc["run"]["refusals"]["intents"] > 0 and doc["run"]["default_assets"] == [
        "AAA", "BBB"]
    assert "bars 1,560 (1m)" in r.stdout
    # the $200 demo's $200 order limit would refuse every $10,000 entry
    assert doc["run"]["refusals"]["by_reason"].get("ORDER_NOTIONAL_LIMIT") is None


def test_risk_limits_scale_with_the_starting_cash_unless_set() -> None:
    s = load_settings(sim={"cash": "100000"})
    assert (s.risk.max_order_notional, s.risk.max_symbol_exposure,
            s.risk.max_gross_exposure) == (100000, 100000, 200000)
    s = load_settings(sim={"cash": "100000"}, risk={"max_order_notional": "5000"})
    assert s.risk.max_order_notional == 5000 and s.risk.max_gross_exposure == 200000
    demo = load_settings()
    assert demo.risk.max_order_notional == 200 and demo.sim.cash == 200


def test_mostly_refused_run_exits_non_zero_with_one_line(tmp_path: Path, mine: Path) -> None:
    assets = tmp_path / "assets.csv"
    assets.write_text("symbol,tradable,fractionable\nAAA,false,false\nBBB,false,false\n")
    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(mine),
            "--cash", "100000", "--assets", str(assets), "--out", str(tmp_path / "o"),
            "--no-plots")
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "most intents were refused" in errors[0]
    assert "SYMBOL_NOT_TRADABLE" in errors[0] and "--assets" in errors[0]
    assert re.search(r"refused \d+ of \d+ intents: SYMBOL_NOT_TRADABLE \d+", r.stdout)
    assert "not in the assets file" not in r.stderr  # the assets file wins


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--cash", "-5", "greater than 0"), ("--cash", "abc", "valid decimal"),
    ("--fee-bps", "x", "valid decimal"), ("--volume-participation", "2", "less than or equal"),
    ("--slippage-bps", "-1", "greater than or equal"), ("--tz", "Mars/Base", "unknown time zone"),
])
def test_numeric_and_zone_flags_are_validated(tmp_path: Path, mine: Path, flag: str,
                                              value: str, says: str) -> None:
    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(mine),
            flag, value)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}") and says in lines[0]


def test_global_options_after_the_command(tmp_path: Path, mine: Path) -> None:
    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(mine),
            "--cash", "100000", "--no-plots", "--data-dir", str(tmp_path / "dd"), "--verbose")
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "dd" / "backtests").glob("*.sqlite"))
    assert [x for x in r.stderr.splitlines() if " fill " in x], "--verbose shows fills"
    before = build_parser().parse_args(["--data-dir", "x", "status"])
    after = build_parser().parse_args(["status", "--data-dir", "x"])
    assert before.data_dir == after.data_dir == "x"


def test_status_finds_the_most_recent_run(tmp_path: Path, mine: Path) -> None:
    runs = tmp_path / "data" / "runs"
    empty = cli(tmp_path, "status")
    assert empty.returncode == 2 and "no event log under" in empty.stderr
    other = write_csv(tmp_path / "other.csv", minute_rows(["CCC"], DAYS[:1]))
    for data in (mine, other):
        r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(data),
                "--cash", "100000", "--out", str(runs), "--no-plots")
        assert r.returncode == 0, r.stderr[-2000:]
    s = cli(tmp_path, "status")
    assert s.returncode == 0, s.stderr
    assert f"log       {runs / 'sma_crossover-other.sqlite'} (most recent run" in s.stdout
    given = cli(tmp_path, "status", "--json", "--log", str(runs / "sma_crossover-mine.sqlite"))
    assert json.loads(given.stdout)["log"].endswith("sma_crossover-mine.sqlite")


def test_sweep_checks_points_before_workers_and_never_reuses_its_output(
        tmp_path: Path, mine: Path) -> None:
    bad = cli(tmp_path, "sweep", "--strategy", "nope", "--data", str(mine), "--grid", "fast=5")
    assert bad.returncode == 2 and "unknown strategy" in bad.stderr
    assert "BrokenProcessPool" not in bad.stderr
    badp = cli(tmp_path, "sweep", "--strategy", "sma_crossover", "--data", str(mine),
               "--grid", "fast=5,0")
    assert badp.returncode == 2 and "fast" in badp.stderr and "Traceback" not in badp.stderr
    outs = []
    for _ in range(2):
        r = cli(tmp_path, "sweep", "--strategy", "sma_crossover", "--data", str(mine),
                "--grid", "fast=5,10", "--cash", "100000", "--processes", "2")
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(r.stdout.strip().splitlines()[-1])
        assert "sweep: 2 point(s) of sma_crossover in" in r.stderr  # not a terminal: a summary
        table = r.stdout.split("\n\n")[0]
        assert not re.search(r"\d\.\d{5,}|E-\d", table), table
        assert re.search(r"\d+\.\d{2}%", table)
    assert outs[0] != outs[1] and all("logs and reports in" in o for o in outs)


def test_daily_yahoo_download_and_declared_flags(tmp_path: Path) -> None:
    yahoo = yahoo_daily(tmp_path / "download.csv", business_days_from(date(2025, 1, 2), 120), seed=8)
    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(yahoo),
            "--symbol", "ACME", "--cash", "100000", "--param", "fast=3", "--param", "slow=8",
            "--out", str(tmp_path / "d"), "--no-plots")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1d (one bar per session)" in r.stdout and "ACME" in r.stderr
    assert _report(tmp_path / "d")["summary"]["trades"] > 0
    naive = write_csv(tmp_path / "naive.csv", [[s, ts.replace("Z", ""), *rest] for s, ts, *rest
                                                 in minute_rows(["NVE"], DAYS)])
    refused = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(naive))
    assert refused.returncode == 2 and "NAIVE_TIMESTAMP" in refused.stderr
    assert "no bars in the requested range" not in refused.stderr
    declared = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(naive),
                   "--tz", "UTC", "--timeframe", "1m", "--cash", "100000", "--no-plots",
                   "--out", str(tmp_path / "n"))
    assert declared.returncode == 0, declared.stderr[-2000:]


def test_time_in_force_flag_is_a_strategy_parameter() -> None:
    args = build_parser().parse_args(["backtest", "--strategy", "s", "--data", "x",
                                      "--time-in-force", "gtc", "--param", "fast=3"])
    assert strategy_params(args) == {"fast": 3, "time_in_force": "gtc"}


def test_progress_draws_bars_on_a_terminal_and_sums_up_otherwise() -> None:
    tty = io.StringIO()
    p = Progress(stream=tty, force_terminal=True)
    p.add("bars", "backtest", 100)
    p.update("bars", 50)
    p.close("backtest")
    assert "backtest" in tty.getvalue() and "50/100" in tty.getvalue()
    plain = io.StringIO()
    q = Progress(stream=plain, force_terminal=False)
    q.add("bars", "backtest", None)
    q.update("bars", 50)
    q.close("backtest: 50 bars")
    assert re.fullmatch(r"backtest: 50 bars in \d+\.\d s\n", plain.getvalue())


def test_a_settings_file_after_the_command_merges_with_the_flags(tmp_path: Path,
                                                                  mine: Path) -> None:
    toml = tmp_path / "bt.toml"
    toml.write_text("[sim]\nfee_bps = 10\n")
    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(mine),
            "--cash", "100000", "--no-plots", "--out", str(tmp_path / "o"), "--config",
            str(toml))
    assert r.returncode == 0, r.stderr[-2000:]
    doc = _report(tmp_path / "o")
    assert doc["summary"]["trades"] > 0 and float(doc["summary"]["fees"]) > 0
    assert float(doc["summary"]["starting_equity"]) == 100000


def test_a_replay_on_a_terminal_shows_progress(tmp_path: Path, mine: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    from tests.service.procs import engine_env

    master, slave = pty.openpty()
    env = engine_env(tmp_path, {"MQD_DATA__SOURCE": "csv", "MQD_DATA__PATH": str(mine),
                                "MQD_SIM__CASH": "100000", "COLUMNS": "120"})
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run"], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0, seen[-2000:]
    text = seen.decode(errors="replace")
    assert "replay" in text and "1560/1560" in text, text[-500:]
    assert b"run finished: data finished" in out


def test_the_service_replays_own_files_with_their_symbols_tradable(tmp_path: Path,
                                                                  mine: Path) -> None:
    r = cli(tmp_path, "run", extra={"MQD_DATA__SOURCE": "csv", "MQD_DATA__PATH": str(mine),
                                    "MQD_SIM__CASH": "100000",
                                    "MQD_STRATEGIES": '[{"name": "sma_crossover"}]'})
    assert r.returncode == 0, r.stderr[-2000:]
    notes = [x for x in r.stderr.splitlines() if "not in the assets file" in x]
    assert len(notes) == 1 and "AAA, BBB" in notes[0]
    fills = int(re.search(r"fills (\d+);", r.stdout).group(1))  # type: ignore[union-attr]
    assert fills > 0 and "SYMBOL_UNKNOWN" not in r.stdout


def test_fill_model_flags_reach_the_run(tmp_path: Path, mine: Path) -> None:
    import asyncio

    from events.catalogue import RunStarted
    from events.store import LogReader

    r = cli(tmp_path, "backtest", "--strategy", "sma_crossover", "--data", str(mine),
            "--cash", "100000", "--zero-volume", "fill", "--time-in-force", "gtc",
            "--slippage-bps", "0", "--fee-bps", "5", "--min-fee", "1",
            "--volume-participation", "0.5", "--no-plots", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr[-2000:]
    [log] = (tmp_path / "o").glob("*.sqlite")

    async def run_started() -> RunStarted:
        async with LogReader(log) as reader:
            async for _, e in reader.read():
                if isinstance(e, RunStarted):
                    return e
        raise AssertionError("no RunStarted in the log")

    m = asyncio.run(run_started()).fill_model
    assert m is not None
    assert (m.zero_volume, m.time_in_force, str(m.slippage_bps), str(m.fee_bps),
            str(m.min_fee), str(m.volume_participation)) == ("fill", "gtc", "0", "5", "1", "0.5")
    assert float(_report(tmp_path / "o")["summary"]["fees"]) > 0


def test_sweep_reports_progress_per_point_and_overall(tmp_path: Path, mine: Path) -> None:
    from replay.backtest.sweep import run_sweep

    settings = load_settings(data_dir=tmp_path, sim={"cash": "100000"},
                             strategies=[{"name": "sma_crossover"}])
    progress: dict[int, list[int]] = {}
    done: list[int] = []
    rows = run_sweep(settings, "sma_crossover", {"fast": [5, 10]}, [mine], tmp_path / "sw",
                     processes=2, on_progress=lambda i, n: progress.setdefault(i, []).append(n),
                     on_done=lambda i, row: done.append(i))
    assert sorted(done) == [0, 1] and len(rows) == 2
    # each worker reported its bars as it went (every 2,000 bars and at the end)
    assert set(progress) == {0, 1}
    assert all(ns == sorted(ns) and ns[-1] == 1560 for ns in progress.values()), progress


def test_default_names_say_what_ran_even_for_relative_files() -> None:
    from engine.cli.backtest import backtest_stem

    assert backtest_stem("sma", [Path("SPY.csv")]) == "sma-SPY"
    # two files in the working directory: their parent's name is "", never a bare "sma-"
    assert backtest_stem("sma", [Path("SPY.csv"), Path("QQQ.csv")]) == "sma-SPY+QQQ"
    many = [Path(f"{s}.csv") for s in "ABCD"]
    assert backtest_stem("sma", many) == f"sma-{Path.cwd().name}"
