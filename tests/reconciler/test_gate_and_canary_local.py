"""A new version proves itself before it takes all the traffic, on the local target with the
real serving app: a version that answers its golden prompts badly is Rejected without serving
a user; a good one passes, takes its canary's share of the users and is promoted; one whose
canary fails is rolled back, and no user outside its share saw a failure."""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, write_random_adapter
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.broken_adapters import write_overflowing_adapter
from tests.conftest import local_manifest
from tests.fakes import eventually
from tests.reconciler.test_rollout_local import served
from tests.serving.reference import Reference

NAME = "support-bot"
# The real serving app without its Gradio page, reporting to the share often: a canary is
# judged on the replicas' reports.
SERVING = ("env", "LORAPLANE_UI=false", "LORAPLANE_REPORT_INTERVAL_SECONDS=0.3", sys.executable, "-m", "serving")
GOLDEN = "Hello"


class Users:
    """Chat requests one after another, each from a user of its own: what each saw."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.answers: list[tuple[int, str]] = []  # (status, x-adapter-version)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            for user in itertools.count():
                if self._stop.is_set():
                    return
                body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "user": f"user-{user}"}
                response = client.post(f"{self.endpoint}/v1/chat/completions", json=body)
                with self._lock:
                    self.answers.append((response.status_code, response.headers.get("x-adapter-version", "")))

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def since(self, start: int) -> list[tuple[int, str]]:
        with self._lock:
            return self.answers[start:]

    def __enter__(self) -> Users:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def running(sqlite_store: DeploymentStore, tmp_path: Path) -> Iterator[tuple[DeploymentStore, TestClient]]:
    with served(sqlite_store, tmp_path, SERVING) as (_, client):
        yield sqlite_store, client


def status_of(store: DeploymentStore) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(NAME).status)


def serving(store: DeploymentStore) -> str | None:
    status = status_of(store)
    synced = any(c.type == "AdapterSynced" and c.status == "True" for c in status.conditions)
    return status.adapter.serving_version if synced else None


def versions(client: TestClient) -> dict[str, dict]:
    return {v["version"]: v for v in client.get(f"/v1/deployments/{NAME}/adapters").json()["items"]}


def newest(client: TestClient, state: str) -> dict | None:
    return next((v for v in client.get(f"/v1/deployments/{NAME}/adapters").json()["items"] if v["state"] == state), None)


def write_adapter(share: Path, source: Path) -> None:
    """As a training job would: the files written over the old ones, in place."""
    for file in source.iterdir():
        (share / ADAPTER_PATH / file.name).write_bytes(file.read_bytes())


def rollout(client: TestClient, document: dict | None) -> None:
    patch = {"spec": {"adapter": {"rollout": document}}}
    response = client.patch(f"/v1/deployments/{NAME}", content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text


def greedy_text(share: Path, adapter: Path) -> str:
    reference = Reference(share / TINY_MODEL_PATH, adapter)
    ids = reference.tokenizer(GOLDEN, add_special_tokens=False)["input_ids"]
    tokens, _ = reference.greedy(ids, 8)
    return reference.tokenizer.decode(tokens, skip_special_tokens=True)


def test_a_version_proves_itself_by_gate_and_canary_before_it_serves_everyone(running, tiny_share):
    store, client = running
    write_random_adapter(tiny_share / TINY_MODEL_PATH, tiny_share / "models/bad", seed=7)
    good = greedy_text(tiny_share, tiny_share / SECOND_ADAPTER_PATH)
    assert good.strip() and good not in greedy_text(tiny_share, tiny_share / "models/bad")
    manifest = local_manifest(NAME, share_root=str(tiny_share))
    manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
    manifest["spec"]["adapter"] = {"path": ADAPTER_PATH, "settleSeconds": 1, "pollSeconds": 1}
    store.create(InferenceDeploymentCreate.model_validate(manifest))
    first = eventually(lambda: serving(store), timeout=120, what="the first adapter to serve")
    endpoint = status_of(store).endpoint
    assert endpoint is not None
    rollout(client, {"gate": {"prompts": [{"name": "greeting", "prompt": GOLDEN, "maxTokens": 8, "contains": good}]}})

    with Users(endpoint) as users:
        # 1. A version that does not answer as the gate asks: Rejected, never served to a user.
        write_adapter(tiny_share, tiny_share / "models/bad")
        rejected = eventually(lambda: newest(client, "Rejected"), timeout=60, what="the bad version rejected")
        assert rejected["message"].startswith("it failed its gate: 1 of 1 golden prompts failed")
        assert f"greeting: expected it to contain {good!r}; it answered" in rejected["message"]
        assert rejected["gate"]["passed"] is False and rejected["gate"]["prompts"][0]["name"] == "greeting"
        status = eventually(lambda: (s := status_of(store)).phase == "Degraded" and s, timeout=10, what="Degraded")
        assert next(c for c in status.conditions if c.type == "Degraded").reason == "AdapterGateFailed"
        assert serving(store) is None or status.adapter.serving_version == first

        # 2. A good version passes its gate, takes its canary's share of the users, and is
        # promoted by a deployer.
        rollout(client, {"canary": {"weight": 30, "durationSeconds": 3600}})
        write_adapter(tiny_share, tiny_share / SECOND_ADAPTER_PATH)
        canary = eventually(lambda: status_of(store).adapter.canary, timeout=60, what="the canary to start")
        second = canary.version
        assert versions(client)[second]["gate"]["passed"] is True and versions(client)[second]["state"] == "Canary"
        start = users.count()
        eventually(lambda: users.count() - start >= 300, timeout=300, what="300 requests during the canary")
        during = users.since(start)[:300]
        served = Counter(version for code, version in during if code == 200)
        assert all(code == 200 for code, _ in during)
        # Each user falls on the canary with probability 0.3: 90 of 300 expected; 50-130 is
        # over 4.5 standard deviations (7.9) either side.
        assert 50 <= served[second] <= 130 and served[first] + served[second] == 300, served
        figures = eventually(lambda: (c := status_of(store).adapter.canary) and c.canary.requests > 0 and c, timeout=30, what="figures")
        assert figures.stable.version == first and figures.canary.errors == 0
        assert client.post(f"/v1/deployments/{NAME}/canary/promote").status_code == 202
        eventually(lambda: serving(store) == second, timeout=60, what="the promotion")
        states = {v: row["state"] for v, row in versions(client).items()}
        assert states[second] == "Active" and states[first] == "Superseded"
        assert versions(client)[second]["canary"]["result"] == "Promoted"
        assert "promoted by" in versions(client)[second]["canary"]["message"]
        assert status_of(store).phase == "Ready"

        # 3. A version that fails its users, with only a canary: rolled back by its figures.
        rollout(client, {"gate": None, "canary": {"weight": 50, "durationSeconds": 3600, "maxErrorRate": 0.2, "minRequests": 10}})
        write_overflowing_adapter(tiny_share / ADAPTER_PATH, tiny_share / "models/exploded")
        start = users.count()
        write_adapter(tiny_share, tiny_share / "models/exploded")
        failed = eventually(lambda: newest(client, "Failed"), timeout=120, what="the canary rolled back")
        third = failed["version"]
        assert "canary was rolled back: its error rate 100.0% is over rollout.canary.maxErrorRate 20.0%" in failed["message"]
        assert failed["canary"]["result"] == "RolledBack"
        status = eventually(lambda: (s := status_of(store)).phase == "Degraded" and s, timeout=10, what="Degraded")
        degraded = next(c for c in status.conditions if c.type == "Degraded")
        assert degraded.reason == "AdapterCanaryFailed" and f"{third}: " in degraded.message
        assert status.adapter.serving_version == second and status.adapter.last_rollout.result == "RolledBack"
        after = users.count()
        eventually(lambda: users.count() - after >= 20, timeout=60, what="requests after the rollback")
        answered = users.since(start)
    # Every failure was the canary's; once rolled back, every user is served by the stable one.
    assert any(code != 200 for code, _ in answered)
    assert all(version == third for code, version in answered if code != 200)
    assert {version for code, version in users.since(after + 5)} == {second}
    assert first in {v for _, v in users.answers} and rejected["version"] not in {v for _, v in users.answers}
    events = [e["reason"] for e in client.get(f"/v1/deployments/{NAME}/events", params={"limit": 100}).json()["items"]]
    for reason in ("AdapterGateFailed", "AdapterGatePassed", "AdapterCanaryStarted", "AdapterCanaryPromoted", "AdapterCanaryFailed"):
        assert reason in events, reason
    audit = client.get("/v1/audit", params={"action": "promote"}).json()["items"]
    assert audit and audit[0]["resource"] == f"deployment/{NAME}" and second in audit[0]["detail"]
