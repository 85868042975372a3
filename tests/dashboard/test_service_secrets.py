"""The dashboard inside a real service trading on the fake Alpaca (the real alpaca-py client):
the broker stream shows as connected, and no answer — views, chains, errors — carries a
credential."""

from __future__ import annotations

import re
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dashboard.helpers import request
from tests.fake_alpaca import FakeAlpaca
from tests.service.procs import service
from tests.service.test_service_alpaca import PRICES, env_for, filled_orders, push_leg

pytestmark = pytest.mark.slow


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeAlpaca(cash="100000", prices={"AAPL": "100"}, auto_fill=True) as f:
        yield f


def test_live_service_dashboard_never_shows_a_secret(tmp_path: Path, fake: FakeAlpaca) -> None:
    env = env_for(fake) | {"MQD_DASHBOARD__ENABLED": "true",
                           "MQD_DASHBOARD__BIND": "127.0.0.1:0"}
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)
    with service(tmp_path, env) as svc:
        url = re.search(r"http://127\.0\.0\.1:\d+/",  # type: ignore[union-attr]
                        svc.wait_for("dashboard http://")).group(0)
        svc.wait_for("engine ready")
        fake.wait_for_data_subscription("AAPL", timeout=20)
        push_leg(fake, base, PRICES, first_trade=3)
        fake.wait_for(lambda: filled_orders(fake) >= 2, timeout=30, message="two fills")
        deadline = time.monotonic() + 30
        while True:
            o = request(url + "api/overview").json()
            if o["stream"]["connected"] and o["open_orders"] is not None and \
                    any(e for e in request(url + "api/timeline?types=fill").json()["entries"]):
                break
            assert time.monotonic() < deadline, o["stream"]
        fills = request(url + "api/timeline?types=fill").json()["entries"]
        answers = [request(url + p) for p in (
            "", "api/overview", "api/positions", "api/orders?status=all", "api/timeline",
            "api/equity.svg", f"api/chain/{fills[0]['client_order_id']}", "api/chain/nope",
            "api/timeline?limit=x", "api/nothing", "static/app.js")]
        answers.append(request(url + "api/control/halt", method="POST", body=b"{}",
                               headers={"Content-Type": "application/json"}))
        assert o["stream"]["state"] == "listening" and o["control"]["available"] is True
        for a in answers:
            text = a.body.decode()
            assert fake.api_key not in text and fake.api_secret not in text
            assert "Traceback" not in text
        assert svc.stop(signal.SIGTERM) == 0
