"""The issue's reproduction: `halt --flatten` recorded while the service is stopped, with a
position and orders open at the broker, and the trade stream down at the next start (every
cancel's update is lost, repeated cancels get 422). The real service must still end flat and
verified, with a reconciliation interval far longer than the kill switch's retry window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fake_alpaca import FakeAlpaca
from tests.integration.alpaca_world import alpaca_world
from tests.integration.test_alpaca_execution import RICH
from tests.integration.test_kill_switch_finishes import long_with_open_orders
from tests.service.procs import cli, service
from tests.service.test_service_alpaca import env_for

pytestmark = pytest.mark.slow


async def test_offline_halt_flatten_with_orders_open_ends_flat_and_verified(
        tmp_path: Path, fake: FakeAlpaca) -> None:
    log_path = tmp_path / "data" / "events.sqlite"
    log_path.parent.mkdir()
    async with alpaca_world(log_path, fake, **RICH) as w:  # a session that left orders open
        await long_with_open_orders(w, fake)
    assert len(fake.orders("open")) == 2

    env = {**env_for(fake), "MQD_RECONCILE__INTERVAL_S": "3600",
           "MQD_KILL_SWITCH__RETRY_INTERVAL_S": "1"}
    halt = cli(tmp_path, "halt", "--flatten", "--reason", "offline halt", extra=env)
    assert halt.returncode == 0, halt.stderr
    before = json.loads(cli(tmp_path, "status", "--json", extra=env).stdout)
    assert before["kill_switch"] == "engaged" and "NOT VERIFIED" in before["kill_switch_note"]

    fake.block_trade_stream(True)  # every update of the next run is lost
    fake.set_auto_fill(True)  # the flattening sell fills when it arrives
    with service(tmp_path, env) as svc:
        svc.wait_for("kill switch verified", timeout=90)
        assert svc.stop() == 0
    assert fake.positions() == [] and fake.orders("open") == []
    after = json.loads(cli(tmp_path, "status", "--json", extra=env).stdout)
    assert after["kill_switch"] == "verified" and after["kill_switch_note"] == ""
    assert after["positions"] == [] and after["open_orders"] == []
