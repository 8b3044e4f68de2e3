"""``loraplane serve`` as a process: crash safety, graceful shutdown, health and metrics."""

from __future__ import annotations

import signal

import httpx
import pytest

from infra.local.provider import LocalProvider
from tests.conftest import local_manifest, start_service, stop_service, truncate
from tests.fakes import eventually
from tests.reconciler.test_reconcile_local import serving_pids


def deployment(url: str, name: str = "support-bot") -> dict:
    return httpx.get(f"{url}/v1/deployments/{name}").json()


def ready(url: str, name: str = "support-bot") -> dict | None:
    body = deployment(url, name)
    return body if body.get("status", {}).get("phase") == "Ready" else None


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    yield path
    LocalProvider(path / "local").stop_all()


@pytest.mark.parametrize("kill_after", ["the create", "Ready"])
def test_a_daemon_killed_9_converges_on_restart_without_a_second_process(data_dir, share, kill_after):
    first = start_service(data_dir)
    created = httpx.post(f"{first.url}/v1/deployments", json=local_manifest(share_root=str(share)))
    uid = created.json()["metadata"]["uid"]
    if kill_after == "Ready":
        eventually(lambda: ready(first.url), what="Ready")
    first.process.send_signal(signal.SIGKILL)  # mid-reconcile in the first case
    first.process.wait()

    second = start_service(data_dir)
    try:
        body = eventually(lambda: ready(second.url), what="Ready after the restart")
        eventually(lambda: len(serving_pids(uid)) == 1, what="exactly one serving process")
        [pid] = serving_pids(uid)
        assert body["status"]["resources"][0]["id"] == f"pid:{pid}"
        assert httpx.get(f"{body['status']['endpoint']}/healthz").status_code == 200
    finally:
        stop_service(second)


def test_sigterm_leaves_serving_processes_for_the_next_start_to_adopt(data_dir, share):
    first = start_service(data_dir)
    uid = httpx.post(f"{first.url}/v1/deployments", json=local_manifest(share_root=str(share))).json()["metadata"]["uid"]
    endpoint = eventually(lambda: ready(first.url), what="Ready")["status"]["endpoint"]
    [pid] = serving_pids(uid)
    first.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then exits by the signal it got (-15), as a daemon should.
    assert first.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "reconciler stopped" in first.log.read_text()
    # The log says what it leaves behind, and how to stop it (before: nothing).
    assert f"leaving 1 serving process(es) running: support-bot (pid {pid})" in first.log.read_text()
    assert "--stop-children" in first.log.read_text()
    assert serving_pids(uid) == [pid]
    assert httpx.get(f"{endpoint}/healthz").status_code == 200  # still serving meanwhile

    second = start_service(data_dir)
    try:
        eventually(lambda: ready(second.url), what="Ready after the restart")
        assert serving_pids(uid) == [pid]  # adopted, not restarted
        assert deployment(second.url)["status"]["endpoint"] == endpoint
    finally:
        stop_service(second)


def test_stop_children_stops_the_serving_processes_on_shutdown(data_dir, share):
    service = start_service(data_dir, "--stop-children")
    uid = httpx.post(f"{service.url}/v1/deployments", json=local_manifest(share_root=str(share))).json()["metadata"]["uid"]
    eventually(lambda: ready(service.url), what="Ready")
    assert len(serving_pids(uid)) == 1
    stop_service(service)
    assert serving_pids(uid) == []


def test_health_and_metrics_of_a_running_service(service, share):
    assert httpx.get(f"{service.url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{service.url}/readyz").json()["status"] == "ready"
    httpx.post(f"{service.url}/v1/deployments", json=local_manifest(share_root=str(share)))
    eventually(lambda: ready(service.url), what="Ready")
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'loraplane_deployments{phase="Ready"} 1.0' in metrics
    assert "loraplane_workqueue_depth" in metrics
    assert 'loraplane_reconciles_total{result="progressing"}' in metrics
    assert "loraplane_reconcile_duration_seconds_bucket" in metrics


def test_the_service_runs_on_postgresql_when_told(postgres_database, data_dir, share):
    truncate(postgres_database)
    service = start_service(data_dir, env_overrides={"LORAPLANE_DATABASE_URL": postgres_database})
    try:
        assert "postgresql" in service.log.read_text()
        assert not (data_dir / "loraplane.db").exists()
        httpx.post(f"{service.url}/v1/deployments", json=local_manifest(share_root=str(share)))
        eventually(lambda: ready(service.url), what="Ready on PostgreSQL")
        events = httpx.get(f"{service.url}/v1/deployments/support-bot/events").json()["items"]
        assert events[0]["reason"] == "Ready"
        httpx.delete(f"{service.url}/v1/deployments/support-bot")
        eventually(lambda: httpx.get(f"{service.url}/v1/deployments/support-bot").status_code == 404, what="gone")
    finally:
        stop_service(service)
        truncate(postgres_database)
