"""Adapter rollouts end to end on the local target, with the real serving app on the tiny
model: the controller runs as in ``loraplane serve``, a user (or a training job) writes files
into the adapter folder, and what a client of the endpoint sees is checked."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from api.app import create_app
from infra.local.provider import LocalProvider
from reconciler.controller import Controller
from reconciler.core import Reconciler
from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import local_manifest, reconcile_passes
from tests.fakes import eventually

NAME = "support-bot"
# The real serving app, without its Gradio page (seconds of import per start, not needed here).
SERVING_WITHOUT_UI = ("env", "LORAPLANE_UI=false", sys.executable, "-m", "serving")
THIRD_ADAPTER_PATH = "models/extra/third-adapter"
SETTLE = 2


class Load:
    """Chat completions one after another from a thread: what a client saw, request by request."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        f"{self.endpoint}/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
                    )
                    if response.status_code == 200:
                        self.versions.append(response.headers["x-adapter-version"])
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    """SQLite only: what is tested here sits above the database."""
    return sqlite_store


@contextmanager
def served(store: DeploymentStore, tmp_path: Path, command: Sequence[str] = SERVING_WITHOUT_UI) -> Iterator[tuple[Reconciler, TestClient]]:
    """The reconciler and its controller as ``loraplane serve`` wires them, the real serving
    app (started with ``command``) as the local target's process, and the API in front."""
    registry = CollectorRegistry()
    local = LocalProvider(tmp_path / "run", serving_command=command, share_roots=[tmp_path])
    reconciler = Reconciler(store, {"local": local}, poll_seconds=0.2, registry=registry)
    controller = Controller(reconciler, resync_seconds=1, workers=2, registry=registry)
    local.on_change = controller.wake
    try:
        with TestClient(create_app(store, reconciler, controller=controller, registry=registry)) as client:
            yield reconciler, client
    finally:
        local.stop_all()


@pytest.fixture
def running(store: DeploymentStore, tmp_path: Path) -> Iterator[tuple[Reconciler, TestClient]]:
    with served(store, tmp_path) as world:
        yield world


def status_of(store: DeploymentStore) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(NAME).status)


def serving(store: DeploymentStore) -> str | None:
    status = status_of(store)
    synced = any(c.type == "AdapterSynced" and c.status == "True" for c in status.conditions)
    return status.adapter.serving_version if synced else None


def answered_version(store: DeploymentStore) -> str | None:
    """What the endpoint says it serves; None while it is away (a restart)."""
    try:
        return httpx.get(f"{status_of(store).endpoint}/v1/adapter", timeout=5).json()["version"]
    except (httpx.HTTPError, ValueError):
        return None


def versions(client: TestClient) -> dict[str, dict]:
    return {v["version"]: v for v in client.get(f"/v1/deployments/{NAME}/adapters").json()["items"]}


def replace_adapter(share: Path, source: str, *, weights: bytes | None = None) -> None:
    """As a training job would: the files written over the old ones, in place."""
    folder = share / ADAPTER_PATH
    for file in (share / source).iterdir():
        data = file.read_bytes() if weights is None or not file.name.endswith(".safetensors") else weights
        (folder / file.name).write_bytes(data)


def create(store: DeploymentStore, share: Path, **adapter) -> str:
    """The deployment's folder on the share, relative to its root."""
    manifest = local_manifest(NAME, share_root=str(share))
    manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
    manifest["spec"]["adapter"] = {"path": ADAPTER_PATH, "settleSeconds": SETTLE, **adapter}
    return f".loraplane/{NAME}/{store.create(InferenceDeploymentCreate.model_validate(manifest)).uid[:8]}"


def test_hot_reload_under_load_rejects_bad_adapters_and_rolls_back(store, tiny_share, running):
    reconciler, client = running
    # Training left a model card beside the adapter, and files only their owner may read.
    (tiny_share / ADAPTER_PATH / "README.md").write_text("# notes that are no adapter file")
    for file in (tiny_share / ADAPTER_PATH).iterdir():
        file.chmod(0o600)
    ours = create(store, tiny_share)
    first = eventually(lambda: serving(store), timeout=120, what="the first adapter to serve")
    endpoint = status_of(store).endpoint
    assert versions(client)[first]["state"] == "Active"
    assert json.loads((tiny_share / f"{ours}/current.json").read_text())["version"] == first
    staged = tiny_share / f"{ours}/adapters/{first}"
    # Only what makes the adapter is staged, no more readable than it was, in folders only the
    # owner may enter (before: every file, README included, as 0644 copies).
    assert sorted(p.name for p in staged.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in staged.iterdir()} == {"0o600"}
    assert oct(stat.S_IMODE(staged.stat().st_mode)) == "0o700"
    assert oct(stat.S_IMODE((tiny_share / ".loraplane").stat().st_mode)) == "0o700"

    with Load(endpoint) as load:
        # Half-written: the config, and weights cut short, left so for longer than settleSeconds.
        whole = (tiny_share / SECOND_ADAPTER_PATH / "adapter_model.safetensors").read_bytes()
        replace_adapter(tiny_share, SECOND_ADAPTER_PATH, weights=whole[: len(whole) // 2])
        rejected = eventually(lambda: [v for v in versions(client).values() if v["state"] == "Rejected"], timeout=30, what="a rejection")
        assert "truncated" in rejected[0]["message"]
        assert serving(store) == first and httpx.get(f"{endpoint}/v1/adapter").json()["version"] == first

        # The write completes: a new version, served once the files have settled.
        replace_adapter(tiny_share, SECOND_ADAPTER_PATH)
        written = time.monotonic()
        second = eventually(lambda: (v := serving(store)) != first and v, timeout=60, what="the second adapter")
        assert time.monotonic() - written >= SETTLE  # not before the files were quiet for settleSeconds

        # An adapter trained for another base model is refused; the second keeps serving.
        replace_adapter(tiny_share, THIRD_ADAPTER_PATH)
        config = tiny_share / ADAPTER_PATH / "adapter_config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | {"base_model_name_or_path": "meta-llama/Meta-Llama-3-8B"}))
        foreign = eventually(
            lambda: [v for v in versions(client).values() if "meta-llama" in (v.get("message") or "")], timeout=30, what="the refusal"
        )
        assert foreign[0]["state"] == "Rejected"
        assert "trained for 'meta-llama/Meta-Llama-3-8B'" in foreign[0]["message"]
        assert serving(store) == second  # the rejection and the status are one commit

        # One that passes the reconciler's checks but the serving app refuses (a module this
        # model lacks): rolled back to the second, the version Failed, the deployment Degraded.
        replace_adapter(tiny_share, THIRD_ADAPTER_PATH)
        config.write_text(json.dumps(json.loads(config.read_text()) | {"target_modules": ["q_proj", "nonexistent_proj"]}))
        failed = eventually(lambda: [v for v in versions(client).values() if v["state"] == "Failed"], timeout=30, what="the failure")
        assert "nonexistent_proj" in failed[0]["message"]
        status = eventually(lambda: (s := status_of(store)).phase == "Degraded" and s, timeout=10, what="Degraded")
        degraded = next(c for c in status.conditions if c.type == "Degraded")
        assert degraded.reason == "AdapterRolloutFailed"
        assert f"adapter version {failed[0]['version']} failed" in degraded.message and f"rolled back to {second}" in degraded.message
        assert status.adapter.serving_version == second and status.adapter.last_rollout.result == "RolledBack"
        assert httpx.get(f"{endpoint}/v1/adapter").json()["version"] == second
    assert load.failures == []
    assert len(load.versions) > 5 and set(load.versions) == {first, second}
    # A client never saw the half-written adapter or the foreign one.
    events = [e["reason"] for e in client.get(f"/v1/deployments/{NAME}/events", params={"limit": 50}).json()["items"]]
    assert events.count("AdapterRejected") == 2 and "AdapterActivated" in events and "AdapterRolloutFailed" in events

    # Roll back: pin the first version; it serves again, the second is superseded.
    assert client.post(f"/v1/deployments/{NAME}/adapters/{first}/activate").status_code == 202
    eventually(lambda: serving(store) == first, timeout=30, what="the rollback")
    assert status_of(store).phase == "Ready"  # a good rollout since: no longer Degraded
    states = {v: row["state"] for v, row in versions(client).items()}
    assert states[first] == "Active" and states[second] == "Superseded"
    assert httpx.get(f"{endpoint}/v1/adapter").json()["version"] == first
    conflict = client.post(f"/v1/deployments/{NAME}/adapters/{foreign[0]['version']}/activate")
    assert conflict.status_code == 409 and "rejected" in conflict.json()["detail"]
    assert client.post(f"/v1/deployments/{NAME}/adapters/nosuchversion/activate").status_code == 404
    metrics = client.get("/metrics").text
    assert 'loraplane_adapter_rollout_duration_seconds_count{result="Succeeded",strategy="hotReload"}' in metrics
    assert "loraplane_adapter_settled_to_serving_seconds_count" in metrics


def test_the_restart_strategy_serves_a_new_adapter_from_a_new_process(store, tiny_share, running):
    reconciler, client = running
    create(store, tiny_share, strategy="restart")
    first = eventually(lambda: serving(store), timeout=120, what="the first adapter")
    before = httpx.get(f"{status_of(store).endpoint}/v1/adapter").json()
    replace_adapter(tiny_share, SECOND_ADAPTER_PATH)
    second = eventually(lambda: (v := serving(store)) != first and v, timeout=120, what="the second adapter")
    status = status_of(store)
    assert status.adapter.last_rollout.strategy == "restart" and status.adapter.last_rollout.result == "Succeeded"
    after = httpx.get(f"{status.endpoint}/v1/adapter").json()
    assert after["version"] == second
    assert after["loaded_at"] != before["loaded_at"]
    events = [e["reason"] for e in client.get(f"/v1/deployments/{NAME}/events", params={"limit": 50}).json()["items"]]
    assert "Restarted" in events

    # A version the app cannot start with: it comes up refusing it, and is restarted back.
    replace_adapter(tiny_share, THIRD_ADAPTER_PATH)
    config = tiny_share / ADAPTER_PATH / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"target_modules": ["q_proj", "nonexistent_proj"]}))
    failed = eventually(lambda: [v for v in versions(client).values() if v["state"] == "Failed"], timeout=120, what="the failure")
    assert "nonexistent_proj" in failed[0]["message"]
    eventually(lambda: answered_version(store) == second, timeout=120, what="the second again")
    status = eventually(lambda: (s := status_of(store)).phase == "Degraded" and s, timeout=30, what="Degraded")
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.reason == "AdapterRolloutFailed" and f"rolled back to {second}" in degraded.message

    shutil.rmtree(tiny_share / ADAPTER_PATH)  # the source may go: the staged copy serves on
    since = reconcile_passes(client.get("/metrics").text)
    eventually(
        lambda: reconcile_passes(client.get("/metrics").text) >= since + 2, timeout=60, what="two reconcile passes without the source"
    )
    assert status_of(store).adapter.serving_version == second and answered_version(store) == second


def test_an_adapter_linked_from_outside_the_share_is_never_served(store, tiny_share, tmp_path, running):
    """Before: the reconciler said InvalidPath, the app served the linked folder anyway, and
    the status claimed another version than the app served. Now the reconciler refuses to
    stage it, and the app serves nothing it has not staged."""
    reconciler, client = running
    outside = tmp_path / "not-the-share" / "adapter"
    shutil.copytree(tiny_share / ADAPTER_PATH, outside)
    shutil.rmtree(tiny_share / ADAPTER_PATH)
    (tiny_share / ADAPTER_PATH).symlink_to(outside, target_is_directory=True)
    create(store, tiny_share)
    # Nothing is staged, so the app is never ready; the status says why.
    status = eventually(
        lambda: (s := status_of(store)).phase != "Ready" and "outside the share root" in (s.message or "") and s,
        timeout=120,
        what="the status to say the link is refused",
    )

    def app_says() -> dict | None:
        try:
            answer = httpx.get(f"{status.endpoint}/v1/adapter", timeout=5).json()
        except httpx.HTTPError:
            return None  # still starting
        return answer if answer.get("last_error") else None

    app = eventually(app_says, timeout=120, what="the app to say what it waits for")
    assert app["version"] is None and "waiting for loraplane to stage the first adapter version" in app["last_error"]
    assert status.adapter.serving_version is None
    assert versions(client) == {}


def test_a_new_share_root_stages_the_serving_version_again(store, tiny_share, tmp_path, running):
    """The share moved (spec.local.shareRoot changed) with the same adapter files: the version
    that served is staged again on the new share and serves on; before, the rollout pointed at
    a copy that was never there and failed ('no adapter folder')."""
    reconciler, client = running
    ours = create(store, tiny_share)
    first = eventually(lambda: serving(store), timeout=120, what="the first adapter")
    moved = tmp_path / "moved-share"
    shutil.copytree(tiny_share, moved, ignore=shutil.ignore_patterns(".loraplane"))  # copy2: the same mtimes
    spec = store.get(NAME).spec
    spec["local"]["shareRoot"] = str(moved)
    assert client.put(f"/v1/deployments/{NAME}", json={"metadata": {"name": NAME}, "spec": spec}).status_code == 200
    staged = moved / f"{ours}/adapters/{first}"

    def serving_from_the_new_share() -> bool:
        try:
            answer = httpx.get(f"{status_of(store).endpoint}/v1/adapter", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False  # restarting
        return answer["version"] == first and answer["path"] == str(staged) and serving(store) == first

    eventually(serving_from_the_new_share, timeout=120, what="the first version to serve from the new share")
    assert (staged / "adapter_model.safetensors").is_file()
    assert {v["state"] for v in versions(client).values()} == {"Active"}
    # The app answers before the reconciler's next pass has seen it ready: wait for that pass.
    eventually(lambda: status_of(store).phase == "Ready", timeout=60, what="the deployment to be Ready again")
