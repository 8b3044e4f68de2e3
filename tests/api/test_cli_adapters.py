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


def test_with_several_adapters_each_is_shown_and_rolled_back_by_name(store, api):
    manifest = local_manifest()
    manifest["spec"]["adapters"] = [{"name": "billing", "path": "models/billing"}, {"name": "legal", "path": "models/legal"}]
    row = store.create(InferenceDeploymentCreate.model_validate(manifest))
    start = datetime(2026, 11, 21, tzinfo=UTC)
    for minutes, (adapter, version, state) in enumerate(
        [("billing", "b00000000001", "Superseded"), ("legal", "l00000000001", "Active"), ("billing", "b00000000002", "Active")]
    ):
        store.add_adapter_version(
            AdapterVersion(
                deployment_uid=row.uid,
                version=version,
                deployment_name=row.name,
                adapter=adapter,
                state=state,
                fingerprint=version * 5,
                source_path=f"models/{adapter}",
                path=f".loraplane/support-bot/adapters/{version}",
                files=[{"name": "adapter_model.safetensors", "size": 1_000_000}],
                detected_at=start + timedelta(minutes=minutes),
            )
        )
    status = {
        "phase": "Ready",
        "adapters": [{"name": "billing", "servingVersion": "b00000000002"}, {"name": "legal", "servingVersion": "l00000000001"}],
    }
    store.update_status(row.name, DeploymentStatus.model_validate(status), uid=row.uid)

    lines = run_cli(api, "adapters", row.name).stdout.splitlines()
    assert lines[0].split()[:4] == ["ADAPTER", "VERSION", "STATE", "SERVING"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["billing", "b00000000002", "Active", "serving"],
        ["legal", "l00000000001", "Active", "serving"],
        ["billing", "b00000000001", "Superseded", "-"],
    ]
    only = run_cli(api, "adapters", row.name, "--adapter", "legal").stdout.splitlines()
    assert [line.split()[0] for line in only[1:]] == ["legal"]

    assert_one_line_error(run_cli(api, "rollback", row.name), "say which with --adapter")
    assert_one_line_error(run_cli(api, "rollback", row.name, "--adapter", "nosuch"), "has no adapter 'nosuch'")
    rolled = run_cli(api, "rollback", row.name, "--adapter", "billing")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == f"adapter billing of deployment/{row.name} pinned to version b00000000001 (was serving b00000000002)"
    pins = {e.name: e.pin for e in DeploymentSpec.model_validate(store.get(row.name).spec).adapters or []}
    assert pins == {"billing": "b00000000001", "legal": None}
    assert_one_line_error(run_cli(api, "rollback", row.name, "l00000000001", "--adapter", "billing"), "no adapter version")

    following = run_cli(api, "adapters", row.name, "--adapter", "billing", "--follow-latest")
    assert following.returncode == 0, following.stderr
    assert all(e.pin is None for e in DeploymentSpec.model_validate(store.get(row.name).spec).adapters or [])
