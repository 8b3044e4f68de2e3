"""High availability on PostgreSQL: two real ``loraplane serve`` processes share a database;
both serve the API, one reconciles; kill -9 the leader and the other takes over within the
lease, doing nothing twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from infra.local.provider import LocalProvider
from state.db import make_engine
from state.lease import Lease
from tests.conftest import local_manifest, reconcile_passes, start_service, stop_service, truncate
from tests.fakes import eventually
from tests.reconciler.test_reconcile_local import serving_pids

LEASE_SECONDS = 15


def holder_pid(engine) -> tuple[int, int] | None:
    current = Lease(engine, "observer").current()
    return (int(current.holder.split(":")[1]), current.epoch) if current else None


def test_killing_the_leader_hands_over_within_the_lease_and_nothing_is_done_twice(postgres_database: str, tmp_path: Path, share: Path):
    truncate(postgres_database)
    engine = make_engine(postgres_database)
    data_dir = tmp_path / "data"  # one data dir: the local target's run records are shared
    env = {"LORAPLANE_DATABASE_URL": postgres_database}
    first = start_service(data_dir, env_overrides=env, resync_seconds=5)
    second = start_service(data_dir, env_overrides=env, resync_seconds=5)
    services = {first.process.pid: first, second.process.pid: second}
    try:
        leader_pid, epoch = eventually(lambda: holder_pid(engine), timeout=15, what="a leader")
        leader = services[leader_pid]
        follower = next(s for pid, s in services.items() if pid != leader_pid)
        assert "standby" in httpx.get(f"{follower.url}/healthz").json()["detail"]

        # Written through the standby's API: the leader picks it up (another process's write).
        created = httpx.post(f"{follower.url}/v1/deployments", json=local_manifest(share_root=str(share)))
        assert created.status_code == 201
        uid = created.json()["metadata"]["uid"]
        eventually(
            lambda: httpx.get(f"{follower.url}/v1/deployments/support-bot").json()["status"]["phase"] == "Ready", timeout=30, what="Ready"
        )
        [serving] = serving_pids(uid)

        os.kill(leader_pid, signal.SIGKILL)
        leader.process.wait(timeout=10)
        new_pid, new_epoch = eventually(
            lambda: (h := holder_pid(engine)) and h[0] != leader_pid and h, timeout=LEASE_SECONDS + 30, what="a new leader"
        )
        assert new_pid == follower.process.pid and new_epoch == epoch + 1

        # The new leader reconciles: a spec change is observed; the serving process is adopted, not doubled.
        patched = httpx.patch(
            f"{follower.url}/v1/deployments/support-bot",
            content=b'{"spec": {"adapter": {"settleSeconds": 5}}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200 and patched.json()["metadata"]["generation"] == 2
        eventually(
            lambda: httpx.get(f"{follower.url}/v1/deployments/support-bot").json()["status"]["observedGeneration"] == 2,
            timeout=30,
            what="the new leader to reconcile",
        )
        since = reconcile_passes(httpx.get(f"{follower.url}/metrics").text)
        eventually(lambda: reconcile_passes(httpx.get(f"{follower.url}/metrics").text) >= since + 2, timeout=60, what="two more passes")
        assert serving_pids(uid) == [serving]
        assert "standby" not in httpx.get(f"{follower.url}/healthz").json()["detail"]
    finally:
        for service in services.values():
            stop_service(service)
        LocalProvider(data_dir / "local").stop_all()
        engine.dispose()


def test_an_api_replica_and_a_reconciler_apart_share_the_database(postgres_database: str, tmp_path: Path, share: Path):
    """serve --role api serves the API and reconciles nothing; serve --role reconciler
    reconciles and serves no API: what one stores, the other makes real."""
    truncate(postgres_database)
    env = {"LORAPLANE_DATABASE_URL": postgres_database}
    api = start_service(tmp_path / "api", "--role", "api", env_overrides=env)
    reconciler = start_service(tmp_path / "reconciler", "--role", "reconciler", env_overrides=env)
    try:
        created = httpx.post(f"{api.url}/v1/deployments", json=local_manifest(share_root=str(share)))
        assert created.status_code == 201, created.text
        eventually(
            lambda: httpx.get(f"{api.url}/v1/deployments/support-bot").json()["status"].get("phase") == "Ready",
            timeout=60,
            what="Ready, made so by the reconciler",
        )
        assert reconcile_passes(httpx.get(f"{api.url}/metrics").text) == 0
        assert reconcile_passes(httpx.get(f"{reconciler.url}/metrics").text) > 0
        assert httpx.get(f"{reconciler.url}/v1/deployments").status_code == 404  # no API there
        assert httpx.get(f"{reconciler.url}/healthz").status_code == 200
    finally:
        stop_service(api)
        stop_service(reconciler)
        LocalProvider(tmp_path / "reconciler" / "local").stop_all()
