"""Adapter folders listed every pollSeconds apart from the resync, once per folder however many
deployments name it, waking only the deployments that serve from a folder that changed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from reconciler.adapter_poll import AdapterPoller
from reconciler.core import Reconciler
from state.models import InferenceDeploymentCreate
from state.store import DeploymentStore
from tests.conftest import local_manifest
from tests.fakes import FakeClock


def create(store: DeploymentStore, name: str, share: Path, adapters: list[dict]) -> None:
    manifest = local_manifest(name, share_root=str(share))
    manifest["spec"]["adapters"] = adapters
    store.create(InferenceDeploymentCreate.model_validate(manifest))


def write(folder: Path, content: bytes = b"{}") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_bytes(content)


def test_a_changed_folder_wakes_who_serves_from_it_and_each_folder_is_listed_once(store: DeploymentStore, reconciler: Reconciler, share):
    write(share / "adapters/shared")
    write(share / "adapters/own")
    # Two deployments name the same folder; one also has a folder of its own, polled faster.
    create(
        store, "alpha", share, [{"name": "common", "path": "adapters/shared"}, {"name": "own", "path": "adapters/own", "pollSeconds": 2}]
    )
    create(store, "beta", share, [{"name": "common", "path": "adapters/shared", "pollSeconds": 10}])
    clock, woken = FakeClock(), []
    poller = AdapterPoller(reconciler, woken.append, monotonic=clock, registry=CollectorRegistry())
    poller.refresh(store.desired_versions())

    assert poller.poll() == 2  # the first look at each folder: what a change is told from
    assert woken == []
    clock.advance(1)
    assert poller.poll() == 0  # nothing due yet
    clock.advance(1)
    assert poller.poll() == 1 and woken == []  # own is due every 2 s; it did not change

    write(share / "adapters/shared", b'{"r": 8}')
    clock.advance(3)  # shared is due at 5 s: the smallest pollSeconds among who names it
    assert poller.poll() == 2
    assert sorted(woken) == ["alpha", "beta"]

    woken.clear()
    write(share / "adapters/own", b'{"r": 16}')
    clock.advance(2)
    poller.poll()
    assert woken == ["alpha"]  # only who serves from the folder that changed
    assert poller.listings._value.get() == 6  # 2 + 1 + 2 + 1: never one folder twice at a turn


def test_a_folder_no_deployment_names_any_more_is_not_listed(store: DeploymentStore, reconciler: Reconciler, share):
    write(share / "adapters/a")
    create(store, "alpha", share, [{"name": "a", "path": "adapters/a", "pollSeconds": 1}])
    clock, woken = FakeClock(), []
    poller = AdapterPoller(reconciler, woken.append, monotonic=clock, registry=CollectorRegistry())
    poller.refresh(store.desired_versions())
    assert poller.poll() == 1
    store.request_deletion("alpha")
    poller.refresh(store.desired_versions())
    clock.advance(5)
    assert poller.poll() == 0
    # A folder that is not there yet is a listing too: its appearing is a change.
    create(store, "beta", share, [{"name": "b", "path": "adapters/b", "pollSeconds": 1}])
    poller.refresh(store.desired_versions())
    assert poller.poll() == 1
    write(share / "adapters/b")
    clock.advance(1)
    poller.poll()
    assert woken == ["beta"]
