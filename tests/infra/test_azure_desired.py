"""The desired Azure resources of a deployment, and drift as Azure's echo of them shows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.loganalytics import LogAnalyticsManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from pydantic import ValidationError

from azuresim.server import AzureSimulator
from infra.azure.credentials import StaticTokenCredential
from infra.azure.desired import DEFAULT_IMAGE, drifted_fields, loraplane_tags, value_at
from infra.azure.kinds import desired_resources
from infra.provider import Target
from state.resource import DeploymentSpec
from tests.conftest import azure_manifest

SUB = "00000000-0000-0000-0000-000000000000"


def target(**changes) -> Target:
    manifest = azure_manifest(name="support-bot")
    spec = manifest["spec"]
    for key, value in changes.items():
        spec[key] = value
    return Target("support-bot", "uid-1", 1, DeploymentSpec.model_validate(spec).with_defaults("support-bot"))


def by_kind(t: Target, **kwargs) -> dict:
    return {r.kind: r for r in desired_resources(t, wheel="loraplane_serving-0.1.0-py3-none-any.whl", **kwargs)}


def test_resources_come_parents_first_tagged_as_ours():
    resources = desired_resources(target(), wheel="w.whl")
    assert [r.kind for r in resources] == [
        "ResourceGroup",
        "StorageAccount",
        "FileShare",
        "Workspace",
        "ManagedEnvironment",
        "EnvironmentStorage",
        "ContainerApp",
    ]
    for resource in resources:
        if "location" in resource.body:
            assert resource.body["tags"] == loraplane_tags("support-bot")
    assert resources[-1].id == f"/subscriptions/{SUB}/resourceGroups/rg-inference/providers/Microsoft.App/containerApps/support-bot"


def test_the_container_app_is_the_ai_toolkits_inference_app_made_declarative():
    app = by_kind(target(scale={"minReplicas": 0, "maxReplicas": 2}))["ContainerApp"].body["properties"]
    assert app["workloadProfileName"] == "gpu-nc24-a100"  # named after its type: the profile it adds
    # All traffic on the latest revision, one revision at a time, as the Toolkit's template has it.
    assert app["configuration"]["ingress"] == {
        "external": True,
        "targetPort": 7860,
        "transport": "auto",
        "traffic": [{"latestRevision": True, "weight": 100}],
    }
    assert app["configuration"]["activeRevisionsMode"] == "Single"
    assert app["configuration"]["secrets"] == [{"name": "loraplane-admin-token"}]  # no value in the plan
    template = app["template"]
    # minReplicas 0: Container Apps' HTTP scale rule, and the idle window as its cooldown.
    assert template["scale"] == {
        "minReplicas": 0,
        "maxReplicas": 2,
        "cooldownPeriod": 300,
        "rules": [{"name": "http-requests", "http": {"metadata": {"concurrentRequests": "10"}}}],
    }
    one = by_kind(target(scale={"minReplicas": 1, "maxReplicas": 1}))["ContainerApp"].body["properties"]["template"]["scale"]
    assert one == {"minReplicas": 1, "maxReplicas": 1}  # the Toolkit's: one replica, no rule
    assert template["volumes"] == [{"name": "share", "storageType": "AzureFile", "storageName": "support-bot-storage"}]
    [container] = template["containers"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["volumeMounts"] == [{"volumeName": "share", "mountPath": "/mount"}]
    # The whole of one serverless A100 machine, as the AI Toolkit's template asks of its A100.
    assert container["resources"] == {"cpu": 24.0, "memory": "220Gi"}
    assert "pip install --no-cache-dir '/mount/.loraplane/dist/loraplane_serving-0.1.0-py3-none-any.whl'" in container["args"][0]
    env = {e["name"]: e.get("value", e.get("secretRef")) for e in container["env"]}
    assert env["LORAPLANE_SHARE_ROOT"] == "/mount"
    # The deployment's folder is keyed by its uid too: a successor of the same name never
    # follows the pointer its predecessor left.
    assert env["LORAPLANE_ADAPTER_POINTER"] == ".loraplane/support-bot/uid-1/current.json"
    assert env["LORAPLANE_PORT"] == "7860"
    assert env["LORAPLANE_ADMIN_TOKEN"] == "loraplane-admin-token"  # a secret reference
    probes = {p["type"]: p for p in container["probes"]}
    assert probes["Readiness"]["httpGet"]["path"] == "/readyz"
    # Within the REST specification's bounds, the startup probe still gives the HTTP server
    # ten minutes (the model loads after it answers, under the readiness probe).
    for probe in probes.values():
        assert 1 <= probe["failureThreshold"] <= 10 and 1 <= probe["periodSeconds"] <= 240 and 1 <= probe["initialDelaySeconds"] <= 60
    assert probes["Startup"]["failureThreshold"] * probes["Startup"]["periodSeconds"] >= 600


def test_the_size_is_the_profiles_unless_the_spec_says():
    def size(**azure):
        spec = azure_manifest()["spec"]["azure"] | azure
        [container] = by_kind(target(azure=spec))["ContainerApp"].body["properties"]["template"]["containers"]
        return container["resources"]

    assert size(workloadProfile={"type": "Consumption-GPU-NC8as-T4"}) == {"cpu": 8.0, "memory": "56Gi"}
    assert size(workloadProfile={"type": "NC24-A100"}) == {"cpu": 24.0, "memory": "220Gi"}
    assert size(workloadProfile={"type": "Consumption"}) == {"cpu": 4.0, "memory": "8Gi"}
    assert size(workloadProfile={"type": "NC24-A100"}, resources={"cpu": 8, "memory": "64Gi"}) == {"cpu": 8.0, "memory": "64Gi"}


def test_a_prebuilt_image_runs_as_it_is():
    azure = azure_manifest()["spec"]["azure"] | {"image": "myregistry.azurecr.io/loraplane-serving:1.0"}
    [container] = by_kind(target(azure=azure))["ContainerApp"].body["properties"]["template"]["containers"]
    assert container["image"] == "myregistry.azurecr.io/loraplane-serving:1.0"
    assert "command" not in container and "args" not in container
    with pytest.raises(ValueError, match="wheel"):
        desired_resources(target(), wheel=None)


def test_a_private_registry_is_pulled_with_the_identity_the_spec_names():
    identity = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-inference/providers/Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    azure = azure_manifest()["spec"]["azure"] | {
        "image": "myteam.azurecr.io/loraplane-serving:1.0",
        "registry": {"server": "myteam.azurecr.io", "identity": identity},
    }
    app = by_kind(target(azure=azure))["ContainerApp"].body
    assert app["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}}
    assert app["properties"]["configuration"]["registries"] == [{"server": "myteam.azurecr.io", "identity": identity}]
    system = azure | {"registry": {"server": "myteam.azurecr.io"}}
    app = by_kind(target(azure=system))["ContainerApp"].body
    assert app["identity"] == {"type": "SystemAssigned"}
    assert app["properties"]["configuration"]["registries"] == [{"server": "myteam.azurecr.io", "identity": "system"}]


def test_the_gpu_workload_profile_is_in_the_environment():
    environment = by_kind(target())["ManagedEnvironment"].body["properties"]
    # A serverless GPU profile takes no minimum or maximum count (Azure refuses them).
    assert environment["workloadProfiles"] == [
        {"name": "Consumption", "workloadProfileType": "Consumption"},
        {"name": "gpu-nc24-a100", "workloadProfileType": "Consumption-GPU-NC24-A100"},
    ]
    dedicated = azure_manifest()["spec"]["azure"] | {"workloadProfile": {"name": "a100", "type": "NC24-A100"}}
    profiles = by_kind(target(azure=dedicated, scale={"minReplicas": 1, "maxReplicas": 3}))["ManagedEnvironment"].body["properties"][
        "workloadProfiles"
    ]
    assert profiles[1] == {"name": "a100", "workloadProfileType": "NC24-A100", "minimumCount": 0, "maximumCount": 3}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.05) as running:
        yield running


def put_all(sim: AzureSimulator, resources: dict) -> dict[str, dict]:
    """Create everything as the provider will (PUT each desired body), then read each back."""
    options = {"base_url": sim.url, "connection_verify": str(sim.ca_bundle), "polling_interval": 0.05}
    credential = StaticTokenCredential()
    groups = ResourceManagementClient(credential, SUB, **options)
    stores = StorageManagementClient(credential, SUB, **options)
    workspaces = LogAnalyticsManagementClient(credential, SUB, **options)
    apps = ContainerAppsAPIClient(credential, SUB, **options)
    rg, account, share = "rg-inference", resources["StorageAccount"].name, resources["FileShare"].name
    groups.resource_groups.create_or_update(rg, resources["ResourceGroup"].body)
    stores.storage_accounts.begin_create(rg, account, resources["StorageAccount"].body).result()
    stores.file_shares.create(rg, account, share, resources["FileShare"].body)
    workspaces.workspaces.begin_create_or_update(rg, resources["Workspace"].name, resources["Workspace"].body).result()
    environment = resources["ManagedEnvironment"].name
    apps.managed_environments.begin_create_or_update(rg, environment, resources["ManagedEnvironment"].body).result()
    storage_body = resources["EnvironmentStorage"].body
    storage_body["properties"]["azureFile"]["accountKey"] = "fetched-at-apply-time"
    apps.managed_environments_storages.create_or_update(rg, environment, resources["EnvironmentStorage"].name, storage_body)
    app_body = resources["ContainerApp"].body
    app_body["properties"]["configuration"]["secrets"][0]["value"] = "generated-at-apply-time"
    apps.container_apps.begin_create_or_update(rg, resources["ContainerApp"].name, app_body).result()
    observed = {
        "ResourceGroup": groups.resource_groups.get(rg).as_dict(),
        "StorageAccount": stores.storage_accounts.get_properties(rg, account).as_dict(),
        "FileShare": stores.file_shares.get(rg, account, share).as_dict(),
        "Workspace": workspaces.workspaces.get(rg, resources["Workspace"].name).as_dict(),
        "ManagedEnvironment": apps.managed_environments.get(rg, environment).as_dict(),
        "EnvironmentStorage": apps.managed_environments_storages.get(rg, environment, resources["EnvironmentStorage"].name).as_dict(),
        "ContainerApp": apps.container_apps.get(rg, resources["ContainerApp"].name).as_dict(),
    }
    for client in (groups, stores, workspaces, apps):
        client.close()
    return observed


def test_what_azure_echoes_back_is_not_drift_and_a_real_change_is(sim):
    desired = by_kind(target())
    observed = put_all(sim, by_kind(target()))
    assert {kind: drifted_fields(desired[kind], observed[kind]) for kind in desired} == {kind: [] for kind in desired}
    # Azure filled things in that we did not send: still not drift.
    assert value_at(observed["ContainerApp"], ("properties", "latestRevisionName"))
    assert value_at(observed["ContainerApp"], ("properties", "configuration", "ingress", "fqdn"))
    # maxReplicas changes: exactly one resource drifts, in exactly one place.
    changed = by_kind(target(scale={"minReplicas": 1, "maxReplicas": 4}))
    drift = {kind: drifted_fields(changed[kind], observed[kind]) for kind in changed}
    assert {kind: fields for kind, fields in drift.items() if fields} == {"ContainerApp": ["properties.template"]}


def test_ingress_and_the_ip_allow_list_become_the_apps_ingress_and_its_allow_rules():
    azure = azure_manifest()["spec"]["azure"]
    internal = by_kind(target(azure={**azure, "ingress": "internal", "ipAllowList": ["10.0.0.0/8", "203.0.113.7/32"]}))["ContainerApp"]
    ingress = internal.body["properties"]["configuration"]["ingress"]
    assert ingress["external"] is False
    assert ingress["ipSecurityRestrictions"] == [
        {"name": "allow-1", "ipAddressRange": "10.0.0.0/8", "action": "Allow", "description": "spec.azure.ipAllowList"},
        {"name": "allow-2", "ipAddressRange": "203.0.113.7/32", "action": "Allow", "description": "spec.azure.ipAllowList"},
    ]
    assert ("properties", "configuration", "ingress", "ipSecurityRestrictions") in internal.drift_paths
    # Absent, the app's restrictions are not loraplane's to change: neither sent nor compared.
    toolkit = by_kind(target())["ContainerApp"]
    assert "ipSecurityRestrictions" not in toolkit.body["properties"]["configuration"]["ingress"]
    assert ("properties", "configuration", "ingress", "ipSecurityRestrictions") not in toolkit.drift_paths
    # An empty list is managed too: no restrictions.
    assert (
        by_kind(target(azure={**azure, "ipAllowList": []}))["ContainerApp"].body["properties"]["configuration"]["ingress"][
            "ipSecurityRestrictions"
        ]
        == []
    )


def test_an_allow_list_entry_must_be_an_ipv4_range_in_cidr_notation():
    azure = azure_manifest()["spec"]["azure"]
    for wrong in ("203.0.113.7", "2001:db8::/32", "10.0.0.0/33", "office"):
        with pytest.raises(ValidationError) as refused:
            target(azure={**azure, "ipAllowList": [wrong]})
        assert "IPv4 address range in CIDR notation" in str(refused.value) and "ip-restrictions" in str(refused.value)
    with pytest.raises(ValidationError):
        target(azure={**azure, "ingress": "private"})


def test_one_container_app_serves_every_adapter_and_names_the_restart_versions():
    adapters = [
        {"name": "billing", "path": "models/billing/adapter"},
        {"name": "legal", "path": "models/legal/adapter", "strategy": "restart"},
    ]
    plain = target(adapters=adapters)
    restarted = Target(plain.name, plain.uid, plain.generation, plain.spec, adapter_versions={"legal": "3f2a9c01d4e5"})
    resources = desired_resources(restarted, wheel="loraplane_serving-0.1.0-py3-none-any.whl")
    assert [r.kind for r in resources].count("ContainerApp") == 1  # one app, one copy of the base model
    [container] = by_kind(restarted)["ContainerApp"].body["properties"]["template"]["containers"]
    env = {e["name"]: e.get("value", e.get("secretRef")) for e in container["env"]}
    # The restart adapter's version is in the revision; billing follows the pointer (watched).
    assert env["LORAPLANE_ADAPTER_VERSIONS"] == '{"legal": "3f2a9c01d4e5"}'
    assert "LORAPLANE_WATCH" not in env and "LORAPLANE_ADAPTER_VERSION" not in env
    every_restart = target(adapters=[{**a, "strategy": "restart"} for a in adapters])
    [container] = by_kind(every_restart)["ContainerApp"].body["properties"]["template"]["containers"]
    assert {e["name"]: e.get("value") for e in container["env"]}["LORAPLANE_WATCH"] == "false"
