"""Microsoft's published examples (../shared/azure-specs) as conformance fixtures.

For every example of an operation we use: the simulator accepts the example's request (its
path and query values and its body) and answers with one of the example's status codes, the
example's headers for that code, and a body of the example's shape; and the official SDK's
model for that operation parses the example's response body.
"""

from __future__ import annotations

import importlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azuresim.server import AzureSimulator

SPECS = Path(__file__).resolve().parents[3] / "shared" / "azure-specs"
APP_NEW = "app/resource-manager/Microsoft.App/ContainerApps/stable/2026-07-01/examples"
APP_OLD = "app/resource-manager/Microsoft.App/ContainerApps/stable/2026-01-01/examples"
LOGS = "operationalinsights/resource-manager/Microsoft.OperationalInsights/OperationalInsights/stable/2026-03-01/examples"
GROUP = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
RG_PATH = "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}"
STORAGE = GROUP + "/providers/Microsoft.Storage/storageAccounts/{accountName}"
WORKSPACE = GROUP + "/providers/Microsoft.OperationalInsights/workspaces/{workspaceName}"
ENV = GROUP + "/providers/Microsoft.App/managedEnvironments/{environmentName}"
APP = GROUP + "/providers/Microsoft.App/containerApps/{containerAppName}"

APPS = "azure.mgmt.appcontainers"
STORE = "azure.mgmt.storage"
LOG = "azure.mgmt.loganalytics"
RES = "azure.mgmt.resource.resources"

# example file -> (method, path template, body parameter, (SDK package, model), is a list)
EXAMPLES: dict[str, tuple[str, str, str | None, tuple[str, str] | None, bool]] = {
    "resources/resource-manager/Microsoft.Resources/stable/2025-04-01/examples/CreateResourceGroup.json": (
        "PUT",
        RG_PATH,
        "parameters",
        (RES, "ResourceGroup"),
        False,
    ),
    "resources/resource-manager/Microsoft.Resources/resources/stable/2025-04-01/examples/ForceDeleteVMsInResourceGroup.json": (
        "DELETE",
        RG_PATH,
        None,
        None,
        False,
    ),
    "resources/resource-manager/Microsoft.Resources/resources/stable/2025-04-01/examples/ForceDeleteVMsAndVMSSInResourceGroup.json": (
        "DELETE",
        RG_PATH,
        None,
        None,
        False,
    ),
    "storage/resource-manager/Microsoft.Storage/stable/2026-09-01/examples/StorageAccountCreate.json": (
        "PUT",
        STORAGE,
        "parameters",
        (STORE, "StorageAccount"),
        False,
    ),
    "storage/resource-manager/Microsoft.Storage/stable/2026-09-01/examples/StorageAccountGetProperties.json": (
        "GET",
        STORAGE,
        None,
        (STORE, "StorageAccount"),
        False,
    ),
    "storage/resource-manager/Microsoft.Storage/stable/2025-08-01/examples/StorageAccountListKeys.json": (
        "POST",
        STORAGE + "/listKeys",
        None,
        (STORE, "StorageAccountListKeysResult"),
        False,
    ),
    "storage/resource-manager/Microsoft.Storage/stable/2026-04-01/examples/FileSharesPut.json": (
        "PUT",
        STORAGE + "/fileServices/default/shares/{shareName}",
        "fileShare",
        (STORE, "FileShare"),
        False,
    ),
    "storage/resource-manager/Microsoft.Storage/stable/2026-09-01/examples/FileSharesGet.json": (
        "GET",
        STORAGE + "/fileServices/default/shares/{shareName}",
        None,
        (STORE, "FileShare"),
        False,
    ),
    f"{LOGS}/WorkspacesCreate.json": ("PUT", WORKSPACE, "parameters", (LOG, "Workspace"), False),
    f"{LOGS}/WorkspacesGet.json": ("GET", WORKSPACE, None, (LOG, "Workspace"), False),
    f"{LOGS}/WorkspacesDelete.json": ("DELETE", WORKSPACE, None, None, False),
    f"{LOGS}/WorkspacesGetSharedKeys.json": ("POST", WORKSPACE + "/sharedKeys", None, (LOG, "SharedKeys"), False),
    f"{LOGS}/OperationStatusesGet.json": (
        "GET",
        "/subscriptions/{subscriptionId}/providers/Microsoft.OperationalInsights/locations/{location}/operationStatuses/{asyncOperationId}",
        None,
        (LOG, "OperationStatus"),
        False,
    ),
    f"{APP_NEW}/ManagedEnvironments_CreateOrUpdate.json": ("PUT", ENV, "environmentEnvelope", (APPS, "ManagedEnvironment"), False),
    f"{APP_NEW}/ManagedEnvironments_Get.json": ("GET", ENV, None, (APPS, "ManagedEnvironment"), False),
    f"{APP_NEW}/ManagedEnvironments_Delete.json": ("DELETE", ENV, None, None, False),
    f"{APP_OLD}/ManagedEnvironments_ListWorkloadProfileStates.json": (
        "GET",
        ENV + "/workloadProfileStates",
        None,
        (APPS, "WorkloadProfileStates"),
        True,
    ),
    f"{APP_OLD}/ManagedEnvironmentsStorages_CreateOrUpdate.json": (
        "PUT",
        ENV + "/storages/{storageName}",
        "storageEnvelope",
        (APPS, "ManagedEnvironmentStorage"),
        False,
    ),
    f"{APP_NEW}/ManagedEnvironmentsStorages_CreateOrUpdate_NfsAzureFile.json": (
        "PUT",
        ENV + "/storages/{storageName}",
        "storageEnvelope",
        (APPS, "ManagedEnvironmentStorage"),
        False,
    ),
    f"{APP_NEW}/ManagedEnvironmentsStorages_Get.json": (
        "GET",
        ENV + "/storages/{storageName}",
        None,
        (APPS, "ManagedEnvironmentStorage"),
        False,
    ),
    f"{APP_NEW}/ManagedEnvironmentsStorages_List.json": ("GET", ENV + "/storages", None, (APPS, "ManagedEnvironmentStorage"), True),
    f"{APP_OLD}/ManagedEnvironmentsStorages_Delete.json": ("DELETE", ENV + "/storages/{storageName}", None, None, False),
    f"{APP_NEW}/AvailableWorkloadProfiles_Get.json": (
        "GET",
        "/subscriptions/{subscriptionId}/providers/Microsoft.App/locations/{location}/availableManagedEnvironmentsWorkloadProfileTypes",
        None,
        (APPS, "AvailableWorkloadProfile"),
        True,
    ),
    f"{APP_NEW}/ContainerApps_CreateOrUpdate.json": ("PUT", APP, "containerAppEnvelope", (APPS, "ContainerApp"), False),
    f"{APP_NEW}/ContainerApps_Get.json": ("GET", APP, None, (APPS, "ContainerApp"), False),
    f"{APP_NEW}/ContainerApps_Patch.json": ("PATCH", APP, "containerAppEnvelope", (APPS, "ContainerApp"), False),
    f"{APP_OLD}/ContainerApps_Delete.json": ("DELETE", APP, None, None, False),
    f"{APP_NEW}/ContainerApps_ListSecrets.json": ("POST", APP + "/listSecrets", None, (APPS, "SecretsCollection"), False),
    f"{APP_NEW}/Revisions_List.json": ("GET", APP + "/revisions", None, (APPS, "Revision"), True),
    f"{APP_NEW}/Revisions_Get.json": ("GET", APP + "/revisions/{revisionName}", None, (APPS, "Revision"), False),
    f"{APP_NEW}/Revisions_Activate.json": ("POST", APP + "/revisions/{revisionName}/activate", None, None, False),
    f"{APP_NEW}/Revisions_Restart.json": ("POST", APP + "/revisions/{revisionName}/restart", None, None, False),
    f"{APP_OLD}/Replicas_List.json": ("GET", APP + "/revisions/{revisionName}/replicas", None, (APPS, "Replica"), True),
}


def test_every_example_of_an_operation_we_use_is_covered():
    on_disk = {str(p.relative_to(SPECS)) for p in SPECS.rglob("examples/*.json")}
    assert on_disk == set(EXAMPLES), sorted(on_disk ^ set(EXAMPLES))


@pytest.fixture
def sim(tmp_path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.0) as running:
        yield running


def _exists(
    sim: AzureSimulator, resource_id: str, type_name: str, properties: dict | None = None, location: str | None = "westus3"
) -> None:
    resource: dict[str, Any] = {
        "id": resource_id,
        "name": resource_id.rsplit("/", 1)[-1],
        "type": type_name,
        "properties": properties or {},
    }
    if location:
        resource["location"] = location
    sim.state.put(resource_id, resource)


def _arrange(sim: AzureSimulator, method: str, template: str, params: dict[str, Any], example: dict[str, Any]) -> str:
    """Make what the example's request presumes exists: its parents, and for a read, itself.
    Returns the path, with a real operation id where the example polls one."""
    values = {k: v for k, v in params.items() if isinstance(v, str)}
    if "containerAppName" in values:
        # Microsoft's examples name their app "testcontainerApp0"; resource-name-rules allows a
        # container app lower case letters, digits and '-' only, and Azure answers
        # ContainerAppInvalidName (tests/azuresim/test_rules.py): where the two disagree the
        # simulator keeps the stricter, so the example is replayed with its name lower-cased.
        values["containerAppName"] = values["containerAppName"].lower()
    itself = not (method == "GET" and template in READ_BY_PUT)  # else made below, by a PUT
    if "asyncOperationId" in values:
        values["asyncOperationId"] = sim.state.start_operation(f"/subscriptions/{values['subscriptionId']}/x", "put").id
    path = template.format(**values)
    if "{resourceGroupName}" in template:
        group = GROUP.format(**values)
        if not (method == "PUT" and template == RG_PATH):
            _exists(sim, group, "resourceGroups")
    if "{accountName}" in template and not (method == "PUT" and template == STORAGE) and (itself or template != STORAGE):
        _exists(sim, STORAGE.format(**values), "Microsoft.Storage/storageAccounts")
    if "{environmentName}" in template and not (method == "PUT" and template == ENV) and (itself or template != ENV):
        _exists(sim, ENV.format(**values), "Microsoft.App/managedEnvironments", {"defaultDomain": "x.westus3.azurecontainerapps.io"})
    if "{workspaceName}" in template and method != "PUT" and itself:
        _exists(sim, WORKSPACE.format(**values), "Microsoft.OperationalInsights/workspaces")
    if "{containerAppName}" in template and method != "PUT" and itself:
        found = (example["responses"].get("200") or {}).get("body") if method == "GET" and template == APP else None
        _exists(sim, APP.format(**values), "Microsoft.App/containerApps", (found or {}).get("properties"))
    if "{revisionName}" in template:
        revision = APP.format(**values) + f"/revisions/{values['revisionName']}"
        shown = (example["responses"].get("200") or {}).get("body") if method == "GET" and template.endswith("{revisionName}") else None
        _exists(
            sim,
            revision,
            "Microsoft.App/containerApps/revisions",
            (shown or {}).get("properties") or {"active": True, "replicas": 1, "template": {"containers": [{"name": "c", "image": "i"}]}},
            location=None,
        )
    if template.endswith("/listSecrets"):  # the secrets the example lists, as the app holds them
        sim.arm.secrets[APP.format(**values).lower()] = {item["name"]: "a-value" for item in example["responses"]["200"]["body"]["value"]}
    if template.endswith("/workloadProfileStates"):  # the profiles the example lists the states of
        listed = example["responses"]["200"]["body"]["value"]
        profiles = [{"name": item["name"], "workloadProfileType": "D4", "minimumCount": 0, "maximumCount": 3} for item in listed]
        _exists(sim, ENV.format(**values), "Microsoft.App/managedEnvironments", {"workloadProfiles": profiles})
    if "{storageName}" in template and method != "PUT" and itself:
        _exists(
            sim,
            ENV.format(**values) + f"/storages/{values['storageName']}",
            "Microsoft.App/managedEnvironments/storages",
            {"azureFile": {"accountName": "a", "shareName": "s", "accessMode": "ReadOnly"}},
            location=None,
        )
    if template.endswith("/storages"):
        for item in example["responses"]["200"]["body"]["value"]:
            _exists(sim, path + "/" + item["name"], "Microsoft.App/managedEnvironments/storages", item.get("properties"), location=None)
    if template.endswith("/revisions"):
        for item in example["responses"]["200"]["body"]["value"]:
            _exists(sim, path + "/" + item["name"], "Microsoft.App/containerApps/revisions", item.get("properties"), location=None)
    if "{shareName}" in template and method != "PUT" and itself:
        _exists(sim, path, "Microsoft.Storage/storageAccounts/fileServices/shares", {}, location=None)
    if template in (STORAGE, WORKSPACE, ENV) and method in ("GET", "DELETE") and itself:
        _exists(
            sim,
            path,
            {
                STORAGE: "Microsoft.Storage/storageAccounts",
                WORKSPACE: "Microsoft.OperationalInsights/workspaces",
                ENV: "Microsoft.App/managedEnvironments",
            }[template],
        )
    if template == APP and method in ("PATCH", "DELETE"):
        _exists(sim, path, "Microsoft.App/containerApps", {"template": {"containers": [{"name": "c", "image": "i"}]}})
    if method == "PUT" and template == APP:
        body = params["containerAppEnvelope"]
        environment = body["properties"].get("managedEnvironmentId") or body["properties"].get("environmentId")
        # The environment the example presumes, with the workload profile its app names.
        profiles = [CONSUMPTION, {"name": body["properties"]["workloadProfileName"], "workloadProfileType": "GeneralPurpose"}]
        _exists(
            sim,
            environment,
            "Microsoft.App/managedEnvironments",
            {"defaultDomain": "x.eastus.azurecontainerapps.io", "workloadProfiles": profiles},
        )
    if method == "GET" and template in READ_BY_PUT:
        _put_as_azure_would(sim, path, example["responses"]["200"]["body"], params["api-version"])
    return path


CONSUMPTION = {"name": "Consumption", "workloadProfileType": "Consumption"}
# Reads whose resource is made through the simulator's own PUT of the example's response: what
# the GET then answers is what the simulator keeps and fills in, not what the test stored.
READ_BY_PUT = {STORAGE, STORAGE + "/fileServices/default/shares/{shareName}", WORKSPACE, ENV, ENV + "/storages/{storageName}", APP}


def _put_as_azure_would(sim: AzureSimulator, path: str, shown: dict[str, Any], api_version: str) -> None:
    body = {k: v for k, v in shown.items() if k not in ("id", "name", "type", "etag", "systemData")}
    if "/containerApps/" in path:  # its environment, with the profile it names
        environment = body["properties"].get("managedEnvironmentId") or body["properties"].get("environmentId")
        profiles = [CONSUMPTION, {"name": body["properties"].get("workloadProfileName", "Consumption"), "workloadProfileType": "D4"}]
        _exists(
            sim,
            environment,
            "Microsoft.App/managedEnvironments",
            {"defaultDomain": "x.eastus.azurecontainerapps.io", "workloadProfiles": profiles},
        )
        for volume in (body["properties"].get("template") or {}).get("volumes") or []:  # the storages it mounts
            _exists(
                sim,
                f"{environment}/storages/{volume['storageName']}",
                "Microsoft.App/managedEnvironments/storages",
                {"azureFile": {"accountName": "a", "shareName": "s", "accessMode": "ReadOnly"}},
                location=None,
            )
    if "/storages/" in path and "/managedEnvironments/" in path:
        body["properties"]["azureFile"].setdefault("accountKey", "a-key")
    answer = httpx.put(
        f"{sim.url}{path}",
        params={"api-version": api_version},
        json=body,
        verify=ssl.create_default_context(cafile=str(sim.ca_bundle)),
        timeout=30,
    )
    assert answer.status_code in (200, 201, 202), answer.text[:500]


def _missing(expected: Any, got: Any) -> set[str]:
    """The keys of Microsoft's example body (and of its properties) that the answer lacks."""
    if not isinstance(expected, dict) or not isinstance(got, dict):
        return set()
    if isinstance(expected.get("value"), list):  # a list: its items' shape
        items, answers = expected["value"], got.get("value") or []
        return _missing(items[0], answers[0]) if items and answers else ({"value"} if items else set())
    missing = {key for key in expected if key not in got}
    if isinstance(expected.get("properties"), dict):
        missing |= {f"properties.{key}" for key in expected["properties"] if key not in (got.get("properties") or {})}
    return missing


@pytest.mark.parametrize("example_file", sorted(EXAMPLES), ids=lambda f: Path(f).stem)
def test_the_simulator_answers_each_example_in_its_shape(sim, example_file):
    example = json.loads((SPECS / example_file).read_text())
    method, template, body_param, _, _ = EXAMPLES[example_file]
    params = example["parameters"]
    path = _arrange(sim, method, template, params, example)
    query = {k: v for k, v in params.items() if not isinstance(v, dict) and f"{{{k}}}" not in template}
    body = params.get(body_param) if body_param else None
    if isinstance(body, dict) and method == "PUT" and "location" in body:
        body = {**body, "location": body["location"]}
    response = httpx.request(
        method,
        f"{sim.url}{path}",
        params=query,
        json=body,
        verify=ssl.create_default_context(cafile=str(sim.ca_bundle)),
        timeout=30,
    )
    codes = {int(code) for code in example["responses"]}
    assert response.status_code in codes, (response.status_code, response.text[:500])
    expected = example["responses"][str(response.status_code)]
    for header in expected.get("headers") or {}:
        if header.lower() in ("azure-asyncoperation", "location"):
            assert header.lower() in {h.lower() for h in response.headers}, (header, dict(response.headers))
    expected_body = expected.get("body")
    if expected_body is not None and response.content:
        # Every property Microsoft's example answer carries, the simulator's answer carries.
        assert _missing(expected_body, response.json()) == set()


def _model(package: str, name: str):
    models = importlib.import_module(f"{package}.models")
    deserialize = importlib.import_module(f"{package}._utils.model_base")._deserialize
    return getattr(models, name), deserialize


@pytest.mark.parametrize("example_file", sorted(f for f, spec in EXAMPLES.items() if spec[3]), ids=lambda f: Path(f).stem)
def test_the_sdk_parses_each_example_response(example_file):
    example = json.loads((SPECS / example_file).read_text())
    _, _, _, (package, name), is_list = EXAMPLES[example_file]
    model, deserialize = _model(package, name)
    for code, response in example["responses"].items():
        body = response.get("body")
        if not body or int(code) >= 300:
            continue
        items = body["value"] if is_list else [body]
        for item in items:
            parsed = deserialize(model, item)
            assert isinstance(parsed, model)
            round_trip = parsed.as_dict()
            for key in ("id", "name", "location"):
                if key in item:
                    assert round_trip[key] == item[key]
