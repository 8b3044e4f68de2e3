"""What a deployment should look like in Azure: one body per resource, in dependency order,
built from the SDKs' model classes; and which of each body's fields decide that a resource has
drifted. Pure: no Azure calls here (``plan`` compares these with what was observed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.mgmt.appcontainers import models as aca
from azure.mgmt.loganalytics import models as logs
from azure.mgmt.resource.resources import models as resources
from azure.mgmt.storage import models as storage

from infra.provider import Target, pointer_path

SHARE_MOUNT = "/mount"  # where the AI Toolkit's inference container sees the share
SERVING_PORT = 7860
ADMIN_TOKEN_SECRET = "loraplane-admin-token"
SHARE_VOLUME = "share"
# A public PyTorch CUDA runtime image, as the AI Toolkit's "Deploy for inference" uses; the
# serving app is installed into it at start from a wheel on the share.
DEFAULT_IMAGE = "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
DIST_FOLDER = ".loraplane/dist"

Path = tuple[str, ...]


@dataclass(frozen=True)
class DesiredResource:
    kind: str  # ResourceGroup, StorageAccount, FileShare, Workspace, ManagedEnvironment, EnvironmentStorage, ContainerApp
    name: str
    id: str
    body: dict[str, Any]  # the REST body a PUT sends (camelCase)
    drift_paths: tuple[Path, ...]  # fields that, when they differ from Azure's, mean drift


def loraplane_tags(deployment: str) -> dict[str, str]:
    return {"managed-by": "loraplane", "loraplane-deployment": deployment}


def _serving_env(target: Target) -> list[aca.EnvironmentVar]:
    spec = target.spec
    values = {
        "LORAPLANE_SHARE_ROOT": SHARE_MOUNT,
        "LORAPLANE_MODEL_PATH": spec.model.path,
        "LORAPLANE_ADAPTER_PATH": spec.adapter.path,
        "LORAPLANE_ADAPTER_POINTER": pointer_path(target.name),
        "LORAPLANE_HOST": "0.0.0.0",
        "LORAPLANE_PORT": str(SERVING_PORT),
        "LORAPLANE_DEPLOYMENT": target.name,
        "HF_HUB_OFFLINE": "1",
    }
    if spec.adapter.strategy == "restart":
        values["LORAPLANE_WATCH"] = "false"  # a new adapter is a new revision, never a swap
    if target.adapter_version:  # the restart strategy: a new version is a new revision
        values["LORAPLANE_ADAPTER_VERSION"] = target.adapter_version
    env = [aca.EnvironmentVar(name=name, value=value) for name, value in values.items()]
    env.append(aca.EnvironmentVar(name="LORAPLANE_ADMIN_TOKEN", secret_ref=ADMIN_TOKEN_SECRET))
    return env


def _serving_container(target: Target, serving_wheel: str | None) -> aca.Container:
    azure = target.spec.azure
    assert azure is not None
    probes = [
        # A GPU replica pulls a large image and loads a model: give it up to 30 minutes to start.
        aca.ContainerAppProbe(
            type="Startup",
            http_get=aca.ContainerAppProbeHttpGet(path="/healthz", port=SERVING_PORT),
            initial_delay_seconds=10,
            period_seconds=10,
            failure_threshold=180,
            timeout_seconds=5,
        ),
        aca.ContainerAppProbe(
            type="Readiness",
            http_get=aca.ContainerAppProbeHttpGet(path="/readyz", port=SERVING_PORT),
            period_seconds=10,
            failure_threshold=3,
            timeout_seconds=5,
        ),
        aca.ContainerAppProbe(
            type="Liveness",
            http_get=aca.ContainerAppProbeHttpGet(path="/healthz", port=SERVING_PORT),
            period_seconds=30,
            failure_threshold=5,
            timeout_seconds=5,
        ),
    ]
    container = aca.Container(
        name="serving",
        image=azure.image or DEFAULT_IMAGE,
        env=_serving_env(target),
        volume_mounts=[aca.VolumeMount(volume_name=SHARE_VOLUME, mount_path=SHARE_MOUNT)],
        probes=probes,
    )
    if azure.image is None:
        if serving_wheel is None:
            raise ValueError("the default image installs the serving app from a wheel on the share: name it")
        wheel = f"{SHARE_MOUNT}/{DIST_FOLDER}/{serving_wheel}"
        container.command = ["/bin/sh", "-c"]
        container.args = [f"pip install --no-cache-dir '{wheel}' && exec python -m serving"]
    return container


# What each kind needs to exist (and have finished provisioning) before it can be created.
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "ResourceGroup": (),
    "StorageAccount": ("ResourceGroup",),
    "FileShare": ("StorageAccount",),
    "Workspace": ("ResourceGroup",),
    "ManagedEnvironment": ("Workspace",),
    "EnvironmentStorage": ("ManagedEnvironment", "StorageAccount", "FileShare"),
    "ContainerApp": ("ManagedEnvironment", "EnvironmentStorage"),
}
# Lists compared by the ``name`` of their items, and only for the items loraplane sends: an
# environment may hold other teams' workload profiles besides ours.
NAMED_SUBSET_LISTS = {"workloadProfiles"}


def resource_ids(azure: Any) -> dict[str, str]:
    """kind -> the ARM id of the deployment's resource of that kind (``spec.azure`` named)."""
    group_id = f"/subscriptions/{azure.subscription_id}/resourceGroups/{azure.resource_group}"
    account_id = f"{group_id}/providers/Microsoft.Storage/storageAccounts/{azure.storage_account}"
    environment_id = f"{group_id}/providers/Microsoft.App/managedEnvironments/{azure.environment}"
    return {
        "ResourceGroup": group_id,
        "StorageAccount": account_id,
        "FileShare": f"{account_id}/fileServices/default/shares/{azure.file_share}",
        "Workspace": f"{group_id}/providers/Microsoft.OperationalInsights/workspaces/{azure.log_analytics}",
        "ManagedEnvironment": environment_id,
        "EnvironmentStorage": f"{environment_id}/storages/{azure.environment_storage}",
        "ContainerApp": f"{group_id}/providers/Microsoft.App/containerApps/{azure.app}",
    }


def desired_resources(
    target: Target, *, serving_wheel: str | None = None, workspace_customer_id: str | None = None
) -> list[DesiredResource]:
    """Every resource of the deployment, parents first. The environment's logs go to the
    workspace whose ``customerId`` Azure assigned (known once the workspace exists); its shared
    key, like every secret, is added at apply time and never appears here."""
    azure = target.spec.azure
    if azure is None:
        raise ValueError("spec.azure is required for the azure target")
    # with_defaults() has filled every name in by the time a spec is stored.
    assert azure.storage_account and azure.file_share and azure.environment
    assert azure.environment_storage and azure.app and azure.log_analytics
    tags = loraplane_tags(target.name)
    ids = resource_ids(azure)
    group_id, account_id, environment_id = ids["ResourceGroup"], ids["StorageAccount"], ids["ManagedEnvironment"]
    profile = azure.workload_profile
    consumption_gpu = profile.type.startswith("Consumption")
    workload_profiles = [aca.WorkloadProfile(name="Consumption", workload_profile_type="Consumption")]
    if profile.type != "Consumption":
        extra = {} if consumption_gpu else {"minimum_count": 0, "maximum_count": max(1, target.spec.scale.max_replicas)}
        workload_profiles.append(aca.WorkloadProfile(name=profile.name, workload_profile_type=profile.type, **extra))
    app = aca.ContainerApp(
        location=azure.location,
        tags=tags,
        managed_environment_id=environment_id,
        workload_profile_name=profile.name,
        configuration=aca.Configuration(
            active_revisions_mode="Single",
            ingress=aca.Ingress(external=True, target_port=SERVING_PORT, transport="auto"),
            secrets=[aca.Secret(name=ADMIN_TOKEN_SECRET)],  # its value is set at apply time
        ),
        template=aca.Template(
            containers=[_serving_container(target, serving_wheel)],
            scale=aca.Scale(min_replicas=target.spec.scale.min_replicas, max_replicas=target.spec.scale.max_replicas),
            volumes=[aca.Volume(name=SHARE_VOLUME, storage_type="AzureFile", storage_name=azure.environment_storage)],
        ),
    )
    return [
        DesiredResource(
            "ResourceGroup",
            azure.resource_group,
            group_id,
            resources.ResourceGroup(location=azure.location, tags=tags).as_dict(),
            (("location",),),
        ),
        DesiredResource(
            "StorageAccount",
            azure.storage_account,
            account_id,
            storage.StorageAccountCreateParameters(
                sku=storage.Sku(name="Standard_LRS"),
                kind="StorageV2",
                location=azure.location,
                tags=tags,
            ).as_dict(),
            (("sku", "name"), ("kind",)),
        ),
        DesiredResource("FileShare", azure.file_share, ids["FileShare"], storage.FileShare(share_quota=1024).as_dict(), ()),
        DesiredResource(
            "Workspace",
            azure.log_analytics,
            ids["Workspace"],
            logs.Workspace(location=azure.location, tags=tags, sku=logs.WorkspaceSku(name="PerGB2018"), retention_in_days=30).as_dict(),
            (("properties", "sku", "name"),),
        ),
        DesiredResource(
            "ManagedEnvironment",
            azure.environment,
            environment_id,
            aca.ManagedEnvironment(
                location=azure.location,
                tags=tags,
                workload_profiles=workload_profiles,
                app_logs_configuration=aca.AppLogsConfiguration(
                    destination="log-analytics",
                    log_analytics_configuration=aca.LogAnalyticsConfiguration(customer_id=workspace_customer_id),
                ),
            ).as_dict(),
            (
                ("properties", "workloadProfiles"),
                ("properties", "appLogsConfiguration", "destination"),
                ("properties", "appLogsConfiguration", "logAnalyticsConfiguration", "customerId"),
            ),
        ),
        DesiredResource(
            "EnvironmentStorage",
            azure.environment_storage,
            ids["EnvironmentStorage"],
            aca.ManagedEnvironmentStorage(
                properties=aca.ManagedEnvironmentStorageProperties(
                    azure_file=aca.AzureFileProperties(
                        account_name=azure.storage_account, share_name=azure.file_share, access_mode="ReadWrite"
                    )
                )
            ).as_dict(),
            (
                ("properties", "azureFile", "accountName"),
                ("properties", "azureFile", "shareName"),
                ("properties", "azureFile", "accessMode"),
            ),
        ),
        DesiredResource(
            "ContainerApp",
            azure.app,
            ids["ContainerApp"],
            app.as_dict(),
            (
                ("properties", "managedEnvironmentId"),
                ("properties", "workloadProfileName"),
                ("properties", "configuration", "ingress", "targetPort"),
                ("properties", "configuration", "ingress", "external"),
                ("properties", "template"),
            ),
        ),
    ]


def value_at(document: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def drifted_fields(desired: DesiredResource, observed: dict[str, Any]) -> list[str]:
    """The drift paths whose value in Azure no longer holds what loraplane sends, as dotted
    names. Azure echoes a body with server-filled fields added (revision suffixes, defaulted
    resources, fqdn) and its own casing of enum values: those are not drift."""
    return [
        ".".join(path)
        for path in desired.drift_paths
        if not _holds(value_at(observed, path), value_at(desired.body, path), named=path[-1] in NAMED_SUBSET_LISTS)
    ]


def _holds(observed: Any, wanted: Any, named: bool = False) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, dict):
        return isinstance(observed, dict) and all(_holds(observed.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list) and all(isinstance(w, dict) and "name" in w for w in wanted) and named:
        by_name = {o.get("name"): o for o in observed or [] if isinstance(o, dict)} if isinstance(observed, list) else {}
        return all(_holds(by_name.get(w["name"]), w) for w in wanted)
    if isinstance(wanted, list):
        return (
            isinstance(observed, list) and len(observed) == len(wanted) and all(_holds(o, w) for o, w in zip(observed, wanted, strict=True))
        )
    if isinstance(wanted, str) and isinstance(observed, str):
        return observed.lower() == wanted.lower()
    return observed == wanted
