"""A deployment of three adapters on the local target, end to end with the real serving app:
one process serves each by name; each adapter is detected, staged, rolled out and rolled back
on its own, under load on all three."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from api.app import create_app
from infra.local.provider import LocalProvider
from reconciler.controller import Controller
from reconciler.core import Reconciler
from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, write_random_adapter
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import local_manifest
from tests.fakes import eventually

NAME = "support-bot"
NAMES = ("billing", "legal", "travel")
FOLDERS = {name: f"adapters/{name}" for name in NAMES}
SETTLE = 1


class Load:
    """Clients asking for each adapter in turn, from threads: what each answer said."""

    def __init__(self, endpoint: str, clients: int = 3) -> None:
        self.endpoint = endpoint
        self.answers: list[tuple[str, str]] = []  # (adapter asked for, x-adapter-version)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        self._lock = threading.Lock()

    def _run(self, offset: int) -> None:
        turn = offset
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                name = NAMES[turn % len(NAMES)]
                turn += 1
                body = {"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
                try:
                    response = client.post(f"{self.endpoint}/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.answers.append((name, response.headers["x-adapter-version"]))
                    else:
                        self.failures.append(f"{name}: {response.status_code}: {response.text[:2000]}")

    def versions(self, name: str) -> list[str]:
        with self._lock:
            return [version for asked, version in self.answers if asked == name]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    return sqlite_store


@pytest.fixture
def share(tiny_share: Path) -> Path:
    """Three adapters, each in its own folder of the share."""
    for index, name in enumerate(NAMES):
        if index < 2:
            (tiny_share / FOLDERS[name]).mkdir(parents=True)
            source = tiny_share / (ADAPTER_PATH if index == 0 else SECOND_ADAPTER_PATH)
            for file in source.iterdir():
                (tiny_share / FOLDERS[name] / file.name).write_bytes(file.read_bytes())
        else:
            write_random_adapter(tiny_share / TINY_MODEL_PATH, tiny_share / FOLDERS[name], seed=3)
    write_random_adapter(tiny_share / TINY_MODEL_PATH, tiny_share / "models/next-legal", seed=4)
    return tiny_share


def running_with(store: DeploymentStore, tmp_path: Path, *serving_env: str) -> Iterator[TestClient]:
    registry = CollectorRegistry()
    command = ("env", "LORAPLANE_UI=false", *serving_env, sys.executable, "-m", "serving")
    local = LocalProvider(tmp_path / "run", serving_command=command, share_roots=[tmp_path])
    reconciler = Reconciler(store, {"local": local}, poll_seconds=0.2, registry=registry)
    controller = Controller(reconciler, resync_seconds=1, workers=2, registry=registry)
    local.on_change = controller.wake
    with TestClient(create_app(store, reconciler, controller=controller, registry=registry)) as client:
        yield client
    local.stop_all()


@pytest.fixture
def client(store: DeploymentStore, tmp_path: Path) -> Iterator[TestClient]:
    yield from running_with(store, tmp_path)


def create(store: DeploymentStore, share: Path) -> None:
    manifest = local_manifest(NAME, share_root=str(share))
    manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
    manifest["spec"]["adapters"] = [{"name": name, "path": FOLDERS[name], "settleSeconds": SETTLE} for name in NAMES]
    store.create(InferenceDeploymentCreate.model_validate(manifest))


def status_of(store: DeploymentStore) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(NAME).status)


def serving(store: DeploymentStore) -> dict[str, str | None] | None:
    """Each adapter's serving version, once the status says every one is synced."""
    status = status_of(store)
    if not any(c.type == "AdapterSynced" and c.status == "True" for c in status.conditions):
        return None
    return {a.name: a.serving_version for a in status.adapters}


def replace(share: Path, name: str, source: str, **config_changes) -> None:
    """As a training job would: new files written over the adapter's old ones."""
    folder = share / FOLDERS[name]
    for file in (share / source).iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    if config_changes:
        config = folder / "adapter_config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | config_changes))


def test_three_adapters_from_one_process_each_rolled_out_on_its_own(store, share, client):
    create(store, share)
    first = eventually(lambda: serving(store), timeout=120, what="the three adapters to serve")
    status = status_of(store)
    endpoint = status.endpoint
    assert set(first) == set(NAMES) and len(set(first.values())) == 3
    # The first versions were staged before the app served anything: all in the history.
    history = client.get(f"/v1/deployments/{NAME}/adapters").json()["items"]
    assert {(v["adapter"], v["version"], v["state"]) for v in history} == {(n, first[n], "Active") for n in NAMES}
    only_legal = client.get(f"/v1/deployments/{NAME}/adapters", params={"adapter": "legal"}).json()["items"]
    assert [v["version"] for v in only_legal] == [first["legal"]]
    assert client.get(f"/v1/deployments/{NAME}/adapters", params={"adapter": "nope"}).status_code == 404
    models = httpx.get(f"{endpoint}/v1/models").json()["data"]
    assert {m["id"]: m.get("adapter_version") for m in models if m.get("parent")} == first
    assert len(status.resources) == 1  # one process

    with Load(endpoint) as load:
        eventually(lambda: all(len(load.versions(n)) >= 2 for n in NAMES), what="answers for every adapter")
        # A new version of legal: only legal's answers change.
        replace(share, "legal", "models/next-legal")
        second = eventually(lambda: (s := serving(store)) and s["legal"] != first["legal"] and s, timeout=60, what="legal's new version")
        assert {n: second[n] for n in ("billing", "travel")} == {n: first[n] for n in ("billing", "travel")}
        eventually(lambda: load.versions("legal")[-1:] == [second["legal"]], what="an answer from legal's new version")

        # A version of travel the serving app refuses: travel is rolled back, the others serve on.
        replace(share, "travel", SECOND_ADAPTER_PATH, target_modules=["q_proj", "nonexistent_proj"])
        degraded = eventually(lambda: (s := status_of(store)).phase == "Degraded" and s, timeout=60, what="travel's rollback")
        synced = next(c for c in degraded.conditions if c.type == "AdapterSynced")
        assert synced.status == "False" and synced.message.startswith("adapter travel: adapter version")
        assert "nonexistent_proj" in synced.message and f"rolled back to {first['travel']}" in synced.message
        by_name = {a.name: a for a in degraded.adapters}
        assert by_name["travel"].serving_version == first["travel"] and by_name["travel"].last_rollout.result == "RolledBack"
        assert by_name["legal"].last_rollout.result == "Succeeded" and by_name["billing"].serving_version == first["billing"]

        # One cut short is Rejected before it is staged: billing's files stay as they served.
        whole = (share / SECOND_ADAPTER_PATH / "adapter_model.safetensors").read_bytes()
        (share / FOLDERS["billing"] / "adapter_model.safetensors").write_bytes(whole[: len(whole) // 2])
        rejected = eventually(
            lambda: [
                v
                for v in client.get(f"/v1/deployments/{NAME}/adapters", params={"adapter": "billing"}).json()["items"]
                if v["state"] == "Rejected"
            ],
            timeout=30,
            what="billing's rejection",
        )
        assert "truncated" in rejected[0]["message"]
        count = len(load.answers)
        eventually(lambda: len(load.answers) >= count + 6, what="more answers after the rejection")
    assert load.failures == []
    assert set(load.versions("billing")) == {first["billing"]}
    assert set(load.versions("travel")) == {first["travel"]}
    assert set(load.versions("legal")) == {first["legal"], second["legal"]}
    events = [e["message"] for e in client.get(f"/v1/deployments/{NAME}/events", params={"limit": 100}).json()["items"]]
    assert any(m.startswith("adapter legal: adapter") and "serves on every replica" in m for m in events)
    assert any(m.startswith("adapter travel: adapter version") and "failed" in m for m in events)

    # Roll billing back by name: only billing's pin is set.
    answer = client.post(f"/v1/deployments/{NAME}/adapters/billing/versions/{first['billing']}/activate")
    assert answer.status_code == 202
    pins = {entry["name"]: entry.get("pin") for entry in answer.json()["spec"]["adapters"]}
    assert pins == {"billing": first["billing"], "legal": None, "travel": None}
    wrong = client.post(f"/v1/deployments/{NAME}/adapters/legal/versions/{first['billing']}/activate")
    assert wrong.status_code == 404 and "adapter 'legal'" in wrong.json()["detail"]


def test_past_the_resident_cap_every_adapter_is_still_answered(store, share, tmp_path):
    for client in running_with(store, tmp_path, "LORAPLANE_MAX_RESIDENT_ADAPTERS=2"):
        create(store, share)
        first = eventually(lambda: serving(store), timeout=120, what="the three adapters to serve")
        endpoint = status_of(store).endpoint
        with Load(endpoint, clients=3) as load:
            eventually(lambda: all(len(load.versions(n)) >= 3 for n in NAMES), what="answers for every adapter")
        assert load.failures == []
        assert {n: set(load.versions(n)) for n in NAMES} == {n: {first[n]} for n in NAMES}
        states = httpx.get(f"{endpoint}/v1/adapter").json()["adapters"]
        assert sum(a["resident"] for a in states) <= 2
        assert "loraplane_serving_adapter_reloads_total" in httpx.get(f"{endpoint}/metrics").text
        assert client.get(f"/v1/deployments/{NAME}").status_code == 200
