"""reconcile() and the Controller on the local target, with real serving processes (the
stand-in app until the serving app lands) and real databases."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from infra.local.process import MARKER_ENV
from infra.local.provider import LocalProvider
from reconciler.controller import Controller
from reconciler.core import Reconciler
from reconciler.workqueue import WorkQueue
from state.db import make_engine, sqlite_url, upgrade_database
from state.errors import NotFound
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import STANDIN_COMMAND, local_manifest
from tests.fakes import FakeClock, eventually


def create(store: DeploymentStore, share: Path, name: str = "support-bot", **spec):
    return store.create(InferenceDeploymentCreate.model_validate(local_manifest(name=name, share_root=str(share), **spec)))


def status_of(store: DeploymentStore, name: str = "support-bot") -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(name).status)


def reconcile_until_ready(reconciler: Reconciler, name: str = "support-bot") -> DeploymentStatus:
    def ready():
        reconciler.reconcile(name)
        status = status_of(reconciler.store, name)
        settled = any(c.type == "Progressing" and c.status == "False" for c in status.conditions)
        return status if status.phase == "Ready" and settled else None

    return eventually(ready, interval=0.1, what=f"{name} to become Ready")


def serving_pids(uid: str) -> list[int]:
    pids = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get(MARKER_ENV) == uid and process.status() != psutil.STATUS_ZOMBIE:
                pids.append(process.pid)
        except psutil.Error:
            continue
    return pids


def test_create_becomes_ready_with_an_endpoint_that_answers(store, reconciler, share):
    row = create(store, share)
    status = reconcile_until_ready(reconciler)
    assert status.observed_generation == 1
    assert httpx.get(f"{status.endpoint}/healthz").status_code == 200
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions == {
        "Ready": ("True", "Serving"),
        "Progressing": ("False", "Reconciled"),
        "Degraded": ("False", "AsExpected"),
        "AdapterSynced": ("False", "NoAdapter"),  # the share holds no adapter yet
    }
    assert [r.kind for r in status.resources] == ["ServingProcess"]
    reasons = [e.reason for e in store.list_events("support-bot")]
    assert reasons[0] == "Ready" and "Created" in reasons
    assert len(serving_pids(row.uid)) == 1


def test_a_steady_state_writes_nothing(store, reconciler, share):
    create(store, share)
    reconcile_until_ready(reconciler)
    before = store.get("support-bot").resource_version
    events = len(store.list_events("support-bot"))
    for _ in range(3):
        assert reconciler.reconcile("support-bot").result == "converged"
    assert store.get("support-bot").resource_version == before
    assert len(store.list_events("support-bot")) == events


def test_scaled_to_zero_stops_the_process_and_settles_as_stopped_until_scaled_up(store, reconciler, share):
    row = create(store, share)
    reconcile_until_ready(reconciler)
    spec = DeploymentSpec.model_validate(local_manifest(share_root=str(share), scale={"minReplicas": 0, "maxReplicas": 0})["spec"])
    store.replace("support-bot", labels={}, spec=spec)
    reconciler.reconcile("support-bot")  # stops the process
    outcome = reconciler.reconcile("support-bot")
    status = status_of(store)
    assert serving_pids(row.uid) == []
    # Settled as asked, not forever "coming up": the resync timer is enough, no quick poll.
    assert (status.phase, outcome.result, outcome.requeue_after) == ("Stopped", "converged", None)
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions["Ready"] == ("False", "Stopped") and conditions["Progressing"] == ("False", "Reconciled")
    assert "maxReplicas is 0" in (status.message or "")
    store.replace("support-bot", labels={}, spec=DeploymentSpec.model_validate(local_manifest(share_root=str(share))["spec"]))
    assert reconcile_until_ready(reconciler).phase == "Ready"
    assert len(serving_pids(row.uid)) == 1


def test_a_spec_change_restarts_the_app_with_the_new_settings(store, reconciler, share):
    row = create(store, share)
    reconcile_until_ready(reconciler)
    old_pid = serving_pids(row.uid)
    (share / "models/phi-small").mkdir(parents=True)
    spec = DeploymentSpec.model_validate(local_manifest(share_root=str(share), model={"path": "models/phi-small"})["spec"])
    store.replace("support-bot", labels={}, spec=spec)
    status = reconcile_until_ready(reconciler)
    assert status.observed_generation == 2
    new_pid = serving_pids(row.uid)
    assert len(new_pid) == 1 and new_pid != old_pid
    assert psutil.Process(new_pid[0]).environ()["LORAPLANE_MODEL_PATH"] == "models/phi-small"
    assert "Restarted" in [e.reason for e in store.list_events("support-bot")]
    assert httpx.get(f"{status.endpoint}/healthz").status_code == 200


def test_a_missing_model_is_degraded_naming_the_path_and_recovers_when_it_appears(store, reconciler, share):
    create(store, share, model={"path": "models/not-here"})
    outcome = reconciler.reconcile("support-bot")
    assert outcome.result == "permanent" and outcome.requeue_after is None
    status = status_of(store)
    assert status.phase == "Degraded"
    assert str(share / "models/not-here") in status.message
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ModelNotFound")
    # Looking again changes nothing and writes nothing.
    version = store.get("support-bot").resource_version
    reconciler.reconcile("support-bot")
    assert store.get("support-bot").resource_version == version
    # The model arrives: the next resync sees it.
    (share / "models/not-here").mkdir(parents=True)
    assert reconcile_until_ready(reconciler).phase == "Ready"


def test_delete_stops_the_process_and_removes_the_deployment(store, reconciler, share, local_provider):
    row = create(store, share)
    reconcile_until_ready(reconciler)
    [pid] = serving_pids(row.uid)
    store.request_deletion("support-bot")
    assert reconciler.reconcile("support-bot").result == "deleted"
    with pytest.raises(NotFound):
        store.get("support-bot")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not local_provider.folder("support-bot").path.exists()


def test_a_process_started_but_not_recorded_is_adopted_not_doubled(store, reconciler, share, local_provider):
    """What a kill -9 between spawning and recording leaves behind."""
    row = create(store, share)
    reconcile_until_ready(reconciler)
    [pid] = serving_pids(row.uid)
    local_provider.folder("support-bot").record_file.unlink()
    status = reconcile_until_ready(reconciler)
    assert serving_pids(row.uid) == [pid]
    assert status.resources[0].id == f"pid:{pid}"


def test_a_recycled_pid_is_not_taken_for_ours(store, reconciler, share, local_provider):
    row = create(store, share)
    reconcile_until_ready(reconciler)
    folder = local_provider.folder("support-bot")
    record = folder.read_record()
    [pid] = serving_pids(row.uid)
    # Pretend the record points at another live process (this test runner): start times differ.
    record.pid = os.getpid()
    folder.write_record(record)
    reconcile_until_ready(reconciler)
    assert serving_pids(row.uid) == [pid]  # found by its marker, and no other process adopted


def test_a_crash_loop_backs_off_on_a_fake_clock(store, share, tmp_path):
    clock = FakeClock()
    crashing = LocalProvider(
        tmp_path / "run", serving_command=[sys.executable, "-c", "import sys; sys.exit(3)"], clock=clock, share_roots=[tmp_path]
    )
    reconciler = Reconciler(store, {"local": crashing}, poll_seconds=0.2)
    queue = WorkQueue(clock=clock)
    controller = Controller(reconciler, queue=queue, registry=CollectorRegistry())
    row = create(store, share)
    waits = []
    for _ in range(4):
        outcome = controller.process("support-bot")
        if outcome.result == "progressing":  # it was just started: let it die (for real)
            eventually(lambda: not serving_pids(row.uid), what="the crashing app to exit")
            clock.advance(0.25)
            assert queue.get(timeout=0) == "support-bot"  # the requeue to check on it
            outcome = controller.process("support-bot")
            queue.done("support-bot")
        assert outcome.result == "temporary", outcome
        waits.append(outcome.requeue_after)
        # Held back on the queue until the fake clock reaches the delay.
        assert queue.get(timeout=0) is None
        clock.advance(outcome.requeue_after - 0.01)
        assert queue.get(timeout=0) is None
        clock.advance(0.02)
        assert queue.get(timeout=0) == "support-bot"
        queue.done("support-bot")
    assert waits == pytest.approx([1 - 0.25, 2 - 0.25, 4 - 0.25, 8 - 0.25], abs=0.02)
    status = status_of(store)
    assert status.phase == "Degraded"
    assert "ServingProcessCrashed" in [c.reason for c in status.conditions]
    crashing.stop_all()


def test_the_controller_restarts_a_killed_process_and_reports_metrics(store, share, tmp_path):
    local = LocalProvider(tmp_path / "run", serving_command=STANDIN_COMMAND, monitor_interval=0.1, share_roots=[tmp_path])
    reconciler = Reconciler(store, {"local": local}, poll_seconds=0.2)
    registry = CollectorRegistry()
    controller = Controller(reconciler, resync_seconds=30, workers=2, registry=registry)
    local.on_change = controller.wake
    controller.start()
    try:
        row = create(store, share)  # the store's listener wakes the controller at once
        eventually(lambda: status_of(store).phase == "Ready", what="Ready")
        [pid] = serving_pids(row.uid)
        os.kill(pid, signal.SIGKILL)
        # The monitor notices the death and wakes the reconciler: no waiting for a resync.
        new = eventually(lambda: [p for p in serving_pids(row.uid) if p != pid], what="a new process")
        eventually(lambda: status_of(store).phase == "Ready" and status_of(store).resources[0].id == f"pid:{new[0]}", what="Ready again")
        assert controller.liveness()[0]

        # The pass after the restart that finds nothing to do counts as converged.
        def converged_metrics() -> str | None:
            text = generate_latest(registry).decode()
            return text if 'loraplane_reconciles_total{result="converged"}' in text else None

        metrics = eventually(converged_metrics, what="a converged pass")
        assert "loraplane_workqueue_depth" in metrics
        assert 'loraplane_reconcile_duration_seconds_count{result="progressing"}' in metrics
        store.request_deletion("support-bot")
        eventually(lambda: "support-bot" not in store.names(), what="the deployment to go")
        eventually(lambda: not serving_pids(row.uid), what="the process to stop")
    finally:
        controller.stop()
        local.stop_all()


def test_liveness_fails_when_the_loop_makes_no_progress(store):
    clock = FakeClock()
    controller = Controller(Reconciler(store, {}), resync_seconds=30, monotonic=clock)
    assert controller.liveness()[0]
    clock.advance(89)
    assert controller.liveness()[0]
    clock.advance(2)
    alive, reason = controller.liveness()
    assert not alive and "no progress for 91s" in reason
    controller.process("nobody")  # a finished pass is progress
    assert controller.liveness()[0]


def test_a_target_without_a_provider_is_permanent(store, reconciler):
    store.create(
        InferenceDeploymentCreate.model_validate(
            {
                "metadata": {"name": "cloud-bot"},
                "spec": {
                    "target": "azure",
                    "model": {"path": "models/base"},
                    "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "rg", "location": "westus3"},
                },
            }
        )
    )
    assert reconciler.reconcile("cloud-bot").result == "permanent"
    status = status_of(store, "cloud-bot")
    assert "TargetUnavailable" in [c.reason for c in status.conditions]
    # Deleting it needs no teardown anywhere.
    store.request_deletion("cloud-bot")
    assert reconciler.reconcile("cloud-bot").result == "deleted"


def test_a_database_failure_mid_pass_is_retried_and_keeps_the_worker(share, tmp_path):
    """The database goes away under a pass: the controller backs off instead of dying."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade_database(engine)
    store = DeploymentStore(engine)
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    registry = CollectorRegistry()
    reconciler = Reconciler(store, {"local": LocalProvider(tmp_path / "run", serving_command=STANDIN_COMMAND, share_roots=[tmp_path])})
    controller = Controller(reconciler, queue=queue, registry=registry)
    create(store, share, model={"path": "models/absent"})
    engine.dispose()
    database = Path(engine.url.database)
    for leftover in tmp_path.glob(database.name + "*"):
        leftover.unlink()
    database.mkdir()  # a folder where the database file was: every query now fails
    outcome = controller.process("support-bot")
    assert outcome.result == "temporary"
    assert queue.has_pending_retry("support-bot")
    assert 'loraplane_reconciles_total{result="temporary"} 1.0' in generate_latest(registry).decode()


def test_another_replicas_spec_change_is_picked_up_but_status_and_label_writes_are_not(store, share):
    """The periodic look for writes this process was not told of (another replica's API) reacts
    to the desired state only: the reconciler's own status writes would cost a pass each."""
    controller = Controller(Reconciler(store, {}), resync_seconds=30)
    row = create(store, share)
    controller.sync_timers()  # the first look only learns what is there
    assert controller.queue.depth() == 0

    store.update_status("support-bot", DeploymentStatus(phase="Ready", observed_generation=1), uid=row.uid)
    store.replace("support-bot", labels={"team": "search"}, spec=DeploymentSpec.model_validate(row.spec))
    controller.sync_timers()
    assert controller.queue.depth() == 0

    store.replace("support-bot", labels={"team": "search"}, spec=DeploymentSpec.model_validate({**row.spec, "scale": {"maxReplicas": 2}}))
    controller.sync_timers()
    assert controller.queue.depth() == 1
    assert controller.queue.get() == "support-bot"
    controller.queue.done("support-bot")

    store.request_deletion("support-bot")
    controller.sync_timers()
    assert controller.queue.depth() == 1


def test_each_pass_books_its_next_resync_within_a_quarter_of_the_interval(store, share):
    """No scheduler job per deployment: a pass puts its key back on the queue's own timer."""
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    controller = Controller(Reconciler(store, {}), queue=queue, resync_seconds=30, registry=CollectorRegistry())
    create(store, share)  # on the local target, which this reconciler lacks: it settles, failed for good
    assert controller.process("support-bot").result == "permanent"
    clock.advance(30 * 0.75 - 0.01)
    assert queue.get(timeout=0) is None
    clock.advance(30 * 0.5 + 0.02)
    assert queue.get(timeout=0) == "support-bot"
    queue.done("support-bot")
    store.request_deletion("support-bot")
    assert controller.process("support-bot").result == "deleted"
    clock.advance(3600)
    assert queue.get(timeout=0) is None  # a deployment gone books nothing


def test_a_deployment_another_replica_creates_in_an_empty_database_is_picked_up(store, share):
    """The first look finds nothing; what another replica's API stores next is new all the same."""
    controller = Controller(Reconciler(store, {}), resync_seconds=30)
    controller.sync_timers()
    create(store, share)
    controller.sync_timers()
    assert controller.queue.get(timeout=0) == "support-bot"
