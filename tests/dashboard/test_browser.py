"""A real browser (headless Debian chromium through chromedriver) on the dashboard of a
running demo service (a subprocess, paced so the page can watch it trade): positions and
P&L change as bars arrive, an order's chain opens, halt without the token is refused and
records nothing, halt with it is recorded with actor `dashboard`.

Set MQD_SCREENSHOT=docs/dashboard.png to refresh the README's screenshot."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from events.catalogue import KillSwitchEngaged, KillSwitchVerified
from events.store import LogReader
from tests.notify.webhook_server import webhook
from tests.service.procs import service

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def kill_events(log: Path) -> list[tuple[int, object]]:
    async def read() -> list[tuple[int, object]]:
        async with LogReader(log) as r:
            return [(s, e) async for s, e in r.read(
                where="type IN ('kill_switch_engaged', 'kill_switch_verified')")]
    return asyncio.run(read())


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_watches_the_demo_trade_opens_a_chain_and_halts(tmp_path: Path,
                                                               browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with webhook() as hook, service(tmp_path, {
            "MQD_DASHBOARD__BIND": "127.0.0.1:0",
            "MQD_NOTIFY__WEBHOOK_URL": json.dumps([hook.url])},
            args=("demo", "--pace", "0.01", "--dashboard")) as svc:
        line = svc.wait_for("dashboard http://", timeout=120)
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)  # type: ignore[union-attr]
        log = next((tmp_path / "data" / "runs").glob("demo-*.sqlite"))
        token = (tmp_path / "data" / "dashboard.token").read_text().strip()
        svc.wait_for("engine ready", timeout=60)

        d = browser
        d.get(url)
        wait = WebDriverWait(d, 120, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")

        def open_positions() -> list[list[str]]:
            # read in one script: the page re-renders its tables on every push
            rows: list[list[str]] = d.execute_script(
                "return [...document.querySelectorAll('#positions tbody tr')].map(r => "
                "[r.dataset.symbol, r.querySelector('td.qty').textContent, "
                "r.querySelector('td.unrealized').textContent])")
            return [r for r in rows if r[1] not in ("0", "-")]

        # positions appear, then they (or their P&L) change as more bars arrive
        first = wait.until(lambda d: open_positions() or None)
        seq0 = int(d.find_element(By.ID, "last-seq").text)
        equity0 = d.find_element(By.ID, "equity-now").text
        wait.until(lambda d: open_positions() and open_positions() != first
                   and int(d.find_element(By.ID, "last-seq").text) > seq0)
        wait.until(lambda d: d.find_element(By.ID, "equity-now").text != equity0
                   or d.find_element(By.ID, "pnl-today").text != "0.00")

        # an order's chain: click an order id in the timeline
        # (found and clicked in one script: the timeline re-renders on every push)
        coid = wait.until(lambda d: d.execute_script(
            "const b = [...document.querySelectorAll('#timeline button.link')]"
            ".find(b => b.textContent.startsWith('mqd-')); if (!b) return null;"
            "b.click(); return b.textContent;"))
        wait.until(lambda d: d.find_element(By.ID, "chain-panel").is_displayed()
                   and d.find_element(By.ID, "chain-id").get_attribute("textContent") == coid
                   and len(d.find_elements(By.CSS_SELECTOR, "#chain li")) >= 4)
        roles = [li.find_element(By.CSS_SELECTOR, ".role").text
                 for li in d.find_elements(By.CSS_SELECTOR, "#chain li")]
        assert {"intent", "decision", "order"} <= set(roles), roles

        # halt without the token: refused, nothing recorded
        before = kill_events(log)
        d.find_element(By.ID, "reason").send_keys("browser drill")
        d.find_element(By.ID, "token").clear()
        d.execute_script("sessionStorage.clear()")
        wait.until(lambda d: d.find_element(By.ID, "btn-halt").is_enabled())
        d.find_element(By.ID, "btn-halt").click()
        wait.until(lambda d: "refused (401)" in d.find_element(By.ID, "control-result").text)
        assert kill_events(log) == before == []
        assert d.find_element(By.ID, "kill-switch").text == "kill switch off"

        # with the token: recorded with actor dashboard and verified at the broker
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.ID, "btn-halt").click()
        wait.until(lambda d: "halt: done" in d.find_element(By.ID, "control-result").text)
        wait.until(lambda d: "by dashboard: browser drill" in
                   d.find_element(By.ID, "kill-switch").text)
        wait.until(lambda d: d.find_element(By.ID, "trading-state").text == "halted")
        evs = [e for _, e in kill_events(log)]
        assert isinstance(evs[0], KillSwitchEngaged)
        assert (evs[0].actor, evs[0].reason) == ("dashboard", "browser drill")
        assert any(isinstance(e, KillSwitchVerified) for e in evs[1:])
        assert token not in d.page_source

        # the service told the webhook, and recorded that it did
        hook.wait_for(1)  # raises on timeout
        assert hook.received[0]["kind"] == "kill_switch_engaged"
        assert "dashboard" in hook.received[0]["summary"]
        wait.until(lambda d: "kill switch engaged by dashboard" in
                   d.find_element(By.ID, "alerts").text)

        shot = tmp_path / "dashboard.png"
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(str(shot))
        if os.environ.get("MQD_SCREENSHOT"):
            shutil.copy(shot, os.environ["MQD_SCREENSHOT"])
        assert svc.stop(signal.SIGTERM) == 0
