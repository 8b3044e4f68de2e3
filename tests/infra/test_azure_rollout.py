"""Adapter rollouts on the azure target: the simulator runs the container app's revisions
with the real serving app; adapters arrive on the share through the Azure Files API, as a
remote fine-tuning job leaves them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azuresim.server import AzureSimulator
from infra.azure.provider import AzureConfig, AzureProvider
from infra.azure.share import ShareFiles
from infra.provider import Target
from reconciler.core import Reconciler, target_of
from reconciler.journal import DatabaseJournal
from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, make_tiny_share, write_random_adapter
from state.db import make_engine, sqlite_url, upgrade_database
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import azure_manifest
from tests.fakes import eventually
from tests.reconciler.test_rollout_local import SERVING_WITHOUT_UI

NAME = "support-bot"


@contextmanager
def world(tmp_path: Path, command: tuple[str, ...]) -> Iterator[tuple[DeploymentStore, AzureSimulator, AzureProvider, Reconciler]]:
    """A store, the simulator running the real serving app with ``command``, and a reconciler
    of the azure target over them; all stopped afterwards."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade_database(engine)
    store = DeploymentStore(engine)
    sim = AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.1, run_containers=True, container_command=command).start()
    # An autoscaled app's replicas are counted from its revisions: listed every 2 s here, not
    # every minute, so that a scale to zero or a cold start is seen within seconds.
    config = AzureConfig(arm_url=sim.url, ca_bundle=sim.ca_bundle, credential="static", polling_seconds=0.05, revisions_max_age_seconds=2.0)
    provider = AzureProvider(config, DatabaseJournal(store))
    try:
        yield store, sim, provider, Reconciler(store, {"azure": provider}, poll_seconds=0.2)
    finally:
        provider.close()
        sim.stop()
        engine.dispose()


@contextmanager
def reconciling(reconciler: Reconciler, name: str = NAME) -> Iterator[None]:
    """Passes of ``name`` in a thread until the block ends, as the controller's worker makes
    them: often."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            reconciler.reconcile(name)
            stop.wait(0.3)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=60)


def create_on_share(store: DeploymentStore, sim: AzureSimulator, **azure: object) -> tuple[str, DeploymentSpec, Path]:
    """The deployment on the tiny model (adapters settle in a second), and its share holding the
    model and the first adapters: its uid, spec and share folder."""
    manifest = azure_manifest(NAME, **azure)
    manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
    manifest["spec"]["adapter"] = {"path": ADAPTER_PATH, "settleSeconds": 1}
    row = store.create(InferenceDeploymentCreate.model_validate(manifest))
    spec = DeploymentSpec.model_validate(row.spec)
    folder = sim.share_folder(spec.azure.storage_account, spec.azure.file_share)
    make_tiny_share(folder)
    return row.uid, spec, folder


def upload_adapter(share: ShareFiles, source: Path) -> None:
    """Through the data plane, config last: a job's upload in progress looks incomplete."""
    for file in sorted(source.iterdir(), key=lambda f: f.name == "adapter_config.json"):
        share.upload(f"{ADAPTER_PATH}/{file.name}", file.read_bytes())


def test_azure_adapters_roll_out_by_hot_reload_and_by_new_revision(tmp_path: Path):
    with world(tmp_path, SERVING_WITHOUT_UI) as (store, sim, provider, reconciler):
        roll_out_both_ways(tmp_path, store, sim, provider, reconciler)


def roll_out_both_ways(
    tmp_path: Path, store: DeploymentStore, sim: AzureSimulator, provider: AzureProvider, reconciler: Reconciler
) -> None:
    uid, spec, folder = create_on_share(store, sim)
    write_random_adapter(folder / TINY_MODEL_PATH, tmp_path / "third", seed=3)
    with reconciling(reconciler):

        def status() -> DeploymentStatus:
            return DeploymentStatus.model_validate(store.get(NAME).status)

        def serving() -> str | None:
            current = status()
            synced = any(c.type == "AdapterSynced" and c.status == "True" for c in current.conditions)
            return current.adapter.serving_version if synced else None

        first = eventually(serving, timeout=180, what="the first adapter")
        endpoint = status().endpoint
        ours = f".loraplane/{NAME}/{uid[:8]}"
        pointer = json.loads((folder / f"{ours}/current.json").read_text())
        assert pointer == {"version": first, "path": f"{ours}/adapters/{first}"}
        revision = provider.clients(spec.azure.subscription_id).apps.container_apps.get("rg-inference", NAME).latest_revision_name

        # hotReload: a new adapter uploaded to the share serves in place, same revision.
        with provider.share(provider_target(store)) as share:
            upload_adapter(share, folder / SECOND_ADAPTER_PATH)
        second = eventually(lambda: (v := serving()) != first and v, timeout=60, what="the second adapter")
        assert provider.adapter_status(provider_target(store), endpoint)["version"] == second  # asked as loraplane asks
        apps = provider.clients(spec.azure.subscription_id).apps
        assert apps.container_apps.get("rg-inference", NAME).latest_revision_name == revision

        # restart: the version goes into the container's environment, a new revision serves it.
        changed = store.get(NAME).spec
        changed["adapter"]["strategy"] = "restart"
        store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(changed))
        with provider.share(provider_target(store)) as share:
            upload_adapter(share, tmp_path / "third")
        third = eventually(lambda: (v := serving()) not in (first, second) and v, timeout=180, what="the third adapter")
        app = apps.container_apps.get("rg-inference", NAME)
        assert app.latest_revision_name != revision
        env = {e.name: e.value for e in app.template.containers[0].env}
        assert env["LORAPLANE_ADAPTER_VERSION"] == third and env["LORAPLANE_WATCH"] == "false"
        assert provider.adapter_status(provider_target(store), status().endpoint)["version"] == third
        assert status().adapter.last_rollout.strategy == "restart"


def provider_target(store: DeploymentStore) -> Target:
    return target_of(store.get(NAME))


# Replicas report on the share every half second here (5 s by default), and look at the pointer as often.
QUICK_REPORTS = (
    *SERVING_WITHOUT_UI[:2],
    "LORAPLANE_REPORT_INTERVAL_SECONDS=0.5",
    "LORAPLANE_WATCH_INTERVAL_SECONDS=0.5",
    *SERVING_WITHOUT_UI[2:],
)


def test_an_internal_app_behind_an_allow_list_is_judged_and_rolled_out_from_what_its_replicas_report_on_the_share(tmp_path: Path):
    """Internal ingress: the endpoint is the app's internal name, which loraplane (outside the
    environment) cannot reach, nor could it past an allow list without its own address. It
    reads each replica's report on the share instead: Ready from them, and a hot-reloaded
    adapter verified by them, with no call to the app."""
    with world(tmp_path, QUICK_REPORTS) as (store, sim, provider, reconciler):
        serve_internally(store, sim, provider, reconciler)


def serve_internally(store: DeploymentStore, sim: AzureSimulator, provider: AzureProvider, reconciler: Reconciler) -> None:
    _, spec, folder = create_on_share(store, sim, ingress="internal", ipAllowList=["10.0.0.0/8"])

    def serving() -> str | None:
        reconciler.reconcile(NAME)
        current = DeploymentStatus.model_validate(store.get(NAME).status)
        synced = any(c.type == "AdapterSynced" and c.status == "True" for c in current.conditions)
        return current.adapter.serving_version if current.phase == "Ready" and synced else None

    first = eventually(serving, timeout=180, interval=0.3, what="Ready, serving the first adapter")
    status = DeploymentStatus.model_validate(store.get(NAME).status)
    assert status.endpoint is not None and ".internal." in status.endpoint
    assert "as they report on the share" in next(c.message for c in status.conditions if c.type == "Ready")
    app = provider.clients(spec.azure.subscription_id).apps.container_apps.get("rg-inference", NAME)
    assert app.configuration.ingress.external is False
    assert [(r.ip_address_range, r.action) for r in app.configuration.ingress.ip_security_restrictions] == [("10.0.0.0/8", "Allow")]

    with provider.share(provider_target(store)) as share:
        upload_adapter(share, folder / SECOND_ADAPTER_PATH)
    second = eventually(lambda: (v := serving()) not in (None, first) and v, timeout=60, interval=0.3, what="the second adapter")
    rollout = DeploymentStatus.model_validate(store.get(NAME).status).adapter.last_rollout
    assert rollout is not None and rollout.result == "Succeeded" and rollout.version == second
    assert (
        provider.clients(spec.azure.subscription_id).apps.container_apps.get("rg-inference", NAME).latest_revision_name
        == app.latest_revision_name
    )


def test_one_app_serves_two_adapters_each_rolled_out_on_its_own(tmp_path: Path):
    """spec.adapters on the azure target: one container app serves both (one copy of the base
    model); the restart adapter's version is in the revision's environment, the hotReload one
    swaps in place, and each is verified from what the replicas report on the share."""
    with world(tmp_path, QUICK_REPORTS) as (store, sim, provider, reconciler):
        manifest = azure_manifest(NAME, ingress="internal", ipAllowList=["10.0.0.0/8"])
        manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
        manifest["spec"]["adapters"] = [
            {"name": "billing", "path": ADAPTER_PATH, "settleSeconds": 1},
            {"name": "legal", "path": SECOND_ADAPTER_PATH, "settleSeconds": 1, "strategy": "restart"},
        ]
        row = store.create(InferenceDeploymentCreate.model_validate(manifest))
        spec = DeploymentSpec.model_validate(row.spec)
        folder = sim.share_folder(spec.azure.storage_account, spec.azure.file_share)
        make_tiny_share(folder)

        def serving() -> dict[str, str | None] | None:
            reconciler.reconcile(NAME)
            current = DeploymentStatus.model_validate(store.get(NAME).status)
            synced = any(c.type == "AdapterSynced" and c.status == "True" for c in current.conditions)
            return {a.name: a.serving_version for a in current.adapters} if current.phase == "Ready" and synced else None

        first = eventually(serving, timeout=180, interval=0.3, what="both adapters to serve")
        ours = f".loraplane/{NAME}/{row.uid[:8]}"
        pointer = json.loads((folder / f"{ours}/current.json").read_text())
        assert pointer == {"adapters": {name: {"version": v, "path": f"{ours}/adapters/{v}"} for name, v in first.items()}}
        apps = provider.clients(spec.azure.subscription_id).apps
        app = apps.container_apps.get("rg-inference", NAME)
        env = {e.name: e.value for e in app.template.containers[0].env}
        assert json.loads(env["LORAPLANE_ADAPTER_VERSIONS"]) == {"legal": first["legal"]} and "LORAPLANE_WATCH" not in env
        messages = [e.message for e in store.list_events(NAME, limit=100)]
        assert any("adapter legal: rolling out" in m and "every adapter of the deployment restarts with it" in m for m in messages)

        # billing's next version swaps in place: the same revision, legal's version as it was.
        write_random_adapter(folder / TINY_MODEL_PATH, tmp_path / "next", seed=9)
        with provider.share(provider_target(store)) as share:
            upload_adapter(share, tmp_path / "next")
        second = eventually(
            lambda: (s := serving()) and s["billing"] != first["billing"] and s, timeout=60, interval=0.3, what="billing's next"
        )
        assert second["legal"] == first["legal"]
        assert apps.container_apps.get("rg-inference", NAME).latest_revision_name == app.latest_revision_name
