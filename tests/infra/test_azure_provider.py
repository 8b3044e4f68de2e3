"""The azure target end to end: the reconciler, the Azure provider and the official SDK
clients against the simulator over HTTPS, with the container app's revision running as a
local process. What a user sees: status, resources, the endpoint, and the calls Azure got."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from reconciler.core import Outcome, Reconciler, target_of
from reconciler.journal import DatabaseJournal
from state.resource import DeploymentSpec
from tests.infra.azure_world import (
    MODEL_PATH,
    NAME,
    RG,
    arm,
    calls,
    create,
    drive,
    make_provider,
    ready,
    reset_calls,
    start_sim,
    status_of,
    tls,
    writes,
)

EXPECTED_TYPES = {
    "resourceGroups",
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/fileServices/shares",
    "Microsoft.OperationalInsights/workspaces",
    "Microsoft.App/managedEnvironments",
    "Microsoft.App/managedEnvironments/storages",
    "Microsoft.App/containerApps",
}


def test_from_nothing_to_ready_creating_exactly_the_expected_resources(store, sim, provider):
    spec = create(store, sim)
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))

    status = status_of(store)
    assert status.endpoint and status.endpoint.startswith("https://127.0.0.1:")
    assert httpx.get(f"{status.endpoint}/readyz", verify=tls(sim)).status_code == 200
    # One PUT per resource, and nothing else written but the keys fetched at apply time.
    assert writes(sim)["PUT"] == {t: 1 for t in EXPECTED_TYPES}
    assert set(writes(sim)["POST"]) <= {"Microsoft.Storage/storageAccounts", "Microsoft.OperationalInsights/workspaces"}
    assert "DELETE" not in writes(sim)
    assert [(r.kind, r.managed_by) for r in status.resources] == [
        (kind, "loraplane")
        for kind in [
            "ResourceGroup",
            "StorageAccount",
            "FileShare",
            "Workspace",
            "ManagedEnvironment",
            "EnvironmentStorage",
            "ContainerApp",
        ]
    ]
    assert all(r.state == "Succeeded" for r in status.resources)
    # The default image installs the serving app from a wheel the reconciler put on the share.
    dist = sim.share_folder(spec.azure.storage_account, spec.azure.file_share) / ".loraplane" / "dist"
    [wheel] = dist.iterdir()
    assert wheel.name == provider.wheel().filename and wheel.read_bytes() == provider.wheel().content
    _, _, apps = arm(sim)
    tags = apps.container_apps.get(RG, NAME).tags
    assert tags == {"managed-by": "loraplane", "loraplane-deployment": NAME}


def test_a_second_resync_makes_zero_writes_and_max_replicas_makes_one(store, sim, provider):
    create(store, sim)
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))
    version = store.get(NAME).resource_version
    reset_calls(sim)
    assert reconciler.reconcile(NAME).result == "converged"
    assert reconciler.reconcile(NAME).result == "converged"
    assert writes(sim) == {}
    assert store.get(NAME).resource_version == version  # nor a database write

    spec = store.get(NAME).spec
    spec["scale"] = {"minReplicas": 1, "maxReplicas": 3}
    store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(spec))
    reset_calls(sim)
    generation = store.get(NAME).generation
    drive(reconciler, lambda: status_of(store).phase == "Ready" and status_of(store).observed_generation == generation)
    assert writes(sim) == {"PATCH": {"Microsoft.App/containerApps": 1}}
    _, _, apps = arm(sim)
    assert apps.container_apps.get(RG, NAME).template.scale.max_replicas == 3


def test_no_secret_is_written_to_the_database(store, sim, provider, tmp_path):
    create(store, sim)
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))
    _, storage, apps = arm(sim)
    account_key = storage.storage_accounts.list_keys(RG, store.get(NAME).spec["azure"]["storageAccount"])["keys"][0]["value"]
    admin_token = next(s.value for s in apps.container_apps.list_secrets(RG, NAME).value if s.name == "loraplane-admin-token")
    assert provider.admin_token(target_of(store.get(NAME))) == admin_token
    with store.engine.connect() as connection:
        dump = "\n".join(
            str(row)
            for table in ("inference_deployment", "event", "cloud_resource")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )
    assert account_key not in dump and admin_token not in dump
    assert len(admin_token) >= 32


def test_a_restart_mid_operation_resumes_without_a_second_put(store, tmp_path):
    """Two restarts: while the environment's operation is polled (its token is in the journal),
    and while the container app is being made (watched through its provisioningState)."""
    sim = start_sim(tmp_path, lro_delay=1.5)
    providers = []
    try:
        create(store, sim)
        uid = store.get(NAME).uid

        def record(kind: str):
            return next((r for r in DatabaseJournal(store).records(uid).values() if r.kind == kind), None)

        def environment_in_flight() -> bool:
            found = record("ManagedEnvironment")
            return found is not None and found.operation is not None

        # Run until the operation is in flight, then "restart": a new provider, with nothing in
        # memory, on the same database.
        for in_flight in (environment_in_flight, lambda: record("ContainerApp") is not None):
            providers.append(make_provider(store, sim))
            drive(Reconciler(store, {"azure": providers[-1]}, poll_seconds=0.1), in_flight, timeout=90)
        providers.append(make_provider(store, sim))
        drive(Reconciler(store, {"azure": providers[-1]}, poll_seconds=0.1), ready(store), timeout=90)
        assert writes(sim)["PUT"] == {t: 1 for t in EXPECTED_TYPES}
    finally:
        for provider in providers:
            provider.close()
        sim.stop()


def test_existing_storage_account_and_environment_are_adopted_and_survive_delete(store, sim, provider):
    groups, storage, apps = arm(sim)
    groups.resource_groups.create_or_update(RG, {"location": "westus3", "tags": {"team": "ml"}})
    storage.storage_accounts.begin_create(
        RG, "teamstorage", {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "tags": {"team": "ml"}}
    ).result()
    apps.managed_environments.begin_create_or_update(
        RG,
        "finetune-env",
        {"location": "westus3", "properties": {"workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"}]}},
    ).result()
    create(store, sim, storageAccount="teamstorage", environment="finetune-env")
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))

    managed = {r.kind: r.managed_by for r in status_of(store).resources}
    assert managed == {
        "ResourceGroup": "adopted",
        "StorageAccount": "adopted",
        "FileShare": "loraplane",
        "Workspace": "loraplane",
        "ManagedEnvironment": "adopted",
        "EnvironmentStorage": "loraplane",
        "ContainerApp": "loraplane",
    }
    environment = apps.managed_environments.get(RG, "finetune-env")
    # The GPU profile the spec asks for was added; what the team had is kept, tags too.
    assert [p.name for p in environment.workload_profiles] == ["Consumption", "gpu-nc24-a100"]
    assert environment.tags in (None, {})

    uid = store.get(NAME).uid
    store.request_deletion(NAME)
    drive(reconciler, lambda: NAME not in store.names(), timeout=60)
    assert groups.resource_groups.get(RG).tags == {"team": "ml"}
    assert storage.storage_accounts.get_properties(RG, "teamstorage").name == "teamstorage"
    assert apps.managed_environments.get(RG, "finetune-env").name == "finetune-env"
    left = {r.name for r in groups.resources.list_by_resource_group(RG)}
    assert left == {"teamstorage", "finetune-env"}  # what loraplane made is gone
    assert DatabaseJournal(store).records(uid) == {}


def test_an_adopted_share_keeps_everything_but_the_deployments_own_folder(store, sim, provider):
    """The AI Toolkit's share holds the team's models: it stays, and so does every other
    deployment's folder; this one's pointer and staged versions go, so that nothing is left
    for a successor of the same name to find."""
    groups, storage, _ = arm(sim)
    groups.resource_groups.create_or_update(RG, {"location": "westus3"})
    storage.storage_accounts.begin_create(
        RG, "teamstorage", {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    ).result()
    storage.file_shares.create(RG, "teamstorage", "finetune", {})
    create(store, sim, storageAccount="teamstorage", fileShare="finetune")
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))
    assert {r.kind: r.managed_by for r in status_of(store).resources}["FileShare"] == "adopted"
    folder = sim.share_folder("teamstorage", "finetune")
    ours = folder / ".loraplane" / NAME / store.get(NAME).uid[:8]
    (ours / "adapters" / "v1").mkdir(parents=True)
    (ours / "adapters" / "v1" / "adapter_config.json").write_text("{}")
    (ours / "current.json").write_text("{}")
    neighbour = folder / ".loraplane" / "other-bot" / "0123abcd"
    neighbour.mkdir(parents=True)

    store.request_deletion(NAME)
    drive(reconciler, lambda: NAME not in store.names(), timeout=60)
    assert not ours.exists()
    assert neighbour.is_dir() and (folder / MODEL_PATH).is_dir()
    assert storage.file_shares.get(RG, "teamstorage", "finetune").name == "finetune"


def test_delete_removes_a_group_loraplane_made_and_detach_leaves_everything(store, sim, provider):
    create(store, sim)
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))
    endpoint = status_of(store).endpoint
    store.request_deletion(NAME)
    drive(reconciler, lambda: NAME not in store.names(), timeout=60)
    groups, _, _ = arm(sim)
    assert not groups.resource_groups.check_existence(RG)
    with pytest.raises(httpx.HTTPError):  # the replica went with its app
        httpx.get(f"{endpoint}/readyz", verify=tls(sim), timeout=2)


def test_detach_on_delete_leaves_azure_as_it_is(store, sim, provider):
    create(store, sim, policy="detachOnDelete")
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))
    reset_calls(sim)
    store.request_deletion(NAME)
    drive(reconciler, lambda: NAME not in store.names())
    assert writes(sim) == {}
    _, _, apps = arm(sim)
    assert apps.container_apps.get(RG, NAME).name == NAME


def test_policy_observe_reports_and_never_writes(store, sim, provider):
    create(store, sim, policy="observe")
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    for _ in range(3):
        reconciler.reconcile(NAME)
    assert writes(sim) == {}
    status = status_of(store)
    assert status.phase != "Ready"
    assert "policy observe, not fixed" in (status.message or "") and "ResourceGroup rg-inference does not exist" in status.message
    assert {r.state for r in status.resources} == {"Missing"}


def test_a_20_percent_fault_rate_still_converges_with_a_bounded_number_of_calls(store, sim, provider):
    create(store, sim)
    httpx.post(
        f"{sim.url}/_sim/faults",
        verify=tls(sim),
        json={
            "rate": 0.2,
            "kinds": ["throttle", "server_error", "slow", "failed_operation"],
            "retryAfterSeconds": 0,
            "slowSeconds": 0.2,
            "seed": 7,
        },
    ).raise_for_status()
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    passes: list[Outcome] = []
    drive(reconciler, ready(store), timeout=120, passes=passes)
    total = sum(n for kinds in calls(sim).values() for n in kinds.values())
    # Without faults this takes about 60 calls; retries may add some, never a storm.
    assert total < 400, calls(sim)
    assert len(passes) < 150
    assert writes(sim)["PUT"]["Microsoft.App/containerApps"] <= 4


def test_quota_errors_are_reported_with_azures_message_and_a_slow_retry(store, sim, provider):
    create(store, sim)
    httpx.post(f"{sim.url}/_sim/faults", verify=tls(sim), json={"rate": 1.0, "kinds": ["quota"]}).raise_for_status()
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    outcomes = [reconciler.reconcile(NAME) for _ in range(3)]
    assert outcomes[-1] == Outcome("temporary", 300.0)
    status = status_of(store)
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.reason == "QuotaExceeded"
    assert "cannot have more than 1 SubscriptionNCA100Gpus" in degraded.message


def test_an_unknown_region_is_permanent(store, sim, provider):
    # (A GPU type in a region without GPUs is refused by the API already: the CPU profile here.)
    create(store, sim, location="marsnorth", workloadProfile={"type": "Consumption"})
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    outcome = reconciler.reconcile(NAME)
    assert outcome.result == "permanent"
    degraded = next(c for c in status_of(store).conditions if c.type == "Degraded")
    assert degraded.reason == "UnknownRegion" and "marsnorth" in degraded.message
