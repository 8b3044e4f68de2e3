"""``loraplane adapters`` and ``loraplane rollback`` against the real API (in a thread, with
no reconciler running, so the history is exactly what the test wrote)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from state.models import AdapterVersion, InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import local_manifest


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    """SQLite only: what is tested here sits above the database."""
    return sqlite_store


def history(store: DeploymentStore) -> str:
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest()))
    start = datetime(2026, 11, 21, tzinfo=UTC)
    for minutes, (version, state, message) in enumerate(
        [
            ("aaaaaaaaaaaa", "Superseded", None),
            ("bbbbbbbbbbbb", "Active", None),
            ("cccccccccccc", "Rejected", "it was trained for 'meta-llama/Meta-Llama-3-8B', but this deployment serves model-cache/x"),
        ]
    ):
        store.add_adapter_version(
            AdapterVersion(
                deployment_uid=row.uid,
                version=version,
                deployment_name=row.name,
                state=state,
                fingerprint=version * 5,
                source_path="models/qlora/qlora/gpu_model/adapter",
                path=f".loraplane/support-bot/adapters/{version}",
                files=[{"name": "adapter_model.safetensors", "size": 2_500_000}],
                message=message,
                detected_at=start + timedelta(minutes=minutes),
            )
        )
    status = DeploymentStatus.model_validate({"phase": "Ready", "adapter": {"servingVersion": "bbbbbbbbbbbb"}})
    store.update_status(row.name, status, uid=row.uid)
    return row.name


def test_adapters_shows_the_history_and_rollback_pins_the_one_before(store, api):
    name = history(store)
    shown = run_cli(api, "adapters", name)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "STATE", "SERVING"]
    assert [line.split()[0] for line in lines[1:]] == ["cccccccccccc", "bbbbbbbbbbbb", "aaaaaaaaaaaa"]
    assert "serving" in lines[2] and "2.5 MB" in lines[2]
    assert "trained for 'meta-llama/Meta-Llama-3-8B'" in lines[1]

    rolled = run_cli(api, "rollback", name)
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == f"deployment/{name} pinned to adapter aaaaaaaaaaaa (was serving bbbbbbbbbbbb)"
    assert DeploymentSpec.model_validate(store.get(name).spec).adapter.pin == "aaaaaaaaaaaa"
    assert "pinned" in run_cli(api, "adapters", name).stdout.splitlines()[3]

    assert_one_line_error(run_cli(api, "rollback", name, "cccccccccccc"), "rejected")
    assert_one_line_error(run_cli(api, "rollback", name, "dddddddddddd"), "no adapter version")
    assert_one_line_error(run_cli(api, "adapters", "nosuch"), "not found")

    following = run_cli(api, "adapters", name, "--follow-latest")
    assert following.returncode == 0, following.stderr
    assert DeploymentSpec.model_validate(store.get(name).spec).adapter.pin is None
    as_json = httpx.get(f"{api.url}/v1/deployments/{name}/adapters").json()["items"]
    assert [v["state"] for v in as_json] == ["Rejected", "Active", "Superseded"]
