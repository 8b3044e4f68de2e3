"""One declaration per Azure resource kind a deployment is made of; the provider's generic loop
(``infra.azure.provider``) reads, plans, writes, resumes and deletes every kind the same way.

A kind says, in one place: its ARM id and name, what it lives in (nothing can exist inside what
does not) and what must exist before it, how to read it, its desired body and which fields are
drift (also when it was adopted), how to create, update and delete it and resume each of those
from a continuation token, which provisioning states are busy and which failed, what about it
makes the deployment impossible (``check``), and what Azure says is wrong with it while it runs
(``health``). Adding a kind is one more class in ``KINDS``.

Busy and failed states are the complete enumerations of each type's provisioningState in its
REST specification (Microsoft.App 2026-07-01, Microsoft.Storage, Microsoft.OperationalInsights).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    map_error,
)
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from azure.mgmt.appcontainers import models as aca
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.loganalytics import models as logs
from azure.mgmt.resource.resources import models as resources
from azure.mgmt.storage import models as storage

from infra.azure.clients import APPS_API_VERSION, AzureClients
from infra.azure.desired import (
    ADMIN_TOKEN_SECRET,
    SERVING_PORT,
    SHARE_VOLUME,
    DesiredResource,
    Path,
    loraplane_tags,
    serving_container,
    value_at,
    wheels_named,
)
from infra.azure.profiles import ProfileChoice, choose_profile
from infra.azure.revisions import desired_traffic
from infra.provider import Target
from infra.ratelimit import may_wait
from state.resource import AzureSpec

# How the SDK's generated operations map an HTTP status to an exception (azure-core's map_error).
ARM_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    304: ResourceNotModifiedError,
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}

MICROSOFT_APP_SPEC = "Microsoft.App 2026-07-01 (azure-rest-api-specs)"


@dataclass(frozen=True)
class DesiredContext:
    """What a pass knows when it builds the desired bodies: the deployment, the serving wheel
    (None with a prebuilt image), and what Azure showed of each kind (by kind name)."""

    target: Target
    wheel: str | None
    observed: Mapping[str, dict[str, Any] | None]
    revisions: tuple[dict[str, Any], ...] = ()  # the app's revisions, when several may be active

    @property
    def azure(self) -> AzureSpec:
        azure = self.target.spec.azure
        assert azure is not None  # the spec's validation guarantees it for target=azure
        return azure

    @cached_property
    def profile(self) -> ProfileChoice:
        return choose_profile(
            self.azure.workload_profile, self.observed.get(ManagedEnvironment.name), max_replicas=self.target.spec.scale.max_replicas
        )


class Secrets(Protocol):
    """What a write needs that is never stored: fetched or made at apply time."""

    def account_key(self) -> str: ...

    def workspace(self) -> tuple[str, str]:
        """The log workspace's (customerId, primary shared key)."""
        ...

    def app_secrets(self, *, exists: bool) -> dict[str, str]: ...

    def ensure_wheel(self) -> None:
        """The serving wheel the app's command installs is on the share."""
        ...


@dataclass(frozen=True)
class Written:
    poller: LROPoller | None = None  # None: the write finished within its request, or is not polled
    sent: tuple[str, ...] = ()  # secret values the request carried: never kept with a token
    answer: dict[str, Any] | None = None  # the resource as the write's answer showed it (not polled)


def _ids(azure: AzureSpec) -> dict[str, str]:
    group = f"/subscriptions/{azure.subscription_id}/resourceGroups/{azure.resource_group}"
    account = f"{group}/providers/Microsoft.Storage/storageAccounts/{azure.storage_account}"
    environment = f"{group}/providers/Microsoft.App/managedEnvironments/{azure.environment}"
    return {
        "group": group,
        "account": account,
        "share": f"{account}/fileServices/default/shares/{azure.file_share}",
        "workspace": f"{group}/providers/Microsoft.OperationalInsights/workspaces/{azure.log_analytics}",
        "environment": environment,
        "environment_storage": f"{environment}/storages/{azure.environment_storage}",
        "app": f"{group}/providers/Microsoft.App/containerApps/{azure.app}",
    }


# What a page of a list holds: its items, and the link to the next page (None: the last).
Page = tuple[list[dict[str, Any]], str | None]
PageParser = Callable[[str, bytes], Page]


def parse_page(url: str, content: bytes) -> Page:
    """A page of an ARM list (``value``, ``nextLink``), parsed."""
    page = json.loads(content)
    return page.get("value", []), page.get("nextLink") or None


class Kind(ABC):
    name: ClassVar[str]
    arm_type: ClassVar[str]
    parent: ClassVar[str | None] = None  # the kind it lives in
    depends_on: ClassVar[tuple[str, ...]] = ()  # kinds that must exist, settled, before it is created
    busy_states: ClassVar[frozenset[str]] = frozenset()  # lower-case provisioningState values
    failed_states: ClassVar[frozenset[str]] = frozenset()
    listed_per_group: ClassVar[bool] = False  # read with one list of the group's, shared
    deletes_contents: ClassVar[bool] = False  # deleting it deletes what it holds
    read_only: ClassVar[tuple[Path, ...]] = ()  # never sent back in a body made from a read

    @abstractmethod
    def resource_name(self, azure: AzureSpec) -> str: ...

    @abstractmethod
    def resource_id(self, azure: AzureSpec) -> str: ...

    @abstractmethod
    def desired(self, context: DesiredContext) -> DesiredResource: ...

    @abstractmethod
    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        """The SDK's read; raises ResourceNotFoundError when it does not exist."""

    def list_group(self, clients: AzureClients, azure: AzureSpec, parse: PageParser = parse_page) -> Iterable[dict[str, Any]]:
        """Every resource of this kind in the group, as ARM sent it (its JSON), each page's
        items made by ``parse``."""
        raise NotImplementedError(f"{self.name} is read one by one")

    def from_wire(self, item: dict[str, Any]) -> dict[str, Any]:
        """A listed resource as a read gives it: the SDK's model built from the JSON, as a dict."""
        raise NotImplementedError(f"{self.name} is read one by one")

    @abstractmethod
    def write(
        self,
        clients: AzureClients,
        azure: AzureSpec,
        desired: DesiredResource,
        body: dict[str, Any],
        *,
        verb: str,
        current: dict[str, Any] | None,
        adopted: bool,
        secrets: Secrets,
    ) -> Written:
        """Create or update: ``body`` is the desired body, or the adopted one for someone
        else's resource; secrets are added here, at the last moment."""

    @abstractmethod
    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None: ...

    @abstractmethod
    def resume(self, clients: AzureClients, azure: AzureSpec, operation: str, body: dict[str, Any], token: str) -> LROPoller:
        """The poller of an operation (create, update, delete) started before a restart."""

    def state(self, observed: dict[str, Any]) -> str:
        properties = observed.get("properties") or {}
        return str(properties.get("provisioningState") or "Succeeded")

    def being_written(self, observed: dict[str, Any] | None) -> bool:
        """Azure is still writing it (its provisioningState is one of the busy ones)."""
        return observed is not None and self.state(observed).lower() in self.busy_states

    def check(self, context: DesiredContext, observed: dict[str, Any], *, adopted: bool) -> tuple[str, str] | None:
        """What about the resource as it is makes the deployment impossible: (reason, message
        for a person)."""
        return None

    def health(self, clients: AzureClients, azure: AzureSpec, observed: dict[str, Any]) -> Failure | None:
        """What Azure says is wrong with it while it runs (beyond provisioning)."""
        return None


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    revision: str | None = None
    image_pull: bool = False  # the revision could not pull its image (AcrPull not granted yet?)


def _resume_app_operation(operations: Any, group: str, name: str, operation: str, body: dict[str, Any], token: str) -> LROPoller:
    """The poller of a Microsoft.App create (PUT), update (PATCH) or delete, from its token:
    environments and apps offer the same three long-running operations."""
    if operation == "delete":
        return operations.begin_delete(group, name, continuation_token=token)
    if operation == "update":
        return operations.begin_update(group, name, body, continuation_token=token)
    return operations.begin_create_or_update(group, name, body, continuation_token=token)


# ------------------------------------------------------------------------------- the kinds


class ResourceGroup(Kind):
    name = "ResourceGroup"
    arm_type = "Microsoft.Resources/resourceGroups"
    busy_states = frozenset({"deleting"})
    deletes_contents = True

    def resource_name(self, azure: AzureSpec) -> str:
        return azure.resource_group

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["group"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure = context.azure
        body = resources.ResourceGroup(location=azure.location, tags=loraplane_tags(context.target.name)).as_dict()
        return DesiredResource(self.name, azure.resource_group, self.resource_id(azure), body, (("location",),), adopted_drift_paths=())

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.resources.resource_groups.get(azure.resource_group)

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        clients.resources.resource_groups.create_or_update(azure.resource_group, body)
        return Written()

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        return clients.resources.resource_groups.begin_delete(azure.resource_group)

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        if operation != "delete":
            raise ValueError("a resource group's create finishes within its request")
        return clients.resources.resource_groups.begin_delete(azure.resource_group, continuation_token=token)


class StorageAccount(Kind):
    """Shared key access stays on: Container Apps mounts Azure Files with the account key, and
    loraplane reads and stages adapters with it."""

    name = "StorageAccount"
    arm_type = "Microsoft.Storage/storageAccounts"
    parent = "ResourceGroup"
    depends_on = ("ResourceGroup",)
    busy_states = frozenset({"creating", "resolvingdns"})
    failed_states = frozenset({"failed", "canceled"})

    def resource_name(self, azure: AzureSpec) -> str:
        assert azure.storage_account
        return azure.storage_account

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["account"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure = context.azure
        body = storage.StorageAccountCreateParameters(
            sku=storage.Sku(name="Standard_LRS"),
            kind="StorageV2",
            location=azure.location,
            tags=loraplane_tags(context.target.name),
            properties=storage.StorageAccountPropertiesCreateParameters(allow_shared_key_access=True),
        ).as_dict()
        paths: tuple[Path, ...] = (("sku", "name"), ("kind",), ("properties", "allowSharedKeyAccess"))
        return DesiredResource(self.name, self.resource_name(azure), self.resource_id(azure), body, paths, adopted_drift_paths=())

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.storage.storage_accounts.get_properties(azure.resource_group, self.resource_name(azure))

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        return Written(clients.storage.storage_accounts.begin_create(azure.resource_group, self.resource_name(azure), body))

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        clients.storage.storage_accounts.delete(azure.resource_group, self.resource_name(azure))
        return None

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        if operation == "delete":
            raise ValueError("a storage account's delete finishes within its request")
        return clients.storage.storage_accounts.begin_create(
            azure.resource_group, self.resource_name(azure), body, continuation_token=token
        )

    def check(self, context: DesiredContext, observed: dict[str, Any], *, adopted: bool) -> tuple[str, str] | None:
        if adopted and value_at(observed, ("properties", "allowSharedKeyAccess")) is False:
            return "SharedKeyAccessDisabled", (
                f"the storage account {observed.get('name')} has shared key access turned off (allowSharedKeyAccess: false): "
                "Container Apps mounts Azure Files with the account key, and loraplane reads the share with it; turn it "
                "on (az storage account update --allow-shared-key-access true) or name another spec.azure.storageAccount"
            )
        return None


class FileShare(Kind):
    name = "FileShare"
    arm_type = "Microsoft.Storage/storageAccounts/fileServices/shares"
    parent = "StorageAccount"
    depends_on = ("StorageAccount",)

    def resource_name(self, azure: AzureSpec) -> str:
        assert azure.file_share
        return azure.file_share

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["share"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure = context.azure
        body = storage.FileShare(file_share_properties=storage.FileShareProperties(share_quota=1024)).as_dict()
        return DesiredResource(self.name, self.resource_name(azure), self.resource_id(azure), body, (), adopted_drift_paths=())

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.storage.file_shares.get(azure.resource_group, azure.storage_account or "", self.resource_name(azure))

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        clients.storage.file_shares.create(azure.resource_group, azure.storage_account or "", self.resource_name(azure), body)
        return Written()

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        clients.storage.file_shares.delete(azure.resource_group, azure.storage_account or "", self.resource_name(azure))
        return None

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        raise ValueError("a file share's operations finish within their requests")


class Workspace(Kind):
    name = "Workspace"
    arm_type = "Microsoft.OperationalInsights/workspaces"
    parent = "ResourceGroup"
    depends_on = ("ResourceGroup",)
    busy_states = frozenset({"creating", "deleting", "provisioningaccount", "updating"})
    failed_states = frozenset({"failed", "canceled"})

    def resource_name(self, azure: AzureSpec) -> str:
        assert azure.log_analytics
        return azure.log_analytics

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["workspace"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure = context.azure
        body = logs.Workspace(
            location=azure.location,
            tags=loraplane_tags(context.target.name),
            properties=logs.WorkspaceProperties(sku=logs.WorkspaceSku(name="PerGB2018"), retention_in_days=30),
        ).as_dict()
        return DesiredResource(
            self.name, self.resource_name(azure), self.resource_id(azure), body, (("properties", "sku", "name"),), adopted_drift_paths=()
        )

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.logs.workspaces.get(azure.resource_group, self.resource_name(azure))

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        return Written(clients.logs.workspaces.begin_create_or_update(azure.resource_group, self.resource_name(azure), body))

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        return clients.logs.workspaces.begin_delete(azure.resource_group, self.resource_name(azure))

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        name = self.resource_name(azure)
        if operation == "delete":
            return clients.logs.workspaces.begin_delete(azure.resource_group, name, continuation_token=token)
        return clients.logs.workspaces.begin_create_or_update(azure.resource_group, name, body, continuation_token=token)


class ManagedEnvironment(Kind):
    """Logs go to the workspace, with its key read at apply time. The app's workload profile is
    one of the environment's: reused by type, or added (see ``infra.azure.profiles``). An
    adopted environment is changed by a PATCH of its profiles alone; where it sends its logs
    stays its owner's choice (and never points at a workspace loraplane may later delete)."""

    name = "ManagedEnvironment"
    arm_type = "Microsoft.App/managedEnvironments"
    parent = "ResourceGroup"
    depends_on = ("Workspace",)
    busy_states = frozenset(
        {
            "waiting",
            "initializationinprogress",
            "infrastructuresetupinprogress",
            "infrastructuresetupcomplete",
            "scheduledfordelete",
            "upgraderequested",
        }
    )
    failed_states = frozenset({"failed", "canceled", "upgradefailed"})
    read_only = (("properties", "provisioningState"), ("properties", "defaultDomain"), ("properties", "staticIp"))

    def resource_name(self, azure: AzureSpec) -> str:
        assert azure.environment
        return azure.environment

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["environment"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure = context.azure
        profiles = [aca.WorkloadProfile(name="Consumption", workload_profile_type="Consumption").as_dict()]
        if context.profile.add is not None:
            profiles.append(dict(context.profile.add))
        workspace = context.observed.get(Workspace.name) or {}
        body = aca.ManagedEnvironment(
            location=azure.location,
            tags=loraplane_tags(context.target.name),
            properties=aca.ManagedEnvironmentProperties(
                app_logs_configuration=aca.AppLogsConfiguration(
                    destination="log-analytics",
                    log_analytics_configuration=aca.LogAnalyticsConfiguration(
                        customer_id=value_at(workspace, ("properties", "customerId"))
                    ),
                ),
            ),
        ).as_dict()
        body["properties"]["workloadProfiles"] = profiles
        profiles_path: Path = ("properties", "workloadProfiles")
        paths: tuple[Path, ...] = (
            profiles_path,
            ("properties", "appLogsConfiguration", "destination"),
            ("properties", "appLogsConfiguration", "logAnalyticsConfiguration", "customerId"),
        )
        return DesiredResource(
            self.name, self.resource_name(azure), self.resource_id(azure), body, paths, adopted_drift_paths=(profiles_path,)
        )

    def check(self, context: DesiredContext, observed: dict[str, Any], *, adopted: bool) -> tuple[str, str] | None:
        problem = context.profile.problem  # e.g. a dedicated GPU profile it could only have had at creation
        return ("WorkloadProfileUnavailable", problem) if problem is not None else None

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.apps.managed_environments.get(azure.resource_group, self.resource_name(azure))

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        name = self.resource_name(azure)
        if adopted:
            patch = {"properties": {"workloadProfiles": value_at(body, ("properties", "workloadProfiles"))}}
            return Written(clients.apps.managed_environments.begin_update(azure.resource_group, name, patch))
        customer_id, shared_key = secrets.workspace()
        logs_config = body.setdefault("properties", {}).setdefault("appLogsConfiguration", {}).setdefault("logAnalyticsConfiguration", {})
        logs_config["customerId"], logs_config["sharedKey"] = customer_id, shared_key
        return Written(clients.apps.managed_environments.begin_create_or_update(azure.resource_group, name, body), sent=(shared_key,))

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        return clients.apps.managed_environments.begin_delete(azure.resource_group, self.resource_name(azure))

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        return _resume_app_operation(
            clients.apps.managed_environments, azure.resource_group, self.resource_name(azure), operation, body, token
        )


class EnvironmentStorage(Kind):
    name = "EnvironmentStorage"
    arm_type = "Microsoft.App/managedEnvironments/storages"
    parent = "ManagedEnvironment"
    depends_on = ("ManagedEnvironment", "StorageAccount", "FileShare")

    def resource_name(self, azure: AzureSpec) -> str:
        assert azure.environment_storage
        return azure.environment_storage

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["environment_storage"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure = context.azure
        body = aca.ManagedEnvironmentStorage(
            properties=aca.ManagedEnvironmentStorageProperties(
                azure_file=aca.AzureFileProperties(account_name=azure.storage_account, share_name=azure.file_share, access_mode="ReadWrite")
            )
        ).as_dict()
        paths: tuple[Path, ...] = (
            ("properties", "azureFile", "accountName"),
            ("properties", "azureFile", "shareName"),
            ("properties", "azureFile", "accessMode"),
        )
        return DesiredResource(self.name, self.resource_name(azure), self.resource_id(azure), body, paths)

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.apps.managed_environments_storages.get(azure.resource_group, azure.environment or "", self.resource_name(azure))

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        body = {"properties": {"azureFile": {**value_at(desired.body, ("properties", "azureFile")), "accountKey": secrets.account_key()}}}
        clients.apps.managed_environments_storages.create_or_update(
            azure.resource_group, azure.environment or "", self.resource_name(azure), body
        )
        return Written(sent=(body["properties"]["azureFile"]["accountKey"],))

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        clients.apps.managed_environments_storages.delete(azure.resource_group, azure.environment or "", self.resource_name(azure))
        return None

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        raise ValueError("an environment storage's operations finish within their requests")


def ip_restrictions(allow: list[str] | None) -> list[aca.IpSecurityRestrictionRule] | None:
    """spec.azure.ipAllowList as Allow rules (Container Apps takes rules of one action only:
    https://learn.microsoft.com/azure/container-apps/ip-restrictions). None: not managed."""
    if allow is None:
        return None
    return [
        aca.IpSecurityRestrictionRule(name=f"allow-{index}", ip_address_range=cidr, action="Allow", description="spec.azure.ipAllowList")
        for index, cidr in enumerate(allow, start=1)
    ]


class ContainerApp(Kind):
    """The serving app: the deployment's workload profile, sized for it, the share mounted at
    /mount, ingress on 7860, the admin token as a secret; a prebuilt image from the team's
    registry is pulled with a managed identity."""

    name = "ContainerApp"
    arm_type = "Microsoft.App/containerApps"
    parent = "ResourceGroup"
    depends_on = ("ManagedEnvironment", "EnvironmentStorage")
    busy_states = frozenset({"inprogress", "deleting"})
    failed_states = frozenset({"failed", "canceled"})
    listed_per_group = True
    read_only = (
        ("properties", "provisioningState"),
        ("properties", "runningStatus"),
        ("properties", "latestRevisionName"),
        ("properties", "latestReadyRevisionName"),
        ("properties", "latestRevisionFqdn"),
        ("properties", "customDomainVerificationId"),
        ("properties", "outboundIpAddresses"),
        ("properties", "eventStreamEndpoint"),
        ("properties", "configuration", "ingress", "fqdn"),
    )

    def resource_name(self, azure: AzureSpec) -> str:
        assert azure.app
        return azure.app

    def resource_id(self, azure: AzureSpec) -> str:
        return _ids(azure)["app"]

    def desired(self, context: DesiredContext) -> DesiredResource:
        azure, target = context.azure, context.target
        registries = None
        identity = None
        if azure.registry is not None:
            registries = [aca.RegistryCredentials(server=azure.registry.server, identity=azure.registry.identity)]
            if azure.registry.identity == "system":
                identity = aca.ManagedServiceIdentity(type="SystemAssigned")
            else:
                identity = aca.ManagedServiceIdentity(
                    type="UserAssigned", user_assigned_identities={azure.registry.identity: aca.UserAssignedIdentity()}
                )
        # One revision, all traffic on the latest, as the AI Toolkit's template has it; several
        # while a restart rollout's version is proved in a revision of its own (revisions.py).
        multiple = target.revisions is not None
        traffic = desired_traffic(target, list(context.revisions), context.observed.get(self.name)) if multiple else None
        app = aca.ContainerApp(
            location=azure.location,
            tags=loraplane_tags(target.name),
            identity=identity,
            properties=aca.ContainerAppProperties(
                managed_environment_id=_ids(azure)["environment"],
                workload_profile_name=context.profile.name,
                configuration=aca.Configuration(
                    active_revisions_mode="Multiple" if multiple else "Single",
                    ingress=aca.Ingress(
                        external=azure.ingress == "external",
                        target_port=SERVING_PORT,
                        transport="auto",
                        ip_security_restrictions=ip_restrictions(azure.ip_allow_list),
                        traffic=[aca.TrafficWeight(**_snake(t)) for t in traffic or [{"latestRevision": True, "weight": 100}]],
                    ),
                    secrets=[aca.Secret(name=ADMIN_TOKEN_SECRET)],  # its value is set at apply time
                    registries=registries,
                ),
                template=aca.Template(
                    containers=[serving_container(target, context.wheel)],
                    scale=desired_scale(target),
                    volumes=[aca.Volume(name=SHARE_VOLUME, storage_type="AzureFile", storage_name=azure.environment_storage)],
                ),
            ),
        )
        paths: tuple[Path, ...] = (
            ("identity",),
            ("properties", "managedEnvironmentId"),
            ("properties", "workloadProfileName"),
            ("properties", "configuration", "ingress", "targetPort"),
            ("properties", "configuration", "ingress", "external"),
            *((("properties", "configuration", "ingress", "ipSecurityRestrictions"),) if azure.ip_allow_list is not None else ()),
            ("properties", "configuration", "registries"),
            ("properties", "configuration", "activeRevisionsMode"),
            *((("properties", "configuration", "ingress", "traffic"),) if multiple else ()),
            ("properties", "template"),
        )
        return DesiredResource(self.name, self.resource_name(azure), self.resource_id(azure), app.as_dict(), paths)

    def get(self, clients: AzureClients, azure: AzureSpec) -> Any:
        return clients.apps.container_apps.get(azure.resource_group, self.resource_name(azure))

    def list_group(self, clients: AzureClients, azure: AzureSpec, parse: PageParser = parse_page) -> Iterable[dict[str, Any]]:
        """The group's container apps, page by page, as JSON: through the client's
        ``send_request`` (its pipeline: credential, retries, the limiter), not its pager, which
        builds a model of every app on every page. At 1,000 apps that was 2-3 s of CPU a list;
        the provider builds a model only of an app that changed since the last list, and parses
        no page that says what it said the last time (``parse``)."""
        url: str | None = (
            f"/subscriptions/{azure.subscription_id}/resourceGroups/{azure.resource_group}"
            f"/providers/Microsoft.App/containerApps?api-version={APPS_API_VERSION}"
        )
        first = True
        while url:
            # The first page may end the pass with Throttled: nothing is lost. The pages after it
            # wait for their read tokens: a list broken off halfway is lost whole, and every pass
            # after it would start it again (at 300 apps that spent the whole read budget on
            # first pages and never finished a list).
            with nullcontext() if first else may_wait():
                # Streamed, then read whole: the pipeline's ContentDecodePolicy would otherwise
                # parse every page once for nobody, and the JSON is parsed here once (a page of
                # 100 apps is about 280 KB: the largest part of a steady pass's CPU was these parses).
                response = clients.apps.send_request(HttpRequest("GET", url), stream=True)
                response.read()
            first = False
            if response.status_code != 200:
                map_error(status_code=response.status_code, response=response, error_map=ARM_ERROR_MAP)
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            items, url = parse(url, response.content)
            yield from items

    def from_wire(self, item: dict[str, Any]) -> dict[str, Any]:
        return aca.ContainerApp(item).as_dict()

    def write(self, clients, azure, desired, body, *, verb, current, adopted, secrets) -> Written:
        """A create or update, not polled: its operation is watched through the group's list,
        where the app's ``provisioningState`` is InProgress until it ends, and then Succeeded,
        Failed or Canceled ("Those three values indicate the operation finished":
        https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations).
        The SDK's poller reads the operation at once (it is never done then: an app takes
        minutes), again every polling interval, and the app at the end: three reads for each
        app, where ARM gives a subscription 25 a second; the list is one read for 100 apps. A
        failed app is written again (``failed_states``), with its revision's error in the
        status (``health``)."""
        name = self.resource_name(azure)
        if wheels_named(value_at(body, ("properties", "template"))) - wheels_named(value_at(current or {}, ("properties", "template"))):
            secrets.ensure_wheel()  # a wheel the app does not run yet: on the share before the app names it
        secret_names = {x.get("name") for x in value_at(current or {}, ("properties", "configuration", "secrets")) or []}
        if verb == "update" and ADMIN_TOKEN_SECRET in secret_names:
            # A PATCH keeps the secrets as they are: no need to read them back to send them
            # again, and the change costs one write.
            body["properties"]["configuration"].pop("secrets", None)
            clients.apps.container_apps.begin_update(azure.resource_group, name, body, polling=False)
            return Written()  # answered 202 without the app: it is read afresh
        kept = value_at(current or {}, ("properties", "configuration", "ingress", "ipSecurityRestrictions"))
        if azure.ip_allow_list is None and kept:
            # A PUT replaces the whole app: restrictions the spec does not manage stay as they are.
            body["properties"]["configuration"]["ingress"]["ipSecurityRestrictions"] = kept
        values = secrets.app_secrets(exists=current is not None)
        body["properties"]["configuration"]["secrets"] = [{"name": n, "value": v} for n, v in values.items()]
        answered = clients.apps.container_apps.begin_create_or_update(azure.resource_group, name, body, polling=False).result()
        shown = answered.as_dict() if answered is not None else None
        if shown is not None:
            for secret in value_at(shown, ("properties", "configuration", "secrets")) or []:
                secret.pop("value", None)  # a secret's value is never kept, even if Azure echoes it
        return Written(sent=tuple(values.values()), answer=shown)

    def remove(self, clients: AzureClients, azure: AzureSpec) -> LROPoller | None:
        return clients.apps.container_apps.begin_delete(azure.resource_group, self.resource_name(azure))

    def resume(self, clients, azure, operation, body, token) -> LROPoller:
        return _resume_app_operation(clients.apps.container_apps, azure.resource_group, self.resource_name(azure), operation, body, token)

    def health(self, clients: AzureClients, azure: AzureSpec, observed: dict[str, Any]) -> Failure | None:
        """A revision that cannot start: Container Apps shows ``runningState: Failed`` (or
        ``provisioningState: Failed``) with a ``provisioningError`` on it. Read only while the
        newest revision is not the ready one."""
        properties = observed.get("properties") or {}
        latest, ready = properties.get("latestRevisionName"), properties.get("latestReadyRevisionName")
        if not latest or latest == ready:
            return None
        revision = clients.apps.container_apps_revisions.get_revision(azure.resource_group, self.resource_name(azure), latest).as_dict()
        shown = revision.get("properties") or {}
        if str(shown.get("runningState", "")).lower() != "failed" and str(shown.get("provisioningState", "")).lower() != "failed":
            return None
        error = str(shown.get("provisioningError") or "no reason given")
        pull = any(word in error.lower() for word in ("pull", "unauthorized", "manifest unknown", "acrpull"))
        return Failure("RevisionFailed", f"revision {latest} failed to start: {error}", revision=latest, image_pull=pull)


def desired_scale(target: Target) -> aca.Scale:
    """The replicas as the spec asks. With minReplicas 0 the app scales to zero: Container Apps'
    HTTP scale rule adds a replica for each ``concurrentRequests`` requests in flight, and the
    last one stops after ``cooldownPeriod`` without any (scale-app: "Defaults to 300 seconds");
    the Toolkit's own app keeps its one replica and no rule."""
    scale = target.spec.scale
    if scale.min_replicas > 0:
        return aca.Scale(min_replicas=scale.min_replicas, max_replicas=scale.max_replicas)
    rule = aca.ScaleRule(name="http-requests", http=aca.HttpScaleRule(metadata={"concurrentRequests": str(scale.concurrent_requests)}))
    return aca.Scale(min_replicas=0, max_replicas=scale.max_replicas, cooldown_period=scale.idle_seconds, rules=[rule])


def _snake(weight: dict[str, Any]) -> dict[str, Any]:
    names = {"revisionName": "revision_name", "latestRevision": "latest_revision", "weight": "weight"}
    return {names[k]: v for k, v in weight.items()}


# Parents first: the order of creation, and (reversed) of deletion.
KINDS: tuple[Kind, ...] = (
    ResourceGroup(),
    StorageAccount(),
    FileShare(),
    Workspace(),
    ManagedEnvironment(),
    EnvironmentStorage(),
    ContainerApp(),
)
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}


def desired_resources(
    target: Target,
    *,
    wheel: str | None,
    observed: Mapping[str, dict[str, Any] | None] | None = None,
    revisions: tuple[dict[str, Any], ...] = (),
) -> list[DesiredResource]:
    """Every kind's desired body, parents first, given what Azure showed (nothing: all new)."""
    context = DesiredContext(target, wheel, observed or {}, revisions)
    return [kind.desired(context) for kind in KINDS]
