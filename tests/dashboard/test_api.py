"""Every API view against a scripted log, checked against the project's own projections and
forensics; token rules; bad requests; a log still being written."""

from __future__ import annotations

import json
import os
import stat
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from engine.dashboard.security import BindError, load_or_create_token, parse_bind
from engine.rebuild import rebuild
from events.catalogue import FillReceived
from events.store import EventLog, LogReader
from projections.calendar import trading_day
from projections.risk import day_trades_in_window, realized_in_week, realized_on
from replay.forensics.explain import explain
from tests.dashboard.helpers import dashboard
from tests.dashboard.scripted import write
from tests.factories import bar, later

D = Decimal


@pytest.fixture
async def scripted(tmp_path: Path) -> Path:
    path = tmp_path / "events.sqlite"
    await write(path)
    return path


async def test_overview_numbers_equal_the_projections(scripted: Path, tmp_path: Path) -> None:
    async with LogReader(scripted) as r:
        proj = await rebuild(r)
    now = later(10)
    async with dashboard(scripted, tmp_path, now=now) as d:
        o = (await d.get("/api/overview")).json()
    assert o["last_seq"] == proj.last_seq and o["caught_up"] is True
    assert D(o["account"]["equity"]) == proj.equity().quantize(D("0.01"))
    assert o["account"]["equity"] == "1045.50"  # cash 1000 - 1000.5 + 416, 6 AAPL at 105
    day = trading_day(now)
    assert D(o["pnl"]["today"]) == realized_on(proj.risk, day) == D("15.5")
    assert D(o["pnl"]["week"]) == realized_in_week(proj.risk, day)
    assert o["day_trades"]["used"] == day_trades_in_window(proj.risk, day) == 1
    assert o["trading"] == {"state": proj.risk.trading_state, "reason": proj.risk.state_reason,
                            "kill_switch": "verified", "kill_actor": "tester",
                            "kill_reason": "drill", "kill_flatten": False}
    [pos] = o["positions"]
    p = proj.positions.positions["AAPL"]
    assert (D(pos["qty"]), D(pos["avg_cost"]), D(pos["realized_pnl"])) == \
        (p.qty, p.avg_cost, p.realized_pnl)
    assert D(pos["unrealized_pnl"]) == (D(105) - p.avg_cost) * p.qty == D(30)
    assert pos["protection"]["stop_price"] == "95"  # the stop the opening intent recorded
    assert [x["client_order_id"] for x in o["open_orders"]] == sorted(proj.orders.open_ids) \
        == ["c3"]
    codes = {x["code"]: x["count"] for x in o["rejections"]["by_code"]}
    assert codes == {"MAX_OPEN_POSITIONS": 2, "STALE_DATA": 1}
    assert o["discrepancies"]["count"] == 1 and o["anomalies"]["count"] == 0
    assert o["stream"]["connected"] is False and o["stream"]["state"] == "reconnecting"
    assert o["alerts"]["sent"] == 1
    assert o["rejections"]["by_code"][0]["code"] == "MAX_OPEN_POSITIONS"  # most common first
    fresh = {f["symbol"]: f for f in o["freshness"]}
    # MSFT's last bar ended at T0; ten minutes later it is far beyond 2 bar intervals
    assert fresh["MSFT"]["stale"] is True and D(fresh["MSFT"]["age_s"]) == D(600)
    assert fresh["AAPL"]["stale"] is True and D(fresh["AAPL"]["age_s"]) == D(300)
    assert o["run"]["running"] is True and o["control"]["available"] is False


async def test_a_position_links_to_the_fills_behind_it(scripted: Path, tmp_path: Path) -> None:
    async with LogReader(scripted) as r:
        fills = [(s, e) async for s, e in r.read(types=("fill",))]
    async with dashboard(scripted, tmp_path) as d:
        pos = (await d.get("/api/positions")).json()["positions"][0]
        detail = (await d.get("/api/positions/AAPL/fills")).json()
        missing = await d.get("/api/positions/ZZZ/fills")
    assert pos["fill_seqs"] == [s for s, _ in fills]
    assert [(f["seq"], D(f["qty"]), D(f["price"])) for f in detail["fills"]] == \
        [(s, e.qty, e.price) for s, e in fills if isinstance(e, FillReceived)]
    assert missing.status == 404 and "ZZZ" in missing.json()["error"]


async def test_an_order_chain_is_the_forensics_explain(scripted: Path, tmp_path: Path) -> None:
    async with LogReader(scripted) as r:
        expl = await explain(r, "c1")
    async with dashboard(scripted, tmp_path) as d:
        chain = (await d.get("/api/chain/c1")).json()
        by_intent = (await d.get("/api/chain/i-r1")).json()
        unknown = await d.get("/api/chain/nope")
    assert [s["seq"] for s in chain["steps"]] == [s.seq for s in expl.steps]
    assert [s["role"] for s in chain["steps"]][:3] == ["bar", "intent", "decision"]
    assert chain["decision"] == "approved" and chain["orders"][0]["status"] == "filled"
    assert by_intent["decision"] == "rejected"
    assert [r["code"] for r in by_intent["reasons"]] == ["MAX_OPEN_POSITIONS", "STALE_DATA"]
    assert unknown.status == 404 and "nope" in unknown.json()["error"]


async def test_orders_timeline_and_chart(scripted: Path, tmp_path: Path) -> None:
    async with dashboard(scripted, tmp_path) as d:
        every = (await d.get("/api/orders?status=all")).json()["orders"]
        fills = (await d.get("/api/timeline?types=fill")).json()["entries"]
        mine = (await d.get("/api/timeline?order=c3")).json()["entries"]
        msft = (await d.get("/api/timeline?symbol=MSFT&limit=2")).json()["entries"]
        after = (await d.get("/api/timeline?after_seq=30")).json()["entries"]
        svg = await d.get("/api/equity.svg?scope=run")
    assert [o["client_order_id"] for o in every] == ["c1", "c3", "c4"]
    assert [o["status"] for o in every] == ["filled", "accepted", "filled"]
    assert [e["type"] for e in fills] == ["fill", "fill"]
    assert {e["client_order_id"] for e in mine} == {"c3"} and len(mine) == 4
    assert len(msft) == 2 and all(e["symbol"] == "MSFT" for e in msft)
    assert [e["seq"] for e in after] == [31, 32, 33, 34]
    assert svg.status == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<polyline" in svg.body and b"1045.50" in svg.body  # the curve's high


@pytest.mark.parametrize("path, code, words", [
    ("/api/timeline?limit=0", 400, "limit"),
    ("/api/timeline?limit=abc", 400, "integer"),
    ("/api/timeline?after_seq=-1", 400, ">= 0"),
    ("/api/timeline?types=nonsense", 400, "unknown event type"),
    ("/api/orders?status=weird", 400, "status"),
    ("/api/equity.svg?scope=year", 400, "scope"),
    ("/api/nothing-here", 404, "Not Found"),
    ("/static/../../etc/passwd", 404, ""),
    ("/static/secret.txt", 404, "no such asset"),
])
async def test_bad_requests_get_a_clear_4xx(scripted: Path, tmp_path: Path, path: str,
                                            code: int, words: str) -> None:
    async with dashboard(scripted, tmp_path) as d:
        a = await d.get(path)
    assert a.status == code
    assert "Traceback" not in a.body.decode()
    if words:
        assert words in a.json()["error"]


async def test_wrong_method_is_405_not_a_traceback(scripted: Path, tmp_path: Path) -> None:
    async with dashboard(scripted, tmp_path) as d:
        a = await d.get("/api/control/halt")
        b = await d.post("/api/overview", {})
    assert a.status == 405 and b.status == 405


async def test_control_needs_the_token_a_json_body_and_a_running_service(
        scripted: Path, tmp_path: Path) -> None:
    async with dashboard(scripted, tmp_path) as d:
        token = d.cfg.token.value
        no_token = await d.post("/api/control/halt", {"reason": "x"})
        bad_token = await d.post("/api/control/halt", {"reason": "x"}, token="0" * 43)
        # what a cross-site form can send: a form content type, no header
        form = await d.post("/api/control/halt", b"reason=x", token=token,
                            content_type="application/x-www-form-urlencoded")
        no_reason = await d.post("/api/control/halt", {"reason": " "}, token=token)
        not_json = await d.post("/api/control/halt", b"{oops", token=token)
        unknown = await d.post("/api/control/explode", {"reason": "x"}, token=token)
        offline = await d.post("/api/control/halt", {"reason": "x"}, token=token)
        last = d.follower.last_seq
    assert no_token.status == 401 and "X-MQD-Token" in no_token.json()["error"]
    assert bad_token.status == 401
    assert form.status == 415
    assert no_reason.status == 400 and "reason" in no_reason.json()["error"]
    assert not_json.status == 400
    assert unknown.status == 404
    assert offline.status == 409 and "no service" in offline.json()["error"]
    for a in (no_token, bad_token, form, no_reason, not_json, offline):
        assert token not in a.body.decode()
    async with LogReader(scripted) as r:
        assert await r.last_seq() == last  # nothing was recorded by any of them


async def test_remote_mode_needs_the_token_for_every_api_read(scripted: Path,
                                                             tmp_path: Path) -> None:
    async with dashboard(scripted, tmp_path, read_needs_token=True) as d:
        token = d.cfg.token.value
        page = await d.get("/")  # the page itself holds no data
        anon = await d.get("/api/overview")
        ok = await d.get("/api/overview", headers={"X-MQD-Token": token})
    assert page.status == 200 and b"MiniQuantDesk" in page.body
    assert anon.status == 401 and ok.status == 200


async def test_loopback_dashboard_refuses_foreign_host_names(scripted: Path,
                                                            tmp_path: Path) -> None:
    async with dashboard(scripted, tmp_path) as d:
        evil = await d.get("/api/overview", headers={"Host": "attacker.example:8765"})
        fine = await d.get("/api/overview", headers={"Host": "localhost:8765"})
        page = await d.get("/")
    assert evil.status == 421 and fine.status == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and page.headers["x-frame-options"] == "DENY"
    assert b"http://" not in page.body and b"https://" not in page.body  # no CDN


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    t1 = load_or_create_token(tmp_path)
    assert t1.created and len(t1.value) >= 40
    assert stat.S_IMODE(os.stat(t1.path).st_mode) == 0o600
    t2 = load_or_create_token(tmp_path)
    assert not t2.created and t2.value == t1.value
    os.chmod(t1.path, 0o644)
    with pytest.raises(PermissionError, match="readable by others"):
        load_or_create_token(tmp_path)


def test_bind_rules() -> None:
    assert parse_bind("127.0.0.1:8765", allow_remote=False) == ("127.0.0.1", 8765)
    assert parse_bind("[::1]:9000", allow_remote=False) == ("::1", 9000)
    assert parse_bind("localhost:1", allow_remote=False) == ("localhost", 1)
    with pytest.raises(BindError, match="allow_remote"):
        parse_bind("0.0.0.0:8765", allow_remote=False)
    assert parse_bind("0.0.0.0:8765", allow_remote=True) == ("0.0.0.0", 8765)
    for bad in ("8765", "127.0.0.1:", "127.0.0.1:99999", "host:port"):
        with pytest.raises(BindError):
            parse_bind(bad, allow_remote=True)


async def test_follows_a_log_still_being_written_with_batched_pushes(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    first = await write(path)
    async with EventLog.open(path) as log, dashboard(path, tmp_path, push_interval_s=0.2) as d:
        updates: list[dict] = []  # type: ignore[type-arg]
        target = first + 600

        def read_stream() -> None:
            import urllib.request

            with urllib.request.urlopen(d.served.url + "api/stream", timeout=30) as r:
                for raw in r:
                    line = raw.decode().strip()
                    if line.startswith("data: "):
                        updates.append(json.loads(line[6:]))
                        if updates[-1]["overview"]["last_seq"] >= target:
                            return

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, read_stream)
            for i in range(600):
                await log.append(bar("AAPL", later(10 + i), str(106 + i % 7)))
                if i % 50 == 0:
                    await anyio.lowlevel.checkpoint()  # let the reader in now and then
            with anyio.fail_after(30):
                while not updates or updates[-1]["overview"]["last_seq"] < target:
                    await anyio.sleep(0.05)
    last = updates[-1]["overview"]
    assert last["last_seq"] == target
    # 6 AAPL at the last close (106 + 599 % 7 = 110)
    assert D(last["positions"][0]["unrealized_pnl"]) == (D(110) - D(100)) * 6
    seqs = [e["seq"] for u in updates for e in u["timeline"]]
    assert seqs == list(range(1, target + 1))  # every event pushed once, in order
    assert len(updates) < 600 / 5  # batched: many events per push


async def test_a_bracket_shows_its_legs_and_the_position_its_live_stop(tmp_path: Path) -> None:
    """After the entry fills, the bracket's stop leg is armed at the broker: the position's
    protection is that stop, and the open orders are the legs, each naming its parent."""
    from events.catalogue import OrderAccepted
    from projections.protection import protection_of
    from tests.factories import T0, fill, submitted_chain
    from tests.projections.test_protection_model import SL, TP, bracket

    path = tmp_path / "events.sqlite"
    async with EventLog.open(path) as log:
        for e in [bar("AAPL", later(-1), "100"), bracket(),
                  *submitted_chain("mqd-" + "a" * 40),
                  fill("mqd-" + "a" * 40, "10", "100", done=True),
                  OrderAccepted(ts=T0, client_order_id=SL, broker_order_id="b-sl"),
                  OrderAccepted(ts=T0, client_order_id=TP, broker_order_id="b-tp")]:
            log.append_nowait(e)  # type: ignore[arg-type]
        await log.flush()
    async with LogReader(path) as r:
        proj = await rebuild(r)
    async with dashboard(path, tmp_path) as d:
        o = (await d.get("/api/overview")).json()
        every = (await d.get("/api/orders?status=all")).json()["orders"]
    live = protection_of(proj, "AAPL")
    [pos] = o["positions"]
    assert pos["protection"]["live_at_broker"] is True
    assert D(pos["protection"]["stop_price"]) == live.stop == D(98)
    assert pos["protection"]["orders"] == [SL]
    parent = next(x for x in every if x["client_order_id"] == "mqd-" + "a" * 40)
    assert [(leg["client_order_id"], leg["role"]) for leg in parent["legs"]] == \
        [(TP, "take_profit"), (SL, "stop_loss")]
    assert {x["client_order_id"]: x["parent_id"] for x in o["open_orders"]} == \
        {TP: parent["client_order_id"], SL: parent["client_order_id"]}
