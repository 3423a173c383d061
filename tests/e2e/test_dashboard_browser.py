"""The live dashboard in a real headless browser: ``palm up`` (Redis, masters,
worker pools, gunicorn, Envoy) runs a small deployment, a thread sends it jobs
through Envoy, and Chromium (driven by Selenium and Debian's chromium-driver)
opens ``/dashboard`` through Envoy with an API key, waits for the worker list
and for a chart that changes, and saves a screenshot.

``PALM_DASHBOARD_SCREENSHOT=path.png`` also writes the screenshot there (how
docs/dashboard.png, shown in the README, is made).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from palm.state.apikeys import ApiKeyStore
from palm.state.store import State
from tests.fixtures.http import request, wait_until
from tests.fixtures.procs import Processes

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("chromium") is None or shutil.which("chromedriver") is None,
        reason="needs Debian's chromium and chromium-driver (scripts/system-deps)",
    ),
]

PALM = [sys.executable, "-m", "palm", "--log-level", "WARNING"]
CLUSTER = "dashboard-e2e"
DEPLOYMENT = """
name: {cluster}
redis: {redis}
edge:
  port: 0
  gateway_workers: 1
services:
  echo:
    kind: standalone
    server: palm.demo:DemoServer
  demo:
    kind: parallel
    worker: palm.demo:DemoWorker
    workers: 2
  maths:
    kind: function
    functions:
      factorial: palm.demo:factorial
    workers: 2
"""
#: What the load thread sends through Envoy, round after round.
CALLS = (
    ("/echo/foo", b"hello"),
    ("/demo/foo", b"hello"),
    ("/maths/factorial", b"200"),
    ("/map/maths/factorial", b"[10, 20, 30, 40, 50, 60, 70, 80]"),
    ("/maths/factorial", b"-1"),  # fails in user code: a 502, counted and logged
)


def read_edge_url(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The edge's URL from ``palm up``'s output, once it is up (then stdout is drained)."""
    assert proc.stdout is not None
    found: list[str] = []

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("palm up: edge at "):
                found.append(line.split()[-1])

    threading.Thread(target=drain, daemon=True).start()
    wait_until(lambda: bool(found) or proc.poll() is not None, timeout_s, "palm up ready")
    assert found, f"palm up exited with {proc.returncode}"
    return found[0]


def stop_palm_up(proc: subprocess.Popen[str]) -> None:
    """SIGTERM ``palm up`` (it stops its tree), then SIGKILL by PID what is left."""
    if proc.poll() is not None:
        return
    tree = []
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(proc.pid).children(recursive=True)
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


class Load:
    """A thread calling the edge round after round until stopped (bounded in count)."""

    def __init__(self, url: str, key: str, rounds: int = 2000) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.rounds = rounds
        self.answers: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self.rounds):
            for path, body in CALLS:
                if self.stop.is_set():
                    return
                try:
                    status = request(self.url, "POST", path, body, self.headers).status
                except OSError:
                    status = 0
                self.answers[status] = self.answers.get(status, 0) + 1
            self.stop.wait(0.02)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    # the browser's own temporary directories go where pytest removes them
    scratch = tmp_path_factory.mktemp("chromium")
    service = Service(
        executable_path=shutil.which("chromedriver") or "chromedriver",
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver_pid = service.process.pid if service.process is not None else None
    tree: list[psutil.Process] = []
    try:
        if driver_pid is not None:
            with contextlib.suppress(psutil.Error):
                tree = psutil.Process(driver_pid).children(recursive=True)
        yield driver
    finally:
        driver.quit()
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        for proc in alive:  # a browser process quit() left behind
            with contextlib.suppress(psutil.Error):
                proc.kill()


def chart_path(driver: Any, chart: str) -> str:
    """The chart's path data, read in one script: the chart redraws every refresh,
    and elements found first and read one by one may be gone by then (stale)."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(p => p.getAttribute('d') || '').join('|');"
    )
    return str(driver.execute_script(script, f"#{chart} path"))


def test_the_dashboard_through_envoy_shows_workers_and_live_charts(
    procs: Processes, browser: Any, tmp_path: Path
) -> None:
    redis_url = os.environ["PALM_REDIS_URL"]  # the session's redis-server (tests/conftest.py)
    config = tmp_path / "palm.yaml"
    config.write_text(textwrap.dedent(DEPLOYMENT).format(cluster=CLUSTER, redis=redis_url))
    with State(redis_url, CLUSTER) as state:
        _key_id, key = ApiKeyStore(state).create("dashboard test")
    proc = procs.start(
        [*PALM, "up", "--config", str(config), "--port", "0"], stderr=subprocess.DEVNULL
    )
    try:
        url = read_edge_url(proc, 150)
        # the page needs no key through Envoy; its data does
        assert request(url, "GET", "/dashboard").status == 200
        assert request(url, "GET", "/dashboard/api/snapshot").status == 401
        metrics = request(url, "GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
        assert metrics.status == 200 and b"palm_gateway_requests" in metrics.body

        with Load(url, key) as load:
            # without a key the page asks for one
            browser.get(f"{url}/dashboard")
            wait_until(
                lambda: browser.find_element(By.ID, "key-form").is_displayed(),
                60,
                "the page asks for an API key",
            )
            assert browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr") == []
            # the key travels in the fragment: the page keeps it and sends it itself
            browser.get(f"{url}/dashboard#key={key}")

            def workers_listed() -> bool:
                rows = browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr")
                return len(rows) >= 4  # demo's two and maths's two

            wait_until(workers_listed, 90, "the dashboard lists the workers")
            assert not browser.find_element(By.ID, "key-form").is_displayed()
            assert "#key=" not in browser.current_url  # the key left the address bar
            cells = browser.find_elements(By.CSS_SELECTOR, "#workers tbody td[data-worker]")
            assert len({c.text for c in cells}) >= 4
            states = browser.find_elements(By.CSS_SELECTOR, "#workers tbody td:nth-child(3)")
            assert all(s.text in ("idle", "dead") or s.text.startswith("busy") for s in states)

            def throughput_drawn() -> bool:
                return bool(chart_path(browser, "chart-throughput"))

            wait_until(throughput_drawn, 60, "a throughput line")
            first = chart_path(browser, "chart-throughput")

            def chart_moved() -> bool:
                return chart_path(browser, "chart-throughput") not in ("", first)

            wait_until(chart_moved, 30, "the throughput chart changes")
            wait_until(
                lambda: browser.find_element(By.ID, "t-done").text not in ("", "-", "0"),
                30,
                "jobs done counted",
            )
            functions = browser.find_elements(By.CSS_SELECTOR, "#functions tbody tr")
            assert len(functions) >= 3
            wait_until(
                lambda: browser.find_element(By.ID, "status").text.startswith("updated"),
                30,
                "the page's status line says it is up to date",
            )
            target = os.environ.get("PALM_DASHBOARD_SCREENSHOT")
            if target:  # for the README: a minute of history in the charts first

                def history() -> int:
                    chart = browser.find_element(By.ID, "chart-queue")
                    return int(chart.get_attribute("data-points") or 0)

                wait_until(lambda: history() >= 2 * 60, 150, "a minute of history")
            shot = tmp_path / "dashboard.png"
            assert browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            if target:
                shutil.copyfile(shot, target)
        # every call answered: the good ones 200, the failing one 502 (never lost)
        assert load.answers.get(200, 0) > 0 and load.answers.get(502, 0) > 0, load.answers
        assert set(load.answers) == {200, 502}, load.answers
    finally:
        stop_palm_up(proc)
