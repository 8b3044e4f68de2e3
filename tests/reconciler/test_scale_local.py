"""Scale to zero on the local target, through the activator: the deployment's endpoint is a
stable address; with no process, a request there is held while one starts and then answered
(200); idle past spec.scale.idleSeconds (on a fake clock), the process stops and the address
stays; the next request starts it again. loraplane's own calls go to the process, never through
the activator (they would keep it up)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.local.provider import LocalProvider
from reconciler.core import Reconciler
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import STANDIN_COMMAND, allowed_share_roots, local_manifest
from tests.fakes import FakeClock, eventually
from tests.reconciler.test_reconcile_local import serving_pids

NAME = "support-bot"


@pytest.fixture
def idle_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def looping(store: DeploymentStore, tmp_path: Path, idle_clock: FakeClock) -> Iterator[Reconciler]:
    """The reconciler over the local target (the stand-in app), passes made in a loop as the
    controller's worker makes them; the activator's idleness on a fake clock."""
    provider = LocalProvider(
        tmp_path / "run", serving_command=STANDIN_COMMAND, share_roots=allowed_share_roots(tmp_path), monotonic=idle_clock
    )
    reconciler = Reconciler(store, {"local": provider}, poll_seconds=0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if NAME in store.names():
                reconciler.reconcile(NAME)
            stop.wait(0.1)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    yield reconciler
    stop.set()
    worker.join(timeout=30)
    provider.stop()
    provider.stop_all()


def status_of(store: DeploymentStore) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(NAME).status)


def test_the_activator_starts_the_process_on_demand_and_it_stops_when_idle(store, share, looping, idle_clock):
    manifest = local_manifest(NAME, share_root=str(share), scale={"minReplicas": 0, "maxReplicas": 1, "idleSeconds": 30})
    row = store.create(InferenceDeploymentCreate.model_validate(manifest))
    zero = eventually(lambda: (s := status_of(store)).phase == "Ready" and s, timeout=30, what="Ready at zero")
    endpoint = zero.endpoint
    assert endpoint is not None and "scaled to zero" in next(c.message for c in zero.conditions if c.type == "Ready")
    assert not serving_pids(row.uid)  # nothing runs until a request comes

    answer = httpx.get(f"{endpoint}/healthz", timeout=60)  # held while the process starts, then answered
    assert answer.status_code == 200 and answer.json() == {"status": "alive"}
    assert serving_pids(row.uid)
    running = eventually(lambda: (s := status_of(store)).cost and s.cost.replicas == 1 and s, timeout=30, what="one replica")
    assert running.endpoint == endpoint  # the same address, whatever runs behind it

    idle_clock.advance(31)  # idle past spec.scale.idleSeconds
    eventually(lambda: not serving_pids(row.uid), timeout=30, what="the idle process to stop")
    stopped = eventually(lambda: (s := status_of(store)).cost.replicas == 0 and s, timeout=30, what="zero replicas")
    assert stopped.endpoint == endpoint and stopped.phase == "Ready"
    assert "ScaledToZero" in [e.reason for e in store.list_events(NAME, limit=50)]

    assert httpx.get(f"{endpoint}/healthz", timeout=60).status_code == 200  # it started again
    assert serving_pids(row.uid)
    eventually(lambda: "ColdStart" in [e.reason for e in store.list_events(NAME, limit=50)], timeout=30, what="ColdStart")
