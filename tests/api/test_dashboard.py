"""The dashboard in a real browser: headless Chromium driven through chromedriver's WebDriver
HTTP API. The deployments render, a change shows up live from the watch stream, a deployment's
page shows its conditions, events and adapter history, and with authentication on the page
asks for a token. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from state.keys import KeyStore
from state.models import InferenceDeploymentCreate, InferenceKeyCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import free_port, local_manifest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    """SQLite only: what is tested here sits above the database."""
    return sqlite_store


class Browser:
    """Just enough WebDriver: open a page, run a script, take a screenshot."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        options = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,720",
            # No network but this machine: what the pages need must come from the service.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]
        answer = self.http.post(
            "/session",
            json={"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": options}}}},
        )
        answer.raise_for_status()
        self.session = f"/session/{answer.json()['value']['sessionId']}"

    def open(self, url: str) -> None:
        self.http.post(f"{self.session}/url", json={"url": url}).raise_for_status()

    def run(self, script: str):
        answer = self.http.post(f"{self.session}/execute/sync", json={"script": script, "args": []})
        answer.raise_for_status()
        return answer.json()["value"]

    def until(self, script: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never satisfied: {script}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        answer = self.http.get(f"{self.session}/screenshot")
        answer.raise_for_status()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(answer.json()["value"]))

    def close(self) -> None:
        self.http.delete(self.session)
        self.http.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    port = free_port()
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/status", timeout=1).json()["value"]["ready"]:
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, "chromedriver did not start"
        time.sleep(0.1)
    opened = Browser(url)
    yield opened
    opened.close()
    driver.terminate()
    driver.wait(timeout=10)


ROWS = "return [...document.querySelectorAll('#deployments tr')].map(r => [...r.cells].map(c => c.textContent))"


def test_the_dashboard_lists_deployments_and_follows_them_live(store, api, browser):
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
    browser.open(f"{api.url}/ui")
    rows = browser.until(ROWS)
    assert rows[0][:4] == ["support-bot", "local", "Pending", "-"]
    browser.until("return document.getElementById('live').textContent === 'live'")

    # A change made elsewhere shows up without a reload.
    row = store.get("support-bot")
    store.update_status(
        "support-bot",
        DeploymentStatus.model_validate(
            {
                "phase": "Ready",
                "endpoint": "http://127.0.0.1:7860",
                "adapter": {"servingVersion": "3f2a9c01d4e5"},
                "cost": {
                    "gpuHoursToday": 0.5,
                    "gpuHoursThisMonth": 2.5,
                    "estimatedCostThisMonth": 10.0,
                    "currency": "USD",
                    "budget": {"limit": "10 GPU-hours a month", "used": 2.5, "fraction": 0.25, "period": "2026-12", "state": "Within"},
                },
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Serving",
                        "message": "serving",
                        "lastTransitionTime": "2026-11-21T10:00:00Z",
                    }
                ],
            }
        ),
        uid=row.uid,
    )
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("second-bot")))
    rows = browser.until(ROWS.replace("return ", "const rows = ") + "; return rows.length === 2 && rows[0][2] === 'Ready' ? rows : null")
    assert rows[0] == [
        "support-bot",
        "local",
        "Ready",
        "True",
        "http://127.0.0.1:7860",
        "3f2a9c01d4e5",
        "2.50 (USD 10.00) · 25% of 10 GPU-hours a month",
        "-",
    ]
    assert rows[1][0] == "second-bot"
    browser.screenshot(ARTIFACTS / "dashboard.png")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

    # Who uses the GPU: each key with its limits and usage (this API has no target to read the
    # replicas' reports from: it says so, and shows "?" rather than a zero it does not know).
    KeyStore(store).create("support-bot", InferenceKeyCreate(name="support-web", rpm=600), actor="test")
    browser.open(f"{api.url}/ui/deployments/support-bot")
    keys = browser.until(
        "const rows = [...document.querySelectorAll('#keys tr')].map(r => [...r.cells].map(c => c.textContent)); return rows.length ? rows : null"
    )
    assert keys == [["support-web", "600", "-", "never", "?", "?", "?"]]
    assert "could not be read" in browser.run("return document.getElementById('keys-note').textContent")
    conditions = browser.until("return [...document.querySelectorAll('#conditions tr')].map(r => r.cells[0].textContent)")
    assert conditions == ["Ready"]
    events = browser.until("return [...document.querySelectorAll('#events tr')].map(r => r.cells[2].textContent)")
    assert "Created" in events
    # Every table has a header over every column (the adapter history had a blank one).
    headers = browser.run("return [...document.querySelectorAll('thead th')].map(h => h.textContent.trim())")
    assert len(headers) >= 20 and all(headers), headers
    browser.screenshot(ARTIFACTS / "dashboard-deployment.png")

    # A deployment of several adapters shows each: what serves, and each adapter's rollout.
    many = local_manifest("many-bot")
    many["spec"]["adapters"] = [{"name": "billing", "path": "adapters/billing"}, {"name": "legal", "path": "adapters/legal"}]
    created = store.create(InferenceDeploymentCreate.model_validate(many))
    store.update_status(
        "many-bot",
        DeploymentStatus.model_validate(
            {
                "phase": "Ready",
                "adapters": [
                    {"name": "billing", "desiredVersion": "b1", "servingVersion": "b1"},
                    {
                        "name": "legal",
                        "desiredVersion": "l2",
                        "servingVersion": "l1",
                        "lastRollout": {"version": "l2", "result": "InProgress"},
                        "canary": {
                            "version": "l2",
                            "weight": 10,
                            "startedAt": "2026-12-07T10:00:00Z",
                            "endsAt": "2026-12-07T10:10:00Z",
                            "canary": {"version": "l2", "requests": 40, "errors": 1, "errorRate": 0.025, "meanLatencyMs": 210.4},
                            "stable": {"version": "l1", "requests": 360, "errors": 0, "errorRate": 0.0, "meanLatencyMs": 200.0},
                        },
                    },
                ],
            }
        ),
        uid=created.uid,
    )
    browser.open(f"{api.url}/ui")
    listed = browser.until(ROWS.replace("return ", "const rows = ") + "; return rows.find(r => r[0] === 'many-bot' && r[2] === 'Ready')")
    assert listed[5] == "billing b1, legal l1 (canary l2 10%)" and listed[6] == "-"
    browser.open(f"{api.url}/ui/deployments/many-bot")
    each = browser.until(
        "const rows = [...document.querySelectorAll('#adapter-status tr')].map(r => [...r.cells].map(c => c.textContent)); "
        "return rows.length ? rows : null"
    )
    assert each[0] == ["billing", "b1", "b1", "-", "-"]
    assert each[1][:4] == ["legal", "l2", "l1", "l2 InProgress"]
    # Its canary: the share, the time left (it ended long ago here), and both sides' figures.
    assert each[1][4] == (
        "10% to l2, 0 s left · l2: 40 requests, 1 errors (2.5%), mean 210 ms · stable l1: 360 requests, 0 errors (0.0%), mean 200 ms"
    )


def test_with_authentication_on_the_dashboard_asks_for_a_token(store, browser):
    import threading

    import uvicorn

    from api.app import create_app
    from reconciler.core import Reconciler

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, Reconciler(store, {}), authenticate=True),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        browser.open(f"http://127.0.0.1:{port}/ui")
        message = browser.until("return !document.getElementById('login').hidden && document.getElementById('login-message').textContent")
        assert "needs a token" in message
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_api_docs_render_with_no_network(api, browser):
    """Before: a blank page offline, since Swagger UI came from a CDN."""
    browser.open(f"{api.url}/docs")
    operations = browser.until("const ops = document.querySelectorAll('.opblock'); return ops.length > 10 && ops.length")
    assert operations >= 15
    summaries = browser.run("return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)")
    assert "/v1/deployments" in summaries
    browser.screenshot(ARTIFACTS / "api-docs.png")
