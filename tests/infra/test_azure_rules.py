"""What loraplane does about each of Azure's rules, end to end against the simulator with every
rule on: what it sends, what it reports, and what it leaves alone."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import text

from api.cli.toolkit import import_toolkit
from azuresim.server import AzureSimulator
from infra.azure.clients import AzureConfig
from infra.azure.provider import AzureProvider
from reconciler.core import Reconciler
from reconciler.journal import DatabaseJournal
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec
from state.store import DeploymentStore
from tests.conftest import MODEL_PATH, STANDIN_COMMAND
from tests.infra.azure_world import NAME, RG, SUB, arm, calls, create, drive, ready, reset_calls, status_of, tls, writes
from tests.infra.test_azure_packaging import toolkit_project

TOOLKIT_RG = "ai-toolkit-rg"


def condition(store: DeploymentStore, kind: str):
    return next(c for c in status_of(store).conditions if c.type == kind)


def degraded_with(store: DeploymentStore, reason: str):
    return lambda: status_of(store).phase == "Degraded" and condition(store, "Degraded").reason == reason


def reconciler_for(store: DeploymentStore, provider: AzureProvider) -> Reconciler:
    return Reconciler(store, {"azure": provider}, poll_seconds=0.1)


def test_a_revision_that_cannot_start_is_degraded_within_two_resyncs_and_recovers_with_the_next(store, sim, provider):
    spec = create(store, sim, workloadProfile={"type": "Consumption"})  # 4 vCPU and 8Gi
    model = sim.share_folder(spec.azure.storage_account, spec.azure.file_share) / MODEL_PATH
    with (model / "model.safetensors").open("wb") as sparse:  # 12 GiB of model: no room in 8Gi
        sparse.truncate(12 * 2**30)
    reconciler = reconciler_for(store, provider)
    drive(reconciler, lambda: any(r.kind == "ContainerApp" and r.state != "Missing" for r in status_of(store).resources))
    passes = drive(reconciler, degraded_with(store, "RevisionFailed"))
    assert passes <= 2  # the pass after the app's PUT, or the one after its operation ended
    degraded = condition(store, "Degraded")
    assert "OOMKilled" in degraded.message and "given 8Gi" in degraded.message  # Azure's own text
    assert condition(store, "Ready").status == "False"
    # A later revision that runs (the model shrank; the spec names another adapter folder, so
    # the template changes) brings it back.
    (model / "model.safetensors").unlink()
    row = store.get(NAME)
    changed = DeploymentSpec.model_validate(row.spec | {"adapter": row.spec["adapter"] | {"path": "models/other"}})
    store.replace(NAME, labels={}, spec=changed)
    drive(reconciler, ready(store))
    assert condition(store, "Degraded").status == "False"


def test_an_unknown_refusal_becomes_permanent_when_the_same_body_is_refused_again(store, sim, provider):
    create(store, sim)
    httpx.post(f"{sim.url}/_sim/faults", json={"rate": 1.0, "kinds": ["refuse"]}, verify=tls(sim)).raise_for_status()
    reconciler = reconciler_for(store, provider)
    first = reconciler.reconcile(NAME)
    assert (first.result, condition(store, "Degraded").reason) == ("temporary", "AzureRefused")  # once: maybe passing
    second = reconciler.reconcile(NAME)
    assert second.result == "permanent"
    degraded = condition(store, "Degraded")
    assert "UnheardOfRefusal" in degraded.message and "refused twice" in degraded.message
    assert condition(store, "Progressing").status == "False"
    sent = writes(sim)
    assert reconciler.reconcile(NAME).result == "permanent"
    assert writes(sim) == sent  # nothing sent again until the spec changes


def test_a_deployment_stored_before_a_rule_tightened_is_said_and_can_still_be_deleted(store, sim, provider):
    create(store, sim)
    reconciler = reconciler_for(store, provider)
    drive(reconciler, ready(store))
    # As an older loraplane stored it, before maxReplicas 0 was refused on the azure target.
    stored = store.get(NAME).spec
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE inference_deployment SET spec = :spec WHERE name = :name"),
            {"spec": json.dumps(stored | {"scale": {"minReplicas": 0, "maxReplicas": 0}}), "name": NAME},
        )
    sent = writes(sim)
    reconciler = reconciler_for(store, provider)  # the newer loraplane starts, and reads it
    assert reconciler.reconcile(NAME).result == "permanent"
    degraded = condition(store, "Degraded")
    assert (
        degraded.reason == "InvalidSpec"
        and "spec.scale.maxReplicas" in degraded.message
        and "apply a corrected manifest" in degraded.message
    )
    assert writes(sim) == sent  # nothing sent on a spec Azure would refuse
    assert store.get(NAME).to_public().spec.scale.max_replicas == 0  # the API still shows it, as stored

    # It can no longer change, but it can go: the teardown reads it as stored.
    store.request_deletion(NAME)
    drive(reconciler, lambda: NAME not in store.names())
    assert writes(sim)["DELETE"]


def test_accounts_loraplane_creates_keep_shared_keys_and_an_adopted_one_without_them_is_said(store, sim, provider):
    groups, storage, _ = arm(sim)
    create(store, sim)
    drive(reconciler_for(store, provider), ready(store))
    account = storage.storage_accounts.get_properties(RG, store.get(NAME).spec["azure"]["storageAccount"])
    assert account.allow_shared_key_access is True
    # Another deployment names the team's account, which turned shared keys off.
    groups.resource_groups.create_or_update("team-rg", {"location": "westus3"})
    storage.storage_accounts.begin_create(
        "team-rg",
        "lockedstore",
        {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "properties": {"allowSharedKeyAccess": False}},
    ).result()
    manifest = {
        "metadata": {"name": "locked"},
        "spec": {
            "target": "azure",
            "model": {"path": "models/base"},
            "azure": {"subscriptionId": SUB, "resourceGroup": "team-rg", "location": "westus3", "storageAccount": "lockedstore"},
        },
    }
    store.create(InferenceDeploymentCreate.model_validate(manifest))
    reset_calls(sim)
    outcome = Reconciler(store, {"azure": provider}).reconcile("locked")
    assert outcome.result == "permanent"
    status = store.get("locked").status
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "SharedKeyAccessDisabled"
    assert "lockedstore" in degraded["message"] and "--allow-shared-key-access true" in degraded["message"]
    assert not any("storageAccounts" in kind for method in ("PUT", "PATCH") for kind in writes(sim).get(method, {}))


def test_a_dedicated_gpu_type_the_environment_lacks_is_a_permanent_condition_not_a_refused_patch(store, sim, provider):
    _, _, apps = arm(sim)
    arm(sim)[0].resource_groups.create_or_update(RG, {"location": "westus3"})
    apps.managed_environments.begin_create_or_update(
        RG,
        "team-env",
        {"location": "westus3", "properties": {"workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"}]}},
    ).result()
    create(store, sim, environment="team-env", workloadProfile={"type": "NC24-A100"})
    drive(reconciler_for(store, provider), degraded_with(store, "WorkloadProfileUnavailable"))
    message = condition(store, "Degraded").message
    assert "team-env has no NC24-A100 profile" in message and "only when it creates an environment" in message
    assert "ManagedEnvironment" not in json.dumps(writes(sim).get("PATCH", {}))  # nothing Azure would refuse was sent
    assert [p.name for p in apps.managed_environments.get(RG, "team-env").workload_profiles] == ["Consumption"]


def toolkit_environment(sim: AzureSimulator) -> None:
    """What the AI Toolkit's inference template makes (configs/Phi-3-mini-4k-instruct/infra/
    provision/inference.bicep): a dedicated NC24-A100 profile named "GPU", and its app on it
    with 24 vCPU and 220Gi, the share mounted at /mount, its probes on /."""
    groups, storage, apps = arm(sim)
    groups.resource_groups.create_or_update(TOOLKIT_RG, {"location": "westus3"})
    storage.storage_accounts.begin_create(
        TOOLKIT_RG, "wasistorageab12c", {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    ).result()
    storage.file_shares.create(TOOLKIT_RG, "wasistorageab12c", "wasifileshareab12c", {"properties": {"shareQuota": 1024}})
    gpu = {"name": "GPU", "workloadProfileType": "NC24-A100", "minimumCount": 0, "maximumCount": 2}
    environment = apps.managed_environments.begin_create_or_update(
        TOOLKIT_RG,
        "wasienvab12c",
        {"location": "westus3", "properties": {"workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"}, gpu]}},
    ).result()
    key = storage.storage_accounts.list_keys(TOOLKIT_RG, "wasistorageab12c")["keys"][0]["value"]
    apps.managed_environments_storages.create_or_update(
        TOOLKIT_RG,
        "wasienvab12c",
        "wasienvstorageab12c",
        {
            "properties": {
                "azureFile": {
                    "accountName": "wasistorageab12c",
                    "accountKey": key,
                    "shareName": "wasifileshareab12c",
                    "accessMode": "ReadWrite",
                }
            }
        },
    )
    probe = {
        "httpGet": {"path": "/", "port": 7860, "scheme": "HTTP"},
        "initialDelaySeconds": 60,
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    apps.container_apps.begin_create_or_update(
        TOOLKIT_RG,
        "wasiinference",
        {
            "location": "westus3",
            "properties": {
                "environmentId": environment.id,
                "workloadProfileName": "GPU",
                "configuration": {"activeRevisionsMode": "Single", "ingress": {"external": True, "targetPort": 7860, "transport": "Auto"}},
                "template": {
                    "containers": [
                        {
                            "name": "wasiinference",
                            "image": "docker.io/pytorch/pytorch:2.3.0-cuda11.8-cudnn8-runtime",
                            "command": ["/bin/bash", "-c", "cd /mount && python ./scripts/inference.py"],
                            "resources": {"cpu": 24, "memory": "220Gi"},
                            "probes": [
                                {"type": "Liveness", **probe},
                                {"type": "Readiness", **probe},
                                {"type": "Startup", **probe, "periodSeconds": 120, "failureThreshold": 10},
                            ],
                            "volumeMounts": [{"volumeName": "wasifileshareab12cvolume", "mountPath": "/mount"}],
                        }
                    ],
                    "scale": {"minReplicas": 1, "maxReplicas": 1},
                    "volumes": [{"name": "wasifileshareab12cvolume", "storageType": "AzureFile", "storageName": "wasienvstorageab12c"}],
                },
            },
        },
    ).result()


def test_the_ai_toolkit_import_reuses_its_dedicated_gpu_profile_as_it_made_it(store, sim, provider, tmp_path: Path):
    toolkit_environment(sim)
    config = {
        "SUBSCRIPTION_ID": SUB,
        "RESOURCE_GROUP_NAME": TOOLKIT_RG,
        "STORAGE_ACCOUNT_NAME": "wasistorageab12c",
        "FILE_SHARE_NAME": "wasifileshareab12c",
        "ACA_APP_NAME": "wasiinference",
        "ACA_APP_ENDPOINT": "",
    }
    manifest = import_toolkit(toolkit_project(tmp_path / "project", config=config))
    manifest["spec"]["adapter"] = {"settleSeconds": 1}
    (sim.share_folder("wasistorageab12c", "wasifileshareab12c") / MODEL_PATH).mkdir(parents=True)
    store.create(InferenceDeploymentCreate.model_validate(manifest))
    reset_calls(sim)
    reconciler = reconciler_for(store, provider)
    drive(reconciler, lambda: store.get("wasiinference").status.get("phase") == "Ready", name="wasiinference")
    _, _, apps = arm(sim)
    app = apps.container_apps.get(TOOLKIT_RG, "wasiinference")
    assert app.workload_profile_name == "GPU"  # the Toolkit's profile, under its own name
    assert app.template.containers[0].resources.cpu == 24 and app.template.containers[0].resources.memory == "220Gi"
    environment = apps.managed_environments.get(TOOLKIT_RG, "wasienvab12c")
    assert [(p.name, p.workload_profile_type) for p in environment.workload_profiles] == [
        ("Consumption", "Consumption"),
        ("GPU", "NC24-A100"),
    ]
    assert "Microsoft.App/managedEnvironments" not in writes(sim).get("PATCH", {}) | writes(sim).get("PUT", {})
    managed = {r["kind"]: r["managedBy"] for r in store.get("wasiinference").status["resources"]}
    assert managed["ManagedEnvironment"] == managed["ContainerApp"] == "adopted"


def test_superseded_wheels_go_once_the_new_revision_runs_unless_an_app_still_installs_them(store, sim, provider):
    spec = create(store, sim)
    dist = sim.share_folder(spec.azure.storage_account, spec.azure.file_share) / ".loraplane" / "dist"
    dist.mkdir(parents=True)
    old, kept = "loraplane_serving-0.0.9+g000000000000-py3-none-any.whl", "loraplane_serving-0.0.8+g111111111111-py3-none-any.whl"
    (dist / old).write_bytes(b"old")
    (dist / kept).write_bytes(b"kept")
    # Another app of the group still installs the oldest one.
    groups, _, apps = arm(sim)
    groups.resource_groups.create_or_update(RG, {"location": "westus3", "tags": {"managed-by": "loraplane", "loraplane-deployment": NAME}})
    legacy_env = apps.managed_environments.begin_create_or_update(
        RG,
        "legacy-env",
        {"location": "westus3", "properties": {"workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"}]}},
    ).result()
    legacy = {
        "name": "serving",
        "image": "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
        "command": ["/bin/sh", "-c"],
        "args": [f"pip install --no-cache-dir '/mount/.loraplane/dist/{kept}' && exec python -m serving"],
        "resources": {"cpu": 1, "memory": "2Gi"},
    }
    body = {
        "location": "westus3",
        "properties": {"managedEnvironmentId": legacy_env.id, "workloadProfileName": "Consumption", "template": {"containers": [legacy]}},
    }
    apps.container_apps.begin_create_or_update(RG, "legacy", body).result()
    reconciler = reconciler_for(store, provider)
    drive(reconciler, lambda: ready(store)() and not (dist / old).exists())
    assert sorted(p.name for p in dist.iterdir()) == sorted([kept, provider.wheel().filename])
    events = [f"{e.reason} {e.message}" for e in store.list_events(NAME)]
    assert any(e.startswith("Deleted ServingWheel") and old in e for e in events)
    reset_calls(sim)
    assert reconciler.reconcile(NAME).result == "converged"
    assert writes(sim) == {}  # tidy: nothing more to remove
    assert (dist / kept).exists()
    # The last app that installs it goes: so does the wheel.
    apps.container_apps.begin_delete(RG, "legacy").result()
    drive(reconciler, lambda: not (dist / kept).exists())
    assert sorted(p.name for p in dist.iterdir()) == [provider.wheel().filename]


def test_a_private_image_is_pulled_with_the_apps_identity_once_acr_pull_is_granted(store, tmp_path: Path):
    sim = AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.1, run_containers=True, container_command=STANDIN_COMMAND).start()
    config = AzureConfig(arm_url=sim.url, ca_bundle=sim.ca_bundle, credential="static", polling_seconds=0.05, revision_restart_seconds=0.5)
    provider = AzureProvider(config, DatabaseJournal(store))
    try:
        spec = create(store, sim, image="myteam.azurecr.io/loraplane-serving:1.0", registry={"server": "myteam.azurecr.io"})
        reconciler = reconciler_for(store, provider)
        drive(reconciler, degraded_with(store, "RevisionFailed"))
        message = condition(store, "Degraded").message
        assert "unauthorized" in message and "grant the app's system-assigned identity the AcrPull role" in message
        # No wheel: a prebuilt image installs nothing.
        assert not (sim.share_folder(spec.azure.storage_account, spec.azure.file_share) / ".loraplane" / "dist").exists()
        # The grant is the team's (a role assignment), outside loraplane: the simulator's stand-in.
        app_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.App/containerApps/{NAME}"
        httpx.post(
            f"{sim.url}/_sim/acr-pull", json={"server": "myteam.azurecr.io", "principal": f"system:{app_id}"}, verify=tls(sim)
        ).raise_for_status()
        drive(reconciler, ready(store), timeout=60)
        assert any(e.reason == "Restarted" and "ContainerAppRevision" in e.message for e in store.list_events(NAME))
        assert calls(sim)["POST"].get("Microsoft.App/containerApps/revisions", 0) >= 1
    finally:
        provider.close()
        sim.stop()
