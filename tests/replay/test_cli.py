"""`python -m engine.replay`: exit codes, output, and a real subprocess on a live log."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

from engine.cli.forensics import main
from events.catalogue import AccountSnapshot, FillReceived
from events.store import EventLog
from tests.factories import T0, approved, bar, fill, submitted_chain
from tests.replay.session import Session
from tests.replay.test_forensics import all_events, flip_byte_in_payload

D = __import__("decimal").Decimal
REPO = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def subprocess(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.replay", *argv, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_subprocess_reads_a_log_while_it_is_being_written(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"
    async with EventLog.open(path) as log:
        await log.append_many([
            AccountSnapshot(ts=T0, equity=D(1000), cash=D(1000), buying_power=D(1000)),
            bar("AAPL", T0, close="100"), approved("c1", qty="2"), *submitted_chain("c1")])
        code, out, err = await subprocess(str(path), "timeline", "--json")
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert rows[2]["type"] == "risk_approved" and rows[2]["qty"] == "2"  # exact decimals

        # The writer keeps going; a second look sees the new rows, the chain still verifies.
        await log.append(fill("c1", "2", "101", ts=T0 + timedelta(minutes=1), done=True))
        code, out, err = await subprocess(str(path), "verify")
        assert code == 0 and "ok: 7 rows" in out, (out, err)
        code, out, err = await subprocess(str(path), "state", "--json")
        assert code == 0, err
        state = json.loads(out)
        assert state["as_of_seq"] == 7
        assert [(p["symbol"], p["qty"], p["avg_cost"]) for p in state["positions"]] == \
            [("AAPL", "2", "101")]
        code, out, _ = await subprocess(str(path), "explain", "c1")
        assert code == 0 and "fill" in out and "buy 2 @ 101" in out
        code, _, err = await subprocess(str(path), "explain", "zzz")
        assert code == 1 and err.strip() == "error: no order or intent 'zzz' in the log"


def test_verify_exit_codes(session_copy: Path) -> None:
    code, out, _ = run(str(session_copy), "verify")
    assert code == 0 and out.startswith("ok:")
    events = asyncio.run(all_events(session_copy))
    target = next(s for s, e in events if isinstance(e, FillReceived))
    flip_byte_in_payload(session_copy, target)
    code, out, _ = run(str(session_copy), "verify")
    assert code == 1 and f"BAD at seq {target}: " in out
    code, out, _ = run(str(session_copy), "verify", "--json")
    assert code == 1 and json.loads(out)["first_bad_seq"] == target


def test_an_undecodable_row_is_one_line_naming_its_seq(session_copy: Path) -> None:
    con = sqlite3.connect(session_copy)
    con.execute("DROP TRIGGER events_no_update")  # someone with file access
    con.execute("UPDATE events SET payload = ? WHERE seq = 21", (b"\x93\x01\x02\x03",))
    con.commit()
    con.close()
    for argv in (("timeline",), ("state",), ("explain", "buy-1")):
        code, out, err = run(str(session_copy), *argv)
        assert code == 1, argv
        assert err.startswith("error: seq 21: cannot decode") and "verify" in err, err
        assert len(err.splitlines()) == 1
    code, out, _ = run(str(session_copy), "verify")
    assert code == 1 and out.startswith("BAD at seq 21: ")


def test_diff_broker_exit_codes(session: Session, tmp_path: Path) -> None:
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"taken_at": "2026-11-23T21:00:00Z", "positions": [
        {"symbol": "AAPL", "qty": "4", "avg_entry_price": "106"}]}))
    code, out, _ = run(str(session.path), "diff-broker", str(same))
    assert code == 0 and "no differences" in out
    other = tmp_path / "alpaca.json"
    other.write_text('[{"symbol": "AAPL", "qty": "3", "side": "long", '
                     '"avg_entry_price": "106.0"}]')
    code, out, _ = run(str(session.path), "diff-broker", str(other))
    assert code == 1 and "1 difference" in out and "off by -1" in out
    code, out, _ = run(str(session.path), "diff-broker", str(other), "--json")
    assert code == 1
    assert json.loads(out)["differences"][0]["broker_qty"] == "3"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(str(session.path), "diff-broker", str(bad))
    assert code == 2 and err.startswith("error: ") and "not JSON" in err


def test_usage_errors_exit_2_with_one_line(session: Session, tmp_path: Path) -> None:
    p = str(session.path)
    for argv, needle in [
        ((str(tmp_path / "missing.sqlite"), "verify"), "no such event log"),
        ((p, "timeline", "--since", "2026-11-23T15:00:00"), "no time zone"),
        ((p, "timeline", "--type", "bogus"), "unknown event type 'bogus'"),
        ((p, "state", "--at-seq", "100000"), "past the end"),
        ((p, "state", "--at", "yesterday"), "not an ISO 8601 time"),
    ]:
        code, out, err = run(*argv)
        assert code == 2 and out == "", argv
        assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1, err
    code, _, _ = run(p, "frobnicate")  # argparse's own usage error
    assert code == 2
    code, _, err = run(str(tmp_path / "missing.sqlite"), "-v", "verify")
    assert code == 2 and "Traceback" in err  # --verbose shows the detail


def test_timeline_and_state_text(session: Session) -> None:
    code, out, _ = run(str(session.path), "timeline", "--type", "fill", "--symbol", "AAPL")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["seq", "ts", "(UTC)"]
    assert len(lines) == 1 + 4 and all(" fill " in ln for ln in lines[1:])
    assert "buy 10 @ 103.0000 fee 0.52" in lines[1]
    code, out, _ = run(str(session.path), "timeline", "--order", "nothing-like-it")
    assert code == 0 and "(no matching events)" in out
    code, out, _ = run(str(session.path), "state", "--at-seq", "1", "--json")
    assert code == 0 and json.loads(out)["as_of_seq"] == 1
    code, out, _ = run(str(session.path), "explain", "too-big")
    assert code == 0 and "risk decision: rejected" in out and "ORDER_NOTIONAL_LIMIT" in out
