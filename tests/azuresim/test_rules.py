"""Each of Azure's rules in the simulator's table refuses the body Azure would refuse, with
Azure's code and message shape, and accepts the one it would accept."""

from __future__ import annotations

import copy
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azuresim.rules import RULES
from azuresim.server import AzureSimulator

SUB = "00000000-0000-0000-0000-000000000000"
GROUP = f"/subscriptions/{SUB}/resourceGroups/rg"
ENV = f"{GROUP}/providers/Microsoft.App/managedEnvironments/env"
APP = f"{GROUP}/providers/Microsoft.App/containerApps/app"
ACCOUNT = f"{GROUP}/providers/Microsoft.Storage/storageAccounts/acct"
API = {"api-version": "2026-07-01"}
CONSUMPTION = {"name": "Consumption", "workloadProfileType": "Consumption"}
A100 = {"name": "gpu", "workloadProfileType": "Consumption-GPU-NC24-A100"}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.0) as running:
        yield running


class Arm:
    def __init__(self, sim: AzureSimulator) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.url, verify=ssl.create_default_context(cafile=str(sim.ca_bundle)), timeout=30)

    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.put(path, params=API, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.patch(path, params=API, json=body)

    def get(self, path: str) -> dict[str, Any]:
        answer = self.http.get(path, params=API)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def ok(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.put(path, body)
        assert answer.status_code in (200, 201, 202), answer.text
        return self.get(path)


@pytest.fixture
def arm(sim: AzureSimulator) -> Iterator[Arm]:
    client = Arm(sim)
    client.ok(GROUP, {"location": "westus3"})
    client.ok(ENV, {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, A100]}})
    yield client
    client.http.close()


def container(**changes: Any) -> dict[str, Any]:
    return {"name": "serving", "image": "docker.io/library/nginx:1", "resources": {"cpu": 24, "memory": "220Gi"}, **changes}


def app(*containers: dict[str, Any], profile: str = "gpu", scale: dict | None = None, **properties: Any) -> dict[str, Any]:
    return {
        "location": "westus3",
        "properties": {
            "managedEnvironmentId": ENV,
            "workloadProfileName": profile,
            "configuration": {"activeRevisionsMode": "Single"},
            "template": {"containers": list(containers) or [container()], "scale": scale or {"minReplicas": 0, "maxReplicas": 1}},
            **properties,
        },
    }


def refused(answer: httpx.Response, code: str, *words: str, status: int = 400) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and set(error) == {"code", "message"}, error
    for word in words:
        assert word in error["message"], error["message"]


# ----------------------------------------------------------------------------- the cases


def names(arm: Arm) -> None:
    refused(arm.put(f"{GROUP}/providers/Microsoft.App/containerApps/testcontainerApp0", app()), "ContainerAppInvalidName", "lower case")
    refused(arm.put(f"{GROUP}/providers/Microsoft.App/containerApps/a--b", app()), "ContainerAppInvalidName", "cannot have '--'")
    refused(arm.put(f"{GROUP}/providers/Microsoft.App/managedEnvironments/-env", {"location": "westus3"}), "ManagedEnvironmentInvalidName")
    refused(arm.put(f"{GROUP}/providers/Microsoft.Storage/storageAccounts/Bad_Acct", {"location": "westus3"}), "AccountNameInvalid")
    refused(arm.put(f"{GROUP}/providers/Microsoft.OperationalInsights/workspaces/ws!", {"location": "westus3"}), "InvalidWorkspaceName")
    refused(arm.put(f"/subscriptions/{SUB}/resourceGroups/dot.", {"location": "westus3"}), "InvalidResourceGroupName")
    refused(arm.put(f"{ENV}/storages/Share_1", {"properties": {}}), "ManagedEnvironmentStorageInvalidName")
    arm.ok(
        f"{GROUP}/providers/Microsoft.Storage/storageAccounts/acct",
        {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
    )
    refused(arm.put(f"{ACCOUNT}/fileServices/default/shares/a--b", {"properties": {}}), "InvalidResourceName")
    assert arm.put(APP, app()).status_code == 201


def create_only(arm: Arm) -> None:
    arm.ok(APP, app())
    other = f"{GROUP}/providers/Microsoft.App/managedEnvironments/other"
    arm.ok(other, {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, A100]}})
    moved = app()
    moved["properties"]["managedEnvironmentId"] = other
    refused(arm.put(APP, moved), "PropertyChangeNotAllowed", "properties.managedEnvironmentId")
    refused(arm.put(APP, app() | {"location": "westus"}), "InvalidResourceLocation", "already exists in location 'westus3'", status=409)
    redundant = {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, A100], "zoneRedundant": True}}
    refused(arm.put(ENV, redundant), "PropertyChangeNotAllowed", "zoneRedundant")


def profile_names(arm: Arm) -> None:
    body = {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, A100, {**A100, "name": "GPU"}]}}
    refused(arm.put(ENV, body), "WorkloadProfileNameDuplicated", "ignoring case")
    body["properties"]["workloadProfiles"] = [{"name": "CONSUMPTION", "workloadProfileType": "Consumption-GPU-NC24-A100"}]
    refused(arm.put(ENV, body), "WorkloadProfileNameReserved", "reserved for the Consumption")
    body["properties"]["workloadProfiles"] = [CONSUMPTION, {**A100, "name": "Consumption-GPU-NC8as-T4"}]
    refused(arm.put(ENV, body), "WorkloadProfileInvalidNameTooLong")
    # Several profiles of one type under other names ("friendly names") are fine.
    body["properties"]["workloadProfiles"] = [CONSUMPTION, A100, {**A100, "name": "gpu-2"}]
    assert arm.put(ENV, body).status_code == 200


def profile_types(arm: Arm) -> None:
    east = f"{GROUP}/providers/Microsoft.App/managedEnvironments/east"
    refused(
        arm.put(east, {"location": "eastus", "properties": {"workloadProfiles": [CONSUMPTION, A100]}}),
        "InvalidWorkloadProfileType",
        "region 'eastus'",
    )
    refused(
        arm.put(
            east, {"location": "eastus", "properties": {"workloadProfiles": [CONSUMPTION, {"name": "x", "workloadProfileType": "Z9000"}]}}
        ),
        "InvalidWorkloadProfileType",
        "is not supported",
    )
    counted = {**A100, "minimumCount": 0, "maximumCount": 1}
    refused(
        arm.put(ENV, {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, counted]}}),
        "WorkloadProfilePropertyNotSupported",
        "'MinimumCount' is not supported for Consumption_GPU_NC24_A100",
    )


def gpu_at_creation(arm: Arm) -> None:
    dedicated = {"name": "a100", "workloadProfileType": "NC24-A100", "minimumCount": 0, "maximumCount": 1}
    refused(
        arm.patch(ENV, {"properties": {"workloadProfiles": [CONSUMPTION, A100, dedicated]}}),
        "WorkloadProfileCannotBeAdded",
        "only be added when the environment is created",
    )
    new = f"{GROUP}/providers/Microsoft.App/managedEnvironments/with-a100"
    assert arm.put(new, {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, dedicated]}}).status_code == 201
    # A serverless GPU profile may be added later.
    t4 = {"name": "t4", "workloadProfileType": "Consumption-GPU-NC8as-T4"}
    assert arm.patch(new, {"properties": {"workloadProfiles": [CONSUMPTION, dedicated, t4]}}).status_code == 202


def app_profile_exists(arm: Arm) -> None:
    refused(arm.put(APP, app(profile="a100")), "WorkloadProfileNotFound", "'a100' was not found", "Consumption, gpu")
    assert arm.put(APP, app(profile="GPU")).status_code == 201  # names are compared ignoring case


def resources(arm: Arm) -> None:
    # A container that asks for nothing gets 0.25 vCPU and 0.5Gi: no size for a serverless A100.
    refused(
        arm.put(APP, app({"name": "serving", "image": "i"})),
        "ContainerAppInvalidResourceTotal",
        "(CPU: 0.25, memory: 0.5)",
        "cpu: 24, memory: 220Gi",
    )
    refused(
        arm.put(APP, app(container(resources={"cpu": 8, "memory": "56Gi"}))), "ContainerAppInvalidResourceTotal", "one whole GPU machine"
    )
    refused(
        arm.put(APP, app(container(resources={"cpu": 1, "memory": "1Gi"}), profile="Consumption")),
        "ContainerAppInvalidResourceTotal",
        "[cpu: 1, memory: 2.0Gi]",
    )
    refused(
        arm.put(APP, app(container(resources={"cpu": 4.5, "memory": "9Gi"}), profile="Consumption")), "ContainerAppInvalidResourceTotal"
    )
    refused(
        arm.put(APP, app(container(resources={"cpu": 1.255, "memory": "2Gi"}), profile="Consumption")),
        "ContainerAppInvalidResourceTotal",
        "two decimal places",
    )
    refused(
        arm.put(APP, app(container(resources={"cpu": 1, "memory": "2GB"}), profile="Consumption")),
        "ContainerAppInvalidResourceTotal",
        "in Gi",
    )
    assert arm.put(APP, app(container(resources={"cpu": 1.5, "memory": "3Gi"}), profile="Consumption")).status_code == 201
    assert arm.put(APP, app(container())).status_code == 200
    dedicated = f"{GROUP}/providers/Microsoft.App/managedEnvironments/dedicated"
    d4 = {"name": "d4", "workloadProfileType": "D4", "minimumCount": 0, "maximumCount": 1}
    arm.ok(dedicated, {"location": "westus3", "properties": {"workloadProfiles": [CONSUMPTION, d4]}})
    over = app(container(resources={"cpu": 4, "memory": "17Gi"}), profile="d4")
    over["properties"]["managedEnvironmentId"] = dedicated
    refused(arm.put(f"{GROUP}/providers/Microsoft.App/containerApps/on-d4", over), "ContainerAppInvalidResourceTotal", "must not exceed")
    over["properties"]["template"]["containers"] = [container(resources={"cpu": 2.3, "memory": "15.5Gi"})]
    assert arm.put(f"{GROUP}/providers/Microsoft.App/containerApps/on-d4", over).status_code == 201


def probes(arm: Arm) -> None:
    def probe(**fields: Any) -> dict[str, Any]:
        return {"type": "Startup", "httpGet": {"path": "/healthz", "port": 7860}, **fields}

    refused(
        arm.put(APP, app(container(probes=[probe(failureThreshold=180)]))), "ContainerAppProbeFailureThresholdOutOfRange", "['1', '10']"
    )
    refused(
        arm.put(APP, app(container(probes=[probe(initialDelaySeconds=0)]))), "ContainerAppProbeInitialDelaySecondsOutOfRange", "['1', '60']"
    )
    refused(arm.put(APP, app(container(probes=[probe(periodSeconds=241)]))), "ContainerAppProbePeriodSecondsOutOfRange")
    refused(arm.put(APP, app(container(probes=[probe(successThreshold=2)]))), "ContainerAppProbeSuccessThresholdOutOfRange", "['1', '1']")
    refused(arm.put(APP, app(container(probes=[probe(), probe()]))), "ContainerAppProbeTypeDuplicated")
    refused(arm.put(APP, app(container(probes=[probe(exec={"command": ["true"]})]))), "ContainerAppProbeInvalid", "exec")
    fine = [
        probe(initialDelaySeconds=10, periodSeconds=60, failureThreshold=10),
        {"type": "Readiness", "tcpSocket": {"port": 7860}, "successThreshold": 3},
    ]
    assert arm.put(APP, app(container(probes=fine))).status_code == 201


def scale(arm: Arm) -> None:
    refused(arm.put(APP, app(scale={"minReplicas": 0, "maxReplicas": 0})), "ContainerAppMaxReplicasOutOfRange", "['1', '300']")
    refused(arm.put(APP, app(scale={"minReplicas": 0, "maxReplicas": 301})), "ContainerAppMaxReplicasOutOfRange")
    refused(arm.put(APP, app(scale={"minReplicas": 3, "maxReplicas": 2})), "ContainerAppMinReplicasGreaterThanMax")
    assert arm.put(APP, app(scale={"minReplicas": 0, "maxReplicas": 300})).status_code == 201


def registries(arm: Arm) -> None:
    pulled = app(container(image="myteam.azurecr.io/serving:1"))
    pulled["properties"]["configuration"]["registries"] = [{"server": "myteam.azurecr.io", "identity": "system"}]
    refused(arm.put(APP, pulled), "InvalidContainerAppRegistryIdentity", "system-assigned identity")
    user = f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    pulled["properties"]["configuration"]["registries"] = [{"server": "myteam.azurecr.io", "identity": user}]
    pulled["identity"] = {"type": "SystemAssigned"}
    refused(arm.put(APP, pulled), "InvalidContainerAppRegistryIdentity", "not assigned to the app")
    pulled["identity"] = {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {user: {}}}
    shown = arm.ok(APP, pulled)
    assert shown["identity"]["principalId"] and shown["identity"]["userAssignedIdentities"][user]["principalId"]


def ip_restrictions(arm: Arm) -> None:
    def restricted(*rules: dict[str, Any], external: bool = True) -> dict[str, Any]:
        body = app()
        body["properties"]["configuration"]["ingress"] = {"external": external, "targetPort": 7860, "ipSecurityRestrictions": list(rules)}
        return body

    allow = {"name": "office", "ipAddressRange": "203.0.113.0/24", "action": "Allow"}
    code = "ContainerAppInvalidIpSecurityRestriction"
    refused(arm.put(APP, restricted(allow, {**allow, "name": "vpn", "action": "Deny"})), code, "all be Allow or all be Deny")
    refused(arm.put(APP, restricted({**allow, "ipAddressRange": "2001:db8::/32"})), code, "not an IPv4 address range")
    refused(arm.put(APP, restricted({**allow, "ipAddressRange": "203.0.113.7"})), code, "CIDR")
    refused(arm.put(APP, restricted(allow, allow)), code, "more than once")
    refused(
        arm.put(APP, restricted({"name": "office", "ipAddressRange": "203.0.113.0/24"})),
        code,
        "needs a name, an ipAddressRange and an action",
    )
    shown = arm.ok(APP, restricted(allow, {**allow, "name": "vpn", "ipAddressRange": "198.51.100.7/32"}, external=False))
    # Internal ingress: the app's own name under the environment's domain, with .internal.
    # (ingress-overview): reachable from inside the environment only.
    fqdn = shown["properties"]["configuration"]["ingress"]["fqdn"]
    assert fqdn.startswith("app.internal.") and fqdn.endswith(".azurecontainerapps.io")


def traffic_weights(arm: Arm) -> None:
    def with_traffic(mode: str, *traffic: dict[str, Any], image: str = "docker.io/library/serving:1") -> dict[str, Any]:
        body = app(container(image=image))
        body["properties"]["configuration"] = {
            "activeRevisionsMode": mode,
            "ingress": {"external": True, "targetPort": 7860, "traffic": list(traffic)},
        }
        return body

    code = "ContainerAppInvalidTrafficWeight"
    first = arm.ok(APP, with_traffic("Multiple", {"latestRevision": True, "weight": 100}))["properties"]["latestRevisionName"]
    # Single revision mode: no revision may be weighted, but the latest at 100.
    refused(arm.put(APP, with_traffic("Single", {"revisionName": first, "weight": 100})), code, "Single revision mode")
    refused(
        arm.put(APP, with_traffic("Single", {"latestRevision": True, "weight": 50}, {"revisionName": first, "weight": 50})), code, "Single"
    )
    # Multiple: a new revision beside the first, weights that add up to 100.
    refused(
        arm.put(
            APP,
            with_traffic(
                "Multiple",
                {"revisionName": first, "weight": 80},
                {"latestRevision": True, "weight": 10},
                image="docker.io/library/serving:2",
            ),
        ),
        code,
        "add up to 90%",
    )
    refused(arm.put(APP, with_traffic("Multiple", {"weight": 100})), code, "names a revisionName or latestRevision")
    shown = arm.ok(
        APP,
        with_traffic(
            "Multiple", {"revisionName": first, "weight": 70}, {"latestRevision": True, "weight": 30}, image="docker.io/library/serving:2"
        ),
    )
    second = shown["properties"]["latestRevisionName"]
    revisions = {r["name"]: r["properties"] for r in arm.get(f"{APP}/revisions")["value"]}
    assert {name: (r["active"], r["trafficWeight"]) for name, r in revisions.items()} == {first: (True, 70), second: (True, 30)}
    assert revisions[first]["fqdn"] != revisions[second]["fqdn"]  # each revision has its own URL
    # Once it takes no traffic, the first is deactivated: it stops, and shows no weight.
    arm.ok(APP, with_traffic("Multiple", {"latestRevision": True, "weight": 100}, image="docker.io/library/serving:2"))
    assert arm.http.post(f"{APP}/revisions/{first}/deactivate", params=API).status_code == 200
    revisions = {r["name"]: r["properties"] for r in arm.get(f"{APP}/revisions")["value"]}
    assert {name: (r["active"], r["trafficWeight"]) for name, r in revisions.items()} == {first: (False, 0), second: (True, 100)}


# Each rule of the table, and the case that shows it.
CASES: dict[str, Callable[[Arm], None]] = {
    "names": names,
    "create-only properties": create_only,
    "workload profile names": profile_names,
    "workload profile types and regions": profile_types,
    "dedicated GPU profiles at creation only": gpu_at_creation,
    "the app's workload profile exists": app_profile_exists,
    "container resources": resources,
    "probe ranges": probes,
    "scale ranges": scale,
    "registry identities": registries,
    "IP security restrictions": ip_restrictions,
    "traffic weights": traffic_weights,
}


def test_every_rule_in_the_table_has_its_case_and_its_microsoft_page():
    assert {rule.name for rule in RULES} == set(CASES)
    for rule in RULES:
        assert "learn.microsoft.com" in rule.source or "REST specification" in rule.source, rule


@pytest.mark.parametrize("rule", sorted(CASES))
def test_the_simulator_refuses_what_azure_refuses(arm: Arm, rule: str):
    CASES[rule](arm)


# --------------------------------------------------------------- beyond the write rules


def test_read_only_properties_in_a_put_are_ignored(arm: Arm):
    forged = app()
    forged["properties"] |= {"provisioningState": "Failed", "latestRevisionName": "forged", "outboundIpAddresses": ["6.6.6.6"]}
    forged["properties"]["configuration"]["ingress"] = {"external": True, "targetPort": 7860, "fqdn": "evil.example.com"}
    shown = arm.ok(APP, forged)
    assert shown["properties"]["provisioningState"] == "Succeeded"
    assert shown["properties"]["latestRevisionName"].startswith("app--")
    assert shown["properties"]["outboundIpAddresses"] != ["6.6.6.6"]
    assert shown["properties"]["configuration"]["ingress"]["fqdn"] != "evil.example.com"


def test_answers_carry_what_azure_fills_in(arm: Arm):
    environment = arm.get(ENV)
    assert environment["tags"] == {}  # made without tags: shown, empty
    assert environment["properties"]["defaultDomain"] and environment["properties"]["zoneRedundant"] is False
    arm.ok(ACCOUNT, {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    share = arm.ok(f"{ACCOUNT}/fileServices/default/shares/share", {"properties": {"shareQuota": 1024}})
    assert share["etag"] and share["properties"]["lastModifiedTime"]


def test_shared_key_access_off_refuses_the_data_plane_and_the_mount(arm: Arm, sim: AzureSimulator, tmp_path: Path):
    from azure.core.exceptions import HttpResponseError
    from azure.storage.fileshare import ShareClient

    arm.ok(
        ACCOUNT,
        {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "properties": {"allowSharedKeyAccess": False}},
    )
    arm.ok(f"{ACCOUNT}/fileServices/default/shares/share", {"properties": {}})
    key = arm.http.post(f"{ACCOUNT}/listKeys", params=API).json()["keys"][0]["value"]
    client = ShareClient(account_url=f"{sim.url}/acct", share_name="share", credential=key, connection_verify=str(sim.ca_bundle))
    with pytest.raises(HttpResponseError) as info:
        client.get_directory_client("").create_directory()
    assert info.value.error_code == "KeyBasedAuthenticationNotPermitted"
    arm.ok(
        f"{ENV}/storages/share",
        {"properties": {"azureFile": {"accountName": "acct", "shareName": "share", "accountKey": key, "accessMode": "ReadWrite"}}},
    )
    mounted = app(container(volumeMounts=[{"volumeName": "share", "mountPath": "/mount"}]))
    mounted["properties"]["template"]["volumes"] = [{"name": "share", "storageType": "AzureFile", "storageName": "share"}]
    assert "failed to mount" in failed_revision(arm, mounted)


def failed_revision(arm: Arm, body: dict[str, Any]) -> str:
    """Create the app; its revision's provisioningError, which must have failed it."""
    shown = arm.ok(APP, body)
    assert "latestReadyRevisionName" not in shown["properties"]
    revision = arm.get(f"{APP}/revisions/{shown['properties']['latestRevisionName']}")["properties"]
    assert (revision["runningState"], revision["provisioningState"], revision["healthState"]) == ("Failed", "Failed", "Unhealthy")
    return revision["provisioningError"]


def share_app(arm: Arm, sim: AzureSimulator, **container_fields: Any) -> tuple[dict[str, Any], Path]:
    """An app mounting a share (its folder on this machine), with the serving app's settings."""
    arm.ok(ACCOUNT, {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    arm.ok(f"{ACCOUNT}/fileServices/default/shares/share", {"properties": {}})
    arm.ok(
        f"{ENV}/storages/share",
        {"properties": {"azureFile": {"accountName": "acct", "shareName": "share", "accountKey": "k", "accessMode": "ReadWrite"}}},
    )
    env = [{"name": "LORAPLANE_SHARE_ROOT", "value": "/mount"}, {"name": "LORAPLANE_MODEL_PATH", "value": "models/big"}]
    body = app(container(env=env, volumeMounts=[{"volumeName": "share", "mountPath": "/mount"}], **container_fields))
    body["properties"]["template"]["volumes"] = [{"name": "share", "storageType": "AzureFile", "storageName": "share"}]
    return body, sim.share_folder("acct", "share")


def test_revisions_that_cannot_start_fail_with_a_provisioning_error(arm: Arm, sim: AzureSimulator):
    # The wheel its command installs is not on the share.
    body, share = share_app(
        arm, sim, command=["/bin/sh", "-c"], args=["pip install '/mount/.loraplane/dist/w-1.whl' && exec python -m serving"]
    )
    error = failed_revision(arm, body)
    assert error.startswith("pip:") and "w-1.whl does not exist on the share" in error
    # A model bigger than the memory it is given: killed as it loads.
    (share / ".loraplane" / "dist").mkdir(parents=True)
    (share / ".loraplane" / "dist" / "w-1.whl").write_bytes(b"w")
    (share / "models" / "big").mkdir(parents=True)
    with (share / "models" / "big" / "model.safetensors").open("wb") as sparse:  # 3 GiB, no disk used
        sparse.truncate(3 * 2**30)
    small = copy.deepcopy(body)
    small["properties"]["workloadProfileName"] = "Consumption"
    small["properties"]["template"]["containers"][0]["resources"] = {"cpu": 1, "memory": "2Gi"}
    error = failed_revision(arm, small)
    assert "OOMKilled" in error and "given 2Gi" in error
    assert "latestReadyRevisionName" in arm.ok(APP, body)["properties"]  # 220Gi holds it


def test_an_image_it_may_not_pull_fails_until_acr_pull_is_granted_and_it_restarts(arm: Arm, sim: AzureSimulator):
    pulled = app(container(image="myteam.azurecr.io/serving:1"))
    pulled["properties"]["configuration"]["registries"] = [{"server": "myteam.azurecr.io", "identity": "system"}]
    pulled["identity"] = {"type": "SystemAssigned"}
    assert "unauthorized" in failed_revision(arm, pulled)
    revision = arm.get(APP)["properties"]["latestRevisionName"]
    assert arm.http.post(f"{sim.url}/_sim/acr-pull", json={"server": "myteam.azurecr.io", "principal": f"system:{APP}"}).status_code == 200
    assert "latestReadyRevisionName" not in arm.get(APP)["properties"]  # nothing happens by itself
    assert arm.http.post(f"{APP}/revisions/{revision}/restart", params=API).status_code == 200
    assert arm.get(APP)["properties"]["latestReadyRevisionName"] == revision
    assert arm.get(f"{APP}/revisions/{revision}")["properties"]["runningState"] == "Running"
