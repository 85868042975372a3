"""`python -m engine dashboard` on a finished demo's log, as a subprocess."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.dashboard.helpers import request
from tests.service.procs import cli, service

pytestmark = pytest.mark.slow


def test_dashboard_command_serves_a_finished_demo_log(tmp_path: Path) -> None:
    r = cli(tmp_path, "demo")
    assert r.returncode == 0, r.stderr
    log = next((tmp_path / "data" / "runs").glob("demo-*.sqlite"))
    with service(tmp_path, args=("--log", str(log), "dashboard", "--bind",
                                 "127.0.0.1:0")) as svc:
        shown = svc.wait_for("dashboard control token")
        token = (tmp_path / "data" / "dashboard.token").read_text().strip()
        assert token in shown  # shown the one time it is created
        url = re.search(r"http://127\.0\.0\.1:\d+/", svc.wait_for("dashboard http://"))
        assert url is not None
        # the log is read in the background: the overview says when it has caught up
        deadline = time.monotonic() + 60
        while not (o := request(url.group(0) + "api/overview").json())["caught_up"]:
            assert time.monotonic() < deadline, "never caught up"
        status = json.loads(cli(tmp_path, "--log", str(log), "status", "--json").stdout)
        assert o["last_seq"] == status["last_seq"]
        assert o["account"]["equity"] == f"{float(status['account']['equity']):.2f}"
        assert o["run"]["running"] is False and o["control"]["available"] is False
        assert svc.stop(signal.SIGTERM) == 0
    # no --log: the most recent run's log, like `status`
    with service(tmp_path, args=("dashboard", "--bind", "127.0.0.1:0")) as svc:
        line = svc.wait_for("dashboard control token")
        assert str(log.name) in svc.wait_for("dashboard http://")
        assert token not in line and "dashboard.token" in line  # never shown again
        svc.stop(signal.SIGINT)


def test_non_loopback_bind_needs_the_flag(tmp_path: Path) -> None:
    assert cli(tmp_path, "demo").returncode == 0
    log = next((tmp_path / "data" / "runs").glob("demo-*.sqlite"))
    r = cli(tmp_path, "--log", str(log), "dashboard", "--bind", "0.0.0.0:0")
    assert r.returncode == 2 and "allow_remote" in r.stderr and "Traceback" not in r.stderr
    r = cli(tmp_path, "dashboard", "--bind", "127.0.0.1:0", "--log", str(tmp_path / "no.sqlite"))
    assert r.returncode == 2 and "no event log" in r.stderr
