"""A rollout's gate and canary through the API and the CLI: the spec refuses what a target
cannot do, ``promote`` and ``abort`` end a canary under way (audited) and say clearly when
there is none, and a version's history shows its gate and canary (the API in a thread, no
reconciler, so the history is what the test wrote)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from state.models import AdapterVersion, InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import azure_manifest, local_manifest

GATE = {"prompts": [{"name": "refund", "prompt": "Where is my refund?", "contains": "refund"}]}


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    return sqlite_store


def with_canary(store: DeploymentStore, **spec) -> str:
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest(**spec)))
    for version, state in (("aaaaaaaaaaaa", "Active"), ("bbbbbbbbbbbb", "Canary")):
        store.add_adapter_version(
            AdapterVersion(
                deployment_uid=row.uid,
                version=version,
                deployment_name=row.name,
                adapter=row.name,
                state=state,
                fingerprint=version * 5,
                source_path="models/qlora/qlora/gpu_model/adapter",
                path=f".loraplane/support-bot/adapters/{version}",
                detected_at=datetime(2026, 12, 7, tzinfo=UTC),
                gate={
                    "passed": True,
                    "passRate": 1.0,
                    "minPassRate": 1.0,
                    "finishedAt": "2026-12-07T10:00:00Z",
                    "prompts": [{"name": "refund", "passed": True, "answer": "Your refund is on its way", "latencyMs": 40}],
                },
                canary={"startedAt": "2026-12-07T10:00:01Z", "stableVersion": "aaaaaaaaaaaa", "weight": 10, "durationSeconds": 600},
            )
        )
    return row.name


def test_the_spec_refuses_a_canary_the_local_target_cannot_hold_and_a_gate_azure_keeps_out(api):
    manifest = local_manifest(adapter={"strategy": "restart", "rollout": {"canary": {"weight": 10}}})
    refused = httpx.post(f"{api.url}/v1/deployments", json=manifest)
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["field"] == "spec.adapter.rollout.canary" and "needs strategy hotReload" in error["message"]
    manifest = azure_manifest(ingress="internal")
    manifest["spec"]["adapters"] = [{"name": "billing", "rollout": {"gate": GATE}}]
    refused = httpx.post(f"{api.url}/v1/deployments", json=manifest)
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["field"] == "spec.adapters[0].rollout.gate" and "internal ingress" in error["message"]
    bad = local_manifest(adapter={"rollout": {"gate": {"prompts": [{"prompt": "Hi", "regex": "(open"}]}}})
    refused = httpx.post(f"{api.url}/v1/deployments", json=bad)
    assert refused.status_code == 422 and "is not a regular expression" in refused.text
    fine = local_manifest(adapter={"rollout": {"gate": GATE, "canary": {"weight": 25, "durationSeconds": 300}}})
    created = httpx.post(f"{api.url}/v1/deployments", json=fine)
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["adapter"]["rollout"]["canary"] == {
        "weight": 25,
        "durationSeconds": 300,
        "maxErrorRate": 0.01,
        "maxLatencyRatio": 2.0,
        "minRequests": 20,
    }


def test_promote_and_abort_end_a_canary_under_way_and_are_audited(store, api):
    name = with_canary(store)
    history = httpx.get(f"{api.url}/v1/deployments/{name}/adapters").json()["items"]
    canary = next(v for v in history if v["version"] == "bbbbbbbbbbbb")
    assert canary["state"] == "Canary" and canary["gate"]["prompts"][0]["answer"] == "Your refund is on its way"
    shown = run_cli(api, "adapters", name)
    assert shown.returncode == 0, shown.stderr
    assert "canary" in next(line for line in shown.stdout.splitlines() if line.startswith("bbbbbbbbbbbb"))

    status = {
        "phase": "Ready",
        "adapter": {
            "servingVersion": "aaaaaaaaaaaa",
            "canary": {
                "version": "bbbbbbbbbbbb",
                "weight": 10,
                "startedAt": "2026-12-07T10:00:01Z",
                "endsAt": "2026-12-07T10:10:01Z",
                "canary": {"version": "bbbbbbbbbbbb", "requests": 40, "errors": 2, "errorRate": 0.05},
                "stable": {"version": "aaaaaaaaaaaa", "requests": 360, "errors": 0, "errorRate": 0.0},
            },
        },
    }
    store.update_status(name, DeploymentStatus.model_validate(status), uid=store.get(name).uid)
    described = run_cli(api, "describe", name)
    assert described.returncode == 0, described.stderr
    line = next(line for line in described.stdout.splitlines() if line.startswith("Canary:"))
    assert "support-bot: 10% to bbbbbbbbbbbb until 2026-12-07T10:10:01Z (bbbbbbbbbbbb: 40 requests, 2 errors (5.0%)" in line

    promoted = run_cli(api, "promote", name)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip().startswith(f"the canary of deployment/{name}, version bbbbbbbbbbbb, is promoted")
    row = store.adapter_version(store.get(name).uid, "bbbbbbbbbbbb")
    assert row is not None and row.canary_decision is not None and row.canary_decision.startswith("promote:")
    audit = httpx.get(f"{api.url}/v1/audit", params={"action": "promote"}).json()["items"]
    assert audit[0]["resource"] == f"deployment/{name}" and audit[0]["detail"] == f"adapter {name} version bbbbbbbbbbbb"

    aborted = run_cli(api, "abort", name, "--adapter", name)
    assert aborted.returncode == 0, aborted.stderr
    assert "is aborted: rolled back" in aborted.stdout


def test_with_no_canary_under_way_or_several_adapters_the_error_says_what_to_do(store, api):
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest()))
    assert_one_line_error(run_cli(api, "promote", row.name), "no canary under way to promote")
    answer = httpx.post(f"{api.url}/v1/deployments/{row.name}/canary/launch")
    assert answer.status_code == 422
    several = local_manifest(name="desk", adapters=[{"name": "billing"}, {"name": "travel", "path": "models/travel"}])
    store.create(InferenceDeploymentCreate.model_validate(several))
    assert_one_line_error(run_cli(api, "abort", "desk"), "serves several adapters (billing, travel)", "--adapter")
    refused = httpx.post(f"{api.url}/v1/deployments/desk/canary/abort")
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "adapter"
    assert_one_line_error(run_cli(api, "abort", "desk", "--adapter", "legal"), "has no adapter 'legal'")
    assert_one_line_error(run_cli(api, "abort", "desk", "--adapter", "billing"), "no canary under way to abort")
