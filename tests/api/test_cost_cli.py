"""``loraplane cost`` and ``GET /v1/usage`` against the real API (no reconciler: the status is
what the test wrote, as the reconciler writes it)."""

from __future__ import annotations

import httpx
import pytest

from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import azure_manifest, local_manifest


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    return sqlite_store


def with_cost(store: DeploymentStore, manifest: dict, cost: dict) -> None:
    row = store.create(InferenceDeploymentCreate.model_validate(manifest))
    store.update_status(row.name, DeploymentStatus.model_validate({"phase": "Ready", "cost": cost}), uid=row.uid)


def test_cost_lists_each_deployments_gpu_hours_estimate_and_budget(store, api):
    with_cost(
        store,
        {**azure_manifest("support-bot"), "spec": {**azure_manifest("support-bot")["spec"], "budget": {"gpuHoursPerMonth": 40}}},
        {
            "gpuHoursToday": 1.5,
            "gpuHoursThisMonth": 12.5,
            "estimatedCostThisMonth": 50.0,
            "currency": "USD",
            "replicas": 1,
            "budget": {"limit": "40 GPU-hours a month", "used": 12.5, "fraction": 0.3125, "period": "2026-12", "state": "Within"},
        },
    )
    with_cost(store, local_manifest("dev-bot"), {"gpuHoursToday": 0.25, "gpuHoursThisMonth": 0.25, "replicas": 0})
    shown = run_cli(api, "cost")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TARGET", "PROFILE", "REPLICAS"]
    dev = next(line for line in lines if line.startswith("dev-bot"))
    assert dev.split()[:6] == ["dev-bot", "local", "local", "0", "0.25", "0.25"] and "?" in dev  # no price known
    bot = next(line for line in lines if line.startswith("support-bot"))
    assert "Consumption-GPU-NC24-A100" in bot and "12.50" in bot and "USD 50.00" in bot
    assert "12.5 of 40 GPU-hours a month (31%): Within" in bot
    assert lines[-1].startswith("prices: default: local target 0; no Azure price set")

    one = httpx.get(f"{api.url}/v1/usage", params={"name": "dev-bot"}).json()
    assert [item["name"] for item in one["items"]] == ["dev-bot"]
    assert run_cli(api, "cost", "support-bot", "-o", "json").stdout.count('"name"') == 1
    assert_one_line_error(run_cli(api, "cost", "nosuch"), "not found")
