"""The azure target: observe what exists through the official SDK clients, plan (pure) what to
create or fix, apply it with the SDK's own long-running-operation pollers.

- Observe reads only: a GET per resource (children skipped when their parent is missing) and
  a probe of the endpoint. A steady state costs no write.
- Operations do not block a worker: a PUT or DELETE starts, its continuation token is saved
  in the journal, and later passes look at the poller; after a restart the poller is rebuilt
  from the token, so a request is never sent twice.
- Ownership: what loraplane creates is tagged and journalled; a resource that exists under a
  name in the spec and is neither is adopted: kept up to date under ``manage``, never deleted.
- Secrets (the storage key, the log workspace's key, the app's admin token) are fetched or
  made at apply time, sent to Azure, and kept nowhere.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.core.polling import LROPoller
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.loganalytics import LogAnalyticsManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient

from infra.azure.credentials import make_credential
from infra.azure.desired import (
    ADMIN_TOKEN_SECRET,
    DEPENDS_ON,
    DIST_FOLDER,
    NAMED_SUBSET_LISTS,
    DesiredResource,
    desired_resources,
    drifted_fields,
    loraplane_tags,
    resource_ids,
    value_at,
)
from infra.azure.errors import classify_azure_error
from infra.azure.inventory import Inventory
from infra.azure.limiter import ArmLimiter
from infra.azure.share import ShareFiles
from infra.azure.wheel import ServingWheel, build_serving_wheel
from infra.endpoints import EndpointClient
from infra.errors import PermanentError, TemporaryError
from infra.provider import Action, Observation, ObservedResource, ResourceJournal, ResourceRecord, Target

log = logging.getLogger("loraplane.infra.azure")

PUBLIC_CLOUD = "https://management.azure.com"
SHARE_KEY_SECONDS = 600.0  # how long a fetched storage key is reused (in memory) before a refetch
# Azure's words for a resource that is not done yet; anything else is final.
BUSY_STATES = {"inprogress", "creating", "updating", "deleting", "accepted", "provisioning", "scheduledfordelete"}
FAILED_STATES = {"failed", "canceled"}
# Where each kind lives: when the container is missing, so is what it would hold.
CONTAINED_IN = {
    "StorageAccount": "ResourceGroup",
    "FileShare": "StorageAccount",
    "Workspace": "ResourceGroup",
    "ManagedEnvironment": "ResourceGroup",
    "EnvironmentStorage": "ManagedEnvironment",
    "ContainerApp": "ResourceGroup",
}


@dataclass(frozen=True)
class AzureConfig:
    """How to reach Azure: the public cloud by default, or the simulator (its URL, its CA
    bundle, and the ``static`` credential)."""

    arm_url: str = PUBLIC_CLOUD
    ca_bundle: Path | None = None
    credential: str = "default"
    polling_seconds: float = 5.0
    probe_timeout_seconds: float = 5.0
    # How old a read may be and still serve an observation (see infra.azure.inventory); below
    # the resync interval, so that each resync judges drift on a read made since the last one.
    observe_max_age_seconds: float = 10.0


class AzureClients:
    """The four management clients of one subscription, sharing one limiter."""

    def __init__(self, subscription_id: str, config: AzureConfig, credential: Any, limiter: ArmLimiter) -> None:
        options: dict[str, Any] = {
            "base_url": config.arm_url,
            "credential_scopes": [config.arm_url.rstrip("/") + "/.default"],
            "per_retry_policies": [limiter.policy()],
            "polling_interval": config.polling_seconds,
        }
        if config.ca_bundle is not None:
            options["connection_verify"] = str(config.ca_bundle)
        self.resources = ResourceManagementClient(credential, subscription_id, **options)
        self.storage = StorageManagementClient(credential, subscription_id, **options)
        self.logs = LogAnalyticsManagementClient(credential, subscription_id, **options)
        self.apps = ContainerAppsAPIClient(credential, subscription_id, **options)

    def close(self) -> None:
        for client in (self.resources, self.storage, self.logs, self.apps):
            client.close()


def _owned_by_tags(observed: dict[str, Any] | None, deployment: str) -> bool:
    tags = (observed or {}).get("tags") or {}
    return all(tags.get(k) == v for k, v in loraplane_tags(deployment).items())


def provisioning_state(observed: dict[str, Any]) -> str:
    properties = observed.get("properties") or {}
    return str(properties.get("provisioningState") or "Succeeded")


# ------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Change:
    verb: str  # create | update
    resource: DesiredResource
    reason: str


def changes(target: Target, facts: dict[str, Any]) -> tuple[list[Change], list[str]]:
    """Pure: what would make Azure match the spec, and what is being waited for. Each
    resource is looked at once its parents exist and have finished provisioning."""
    observed: dict[str, dict[str, Any] | None] = facts["observed"]
    busy: dict[str, str] = facts["busy"]
    workspace = observed.get("Workspace") or {}
    desired = desired_resources(
        target,
        serving_wheel=facts.get("wheel"),
        workspace_customer_id=value_at(workspace, ("properties", "customerId")),
    )
    settled: set[str] = set()
    found: list[Change] = []
    waiting: list[str] = []
    for resource in desired:
        current = observed.get(resource.kind)
        if resource.kind in busy:
            waiting.append(f"{busy[resource.kind]} {resource.kind} {resource.name}")
            continue
        if current is None:
            if all(dep in settled for dep in DEPENDS_ON[resource.kind]):
                found.append(Change("create", resource, "does not exist"))
            continue
        state = provisioning_state(current).lower()
        if state in BUSY_STATES:
            waiting.append(f"Azure to finish {resource.kind} {resource.name} ({provisioning_state(current)})")
            continue
        if state in FAILED_STATES:
            found.append(Change("update", resource, f"its provisioning {state}; trying again"))
            continue
        if resource.kind in facts.get("adopted", ()):
            resource = as_adopted(resource)
        drift = drifted_fields(resource, current)
        if drift:
            found.append(Change("update", resource, "drifted: " + ", ".join(drift)))
        settled.add(resource.kind)
    return found, waiting


# ---------------------------------------------------------------------------- the provider


class AzureProvider:
    def __init__(
        self,
        config: AzureConfig,
        journal: ResourceJournal,
        *,
        credential: Any | None = None,
        limiter: ArmLimiter | None = None,
        serving_wheel: Callable[[], ServingWheel] = build_serving_wheel,
    ) -> None:
        self.config = config
        self.journal = journal
        self.credential = credential if credential is not None else make_credential(config.credential)
        self.limiter = limiter or ArmLimiter()
        self._build_wheel = serving_wheel
        self._wheel: ServingWheel | None = None
        self._clients: dict[str, AzureClients] = {}
        self._pollers: dict[tuple[str, str], LROPoller] = {}
        self._share_access: dict[str, tuple[str, str, float]] = {}  # account -> (url, key, fetched)
        self._lock = threading.Lock()
        # The serving app's endpoint is checked against the same CA as ARM (never unverified).
        self._tls = ssl.create_default_context(cafile=str(config.ca_bundle)) if config.ca_bundle else True
        self.endpoints = EndpointClient(timeout=config.probe_timeout_seconds, verify=self._tls)
        self.inventory = Inventory(config.observe_max_age_seconds)

    # ------------------------------------------------------------------------ plumbing

    def clients(self, subscription_id: str) -> AzureClients:
        with self._lock:
            if subscription_id not in self._clients:
                self._clients[subscription_id] = AzureClients(subscription_id, self.config, self.credential, self.limiter)
            return self._clients[subscription_id]

    def close(self) -> None:
        with self._lock:
            for clients in self._clients.values():
                clients.close()
            self._clients.clear()
        self.endpoints.close()

    def stop(self) -> None:
        """With the reconciler: operations in flight go on in Azure, and are resumed from
        their tokens at the next start."""
        self.close()

    def wheel(self) -> ServingWheel:
        if self._wheel is None:
            self._wheel = self._build_wheel()
        return self._wheel

    def _wheel_name(self, target: Target) -> str | None:
        assert target.spec.azure is not None
        return None if target.spec.azure.image else self.wheel().filename

    def _resources(self, target: Target) -> list[DesiredResource]:
        return desired_resources(target, serving_wheel=self._wheel_name(target))

    @staticmethod
    def _azure(target: Target):
        azure = target.spec.azure
        assert azure is not None  # the spec's validation guarantees it for target=azure
        return azure

    # --------------------------------------------------------------------------- reads

    def _get(self, clients: AzureClients, target: Target, kind: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """The resource as Azure has it (None: absent), through the inventory: at most
        ``observe_max_age_seconds`` old, container apps listed per group; ``fresh`` reads it now
        (before a write that is computed from it)."""
        azure = self._azure(target)
        resource_id = resource_ids(azure)[kind]
        if fresh:
            self.inventory.touched(resource_id)
        if kind != "ContainerApp":
            return self.inventory.get(resource_id, lambda: self._read(clients, target, kind))
        rg = azure.resource_group

        def every_app_in_the_group() -> list[dict[str, Any]]:
            try:
                return [app.as_dict() for app in clients.apps.container_apps.list_by_resource_group(rg)]
            except ResourceNotFoundError:
                return []  # no group, no apps
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"listing the container apps of {rg}") from exc

        scope = f"/subscriptions/{azure.subscription_id}/resourceGroups/{rg}/containerApps"
        return self.inventory.get_listed(resource_id, scope, lambda: self._read(clients, target, kind), every_app_in_the_group)

    def _read(self, clients: AzureClients, target: Target, kind: str) -> dict[str, Any] | None:
        azure = self._azure(target)
        rg = azure.resource_group
        calls: dict[str, Callable[[], Any]] = {
            "ResourceGroup": lambda: clients.resources.resource_groups.get(rg),
            "StorageAccount": lambda: clients.storage.storage_accounts.get_properties(rg, azure.storage_account),
            "FileShare": lambda: clients.storage.file_shares.get(rg, azure.storage_account, azure.file_share),
            "Workspace": lambda: clients.logs.workspaces.get(rg, azure.log_analytics),
            "ManagedEnvironment": lambda: clients.apps.managed_environments.get(rg, azure.environment),
            "EnvironmentStorage": lambda: clients.apps.managed_environments_storages.get(rg, azure.environment, azure.environment_storage),
            "ContainerApp": lambda: clients.apps.container_apps.get(rg, azure.app),
        }
        try:
            return calls[kind]().as_dict()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"reading {kind} {self._name_of(target, kind)}") from exc

    def _name_of(self, target: Target, kind: str) -> str:
        azure = self._azure(target)
        return {
            "ResourceGroup": azure.resource_group,
            "StorageAccount": azure.storage_account,
            "FileShare": azure.file_share,
            "Workspace": azure.log_analytics,
            "ManagedEnvironment": azure.environment,
            "EnvironmentStorage": azure.environment_storage,
            "ContainerApp": azure.app,
        }[kind] or ""

    # ------------------------------------------------------------------------- observe

    def observe(self, target: Target) -> Observation:
        azure = self._azure(target)
        clients = self.clients(azure.subscription_id)
        wheel = self._wheel_name(target)
        resources = desired_resources(target, serving_wheel=wheel)
        busy = self._advance_operations(clients, target)
        records = self.journal.records(target.uid)
        observed: dict[str, dict[str, Any] | None] = {}
        for resource in resources:
            parent = CONTAINED_IN.get(resource.kind)
            if parent is not None and observed.get(parent) is None:
                observed[resource.kind] = None  # nothing can exist inside what does not: no call
            elif resource.kind in busy:
                observed[resource.kind] = self.inventory.last(resource.id)  # its operation tells how it goes
            else:
                observed[resource.kind] = self._get(clients, target, resource.kind)
        refs = []
        for resource in resources:
            current = observed[resource.kind]
            record = records.get(resource.id.lower())
            ours = (record is not None and record.created) or current is None or _owned_by_tags(current, target.name)
            state = busy.get(resource.kind, "").capitalize() or (provisioning_state(current) if current else "Missing")
            refs.append(ObservedResource(resource.kind, resource.id, state, "loraplane" if ours else "adopted"))
        facts = {"observed": observed, "busy": busy, "wheel": wheel, "adopted": [r.kind for r in refs if r.managed_by == "adopted"]}
        endpoint, ready, detail = self._probe(observed.get("ContainerApp"))
        found, waiting = changes(target, facts)
        if azure.policy == "observe" and found:
            detail = "policy observe, not fixed: " + "; ".join(f"{c.resource.kind} {c.resource.name} {c.reason}" for c in found)
            ready = False
        elif waiting:
            detail = "waiting for " + "; ".join(waiting)
        return Observation(resources=refs, endpoint=endpoint, ready=ready and not found and not waiting, detail=detail, facts=facts)

    def _probe(self, app: dict[str, Any] | None) -> tuple[str | None, bool, str]:
        if app is None:
            return None, False, "the container app does not exist yet"
        properties = app.get("properties") or {}
        fqdn = value_at(properties, ("configuration", "ingress", "fqdn"))
        endpoint = f"https://{fqdn}" if fqdn else None
        latest, ready_revision = properties.get("latestRevisionName"), properties.get("latestReadyRevisionName")
        if latest and latest != ready_revision:
            return endpoint, False, f"waiting for revision {latest} to become ready"
        if endpoint is None:
            return None, False, "the container app has no ingress address yet"
        try:
            response = self.endpoints.get(f"{endpoint}/readyz")
        except httpx.HTTPError as exc:
            return endpoint, False, f"waiting for the serving app to answer on {endpoint} ({type(exc).__name__})"
        if response.status_code == 200:
            return endpoint, True, f"serving at {endpoint}"
        return endpoint, False, f"the serving app is not ready: {response.text.strip()[:300]}"

    # ------------------------------------------------------------------- operations

    def _advance_operations(self, clients: AzureClients, target: Target) -> dict[str, str]:
        """Look at the operations in flight: finished ones are cleared (a failure is raised,
        after which the next pass plans the resource again); the rest are reported busy."""
        busy: dict[str, str] = {}
        failure: Exception | None = None
        for key, record in self.journal.records(target.uid).items():
            if record.operation is None:
                continue
            poller = self._poller(clients, target, record)
            if poller is not None and not poller.done():
                busy[record.kind] = {"create": "creating", "update": "updating", "delete": "deleting"}[record.operation]
                continue
            with self._lock:
                self._pollers.pop((target.uid, key), None)
            finished = replace(record, operation=None, continuation_token=None)
            if record.operation == "delete":
                self.journal.forget(target.uid, record.resource_id)
            else:
                self.journal.save(target.uid, finished)
            if poller is None:
                self.inventory.touched(record.resource_id)
                continue
            try:
                result = poller.result(timeout=0)
            except AzureError as exc:
                self.inventory.touched(record.resource_id)
                failure = classify_azure_error(exc, doing=f"{record.operation} {record.kind} {record.resource_id.rsplit('/', 1)[-1]}")
                failure.__cause__ = exc
                continue
            if record.operation != "delete" and hasattr(result, "as_dict"):
                # The operation's last answer is the resource as it is now: no read needed.
                self.inventory.read_now(record.resource_id, result.as_dict())
            else:
                self.inventory.touched(record.resource_id)
        if failure is not None:
            raise failure
        return busy

    def _poller(self, clients: AzureClients, target: Target, record: ResourceRecord) -> LROPoller | None:
        """The poller of an operation in flight: the one this process started, or one rebuilt
        from the journal's continuation token (after a restart). None when there is no token
        (the operation was not long-running)."""
        key = (target.uid, record.resource_id)
        with self._lock:
            poller = self._pollers.get(key)
        if poller is not None or record.continuation_token is None:
            return poller
        azure = self._azure(target)
        rg, name = azure.resource_group, record.resource_id.rsplit("/", 1)[-1]
        token = record.continuation_token
        body = next((r.body for r in self._resources(target) if r.id.lower() == record.resource_id), {})
        resume = {
            ("create", "StorageAccount"): lambda: clients.storage.storage_accounts.begin_create(rg, name, body, continuation_token=token),
            ("create", "Workspace"): lambda: clients.logs.workspaces.begin_create_or_update(rg, name, body, continuation_token=token),
            ("create", "ManagedEnvironment"): lambda: clients.apps.managed_environments.begin_create_or_update(
                rg, name, body, continuation_token=token
            ),
            ("update", "ManagedEnvironment"): lambda: clients.apps.managed_environments.begin_update(
                rg, name, body, continuation_token=token
            ),
            ("create", "ContainerApp"): lambda: clients.apps.container_apps.begin_create_or_update(
                rg, name, body, continuation_token=token
            ),
            ("update", "ContainerApp"): lambda: clients.apps.container_apps.begin_update(rg, name, body, continuation_token=token),
            ("delete", "ResourceGroup"): lambda: clients.resources.resource_groups.begin_delete(rg, continuation_token=token),
            ("delete", "Workspace"): lambda: clients.logs.workspaces.begin_delete(rg, name, continuation_token=token),
            ("delete", "ManagedEnvironment"): lambda: clients.apps.managed_environments.begin_delete(rg, name, continuation_token=token),
            ("delete", "ContainerApp"): lambda: clients.apps.container_apps.begin_delete(rg, name, continuation_token=token),
        }
        verb = record.operation if (record.operation, record.kind) in resume else "create"
        if record.operation == "delete":
            verb = "delete"
        try:
            poller = resume[(verb, record.kind)]()
        except (KeyError, ValueError) as exc:
            # A token this SDK cannot read (e.g. from another version): the resource is
            # observed afresh, and planned again if need be.
            log.warning("cannot resume the %s of %s from its token (%s); looking again", record.operation, record.resource_id, exc)
            return None
        log.info("resumed polling the %s of %s", record.operation, record.resource_id)
        with self._lock:
            self._pollers[key] = poller
        return poller

    def _started(
        self, target: Target, resource_id: str, kind: str, verb: str, poller: LROPoller | None, sent_secrets: tuple[str, ...] = ()
    ) -> None:
        self.inventory.touched(resource_id)
        records = self.journal.records(target.uid)
        known = records.get(resource_id.lower())
        created = verb == "create" or (known is not None and known.created)
        if poller is None or poller.done():
            if poller is not None:
                poller.result()
            if verb == "delete":
                self.journal.forget(target.uid, resource_id)
            else:
                self.journal.save(target.uid, ResourceRecord(resource_id.lower(), kind, created=created))
            return
        token = poller.continuation_token()
        if any(secret and secret in _token_text(token) for secret in sent_secrets):
            # Azure echoed a secret in the first answer: keep no token rather than store it.
            token = None
        with self._lock:
            self._pollers[(target.uid, resource_id.lower())] = poller
        self.journal.save(target.uid, ResourceRecord(resource_id.lower(), kind, created=created, operation=verb, continuation_token=token))

    # ------------------------------------------------------------------------- plan

    def plan(self, target: Target, observation: Observation) -> list[Action]:
        azure = self._azure(target)
        found, _ = changes(target, observation.facts)
        if azure.policy == "observe":
            return []  # drift is reported in the status, not fixed
        return [Action(c.verb, c.resource.kind, c.resource.name, c.reason) for c in found]

    # ------------------------------------------------------------------------ apply

    def apply(self, target: Target, actions: list[Action]) -> None:
        azure = self._azure(target)
        if azure.policy == "observe":
            raise PermanentError("spec.azure.policy is observe: loraplane changes nothing in Azure", reason="ObserveOnly")
        clients = self.clients(azure.subscription_id)
        by_kind = {r.kind: r for r in self._resources(target)}
        for action in actions:
            resource = by_kind[action.kind]
            try:
                self._put(clients, target, resource, action.verb)
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"{action.verb} {action.kind} {action.name}") from exc

    def _put(self, clients: AzureClients, target: Target, resource: DesiredResource, verb: str) -> None:
        azure = self._azure(target)
        rg, name = azure.resource_group, resource.name
        body = copy.deepcopy(resource.body)
        current = self._get(clients, target, resource.kind, fresh=True) if verb == "update" else None
        adopted = current is not None and not _owned_by_tags(current, target.name) and not self._created(target, resource.id)
        if adopted:
            body = adopted_body(as_adopted(resource), current)
        sent: tuple[str, ...] = ()
        poller: LROPoller | None = None
        kind = resource.kind
        if kind == "ResourceGroup":
            clients.resources.resource_groups.create_or_update(rg, body)
        elif kind == "StorageAccount":
            poller = clients.storage.storage_accounts.begin_create(rg, name, body)
        elif kind == "FileShare":  # PUT creates or updates a share
            clients.storage.file_shares.create(rg, azure.storage_account, name, body)
        elif kind == "Workspace":
            poller = clients.logs.workspaces.begin_create_or_update(rg, name, body)
        elif kind == "ManagedEnvironment" and adopted:
            # Someone else's environment: a PATCH of only what the deployment needs of it
            # (the workload profile), leaving their settings, logs and keys alone.
            patch = {"properties": {"workloadProfiles": value_at(body, ("properties", "workloadProfiles"))}}
            poller = clients.apps.managed_environments.begin_update(rg, name, patch)
        elif kind == "ManagedEnvironment":
            # Logs go to the workspace Azure knows by its customerId, with its key read now.
            workspace = clients.logs.workspaces.get(rg, azure.log_analytics).as_dict()
            shared_key = clients.logs.shared_keys.get_shared_keys(rg, azure.log_analytics)["primarySharedKey"]
            logs = body.setdefault("properties", {}).setdefault("appLogsConfiguration", {}).setdefault("logAnalyticsConfiguration", {})
            logs["customerId"] = value_at(workspace, ("properties", "customerId"))
            logs["sharedKey"] = shared_key
            sent = (shared_key,)
            poller = clients.apps.managed_environments.begin_create_or_update(rg, name, body)
        elif kind == "EnvironmentStorage":
            account_key = self._account_key(clients, target)
            body["properties"]["azureFile"]["accountKey"] = account_key
            sent = (account_key,)
            clients.apps.managed_environments_storages.create_or_update(rg, azure.environment, name, body)
        elif kind == "ContainerApp":
            secret_names = {x.get("name") for x in value_at(current or {}, ("properties", "configuration", "secrets")) or []}
            wheel = self._wheel_name(target)
            if wheel is not None and wheel not in str(value_at(current or {}, ("properties", "template", "containers"))):
                self._upload_wheel(clients, target)
            if verb == "update" and ADMIN_TOKEN_SECRET in secret_names:
                # A PATCH keeps the secrets as they are: no need to read them back to send
                # them again, and the change costs one write.
                body["properties"]["configuration"].pop("secrets", None)
                poller = clients.apps.container_apps.begin_update(rg, name, body)
            else:
                secret_values = self._app_secrets(clients, target, exists=current is not None)
                body["properties"]["configuration"]["secrets"] = [
                    {"name": secret_name, "value": value} for secret_name, value in secret_values.items()
                ]
                sent = tuple(secret_values.values())
                poller = clients.apps.container_apps.begin_create_or_update(rg, name, body)
        log.info("%s %s %s%s", verb, kind, name, " (adopted)" if adopted else "")
        self._started(target, resource.id, kind, verb, poller, sent)

    def _created(self, target: Target, resource_id: str) -> bool:
        record = self.journal.records(target.uid).get(resource_id.lower())
        return record is not None and record.created

    def _account_key(self, clients: AzureClients, target: Target) -> str:
        azure = self._azure(target)
        keys = clients.storage.storage_accounts.list_keys(azure.resource_group, azure.storage_account)
        return keys["keys"][0]["value"]

    def _app_secrets(self, clients: AzureClients, target: Target, *, exists: bool) -> dict[str, str]:
        """The app's secrets with their values: Azure never shows them on GET, and a PUT must
        carry them all. The admin token is made once and then read back from Azure."""
        azure = self._azure(target)
        values: dict[str, str] = {}
        if exists:
            for secret in clients.apps.container_apps.list_secrets(azure.resource_group, azure.app)["value"] or []:
                if secret.get("value") is not None:
                    values[secret["name"]] = secret["value"]
        if not values.get(ADMIN_TOKEN_SECRET):
            values[ADMIN_TOKEN_SECRET] = secrets.token_urlsafe(32)
        return values

    def admin_token(self, target: Target) -> str | None:
        """The serving app's admin token, read from the app's secrets when needed (for the
        reload endpoint), never kept."""
        azure = self._azure(target)
        clients = self.clients(azure.subscription_id)
        try:
            listed = clients.apps.container_apps.list_secrets(azure.resource_group, azure.app)["value"] or []
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"reading the secrets of {azure.app}") from exc
        return next((s.get("value") for s in listed if s.get("name") == ADMIN_TOKEN_SECRET), None)

    def adapter_status(self, target: Target, endpoint: str) -> dict:
        return self.endpoints.adapter_status(endpoint)

    def reload_adapter(self, target: Target, endpoint: str) -> dict:
        return self.endpoints.reload_adapter(endpoint, self.admin_token(target))

    def share(self, target: Target) -> ShareFiles:
        """The deployment's file share, through its data plane. The account's endpoint and
        key are fetched once and then kept in memory only (never stored), for a while: each
        resync looks at the adapter folder, and a listKeys each time would be a write."""
        azure = self._azure(target)
        cache_key = f"{azure.subscription_id}/{azure.resource_group}/{azure.storage_account}".lower()
        with self._lock:
            cached = self._share_access.get(cache_key)
        if cached is None or time.monotonic() - cached[2] > SHARE_KEY_SECONDS:
            clients = self.clients(azure.subscription_id)
            try:
                account = clients.storage.storage_accounts.get_properties(azure.resource_group, azure.storage_account).as_dict()
                key = self._account_key(clients, target)
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"opening the file share {azure.file_share}") from exc
            url = value_at(account, ("properties", "primaryEndpoints", "file"))
            if not url:
                raise TemporaryError(f"the storage account {azure.storage_account} has no file endpoint yet", reason="DependencyNotReady")
            cached = (url.rstrip("/"), key, time.monotonic())
            with self._lock:
                self._share_access[cache_key] = cached
        return ShareFiles(
            cached[0],
            azure.file_share or "",
            cached[1],
            ca_bundle=self.config.ca_bundle,
            on_auth_failure=lambda: self._forget_share_key(cache_key),
        )

    def _forget_share_key(self, cache_key: str) -> None:
        with self._lock:
            self._share_access.pop(cache_key, None)

    def _upload_wheel(self, clients: AzureClients, target: Target) -> None:
        wheel = self.wheel()
        path = f"{DIST_FOLDER}/{wheel.filename}"
        with self.share(target) as share:
            if not share.exists(path):
                share.upload(path, wheel.content)
                log.info("uploaded %s to the share of %s", path, target.name)

    # ----------------------------------------------------------------------- delete

    def delete(self, target: Target) -> bool:
        """Tear down what loraplane created, children first; adopted resources stay. Under
        ``detachOnDelete`` (and ``observe``) nothing in Azure is touched."""
        azure = self._azure(target)
        if azure.policy != "manage":
            self.journal.forget(target.uid)
            return True
        clients = self.clients(azure.subscription_id)
        busy = self._advance_operations(clients, target)
        if busy:
            return False
        resources = self._resources(target)
        observed = {r.kind: self._get(clients, target, r.kind) for r in resources}
        records = self.journal.records(target.uid)
        ours = {
            r.kind
            for r in resources
            if observed[r.kind] is not None
            and ((records.get(r.id.lower()) is not None and records[r.id.lower()].created) or _owned_by_tags(observed[r.kind], target.name))
        }
        group = next(r for r in resources if r.kind == "ResourceGroup")
        if "ResourceGroup" in ours and "ContainerApp" not in ours:
            # A group loraplane made goes in one operation, if nothing but ours is in it.
            others = self._foreign_resources(clients, target, resources, ours)
            if not others:
                self._delete_one(clients, target, group)
                return False
        started = False
        for resource in reversed(resources):
            if resource.kind not in ours or resource.kind == "ResourceGroup":
                continue
            # What depends on it goes first; adopted dependents stay, and need nothing of ours
            # but the environment storage and app, which are always ours to delete first.
            dependents = [k for k, deps in DEPENDS_ON.items() if resource.kind in deps and k in ours]
            if dependents:
                continue
            self._delete_one(clients, target, resource)
            started = True
        if started:
            return False
        if "ResourceGroup" in ours:
            left = self._foreign_resources(clients, target, resources, set())
            log.warning("leaving resource group %s: it holds resources loraplane did not create: %s", azure.resource_group, ", ".join(left))
        self.journal.forget(target.uid)
        return True

    def _foreign_resources(self, clients: AzureClients, target: Target, resources: list[DesiredResource], ours: set[str]) -> list[str]:
        mine = {r.id.lower() for r in resources if r.kind in ours}
        try:
            listed = list(clients.resources.resources.list_by_resource_group(self._azure(target).resource_group))
        except AzureError as exc:
            raise classify_azure_error(exc, doing="listing the resource group") from exc
        return [item.id for item in listed if (item.id or "").lower() not in mine]

    def _delete_one(self, clients: AzureClients, target: Target, resource: DesiredResource) -> None:
        azure = self._azure(target)
        rg, name = azure.resource_group, resource.name
        poller: LROPoller | None = None
        try:
            if resource.kind == "ResourceGroup":
                poller = clients.resources.resource_groups.begin_delete(rg)
            elif resource.kind == "StorageAccount":
                clients.storage.storage_accounts.delete(rg, name)
            elif resource.kind == "FileShare":
                clients.storage.file_shares.delete(rg, azure.storage_account, name)
            elif resource.kind == "Workspace":
                poller = clients.logs.workspaces.begin_delete(rg, name)
            elif resource.kind == "ManagedEnvironment":
                poller = clients.apps.managed_environments.begin_delete(rg, name)
            elif resource.kind == "EnvironmentStorage":
                clients.apps.managed_environments_storages.delete(rg, azure.environment, name)
            elif resource.kind == "ContainerApp":
                poller = clients.apps.container_apps.begin_delete(rg, name)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"deleting {resource.kind} {name}") from exc
        log.info("delete %s %s", resource.kind, name)
        self._started(target, resource.id, resource.kind, "delete", poller)

    def logs(self, target: Target, tail: int) -> str:
        azure = self._azure(target)
        return (
            f"the azure target does not fetch logs; read them with:\n"
            f"  az containerapp logs show --name {azure.app} --resource-group {azure.resource_group} --tail {tail}\n"
        )


def as_adopted(resource: DesiredResource) -> DesiredResource:
    """What loraplane holds an adopted resource to: what the deployment needs of it (an
    environment's GPU workload profile), not where it sends its logs, which stays its owner's
    choice (and so never points at a workspace loraplane may later delete)."""
    paths = tuple(p for p in resource.drift_paths if p[:2] != ("properties", "appLogsConfiguration"))
    return replace(resource, drift_paths=paths)


def adopted_body(resource: DesiredResource, observed: dict[str, Any]) -> dict[str, Any]:
    """The PUT body for a resource someone else made: what it has, with loraplane's fields
    (only those it compares) set; its tags stay theirs."""
    body = {k: copy.deepcopy(observed[k]) for k in ("location", "tags", "sku", "kind", "identity") if k in observed}
    properties = copy.deepcopy(observed.get("properties") or {})
    properties.pop("provisioningState", None)
    body["properties"] = properties
    for path in resource.drift_paths:
        wanted = value_at(resource.body, path)
        if wanted is None:
            continue
        if path[-1] in NAMED_SUBSET_LISTS:
            have = value_at(body, path) or []
            names = {item.get("name") for item in wanted}
            wanted = [item for item in have if item.get("name") not in names] + copy.deepcopy(wanted)
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = copy.deepcopy(wanted)
    return body


def _token_text(token: str) -> str:
    """A continuation token as text, the first response's body included (it is base64 within)."""
    try:
        text = base64.b64decode(token).decode("utf-8", errors="replace")
        content = json.loads(text).get("data", {}).get("response", {}).get("content") or ""
        return text + "\n" + base64.b64decode(content).decode("utf-8", errors="replace")
    except (ValueError, AttributeError):
        return token
