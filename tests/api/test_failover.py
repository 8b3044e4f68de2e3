"""High availability on PostgreSQL: two real ``loraplane serve`` processes share a database;
both serve the API and each reconciles its shards; kill -9 one and the other takes its shards
within the lease, doing nothing twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from infra.local.provider import LocalProvider
from reconciler.writer import shard_of
from state.db import make_engine
from tests.conftest import local_manifest, reconcile_passes, start_service, stop_service, truncate
from tests.fakes import eventually
from tests.reconciler.test_reconcile_local import serving_pids

SHARDS = 4
LEASE_SECONDS = 6


def held(url: str) -> str:
    return httpx.get(f"{url}/healthz").json()["detail"]


def phase(url: str, name: str) -> str | None:
    return (httpx.get(f"{url}/v1/deployments/{name}").json().get("status") or {}).get("phase")


def test_replicas_share_the_shards_and_a_killed_ones_move_within_the_lease(postgres_database: str, tmp_path: Path, share: Path):
    truncate(postgres_database)
    engine = make_engine(postgres_database)
    data_dir = tmp_path / "data"  # one data dir: the local target's run records are shared
    env = {
        "LORAPLANE_DATABASE_URL": postgres_database,
        "LORAPLANE_SHARDS": str(SHARDS),
        "LORAPLANE_SHARD_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    first = start_service(data_dir, env_overrides=env, resync_seconds=5)
    second = start_service(data_dir, env_overrides=env, resync_seconds=5)
    try:
        # Each takes its fair part: two shards each, and says which on /healthz.
        eventually(
            lambda: (
                all("reconciling shard(s)" in held(s.url) and "2 replica(s)" in held(s.url) for s in (first, second))
                and sum(held(s.url).split(" of ")[0].count(",") + 1 for s in (first, second)) == SHARDS
            ),
            timeout=LEASE_SECONDS * 4,
            what="each replica to hold two shards",
        )
        shards_of = {
            s.process.pid: {int(n) for n in held(s.url).split("shard(s) ")[1].split(" of ")[0].split(", ")} for s in (first, second)
        }
        assert shards_of[first.process.pid].isdisjoint(shards_of[second.process.pid])

        # Deployments in both replicas' shards, written through either API.
        uids: dict[str, str] = {}
        index = 0
        while {shard_of(uid, SHARDS) for uid in uids.values()} & shards_of[first.process.pid] == set() or not (
            {shard_of(uid, SHARDS) for uid in uids.values()} & shards_of[second.process.pid]
        ):
            name = f"bot-{index}"
            created = httpx.post(f"{(first, second)[index % 2].url}/v1/deployments", json=local_manifest(name, share_root=str(share)))
            assert created.status_code == 201, created.text
            uids[name] = created.json()["metadata"]["uid"]
            index += 1
        eventually(
            lambda: all(phase(first.url, name) == "Ready" for name in uids),
            timeout=60,
            what="every deployment Ready",
            describe=lambda: {name: httpx.get(f"{first.url}/v1/deployments/{name}").json().get("status") for name in uids},
        )
        serving = {uid: serving_pids(uid) for uid in uids.values()}
        assert all(len(pids) == 1 for pids in serving.values())
        assert reconcile_passes(httpx.get(f"{first.url}/metrics").text) > 0
        assert reconcile_passes(httpx.get(f"{second.url}/metrics").text) > 0

        os.kill(second.process.pid, signal.SIGKILL)
        second.process.wait(timeout=10)
        eventually(
            lambda: f"shard(s) 0, 1, 2, 3 of {SHARDS} (1 replica(s) alive)" in held(first.url),
            timeout=LEASE_SECONDS * 2 + 30,
            what="the killed replica's shards to move",
        )
        # The survivor reconciles them all: a spec change is observed everywhere; the serving
        # processes the killed replica started are adopted, not doubled.
        for name in uids:
            patched = httpx.patch(
                f"{first.url}/v1/deployments/{name}",
                content=b'{"spec": {"adapter": {"settleSeconds": 5}}}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert patched.status_code == 200 and patched.json()["metadata"]["generation"] == 2
        eventually(
            lambda: all(httpx.get(f"{first.url}/v1/deployments/{name}").json()["status"]["observedGeneration"] == 2 for name in uids),
            timeout=30,
            what="the survivor to reconcile every deployment",
        )
        since = reconcile_passes(httpx.get(f"{first.url}/metrics").text)
        eventually(
            lambda: reconcile_passes(httpx.get(f"{first.url}/metrics").text) >= since + 2 * len(uids), timeout=60, what="more passes"
        )
        assert {uid: serving_pids(uid) for uid in uids.values()} == serving
    finally:
        for service in (first, second):
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
