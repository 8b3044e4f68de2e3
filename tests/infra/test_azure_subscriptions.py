"""ARM's budget is per subscription: a deployment whose subscription is spent waits for its own
token without holding a worker, and never delays one in another subscription."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from azuresim.server import AzureSimulator
from infra.azure.limiter import ArmLimiter
from infra.azure.provider import AzureConfig, AzureProvider
from infra.ratelimit import fail_fast
from reconciler.controller import Controller
from reconciler.core import Reconciler
from reconciler.journal import DatabaseJournal
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import azure_manifest
from tests.fakes import FakeClock, eventually

SPENT = "11111111-1111-1111-1111-111111111111"
FREE = "22222222-2222-2222-2222-222222222222"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.05, standin_replicas=True) as running:
        yield running


def status(store: DeploymentStore, name: str) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(name).status)


def test_a_spent_subscription_holds_back_its_own_deployments_only(store: DeploymentStore, sim: AzureSimulator):
    clock = FakeClock(0.0)  # the limiter's: its buckets refill only when the test says
    limiter = ArmLimiter(clock=clock, sleep=lambda seconds: pytest.fail("a reconcile worker waited for a token"))
    # Someone spent SPENT's write budget: a queue of tickets a minute long.
    with fail_fast("another-team"):
        bucket = limiter.bucket(SPENT, "", "write")
        for index in range(180 + 600):
            bucket.reserve(f"another-team-{index}")
    config = AzureConfig(arm_url=sim.url, ca_bundle=sim.ca_bundle, credential="static", polling_seconds=0.05)
    provider = AzureProvider(config, DatabaseJournal(store), limiter=limiter)
    for name, subscription in (("spent", SPENT), ("free", FREE)):
        store.create(InferenceDeploymentCreate.model_validate(azure_manifest(name, subscriptionId=subscription)))
    # One worker: had the spent deployment's pass waited for its token, nothing else would move.
    controller = Controller(Reconciler(store, {"azure": provider}), resync_seconds=30, workers=1, registry=CollectorRegistry())
    controller.start()
    try:
        eventually(lambda: status(store, "free").phase == "Ready", timeout=60, what="the free subscription's deployment to be Ready")
        held = status(store, "spent")
        assert held.phase != "Ready"
        progressing = next(c for c in held.conditions if c.type == "Progressing")
        assert progressing.reason == "Throttled"
        assert f"waiting for ARM's write budget of subscription {SPENT}" in progressing.message
        assert not any(c.type == "Degraded" and c.status == "True" for c in held.conditions)
        # Its pass was given back with the time of its ticket, after the queue before it.
        assert controller.queue.has_pending_retry("spent")
        assert bucket.tickets() == 601
        clock.advance(600.0)  # the budget refills: the next look finds a token
        controller.wake("spent")
        eventually(lambda: status(store, "spent").phase == "Ready", timeout=20, what="the spent subscription's deployment to be Ready")
    finally:
        controller.stop()
        provider.close()
