"""The simulator's HTTP face: Azure Resource Manager routes, and /_sim for tests.

Paths are matched as ARM matches them: provider and type segments case-insensitively, names
kept as first given. Every answer has ARM's shapes: 201 or 200 on PUT, Azure-AsyncOperation on
long-running operations, ``{"error": {"code", "message"}}`` bodies, Retry-After on 429.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import math
import random
import re
import shlex
import shutil
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from azuresim import rules
from azuresim.containers import ContainerRunner
from azuresim.files import FilesSimulator
from azuresim.state import (
    REGIONS,
    TYPES,
    ArmError,
    ArmLimits,
    Faults,
    SimState,
    utc_now,
)

GROUP_RESOURCES = "resources"
PAGE_SIZE = 100  # items per page of a list (ARM's pages vary by type; 100 is common)
STORAGE_ACCOUNTS = "microsoft.storage/storageaccounts"
FILE_SHARES = "microsoft.storage/storageaccounts/fileservices/shares"
CONTAINER_APPS = "microsoft.app/containerapps"
ENVIRONMENTS = "microsoft.app/managedenvironments"
WORKSPACES = "microsoft.operationalinsights/workspaces"
# Properties the REST specifications mark readOnly, by type: a PUT that carries them is not
# refused, and what it says of them is ignored (Azure computes them).
READ_ONLY: dict[str, tuple[tuple[str, ...], ...]] = {
    CONTAINER_APPS: (
        ("properties", "provisioningState"),
        ("properties", "runningStatus"),
        ("properties", "latestRevisionName"),
        ("properties", "latestReadyRevisionName"),
        ("properties", "latestRevisionFqdn"),
        ("properties", "customDomainVerificationId"),
        ("properties", "outboundIpAddresses"),
        ("properties", "eventStreamEndpoint"),
        ("properties", "configuration", "ingress", "fqdn"),
        ("identity", "principalId"),
        ("identity", "tenantId"),
    ),
    ENVIRONMENTS: (
        ("properties", "provisioningState"),
        ("properties", "deploymentErrors"),
        ("properties", "defaultDomain"),
        ("properties", "staticIp"),
        ("properties", "eventStreamEndpoint"),
        ("properties", "customDomainConfiguration", "customDomainVerificationId"),
        ("identity", "principalId"),
        ("identity", "tenantId"),
    ),
    STORAGE_ACCOUNTS: (
        ("properties", "provisioningState"),
        ("properties", "primaryEndpoints"),
        ("properties", "primaryLocation"),
        ("properties", "statusOfPrimary"),
        ("properties", "secondaryLocation"),
        ("properties", "statusOfSecondary"),
        ("properties", "creationTime"),
        ("properties", "keyCreationTime"),
        ("properties", "geoReplicationStats"),
        ("properties", "lastGeoFailoverTime"),
    ),
    FILE_SHARES: (("properties", "lastModifiedTime"), ("etag",)),
    WORKSPACES: (
        ("properties", "customerId"),
        ("properties", "provisioningState"),
        ("properties", "createdDate"),
        ("properties", "modifiedDate"),
    ),
}


@dataclass(frozen=True)
class Target:
    subscription: str
    resource_group: str | None
    type_name: str | None  # canonical, e.g. "Microsoft.App/containerApps"; None for a list
    resource_id: str | None  # the resource the request is about
    action: str | None  # listKeys, sharedKeys, listSecrets, activate …
    list_of: str | None = None  # a collection GET: the child type listed under resource_id
    namespace: str | None = None


def _canonical_type(lower: str) -> str | None:
    found = TYPES.get(lower)
    return found.name if found else None


def parse_path(path: str) -> Target:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise ArmError(404, "InvalidResourceType", f"no such ARM path: /{path}")
    subscription = parts[1]
    base = f"/subscriptions/{subscription}"
    if len(parts) == 2:
        raise ArmError(404, "InvalidResourceType", "subscription-level calls are not simulated")
    if parts[2].lower() == "providers":  # subscription-level provider calls
        return Target(
            subscription,
            None,
            None,
            base + "/" + "/".join(parts[2:]),
            "/".join(p.lower() for p in parts[5:]) or None,
            namespace=parts[3] if len(parts) > 3 else None,
        )
    if parts[2].lower() != "resourcegroups" or len(parts) < 4:
        raise ArmError(404, "InvalidResourceType", f"no such ARM path: /{path}")
    group = parts[3]
    group_id = f"{base}/resourceGroups/{group}"
    if len(parts) == 4:
        return Target(subscription, group, "resourceGroups", group_id, None)
    if len(parts) == 5 and parts[4].lower() == "resources":  # everything in the group
        return Target(subscription, group, "resourceGroups", group_id, None, list_of=GROUP_RESOURCES)
    if parts[4].lower() != "providers" or len(parts) < 7:
        raise ArmError(404, "InvalidResourceType", f"no such ARM path: /{path}")
    namespace = parts[5]
    rest = parts[6:]
    if len(rest) == 1:  # every resource of one type in the group: …/providers/Microsoft.App/containerApps
        listed = _canonical_type(f"{namespace}/{rest[0]}".lower())
        if listed is None:
            raise ArmError(404, "InvalidResourceType", f"the resource type of /{path} is not simulated")
        return Target(subscription, group, "resourceGroups", group_id, None, list_of=listed, namespace=namespace)
    types = [rest[i] for i in range(0, len(rest) - 1, 2)]
    resource_id = f"{group_id}/providers/{namespace}/" + "/".join(rest[: 2 * len(types)])
    trailing = rest[2 * len(types)] if len(rest) % 2 else None
    type_key = f"{namespace}/{'/'.join(types)}".lower()
    type_name = _canonical_type(type_key)
    if trailing is not None:
        child = _canonical_type(f"{type_key}/{trailing.lower()}")
        if child is not None:  # a collection, e.g. containerApps/{app}/revisions
            return Target(subscription, group, type_name, resource_id, None, list_of=child, namespace=namespace)
        if type_name is None:
            raise ArmError(404, "InvalidResourceType", f"the resource type of /{path} is not simulated")
        return Target(subscription, group, type_name, resource_id, trailing.lower(), namespace=namespace)
    if type_name is None:
        raise ArmError(404, "InvalidResourceType", f"the resource type of /{path} is not simulated")
    return Target(subscription, group, type_name, resource_id, None, namespace=namespace)


def _parent_id(resource_id: str, type_name: str) -> str:
    parent = TYPES[type_name.lower()].parent
    parts = resource_id.split("/")
    if parent == "resourceGroups":
        return "/".join(parts[:5])
    cut = 4 if type_name.lower().endswith("/fileservices/shares") else 2
    return "/".join(parts[:-cut])


def _fake_key(seed: str) -> str:
    return base64.b64encode(hashlib.sha256(seed.encode()).digest() * 2).decode()


def _suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=7))


def _deep_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _strip_read_only(type_name: str, resource: dict[str, Any]) -> None:
    for path in READ_ONLY.get(type_name.lower(), ()):
        node: Any = resource
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)


def _model_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return 0


class ArmSimulator:
    """Builds the FastAPI app over a SimState: ARM, and the Azure Files data plane of the
    storage accounts it holds (shares are folders under ``files_root``). With a
    ``runner``, a container app's active revision runs as a local process. With a
    ``standin_ingress`` instead (the simulator's own host:port), every app's ingress is the
    simulator itself, answering as a healthy replica that serves no adapter: for fleets of
    hundreds of apps, where a process each is out of the question (the benchmarks).

    Every write passes ``azuresim.rules`` first; a revision that is becoming active passes the
    checks a replica would fail at start (its volume cannot mount, its image cannot be pulled,
    the wheel its command installs is missing, or the model does not fit in its memory)."""

    def __init__(
        self, state: SimState, files_root: Path, runner: ContainerRunner | None = None, standin_ingress: Callable[[], str] | None = None
    ) -> None:
        self.state = state
        self.standin_ingress = standin_ingress
        self.secrets: dict[str, dict[str, str | None]] = {}  # container app id -> secret values
        self.storage_keys: dict[str, str] = {}  # environment storage id -> account key
        self.files = FilesSimulator(files_root, self._account_keys, self.state.count, self._shared_key_allowed)
        self.runner = runner
        self.replica_failures: dict[str, str] = {}  # container app id -> why its replica failed
        # Registry login server -> who has AcrPull on it: "system:<app id>" for an app's
        # system-assigned identity, else a user-assigned identity's resource id (lower case).
        self.acr_pull: dict[str, set[str]] = {}
        state.on_removed = self._removed
        state.on_revision_active = self._start_revision

    # ------------------------------------------------------------ storage and containers

    def _account(self, name: str) -> dict[str, Any] | None:
        with self.state.lock:
            for resource in self.state.resources.values():
                if resource["type"].lower() == STORAGE_ACCOUNTS and resource["name"] == name:
                    return resource
        return None

    def _account_keys(self, name: str) -> list[str]:
        account = self._account(name)
        return [_fake_key(account["id"] + "1"), _fake_key(account["id"] + "2")] if account else []

    def _shared_key_allowed(self, name: str) -> bool:
        """allowSharedKeyAccess false refuses every request signed with the account key
        (shared-key-authorization-prevent); absent, it is allowed."""
        account = self._account(name)
        return account is None or (account.get("properties") or {}).get("allowSharedKeyAccess") is not False

    def _share_folder_of(self, share: dict[str, Any]) -> Path:
        account = share["id"].split("/")[8]
        return self.files.share_folder(account, share["name"])

    def _removed(self, resource: dict[str, Any]) -> None:
        type_name = resource["type"].lower()
        if type_name == FILE_SHARES:
            shutil.rmtree(self._share_folder_of(resource), ignore_errors=True)
        elif type_name == STORAGE_ACCOUNTS:
            shutil.rmtree(self.files.root / resource["name"], ignore_errors=True)
        elif type_name == CONTAINER_APPS and self.runner is not None:
            self.runner.remove(resource["id"])

    def grant_acr_pull(self, server: str, principal: str) -> None:
        """AcrPull on ``server`` for ``principal``: 'system:<app id>' or a user-assigned
        identity's resource id."""
        with self.state.lock:
            self.acr_pull.setdefault(server.lower(), set()).add(principal.lower())

    def _start_revision(self, app: dict[str, Any]) -> str | None:
        """A revision is becoming active: what its replica would fail on at start, else run it
        (with a runner) with the shares its volumes name."""
        mounts, failure = self._mounts(app)
        failure = failure or self._image_pull_failure(app) or self._install_failure(app, mounts) or self._memory_failure(app, mounts)
        if failure is None and self.runner is not None:
            failure = self.runner.run(app, mounts, self.secrets.get(app["id"].lower(), {}))
        if failure is not None:
            self.replica_failures[app["id"].lower()] = failure
        else:
            self.replica_failures.pop(app["id"].lower(), None)
        return failure

    def _mounts(self, app: dict[str, Any]) -> tuple[dict[str, Path], str | None]:
        """Mount path -> the share folder behind it; or why a volume cannot mount (Container
        Apps mounts Azure Files over SMB with the account key: storage-mounts)."""
        properties = app["properties"]
        template = properties.get("template") or {}
        environment_id = properties.get("managedEnvironmentId") or properties.get("environmentId") or ""
        folders: dict[str, Path] = {}
        for volume in template.get("volumes") or []:
            if (volume.get("storageType") or "").lower() != "azurefile":
                continue
            storage = self.state.resources.get(f"{environment_id}/storages/{volume.get('storageName')}".lower())
            azure_file = ((storage or {}).get("properties") or {}).get("azureFile") or {}
            if not azure_file:
                return {}, f"volume {volume.get('name')!r}: environment storage {volume.get('storageName')!r} does not exist"
            account = azure_file.get("accountName", "")
            if not self._shared_key_allowed(account):
                return {}, (
                    f"volume {volume.get('name')!r} failed to mount: the storage account {account} does not permit key based "
                    "authentication (allowSharedKeyAccess is false), and Azure Files is mounted with the account key"
                )
            folders[volume["name"]] = self.files.share_folder(account, azure_file.get("shareName", ""))
        mounts = {
            mount["mountPath"]: folders[mount["volumeName"]]
            for container in template.get("containers") or []
            for mount in container.get("volumeMounts") or []
            if mount.get("volumeName") in folders
        }
        return mounts, None

    def _image_pull_failure(self, app: dict[str, Any]) -> str | None:
        """An image in an Azure Container Registry is pulled with the registry entry's managed
        identity, which needs AcrPull on it (containers#managed-identity-with-azure-container-registry)."""
        properties = app["properties"]
        registries = {str(r.get("server", "")).lower(): r for r in (properties.get("configuration") or {}).get("registries") or []}
        for container in (properties.get("template") or {}).get("containers") or []:
            image = str(container.get("image", ""))
            server = image.split("/", 1)[0].lower()
            if not server.endswith(".azurecr.io"):
                continue
            registry = registries.get(server)
            identity = str((registry or {}).get("identity", "")).lower()
            principal = f"system:{app['id'].lower()}" if identity == "system" else identity
            if registry is None or not identity or principal not in self.acr_pull.get(server, set()):
                who = (
                    "no credentials" if registry is None or not identity else f"the identity {identity!r}, which has no AcrPull role on it"
                )
                return f'Failed to pull image "{image}": unauthorized: authentication required ({server} was reached with {who})'
        return None

    @staticmethod
    def _install_failure(app: dict[str, Any], mounts: dict[str, Path]) -> str | None:
        """The default image's command installs a wheel from the share: without it, pip fails
        and so does the replica."""
        for container in (app["properties"].get("template") or {}).get("containers") or []:
            command = " ".join([*(container.get("command") or []), *(container.get("args") or [])])
            for wheel in re.findall(r"(/\S+?\.whl)", command):
                if "*" in wheel:
                    continue
                local = Path(_remap(wheel, mounts))
                if not local.is_file():
                    return f"pip: {shlex.quote(wheel)} does not exist on the share"
        return None

    @staticmethod
    def _memory_failure(app: dict[str, Any], mounts: dict[str, Path]) -> str | None:
        """A replica that loads the model named by LORAPLANE_MODEL_PATH needs its bytes in
        memory, and some room besides: less, and it is killed as it loads (exit code 137)."""
        for container in (app["properties"].get("template") or {}).get("containers") or []:
            env = {e.get("name"): e.get("value") for e in container.get("env") or []}
            share_root, model = env.get("LORAPLANE_SHARE_ROOT"), env.get("LORAPLANE_MODEL_PATH")
            if not share_root or not model:
                continue
            size = rules.container_size(container)
            if isinstance(size, ArmError):
                continue
            needed = _model_bytes(Path(_remap(f"{share_root}/{model}", mounts))) / 2**30 + rules.RUNTIME_OVERHEAD_GIB
            if size[1] < needed:
                return (
                    f"Container '{container.get('name')}' was terminated with exit code 137 (OOMKilled): it needs about "
                    f"{needed:.2f}Gi to load {model}, and was given {size[1]:g}Gi"
                )
        return None

    # ------------------------------------------------------------------------ the app

    def app(self) -> FastAPI:
        app = FastAPI(title="loraplane Azure simulator", docs_url=None, redoc_url=None, openapi_url=None)

        if self.standin_ingress is not None:

            @app.get("/readyz")
            def standin_ready() -> dict[str, str]:
                return {"status": "ready", "detail": "a stand-in replica of the Azure simulator"}

            @app.get("/v1/adapter")
            def standin_adapter() -> dict[str, Any]:
                return {"version": None, "path": None, "loaded_at": None, "base_only": True, "last_error": None, "draining": []}

        @app.get("/_sim/calls")
        def calls() -> dict[str, Any]:
            return self.state.call_counts()

        @app.get("/_sim/calls/subscriptions")
        def calls_by_subscription() -> dict[str, Any]:
            return self.state.subscription_counts()

        @app.post("/_sim/calls/reset")
        def reset_calls() -> dict[str, str]:
            self.state.reset_calls()
            return {"status": "reset"}

        @app.post("/_sim/faults")
        async def faults(request: Request) -> JSONResponse:
            try:
                body = await request.json()
                self.state.set_faults(
                    Faults(
                        rate=float(body.get("rate", 0.0)),
                        kinds=tuple(body.get("kinds", ("throttle", "server_error"))),
                        retry_after_seconds=int(body.get("retryAfterSeconds", 1)),
                        slow_seconds=float(body.get("slowSeconds", 0.5)),
                        seed=body.get("seed"),
                    )
                )
            except (ValueError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": {"code": "InvalidFaults", "message": str(exc)}}, status_code=400)
            return JSONResponse({"status": "set"})

        @app.post("/_sim/acr-pull")
        async def acr_pull(request: Request) -> JSONResponse:
            """Grant AcrPull: {"server": "x.azurecr.io", "principal": "system:<app id>" or an identity id}."""
            try:
                body = await request.json()
                self.grant_acr_pull(str(body["server"]), str(body["principal"]))
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": {"code": "InvalidGrant", "message": str(exc)}}, status_code=400)
            return JSONResponse({"status": "granted"})

        @app.api_route("/subscriptions/{path:path}", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"])
        async def arm(path: str, request: Request) -> Response:
            try:
                target = parse_path("subscriptions/" + path)
                # A list's pages are counted apart from reads of one resource ("... (list)").
                label = (
                    f"{target.list_of} (list)"
                    if target.list_of
                    else target.type_name or ("operations" if "operation" in path.lower() else "provider")
                )
                self.state.count(request.method, label, target.subscription)
                if self.state.limits is not None:
                    wait = self.state.limits.take(target.subscription, request.method)
                    if wait is not None:
                        self.state.count("429", label, target.subscription)
                        seconds = max(1, math.ceil(wait))
                        raise ArmError(
                            429,
                            "TooManyRequests",
                            f"the subscription's {ArmLimits.kind_of(request.method)} budget is spent; retry after {seconds} seconds",
                            {"Retry-After": str(seconds)},
                        )
                fault = self.state.draw_fault(request.method)
                if fault == "slow":
                    await asyncio.sleep(self.state.faults.slow_seconds)
                elif fault == "throttle":
                    seconds = self.state.faults.retry_after_seconds
                    raise ArmError(
                        429, "TooManyRequests", f"the request was throttled; retry after {seconds} seconds", {"Retry-After": str(seconds)}
                    )
                elif fault == "server_error":
                    raise ArmError(503, "ServiceUnavailable", "the service is temporarily unavailable")
                elif fault == "refuse" and request.method in ("PUT", "PATCH"):
                    raise ArmError(400, "UnheardOfRefusal", "The request was refused for a reason this client has never met.")
                body = None
                if request.method in ("PUT", "PATCH") or (request.method == "POST" and await request.body()):
                    try:
                        body = await request.json()
                    except ValueError as exc:
                        raise ArmError(400, "InvalidRequestContent", f"the request body is not valid JSON: {exc}") from exc
                if request.method in ("PUT", "PATCH"):
                    self.state.written.append((request.method, "/subscriptions/" + path, copy.deepcopy(body)))
                return self.handle(request, target, body, fault)
            except ArmError as exc:
                return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

        @app.api_route("/{account}/{rest:path}", methods=["GET", "HEAD", "PUT", "DELETE"])
        async def files(account: str, rest: str, request: Request) -> Response:
            return await self.files.handle(request, account, rest)

        return app

    # ----------------------------------------------------------------------- dispatch

    def handle(self, request: Request, target: Target, body: Any, fault: str | None) -> Response:
        method = request.method
        base = str(request.base_url).rstrip("/")
        api_version = request.query_params.get("api-version", "")
        if target.type_name is None:
            return self._provider_call(method, target, base, api_version)
        if target.list_of == GROUP_RESOURCES and method == "GET":
            return JSONResponse({"value": self._group_resources(target), "nextLink": None})
        if target.list_of is not None and method == "GET":
            # One more than a page: whether a next page exists, without copying the whole list.
            start = self._skip(request)
            found = self.state.children(target.resource_id or "", target.list_of, start=start, count=PAGE_SIZE + 1)
            return self._page(request, start, [self._visible(r) for r in found])
        if target.action is not None:
            return self._action(method, target)
        if method == "GET":
            return JSONResponse(self._visible(self._existing(target)))
        if method == "HEAD":  # check_existence
            return Response(status_code=204 if self.state.get(target.resource_id or "") else 404)
        if method == "PUT":
            return self._put(target, body, base, api_version, fault)
        if method == "PATCH":
            return self._patch(target, body, base, api_version, fault)
        if method == "DELETE":
            return self._delete(target, base, api_version, fault)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on {target.type_name}")

    @staticmethod
    def _skip(request: Request) -> int:
        """Where a page starts: the $skiptoken of the nextLink before it."""
        try:
            return max(0, int(request.query_params.get("$skiptoken", "0")))
        except ValueError as exc:
            raise ArmError(400, "InvalidSkipToken", "the $skiptoken is not one this service issued") from exc

    @staticmethod
    def _page(request: Request, start: int, items: list[dict[str, Any]]) -> JSONResponse:
        """One page of a list, as ARM pages them (``items`` from ``start``: the page and one
        more, if there is one): a nextLink carries on from where it ends."""
        next_link = None
        if len(items) > PAGE_SIZE:
            next_link = str(request.url.include_query_params(**{"$skiptoken": str(start + PAGE_SIZE)}))
        return JSONResponse({"value": items[:PAGE_SIZE], "nextLink": next_link})

    def _group_resources(self, target: Target) -> list[dict[str, Any]]:
        """GET …/resourceGroups/{g}/resources: the group's top-level resources, generic shape."""
        self._existing(target)
        prefix = (target.resource_id or "").lower() + "/providers/"
        with self.state.lock:
            found = [r for key, r in sorted(self.state.resources.items()) if key.startswith(prefix) and key[len(prefix) :].count("/") == 2]
        return [{k: r[k] for k in ("id", "name", "type", "location", "tags") if k in r} for r in found]

    def _existing(self, target: Target) -> dict[str, Any]:
        assert target.resource_id is not None
        found = self.state.get(target.resource_id)
        if found is not None:
            return found
        if self.state.get(f"/subscriptions/{target.subscription}/resourceGroups/{target.resource_group}") is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{target.resource_group}' could not be found.")
        name = target.resource_id.rsplit("/", 1)[-1]
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{target.type_name}/{name}' under resource group '{target.resource_group}' was not found.",
        )

    def _visible(self, resource: dict[str, Any]) -> dict[str, Any]:
        """What GET shows: secret values and account keys are never read back (as in Azure)."""
        shown = copy.deepcopy(resource)
        properties = shown.get("properties", {})
        for secret in properties.get("configuration", {}).get("secrets", []) or []:
            secret.pop("value", None)
        if isinstance(properties.get("azureFile"), dict):
            properties["azureFile"].pop("accountKey", None)
        log_analytics = (properties.get("appLogsConfiguration") or {}).get("logAnalyticsConfiguration")
        if isinstance(log_analytics, dict):
            log_analytics.pop("sharedKey", None)
        custom_domain = properties.get("customDomainConfiguration")
        if isinstance(custom_domain, dict):
            custom_domain.pop("certificatePassword", None)
            custom_domain.pop("certificateValue", None)
        return shown

    # ---------------------------------------------------------------------------- PUT

    def _put(self, target: Target, body: Any, base: str, api_version: str, fault: str | None) -> Response:
        assert target.resource_id is not None and target.type_name is not None
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "the request body must be a JSON object")
        kind = TYPES[target.type_name.lower()]
        if kind.parent is not None:
            parent_id = _parent_id(target.resource_id, target.type_name)
            if self.state.get(parent_id) is None:
                self._existing(
                    Target(target.subscription, target.resource_group, "resourceGroups", parent_id.split("/providers/")[0], None)
                )
                raise ArmError(
                    404,
                    "ParentResourceNotFound",
                    f"Can not perform requested operation on nested resource. Parent resource '{parent_id.rsplit('/', 1)[-1]}' not found.",
                )
        location = body.get("location")
        if kind.has_location:
            if not isinstance(location, str) or not location:
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            if location.replace(" ", "").lower() not in REGIONS:
                raise ArmError(
                    400,
                    "LocationNotAvailableForResourceType",
                    f"The provided location '{location}' is not available for resource type '{target.type_name}'. List of available regions: {', '.join(sorted(REGIONS))}.",
                )
        if fault == "quota" and kind.long_running:
            raise ArmError(
                409,
                "MaxRegionalQuotaExceeded",
                f"Operation could not be completed: managed environments in {location} cannot have more than 1 SubscriptionNCA100Gpus.",
            )
        existing = self.state.get(target.resource_id)
        resource: dict[str, Any] = {
            "id": existing["id"] if existing else target.resource_id,
            "name": target.resource_id.rsplit("/", 1)[-1],
            "type": target.type_name,
        }
        if kind.has_location:
            resource["location"] = location
            resource["tags"] = {}
        for key in ("tags", "sku", "kind", "identity", "extendedLocation", "managedBy"):
            if key in body:
                resource[key] = copy.deepcopy(body[key])
        properties = copy.deepcopy(body.get("properties") or {})
        if not isinstance(properties, dict):
            raise ArmError(400, "InvalidRequestContent", "properties must be a JSON object")
        resource["properties"] = properties
        _strip_read_only(target.type_name, resource)
        if target.type_name.lower() == CONTAINER_APPS:
            environment_id = properties.get("managedEnvironmentId") or properties.get("environmentId")
            if environment_id and self.state.get(environment_id) is None:
                raise ArmError(400, "ManagedEnvironmentNotFound", f"the managed environment '{environment_id}' was not found")
        rules.check(rules.Write(target.type_name.lower(), target.resource_id, resource["name"], resource, existing, self.state.get))
        self._server_fields(target, resource, existing, base)
        if kind.long_running:
            # A container app has no "Updating": its ContainerAppProvisioningState is InProgress,
            # Succeeded, Failed, Canceled or Deleting (the Microsoft.App OpenAPI document).
            busy = "InProgress" if existing is None or target.type_name.lower() == CONTAINER_APPS else "Updating"
            properties["provisioningState"] = busy
            self.state.put(target.resource_id, resource)
            failure = (
                ArmError(500, "ProvisioningFailed", f"provisioning {target.type_name} '{resource['name']}' failed")
                if fault == "failed_operation"
                else None
            )
            operation = self.state.start_operation(target.resource_id, "put", failure)
            url = self._operation_url(base, target, operation.id, api_version)
            if kind.put_style == "location":
                return Response(
                    status_code=202, headers={"Location": url.replace("/operationStatuses/", "/operationResults/"), "Retry-After": "0"}
                )
            headers = {"Azure-AsyncOperation": url}
            return JSONResponse(self._visible(resource), status_code=200 if existing else 201, headers=headers)
        properties["provisioningState"] = "Succeeded"
        self.state.put(target.resource_id, resource)
        return JSONResponse(self._visible(resource), status_code=200 if existing else 201)

    def _server_fields(self, target: Target, resource: dict[str, Any], existing: dict[str, Any] | None, base: str) -> None:
        """What Azure fills in itself, kept stable across updates: every property Microsoft's
        example responses carry that the request does not."""
        properties = resource["properties"]
        old = (existing or {}).get("properties", {})
        type_name = target.type_name.lower() if target.type_name else ""
        now = utc_now().isoformat()
        if type_name == STORAGE_ACCOUNTS:
            self._account_fields(resource, old, base, now)
        elif type_name == WORKSPACES:
            properties["customerId"] = old.get("customerId") or str(uuid.uuid4())
            properties.setdefault("sku", {"name": "PerGB2018"})
            properties.setdefault("retentionInDays", 30)
            properties.setdefault("publicNetworkAccessForIngestion", "Enabled")
            properties.setdefault("publicNetworkAccessForQuery", "Enabled")
            properties.setdefault("features", {"enableLogAccessUsingOnlyResourcePermissions": True})
            properties["createdDate"] = old.get("createdDate") or now
            properties["modifiedDate"] = now
        elif type_name == ENVIRONMENTS:
            self._environment_fields(resource, existing)
        elif type_name == FILE_SHARES:
            self.files.share_folder(target.resource_id.split("/")[8], resource["name"]).mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            properties.setdefault("shareQuota", old.get("shareQuota", 102400))
            properties["lastModifiedTime"] = now
            resource["etag"] = f'"0x{uuid.uuid4().hex[:15].upper()}"'
        elif type_name == "microsoft.app/managedenvironments/storages":
            key = (properties.get("azureFile") or {}).get("accountKey")
            if key:
                self.storage_keys[(target.resource_id or "").lower()] = key
        elif type_name == CONTAINER_APPS:
            self._container_app_fields(resource, existing)

    def _account_fields(self, resource: dict[str, Any], old: dict[str, Any], base: str, now: str) -> None:
        properties, account = resource["properties"], resource["name"]
        location = str(resource.get("location", "")).replace(" ", "").lower()
        endpoint = f"{base}/{account}/"
        properties["primaryEndpoints"] = {
            "blob": endpoint,
            "dfs": endpoint,
            "file": endpoint,
            "queue": endpoint,
            "table": endpoint,
            "web": endpoint,
        }
        properties["primaryLocation"], properties["statusOfPrimary"] = location, "available"
        if "grs" in str((resource.get("sku") or {}).get("name", "")).lower():  # geo-redundant: a paired region
            properties["secondaryLocation"], properties["statusOfSecondary"] = f"{location}2", "available"
            properties.setdefault("geoPriorityReplicationStatus", {"isBlobEnabled": False})
            properties["geoReplicationStats"] = {"status": "Live", "lastSyncTime": now, "canFailover": True}
        properties["creationTime"] = old.get("creationTime") or now
        properties["keyCreationTime"] = old.get("keyCreationTime") or {"key1": now, "key2": now}
        properties.setdefault("supportsHttpsTrafficOnly", True)
        properties.setdefault("isHnsEnabled", False)
        properties.setdefault("minimumTlsVersion", "TLS1_2")
        properties.setdefault("allowBlobPublicAccess", False)
        properties.setdefault("allowCrossTenantDelegationSas", False)
        properties.setdefault("accessTier", "Hot")
        properties.setdefault("accountMigrationInProgress", False)
        properties.setdefault("isSkuConversionBlocked", False)
        properties.setdefault(
            "networkAcls", {"bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [], "defaultAction": "Allow"}
        )
        properties.setdefault(
            "encryption",
            {
                "services": {
                    "blob": {"enabled": True, "keyType": "Account", "lastEnabledTime": properties["creationTime"]},
                    "file": {"enabled": True, "keyType": "Account", "lastEnabledTime": properties["creationTime"]},
                },
                "keySource": "Microsoft.Storage",
            },
        )

    def _environment_fields(self, resource: dict[str, Any], existing: dict[str, Any] | None) -> None:
        properties, old = resource["properties"], (existing or {}).get("properties", {})
        location = str(resource.get("location", "")).replace(" ", "").lower()
        properties["defaultDomain"] = old.get("defaultDomain") or f"{_suffix()}.{location}.azurecontainerapps.io"
        properties["staticIp"] = old.get("staticIp") or "20.1.2.3"
        properties["eventStreamEndpoint"] = (
            f"https://{location}.azurecontainerapps.dev/subscriptions/{resource['id'].split('/')[2]}/managedEnvironments/{resource['name']}/eventstream"
        )
        properties.setdefault(
            "workloadProfiles", old.get("workloadProfiles") or [{"name": "Consumption", "workloadProfileType": "Consumption"}]
        )
        properties.setdefault("zoneRedundant", old.get("zoneRedundant", False))
        properties.setdefault(
            "infrastructureResourceGroup",
            old.get("infrastructureResourceGroup") or f"ME_{resource['name']}_{resource['id'].split('/')[4]}_{location}",
        )
        properties.setdefault("environmentMode", "WorkloadProfiles")
        custom_domain = properties.setdefault("customDomainConfiguration", {})
        custom_domain["customDomainVerificationId"] = (old.get("customDomainConfiguration") or {}).get(
            "customDomainVerificationId"
        ) or uuid.uuid4().hex.upper()
        properties.setdefault("daprConfiguration", {"version": "1.12.5"})
        properties.setdefault("kedaConfiguration", {"version": "2.17.2"})
        properties.setdefault("peerAuthentication", {"mtls": {"enabled": False}})
        properties.setdefault("peerTrafficConfiguration", {"encryption": {"enabled": False}})
        properties.setdefault("ingressConfiguration", {"workloadProfileName": "Consumption"})
        properties.setdefault("vnetConfiguration", old.get("vnetConfiguration") or {"internal": False})
        self._identity_fields(resource, existing)

    @staticmethod
    def _identity_fields(resource: dict[str, Any], existing: dict[str, Any] | None) -> None:
        """A system-assigned identity gets a principal (kept across updates); user-assigned
        ones show their principal and client ids."""
        identity = resource.get("identity")
        if not isinstance(identity, dict):
            return
        before = (existing or {}).get("identity") or {}
        if "systemassigned" in str(identity.get("type", "")).replace(" ", "").lower():
            identity["principalId"] = before.get("principalId") or str(uuid.uuid4())
            identity["tenantId"] = before.get("tenantId") or "00000000-0000-0000-0000-000000000001"
        for key, value in list((identity.get("userAssignedIdentities") or {}).items()):
            known = ((before.get("userAssignedIdentities") or {}).get(key)) or {}
            identity["userAssignedIdentities"][key] = {
                "principalId": known.get("principalId") or str(uuid.uuid4()),
                "clientId": known.get("clientId") or str(uuid.uuid4()),
                **(value or {}),
            }

    def _container_app_fields(self, resource: dict[str, Any], existing: dict[str, Any] | None) -> None:
        properties = resource["properties"]
        old = (existing or {}).get("properties", {})
        self._identity_fields(resource, existing)
        secrets: dict[str, str | None] = {s["name"]: s.get("value") for s in properties.get("configuration", {}).get("secrets", []) or []}
        known = self.secrets.get(resource["id"].lower(), {})
        self.secrets[resource["id"].lower()] = {name: value if value is not None else known.get(name) for name, value in secrets.items()}
        environment_id = properties.get("managedEnvironmentId") or properties.get("environmentId")
        if environment_id:
            properties["managedEnvironmentId"] = properties.get("managedEnvironmentId") or environment_id
        environment = self.state.get(environment_id) if environment_id else None
        domain = (
            environment["properties"].get("defaultDomain", "example.azurecontainerapps.io")
            if environment
            else "example.azurecontainerapps.io"
        )
        if environment is not None and ((environment.get("properties") or {}).get("workloadProfiles")):
            properties.setdefault("workloadProfileName", "Consumption")
        ingress = properties.get("configuration", {}).get("ingress")
        if isinstance(ingress, dict):
            # Where the runner's replicas answer, when it runs them: no DNS for ACA here. An
            # internal app has its internal name, reachable only from inside the environment
            # (ingress-overview): from here, as from anywhere outside, not at all.
            if not ingress.get("external", False):
                ingress["fqdn"] = f"{resource['name']}.internal.{domain}"
            elif self.runner is not None:
                ingress["fqdn"] = f"127.0.0.1:{self.runner.port_for(resource['id'])}"
            elif self.standin_ingress is not None:
                ingress["fqdn"] = self.standin_ingress()
            else:
                ingress["fqdn"] = f"{resource['name']}.{domain}"
        properties["outboundIpAddresses"] = ["20.1.2.3"]
        properties["eventStreamEndpoint"] = (
            f"https://{domain}/subscriptions/{resource['id'].split('/')[2]}/containerApps/{resource['name']}/eventstream"
        )
        properties["runningStatus"] = "Running"
        properties["latestReadyRevisionName"] = old.get("latestReadyRevisionName")
        template = properties.get("template")
        if existing is None or template != old.get("template"):
            # revisions: a revision-scope change (the template) makes a revision, named
            # <app>--<revisionSuffix> (a suffix of the simulator's choosing when none is given).
            suffix = (template or {}).get("revisionSuffix") or _suffix()
            name = f"{resource['name']}--{suffix}"
            revision_id = f"{resource['id']}/revisions/{name}"
            multiple = str(properties.get("configuration", {}).get("activeRevisionsMode", "Single")).lower() == "multiple"
            for revision in self.state.children(resource["id"], "Microsoft.App/containerApps/revisions"):
                if not multiple:  # Single: the new revision replaces the active one
                    revision["properties"]["active"] = False
                    self.state.put(revision["id"], revision)
            fqdn = f"127.0.0.1:{self.runner.revision_port(revision_id)}" if self.runner is not None else f"{name}.{domain}"
            self.state.put(
                revision_id,
                {
                    "id": revision_id,
                    "name": name,
                    "type": "Microsoft.App/containerApps/revisions",
                    "properties": {
                        "createdTime": utc_now().isoformat(),
                        "lastActiveTime": utc_now().isoformat(),
                        "active": True,
                        "fqdn": fqdn,
                        "template": copy.deepcopy(template),
                        "replicas": ((template or {}).get("scale") or {}).get("minReplicas", 0),
                        "trafficWeight": 0,
                        "provisioningState": "Provisioning",
                        "runningState": "Activating",
                        "healthState": "None",
                    },
                },
            )
            properties["latestRevisionName"] = name
            properties["latestRevisionFqdn"] = fqdn
        else:
            properties["latestRevisionName"] = old.get("latestRevisionName")
            properties["latestRevisionFqdn"] = old.get("latestRevisionFqdn")
        if properties.get("latestReadyRevisionName") is None:
            properties.pop("latestReadyRevisionName")
        self._weigh_revisions(resource)

    def _weigh_revisions(self, app: dict[str, Any]) -> None:
        """Each revision's trafficWeight, as the app's ingress.traffic gives it (traffic-splitting):
        by name, or the newest revision's (latestRevision); with no traffic given, or in single
        revision mode, the newest takes it all."""
        properties = app["properties"]
        latest = properties.get("latestRevisionName")
        configuration = properties.get("configuration") or {}
        traffic = (configuration.get("ingress") or {}).get("traffic") or []
        multiple = str(configuration.get("activeRevisionsMode", "Single")).lower() == "multiple"
        weights: dict[str, int] = {}
        if multiple and traffic:
            for entry in traffic:
                name = latest if entry.get("latestRevision") else entry.get("revisionName")
                if name:
                    weights[str(name).lower()] = weights.get(str(name).lower(), 0) + int(entry.get("weight") or 0)
        elif latest:
            weights[str(latest).lower()] = 100
        for revision in self.state.children(app["id"], "Microsoft.App/containerApps/revisions"):
            weight = weights.get(revision["name"].lower(), 0) if revision["properties"].get("active") else 0
            if revision["properties"].get("trafficWeight") != weight:
                revision["properties"]["trafficWeight"] = weight
                self.state.put(revision["id"], revision)

    def set_replicas(self, revision_id: str, count: int) -> None:
        """A revision's replicas as they run (the runner starts and stops them: scale rules)."""
        with self.state.lock:
            revision = self.state.resources.get(revision_id.lower())
            if revision is not None and revision["properties"].get("replicas") != count:
                revision["properties"]["replicas"] = count
                self.state.put(revision["id"], revision)

    def routes(self, app_id: str) -> list[tuple[str, int]]:
        """What the app's ingress splits among its active revisions: (name, weight)."""
        return [
            (r["name"], int(r["properties"].get("trafficWeight") or 0))
            for r in self.state.children(app_id, "Microsoft.App/containerApps/revisions")
            if r["properties"].get("active")
        ]

    # -------------------------------------------------------------------------- PATCH

    def _patch(self, target: Target, body: Any, base: str, api_version: str, fault: str | None) -> Response:
        if target.type_name not in ("Microsoft.App/containerApps", "Microsoft.App/managedEnvironments"):
            raise ArmError(405, "MethodNotAllowed", f"PATCH is not simulated for {target.type_name}")
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "the request body must be a JSON object")
        existing = self._existing(target)
        merged = _deep_merge(copy.deepcopy(existing), {k: v for k, v in body.items() if k in ("tags", "properties", "identity")})
        merged.setdefault("location", existing.get("location"))
        self._put(target, merged, base, api_version, fault)
        operation = self.state.start_operation(target.resource_id or "", "put")
        return Response(status_code=202, headers={"Azure-AsyncOperation": self._operation_url(base, target, operation.id, api_version)})

    # ------------------------------------------------------------------------- DELETE

    def _delete(self, target: Target, base: str, api_version: str, fault: str | None) -> Response:
        assert target.resource_id is not None and target.type_name is not None
        if self.state.get(target.resource_id) is None:
            return Response(status_code=204)
        kind = TYPES[target.type_name.lower()]
        if kind.long_running or target.type_name == "resourceGroups":
            failure = ArmError(500, "DeletionFailed", "deleting the resource failed") if fault == "failed_operation" else None
            operation = self.state.start_operation(target.resource_id, "delete", failure)
            url = self._operation_url(base, target, operation.id, api_version)
            headers = {"Location": url.replace("/operationStatuses/", "/operationResults/")}
            if target.type_name != "resourceGroups":
                headers["Azure-AsyncOperation"] = url
            return Response(status_code=202, headers=headers)
        self.state.remove(target.resource_id)
        return Response(status_code=200)

    # ------------------------------------------------------------------------ actions

    def _action(self, method: str, target: Target) -> Response:
        resource = self._existing(target)
        action, type_name = target.action, (target.type_name or "").lower()
        if method == "POST" and action == "listkeys" and type_name == STORAGE_ACCOUNTS:
            return JSONResponse(
                {
                    "keys": [
                        {
                            "keyName": "key1",
                            "value": _fake_key(resource["id"] + "1"),
                            "permissions": "FULL",
                            "creationTime": utc_now().isoformat(),
                        },
                        {
                            "keyName": "key2",
                            "value": _fake_key(resource["id"] + "2"),
                            "permissions": "FULL",
                            "creationTime": utc_now().isoformat(),
                        },
                    ]
                }
            )
        if method == "POST" and action == "sharedkeys" and type_name == WORKSPACES:
            return JSONResponse(
                {"primarySharedKey": _fake_key(resource["id"] + "p"), "secondarySharedKey": _fake_key(resource["id"] + "s")}
            )
        if method == "POST" and action == "listsecrets" and type_name == CONTAINER_APPS:
            values = self.secrets.get(resource["id"].lower(), {})
            return JSONResponse({"value": [{"name": name, "value": value} for name, value in values.items()]})
        if method == "POST" and action in ("activate", "deactivate", "restart") and type_name == "microsoft.app/containerapps/revisions":
            if action == "restart":
                self.state.restart_revision(resource["id"])
                return Response(status_code=200)
            resource["properties"]["active"] = action == "activate"
            resource["properties"]["lastActiveTime"] = utc_now().isoformat()
            self.state.put(resource["id"], resource)
            if action == "deactivate" and self.runner is not None:
                self.runner.deactivate(resource["id"])  # revisions-manage: deactivation stops its replicas
            app = self.state.get(resource["id"].lower().rsplit("/revisions/", 1)[0])
            if app is not None:
                self._weigh_revisions(app)
            return Response(status_code=200)
        if method == "GET" and action == "replicas" and type_name == "microsoft.app/containerapps/revisions":
            count = int(resource["properties"].get("replicas") or 0) if resource["properties"].get("active") else 0
            containers = ((resource["properties"].get("template") or {}).get("containers")) or []
            return JSONResponse(
                {
                    "value": [
                        {
                            "id": f"{resource['id']}/replicas/{resource['name']}-{index}",
                            "name": f"{resource['name']}-{index}",
                            "type": "Microsoft.App/containerApps/revisions/replicas",
                            "properties": {
                                "createdTime": resource["properties"].get("createdTime"),
                                "runningState": "Running",
                                "runningStateDetails": "",
                                "containers": [
                                    {"name": c.get("name"), "ready": True, "started": True, "restartCount": 0} for c in containers
                                ],
                                "initContainers": [],
                            },
                        }
                        for index in range(count)
                    ]
                }
            )
        if method == "GET" and action == "workloadprofilestates" and type_name == ENVIRONMENTS:
            return JSONResponse(
                {
                    "value": [
                        {
                            "id": f"{resource['id']}/workloadProfileStates/{p.get('name')}",
                            "name": p.get("name"),
                            "type": "Microsoft.App/managedEnvironments/workloadProfileStates",
                            "properties": {
                                "minimumCount": p.get("minimumCount", 0),
                                "maximumCount": p.get("maximumCount", 1),
                                "currentCount": 0,
                            },
                        }
                        for p in resource["properties"].get("workloadProfiles") or []
                    ]
                }
            )
        raise ArmError(404, "InvalidResourceType", f"{method} {target.action} is not simulated for {target.type_name}")

    # --------------------------------------------------------- subscription-level calls

    def _provider_call(self, method: str, target: Target, base: str, api_version: str) -> Response:
        parts = (target.resource_id or "").split("/")
        lowered = [p.lower() for p in parts]
        if method == "GET" and ("operationstatuses" in lowered or "operationresults" in lowered):
            return self._operation_status(parts[-1], result="operationresults" in lowered)
        if method == "GET" and lowered[-1:] == ["availablemanagedenvironmentsworkloadprofiletypes"]:
            location = parts[-2]
            region = rules.region_of(location)
            if region not in REGIONS:
                raise ArmError(404, "LocationNotFound", f"the location '{location}' is not known")
            return JSONResponse(
                {
                    "value": [
                        {
                            "id": f"/subscriptions/{target.subscription}/providers/Microsoft.App/locations/{location}/availableManagedEnvironmentsWorkloadProfileTypes/{name}",
                            "name": name,
                            "location": location,
                            "type": "Microsoft.App/locations/availableManagedEnvironmentsWorkloadProfileTypes",
                            "properties": {
                                "category": kind.category,
                                "cores": kind.cores,
                                "memoryGiB": kind.memory_gib,
                                "gpus": 1 if "GPU" in kind.category else 0,
                                "displayName": name,
                                "applicability": "LocationDefault",
                            },
                        }
                        for name, kind in rules.PROFILE_TYPES.items()
                        if kind.regions is None or region in kind.regions
                    ]
                }
            )
        raise ArmError(404, "InvalidResourceType", f"{method} {target.resource_id} is not simulated")

    def _operation_url(self, base: str, target: Target, operation_id: str, api_version: str) -> str:
        namespace = target.namespace or "Microsoft.Resources"
        return f"{base}/subscriptions/{target.subscription}/providers/{namespace}/locations/simulated/operationStatuses/{operation_id}?api-version={api_version}"

    def _operation_status(self, operation_id: str, *, result: bool) -> Response:
        operation = self.state.operation(operation_id)
        if operation is None:
            raise ArmError(404, "OperationNotFound", f"no operation {operation_id}")
        if result:  # Location-style polling: 202 until done, then 200 (or the failure)
            if not operation.finished:
                return Response(status_code=202, headers={"Retry-After": "0"})
            if operation.fail is not None:
                return JSONResponse(operation.fail.body(), status_code=operation.fail.status)
            done = self.state.get(operation.resource_id) if operation.kind == "put" else None
            return JSONResponse(self._visible(done)) if done is not None else Response(status_code=200)
        status = "InProgress" if not operation.finished else ("Failed" if operation.fail else "Succeeded")
        body: dict[str, Any] = {
            "id": f"/operationStatuses/{operation.id}",
            "name": operation.id,
            "status": status,
            "startTime": operation.started.isoformat(),
        }
        if operation.finished:
            body["endTime"] = utc_now().isoformat()
        if operation.fail is not None and operation.finished:
            body["error"] = operation.fail.body()["error"]
        return JSONResponse(body)


def _remap(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the container, as the same file on this machine."""
    for mount_path, folder in mounts.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(folder) + value[len(mount_path.rstrip("/")) :]
    return value
