"""A budget on the local target, on a fake clock: a deployment that spends a few GPU-seconds
of a budget that allows less is scaled to zero (its process stopped) with BudgetExceeded and the
figures, held there, and serves again when the day turns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.core import Reconciler
from reconciler.metering import GpuMetering, PriceTable
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import local_manifest
from tests.fakes import FakeClock, eventually
from tests.reconciler.test_reconcile_local import serving_pids

NAME = "support-bot"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 12, 7, 22, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def metered(store: DeploymentStore, local_provider, clock: FakeClock) -> Reconciler:
    metering = GpuMetering(store, PriceTable.load(None), clock=clock.datetime, flush_seconds=1)
    return Reconciler(store, {"local": local_provider}, poll_seconds=0.2, clock=clock.datetime, metering=metering)


def status_of(store: DeploymentStore) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(NAME).status)


def test_a_spent_budget_scales_the_deployment_to_zero_until_the_day_turns(store, share, metered, clock):
    # 0.002 GPU-hours a day: 7.2 GPU-seconds (a local process counts as one GPU).
    manifest = local_manifest(NAME, share_root=str(share), budget={"gpuHoursPerDay": 0.002, "action": "scaleToZero"})
    row = store.create(InferenceDeploymentCreate.model_validate(manifest))

    def passes_until(done):
        def look():
            metered.reconcile(NAME)
            return done(status_of(store))

        return eventually(look, interval=0.1, what="the deployment's status")

    passes_until(lambda s: s.phase == "Ready")
    assert serving_pids(row.uid)
    clock.advance(5)  # 5 GPU-seconds: 69% spent, nothing said yet
    within = passes_until(lambda s: s.cost and s.cost.gpu_hours_today > 0 and s)
    assert within.cost.budget.state == "Within" and within.phase == "Ready"
    clock.advance(1)  # 6 of 7.2: past 80%
    nearly = passes_until(lambda s: s.cost.budget.state == "NearlySpent" and s)
    assert nearly.phase == "Ready"
    clock.advance(2)  # 8 of 7.2: spent
    held = passes_until(lambda s: s.phase == "Stopped" and s)
    ready = next(c for c in held.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "BudgetExceeded"
    assert "held at zero replicas: the budget is spent (0.002222 of 0.002 GPU-hours a day (111%) in 2026-12-07)" in ready.message
    assert held.cost.replicas == 0 and held.cost.budget.state == "Exceeded"
    eventually(lambda: not serving_pids(row.uid), what="the serving process to stop")
    reasons = [e.reason for e in store.list_events(NAME, limit=50)]
    assert "BudgetNearlySpent" in reasons and "BudgetExceeded" in reasons and "ScaledToZero" in reasons

    clock.advance(3600)  # held: no replica, nothing accrues, it stays stopped
    metered.reconcile(NAME)
    assert status_of(store).phase == "Stopped" and not serving_pids(row.uid)
    assert status_of(store).cost.gpu_hours_today == pytest.approx(8 / 3600, abs=1e-4)

    clock.advance(2 * 3600)  # past midnight (UTC): a new day, a new budget
    restored = passes_until(lambda s: s.phase == "Ready" and s)
    assert restored.cost.budget.state == "Within" and restored.cost.budget.period == "2026-12-08"
    assert serving_pids(row.uid)
    reasons = [e.reason for e in store.list_events(NAME, limit=50)]
    assert "BudgetRestored" in reasons and reasons.count("Created") == 3  # the deployment; its process, twice
    assert "ServingProcessCrashed" not in reasons  # stopped on purpose: no crash to back off from
