"""Watch: changes as server-sent events, over real HTTP, and ``loraplane get -w``."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
from typing import IO

import httpx
import pytest
from prometheus_client import CollectorRegistry

from api.views import PublicViews
from api.watch import WatchHub, WatchLimits
from state.db import make_engine, sqlite_url, upgrade_database
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.api.test_cli import run_cli
from tests.conftest import bin_path, local_manifest
from tests.fakes import eventually


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    """SQLite only: what is tested here sits above the database."""
    return sqlite_store


def collect(url: str, params: dict, into: list, ready: threading.Event) -> None:
    """Read a watch stream until the server ends it, or until the watched deployment is deleted
    (the list watch never ends by itself before its timeoutSeconds)."""
    with httpx.stream("GET", url, params=params, timeout=httpx.Timeout(10, read=None)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        ready.set()
        for line in response.iter_lines():
            if line.startswith("data:"):
                into.append(json.loads(line[5:]))
                if into[-1]["type"] == "DELETED":
                    return


def watching(url: str, params: dict) -> tuple[list, threading.Thread]:
    events: list = []
    ready = threading.Event()
    thread = threading.Thread(target=collect, args=(url, params, events, ready), daemon=True)
    thread.start()
    assert ready.wait(10), "the watch stream did not open"
    return events, thread


def wait_for(events: list, count: int) -> None:
    eventually(lambda: len(events) >= count, what=f"{count} watch events (have {events})")


def finished(thread: threading.Thread) -> None:
    thread.join(timeout=20)
    assert not thread.is_alive(), "the watch stream did not end"


def test_a_list_watch_sends_what_exists_then_each_change(store, api):
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("old-bot")))  # without the label
    events, thread = watching(f"{api.url}/v1/deployments", {"watch": "true", "timeoutSeconds": 300, "label": "tier=prod"})
    manifest = local_manifest("support-bot")
    manifest["metadata"]["labels"] = {"tier": "prod"}
    store.create(InferenceDeploymentCreate.model_validate(manifest))
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("other-bot")))  # not tier=prod
    wait_for(events, 1)
    row = store.get("support-bot")
    store.update_status("support-bot", DeploymentStatus(phase="Ready", endpoint="http://127.0.0.1:1"), uid=row.uid)
    wait_for(events, 2)
    store.request_deletion("support-bot")
    store.remove("support-bot", uid=row.uid)
    finished(thread)
    kinds = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert kinds[0] == ("ADDED", "support-bot") and kinds[-1] == ("DELETED", "support-bot")
    assert ("MODIFIED", "support-bot") in kinds
    assert all(name == "support-bot" for _, name in kinds)  # the selector held
    ready = next(e for e in events if e["type"] == "MODIFIED" and e["object"]["status"].get("phase") == "Ready")
    assert ready["object"]["status"]["endpoint"] == "http://127.0.0.1:1"


class FirstLookHeld(DeploymentStore):
    """A store whose first look at the versions reads, then is held until the test lets it
    return: the hub's first look, finished late by a busy thread pool."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.first_read = threading.Event()
        self.release = threading.Event()
        self._looks = 0
        self._looks_lock = threading.Lock()

    def versions(self, name: str | None = None) -> dict[str, tuple[str, int]]:
        found = super().versions(name)
        with self._looks_lock:
            self._looks += 1
            first = self._looks == 1
        if first:
            self.first_read.set()
            assert self.release.wait(20), "the test never let the first look return"
        return found


def test_a_look_that_ends_late_never_makes_a_watch_say_deleted(tmp_path):
    """The hub's first look read nothing; a deployment was created; the watch opened and read
    it. When that older look ends at last, the watch must not take the deployment for gone."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade_database(engine)
    store = FirstLookHeld(engine)
    registry = CollectorRegistry()

    async def scenario() -> list[tuple[str, str]]:
        hub = WatchHub(store, PublicViews(), limits=WatchLimits(poll_seconds=0.01), registry=registry)
        watch = hub.open("tester")
        stream = hub.stream(watch, 60)
        assert await asyncio.to_thread(store.first_read.wait, 20), "the hub made no look"
        row = await asyncio.to_thread(store.create, InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
        first = asyncio.ensure_future(anext(stream))
        # Time for a watch's own read, were it to make one now (it must wait for the hub's look).
        await asyncio.wait({first}, timeout=0.5)
        store.release.set()
        texts = [await asyncio.wait_for(first, 20)]
        polls = registry.get_sample_value("loraplane_watch_polls_total") or 0
        deadline = asyncio.get_running_loop().time() + 20
        while (registry.get_sample_value("loraplane_watch_polls_total") or 0) < polls + 3:
            # Three more looks, each of which could have said DELETED.
            assert asyncio.get_running_loop().time() < deadline, "the hub made no more looks in 20 s"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(store.request_deletion, "support-bot")
        texts.append(await asyncio.wait_for(anext(stream), 20))
        await asyncio.to_thread(store.remove, "support-bot", uid=row.uid)
        texts.append(await asyncio.wait_for(anext(stream), 20))
        await stream.aclose()
        await hub.shutdown()
        return [(text.split("\n")[0], json.loads(text.split("data: ", 1)[1])["object"]["metadata"]["name"]) for text in texts]

    try:
        kinds = asyncio.run(scenario())
    finally:
        engine.dispose()
    assert kinds == [("event: ADDED", "support-bot"), ("event: MODIFIED", "support-bot"), ("event: DELETED", "support-bot")]


def test_watching_one_deployment_ends_when_it_is_gone(store, api):
    missing = httpx.get(f"{api.url}/v1/deployments/nobody", params={"watch": "true"})
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
    events, thread = watching(f"{api.url}/v1/deployments/support-bot", {"watch": "1"})
    wait_for(events, 1)
    store.request_deletion("support-bot")
    wait_for(events, 2)
    store.remove("support-bot", uid=row.uid)
    finished(thread)  # the stream ended by itself
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["metadata"]["deletionTimestamp"]


def test_a_watch_ends_at_its_timeout(store, api):
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
    events, thread = watching(f"{api.url}/v1/deployments", {"watch": "true", "timeoutSeconds": 1})
    finished(thread)
    assert [e["type"] for e in events] == ["ADDED"]


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines a process prints, as they come (a reader thread, so a silent process fails the
    test at a deadline instead of hanging it)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], process: subprocess.Popen) -> list[str]:
    try:
        return lines.get(timeout=30).split()
    except queue.Empty:
        process.kill()
        raise AssertionError(f"loraplane get -w printed nothing for 30s: {process.communicate()[1]}") from None


# Ctrl-C reaches a shell's foreground job with SIGINT's default action. A test run started in
# the background (as CI may start it) hands its children SIGINT ignored, which an exec keeps:
# the CLI is started through an exec that restores the default first.
AS_A_FOREGROUND_JOB = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
)


def test_get_w_prints_a_line_per_change_until_interrupted(store, api):
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
    env = {"LORAPLANE_URL": api.url, "LORAPLANE_CONFIG": "/nonexistent/config.yaml", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [*AS_A_FOREGROUND_JOB, bin_path("loraplane"), "get", "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    lines = lines_of(process.stdout)
    assert next_line(lines, process)[:3] == ["NAME", "TARGET", "PHASE"]
    assert next_line(lines, process)[:3] == ["support-bot", "local", "Pending"]  # the list: the watch is open
    row = store.get("support-bot")
    store.update_status("support-bot", DeploymentStatus(phase="Ready"), uid=row.uid)
    assert next_line(lines, process)[:3] == ["support-bot", "local", "Ready"]
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "Traceback" not in err, err  # Ctrl-C: quiet, as a shell expects
    assert run_cli(api, "get", "nobody", "-w").returncode != 0


def test_get_w_stops_after_its_timeout(store, api):
    store.create(InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
    done = run_cli(api, "get", "-w", "--timeout", "1")
    assert done.returncode == 0, done.stderr
    assert [line.split()[2] for line in done.stdout.splitlines()] == ["PHASE", "Pending"]
