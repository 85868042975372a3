"""The service's replay of your own bar files reads and sorts them once: the stream started
to learn where the files begin (the simulated clock's start) and which symbols they hold is
the very stream the engine then consumes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.marketdata import ordered
from engine.service import run_service
from events.catalogue import BarReceived
from events.store import LogReader
from projections.calendar import business_days_from
from tests.owndata import grouped, minute_rows, write_csv


async def test_a_file_replay_sorts_its_files_once(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rows = minute_rows(["AAA", "BBB"], business_days_from(date(2026, 3, 2), 1))
    path = write_csv(tmp_path / "mine.csv", grouped(rows))  # needs the sort
    sorts = []
    real = ordered.ordered_batches

    def counting(*a: object, **k: object):  # type: ignore[no-untyped-def]
        sorts.append(1)
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ordered, "ordered_batches", counting)
    log_path = tmp_path / "events.sqlite"
    settings = load_settings(data_dir=tmp_path, log_file=log_path, sim={"cash": "100000"},
                             data={"source": "csv", "path": str(path)},
                             strategies=[{"name": "sma_crossover"}])
    res = await run_service(settings)
    assert res.reason == "data finished" and res.bars == len(rows)
    assert sorts == [1]
    async with LogReader(log_path) as r:
        bars = [(e.bar.start, e.bar.symbol) async for _, e in r.read()
                if isinstance(e, BarReceived)]
    assert bars == sorted(bars) and len(bars) == len(rows)
    assert res.intents > 0  # both symbols tradable by default, as before
