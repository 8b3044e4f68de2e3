"""The azure target: one generic loop over the kinds of ``infra.azure.kinds``.

- Observe reads only: each kind parents first (nothing is read inside what does not exist),
  through the inventory (a group's container apps with one list), and a probe of the endpoint.
  It decides once (``infra.azure.plan.changes``, pure) and keeps the plan in its observation.
  A steady state costs no write.
- Apply makes the plan's calls. Operations do not block a worker: a PUT or DELETE starts, its
  continuation token is saved in the journal, and later passes look at the poller; after a
  restart the poller is rebuilt from the token by the kind, so a request is never sent twice.
- Ownership: what loraplane creates is tagged and journalled; a resource that exists under a
  name in the spec and is neither is adopted: held to what the deployment needs of it (the kind
  says what), never deleted.
- Secrets (the storage key, the log workspace's key, the app's admin token) are fetched or
  made at apply time, sent to Azure, and kept nowhere.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import math
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.core.polling import LROPoller

from infra.azure.clients import PUBLIC_CLOUD, AzureClients, AzureConfig
from infra.azure.credentials import make_credential
from infra.azure.desired import (
    ADMIN_TOKEN_SECRET,
    DIST_FOLDER,
    WHEEL_PREFIX,
    DesiredResource,
    adopted_body,
    owned_by_tags,
    value_at,
    wheels_named,
)
from infra.azure.errors import Refusals, classify_azure_error
from infra.azure.inventory import Inventory, ListedPages
from infra.azure.kinds import BY_NAME, KINDS, ContainerApp, Failure, FileShare, Kind, Page, ResourceGroup, parse_page
from infra.azure.limiter import ArmLimiter
from infra.azure.plan import REVISION, WHEEL, AzureFacts, Plan, changes, wheel_path
from infra.azure.revisions import as_kept, versions_run
from infra.azure.share import ShareFiles
from infra.azure.wheel import ServingWheel, build_serving_wheel
from infra.endpoints import AppAnswer, EndpointClient
from infra.errors import PermanentError, TemporaryError
from infra.provider import (
    Action,
    Observation,
    ObservedResource,
    Refusal,
    ResourceJournal,
    ResourceRecord,
    Target,
    deployment_folder,
    read_reports,
    replicas_folder,
)
from state.resource import AzureSpec, DeploymentSpec

__all__ = ["PUBLIC_CLOUD", "AzureConfig", "AzureObserved", "AzureProvider"]

log = logging.getLogger("loraplane.infra.azure")

ADMIN_TOKEN_SECONDS = 60.0  # how long a serving app's admin token read from its secrets is reused (in memory)
SHARE_KEY_SECONDS = 600.0  # how long a fetched storage key is reused (in memory) before a refetch
# A replica's report on the share older than this is of a replica gone (they write every 5 s).
REPLICA_FRESH_SECONDS = 60.0
OPERATION_WORDS = {"create": "creating", "update": "updating", "delete": "deleting"}


@dataclass(frozen=True)
class AzureObserved:
    """The azure target's private observation: what it saw, and what it decided from it."""

    facts: AzureFacts
    plan: Plan


def _azure(target: Target) -> AzureSpec:
    azure = target.spec.azure
    assert azure is not None  # the spec's validation guarantees it for target=azure
    return azure


class _ApplySecrets:
    """The secrets one write needs, fetched when it asks (``infra.azure.kinds.Secrets``)."""

    def __init__(self, provider: AzureProvider, clients: AzureClients, target: Target) -> None:
        self.provider, self.clients, self.target = provider, clients, target
        self.azure = _azure(target)

    def account_key(self) -> str:
        keys = self.clients.storage.storage_accounts.list_keys(self.azure.resource_group, self.azure.storage_account or "")
        return keys["keys"][0]["value"]

    def workspace(self) -> tuple[str, str]:
        name = self.azure.log_analytics or ""
        workspace = self.clients.logs.workspaces.get(self.azure.resource_group, name).as_dict()
        key = self.clients.logs.shared_keys.get_shared_keys(self.azure.resource_group, name)["primarySharedKey"]
        return str(value_at(workspace, ("properties", "customerId"))), key

    def app_secrets(self, *, exists: bool) -> dict[str, str]:
        """The app's secrets with their values: Azure never shows them on GET, and a PUT must
        carry them all. The admin token is made once and then read back from Azure."""
        values: dict[str, str] = {}
        if exists:
            listed = self.clients.apps.container_apps.list_secrets(self.azure.resource_group, self.azure.app or "")["value"] or []
            values = {s["name"]: s["value"] for s in listed if s.get("value") is not None}
        if not values.get(ADMIN_TOKEN_SECRET):
            values[ADMIN_TOKEN_SECRET] = secrets.token_urlsafe(32)
        return values

    def ensure_wheel(self) -> None:
        wheel = self.provider.wheel()
        path = wheel_path(wheel.filename)
        with self.provider.share(self.target) as share:
            if not share.exists(path):
                share.upload(path, wheel.content)
                log.info("uploaded %s to the share of %s", path, self.target.name)


class AzureProvider:
    def __init__(
        self,
        config: AzureConfig,
        journal: ResourceJournal,
        *,
        credential: Any | None = None,
        limiter: ArmLimiter | None = None,
        serving_wheel: Callable[[], ServingWheel] = build_serving_wheel,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.journal = journal
        self.credential = credential if credential is not None else make_credential(config.credential)
        self.limiter = limiter or ArmLimiter()
        self.monotonic = monotonic
        self._build_wheel = serving_wheel
        self._wheel: ServingWheel | None = None
        self._clients: dict[str, AzureClients] = {}
        self._pollers: dict[tuple[str, str], LROPoller] = {}
        # account -> (url, key, fetched, the key's digest: what a share's client is checked against)
        self._share_access: dict[str, tuple[str, str, float, str]] = {}
        self._plans: dict[str, tuple[tuple, Plan]] = {}  # uid -> (what it was decided from, the plan)
        self._revisions_listed_with: dict[str, int] = {}  # uid -> the app's version when its revisions were listed
        # uid -> (what ARM said of the app, when) at its last ready answer (see _probe)
        self._ready_seen: dict[str, tuple[Hashable, float]] = {}
        # One client per share, shared by every pass (its connections stay open between them).
        self._share_files: dict[str, ShareFiles] = {}
        self._admin_tokens: dict[str, tuple[str | None, float]] = {}  # app -> (token, good until)
        self._admin_tokens_lock = threading.Lock()
        self._restarted: dict[tuple[str, str], float] = {}  # (uid, revision) -> when restarted
        # uid -> (the app's wheel, the other wheels the dist folder held, all installed by other
        # apps of the group) when it was last listed with nothing to delete
        self._wheels_seen: dict[str, tuple[str, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self.refusals = Refusals()
        # The serving app's endpoint is checked against the same CA as ARM (never unverified).
        self._tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(config.ca_bundle)) if config.ca_bundle else True
        self.endpoints = EndpointClient(timeout=config.probe_timeout_seconds, verify=self._tls)
        self.inventory = Inventory(config.observe_max_age_seconds)
        self._listed_pages: ListedPages[Page] = ListedPages()

    # --------------------------------------------------------------------------- lifecycle

    def clients(self, subscription_id: str) -> AzureClients:
        with self._lock:
            if subscription_id not in self._clients:
                self._clients[subscription_id] = AzureClients(subscription_id, self.config, self.credential, self.limiter)
            return self._clients[subscription_id]

    def start(self) -> None:
        """Nothing runs beside the reconciler for Azure: replicas run in Azure."""

    def close(self) -> None:
        with self._lock:
            for clients in self._clients.values():
                clients.close()
            self._clients.clear()
            shares, self._share_files = list(self._share_files.values()), {}
        for files in shares:
            files.close_shared()
        self.endpoints.close()

    def stop(self) -> None:
        """With the reconciler: operations in flight go on in Azure, and are resumed from
        their tokens at the next start."""
        self.close()

    def stop_all(self) -> None:
        """The apps run in Azure, not here: nothing to stop."""

    def left_running(self) -> list[str]:
        return []  # nothing on this machine

    def wheel(self) -> ServingWheel:
        if self._wheel is None:
            self._wheel = self._build_wheel()
        return self._wheel

    def _wheel_name(self, target: Target) -> str | None:
        return None if _azure(target).image else self.wheel().filename

    # ------------------------------------------------------------------------------ reads

    def _get(self, clients: AzureClients, azure: AzureSpec, kind: Kind, *, fresh: bool = False) -> dict[str, Any] | None:
        """The resource as Azure has it (None: absent), through the inventory: at most
        ``observe_max_age_seconds`` old, listed kinds with one list per group; ``fresh`` reads it
        now (before a write that is computed from it)."""
        resource_id = kind.resource_id(azure)
        if fresh:
            self.inventory.touched(resource_id)

        def read() -> dict[str, Any] | None:
            try:
                return kind.get(clients, azure).as_dict()
            except ResourceNotFoundError:
                return None
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"reading {kind.name} {kind.resource_name(azure)}") from exc

        if not kind.listed_per_group:
            return self.inventory.get(resource_id, read)

        def every_one_in_the_group() -> list[dict[str, Any]]:
            # An app unchanged since its last read is that read: no model built again.
            def as_read(item: dict[str, Any]) -> dict[str, Any]:
                last = self.inventory.last(str(item.get("id", "")))
                return last if last == item else kind.from_wire(item)

            # A page that says what it said last time is what was made of it then, each app
            # the very object the inventory keeps for it once it has kept it (its own copy,
            # with shared strings): an equal copy beside it would be compared in full by every
            # list, and held twice.
            def as_kept(page: Page) -> Page:
                items, next_link = page
                kept = [self.inventory.last(str(item.get("id", ""))) for item in items]
                if all(last is item for last, item in zip(kept, items, strict=True)):
                    return page
                return [last if last is not None and last == item else item for last, item in zip(kept, items, strict=True)], next_link

            def parse(url: str, content: bytes) -> Page:
                def made(content: bytes) -> Page:
                    items, next_link = parse_page(url, content)
                    return [as_read(item) for item in items], next_link

                return self._listed_pages.made(url, content, made, settle=as_kept)

            try:
                return list(kind.list_group(clients, azure, parse))
            except ResourceNotFoundError:
                return []  # no group, none in it
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"listing the {kind.arm_type} of {azure.resource_group}") from exc

        scope = f"{ResourceGroup().resource_id(azure)}/providers/{kind.arm_type}"  # the list's url: ids in it start so
        # An app Azure is still writing is looked at every polling interval, as a poller would,
        # but through the group's list (its writes are not polled: ContainerApp.write).
        max_age = self.config.polling_seconds if kind.being_written(self.inventory.last(resource_id)) else None
        return self.inventory.get_listed(resource_id, scope, read, every_one_in_the_group, max_age=max_age)

    # ---------------------------------------------------------------------------- observe

    def admit(self, spec: DeploymentSpec) -> list[Refusal]:
        """Azure's own rules are the schema's (``state.azure_limits``); the operator adds none."""
        return []

    def observe(self, target: Target) -> Observation[AzureObserved]:
        azure = _azure(target)
        clients = self.clients(azure.subscription_id)
        busy = self._advance_operations(clients, target)
        records = self.journal.records(target.uid)
        observed: dict[str, dict[str, Any] | None] = {}
        for kind in KINDS:
            if kind.parent is not None and observed.get(kind.parent) is None:
                observed[kind.name] = None  # nothing can exist inside what does not: no call
            elif kind.name in busy:
                observed[kind.name] = self.inventory.last(kind.resource_id(azure))  # its operation tells how it goes
            else:
                observed[kind.name] = self._get(clients, azure, kind)
        refs, adopted = [], set()
        for kind in KINDS:
            current, resource_id = observed[kind.name], kind.resource_id(azure)
            record = records.get(resource_id.lower())
            ours = (record is not None and record.created) or current is None or owned_by_tags(current, target.name)
            if not ours:
                adopted.add(kind.name)
            state = busy.get(kind.name, "").capitalize() or (kind.state(current) if current else "Missing")
            refs.append(ObservedResource(kind.name, resource_id, state, "loraplane" if ours else "adopted"))
        app = observed[ContainerApp.name]
        # What Azure is still writing (its provisioningState says so) is waited for, as what
        # loraplane polls is: no health or revisions read of a half-made app.
        writing = {kind.name for kind in KINDS if kind.name not in busy and kind.being_written(observed[kind.name])}
        failure = self._health(clients, azure, observed, {**busy, **dict.fromkeys(writing, "writing")})
        wheel = self._wheel_name(target)
        dist, in_use = self._dist(target, azure, app, wheel)
        revisions = (
            self._revisions(clients, azure, target=target, app=app)
            if app is not None and ContainerApp.name not in busy and ContainerApp.name not in writing
            else ()
        )
        facts = AzureFacts(
            observed=observed,
            busy=busy,
            adopted=frozenset(adopted),
            wheel=wheel,
            failure=failure,
            restart_allowed=self._may_restart(target, failure),
            dist=dist,
            wheels_in_use=in_use,
            revisions=revisions,
        )
        plan = self._plan(target, azure, facts)
        replicas = sum(
            int((r.get("properties") or {}).get("replicas") or 0) for r in revisions if (r.get("properties") or {}).get("active")
        )
        app_id = ContainerApp().resource_id(azure)
        endpoint, ready, detail = self._probe(
            target, app, replicas, seen=(self.inventory.version(app_id), self.inventory.version(f"{app_id}/revisions"))
        )
        if plan.problem is not None:
            detail, ready = plan.problem.message, False
        elif azure.policy == "observe" and plan.changes:
            detail = "policy observe, not fixed: " + "; ".join(f"{c.kind} {c.name} {c.reason}" for c in plan.changes)
            ready = False
        elif plan.waiting:
            detail = "waiting for " + "; ".join(plan.waiting)
        serving_changes = [c for c in plan.changes if c.kind != WHEEL]
        stopped = target.held is not None and app is not None and not any((r.get("properties") or {}).get("active") for r in revisions)
        if stopped:
            detail = target.held or detail
        ready = ready and not serving_changes and not plan.waiting and not stopped
        token = (
            tuple(self.inventory.version(kind.resource_id(azure)) for kind in KINDS),
            self.inventory.version(f"{app_id}/revisions"),
            tuple(sorted(busy.items())),
            endpoint,
            ready,
        )
        return Observation(
            AzureObserved(facts, plan),
            resources=refs,
            endpoint=endpoint,
            ready=ready,
            detail=detail,
            share_ready=observed.get("FileShare") is not None,
            stopped=stopped,
            replicas=replicas if app is not None else 0,
            token=token,
        )

    def _plan(self, target: Target, azure: AzureSpec, facts: AzureFacts) -> Plan:
        """``changes(target, facts)``, which is pure: decided again only when something it
        decides from changed (the spec's generation, the versions to run, what was read as
        told by the inventory's versions, the operations, the app's health, the wheels).
        Building the desired bodies is most of a steady pass's work otherwise."""
        app_id = ContainerApp().resource_id(azure)
        inputs = (
            target.generation,
            target.adapter_version,
            tuple(sorted(target.adapter_versions.items())),
            target.held,
            repr(target.revisions),
            tuple(self.inventory.version(kind.resource_id(azure)) for kind in KINDS),
            self.inventory.version(f"{app_id}/revisions"),
            tuple(sorted(facts.busy.items())),
            facts.adopted,
            facts.wheel,
            repr(facts.failure),
            facts.restart_allowed,
            facts.dist,
            facts.wheels_in_use,
        )
        with self._lock:
            kept = self._plans.get(target.uid)
        if kept is not None and kept[0] == inputs:
            return kept[1]
        plan = changes(target, facts)
        with self._lock:
            self._plans[target.uid] = (inputs, plan)
        return plan

    def _revisions(
        self,
        clients: AzureClients,
        azure: AzureSpec,
        *,
        fresh: bool = False,
        target: Target | None = None,
        app: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], ...]:
        """The app's revisions (how many replicas each runs, which are active), through the
        inventory: ``fresh`` reads them now. A list per app is a read per deployment, which at
        a thousand deployments is more than ARM's 25 reads a second for the resyncs alone, so
        for an observation (``target``, ``app``) they are read again only when they can say
        something new: the app changed since (a new revision, a new mode), several revisions
        may serve (a canary, a gate), a hold starts or ends (none was active), or its replicas
        vary (autoscaled, or scaled to zero), and then at most every
        ``revisions_max_age_seconds``. A fixed-scale app that runs as it did is not listed."""
        app_id = ContainerApp().resource_id(azure)
        key = f"{app_id}/revisions"
        max_age: float | None = None
        if fresh:
            self.inventory.touched(key)
        elif target is not None:
            app_version = self.inventory.version(app_id)
            with self._lock:
                listed_with = self._revisions_listed_with.get(target.uid)
            last = (self.inventory.last(key) or {}).get("value")
            scale = target.spec.scale
            mode = value_at((app or {}).get("properties") or {}, ("configuration", "activeRevisionsMode"))
            if (
                listed_with != app_version
                or last is None
                or target.revisions is not None
                or target.held is not None
                or str(mode).lower() == "multiple"
                or not any((r.get("properties") or {}).get("active") for r in last)
            ):
                self.inventory.touched(key)
            elif scale.min_replicas == scale.max_replicas:
                max_age = math.inf  # as last read: nothing that changes it has changed
            else:
                max_age = self.config.revisions_max_age_seconds
            with self._lock:
                self._revisions_listed_with[target.uid] = app_version

        def read() -> dict[str, Any]:
            try:
                return {
                    "value": [
                        as_kept(r.as_dict())
                        for r in clients.apps.container_apps_revisions.list_revisions(azure.resource_group, azure.app or "")
                    ]
                }
            except ResourceNotFoundError:
                return {"value": []}
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"listing the revisions of {azure.app}") from exc

        found = self.inventory.get(key, read, max_age=max_age)
        return tuple((found or {}).get("value") or [])

    def version_endpoint(self, target: Target, endpoint: str, versions: dict[str, str]) -> str | None:
        if target.revisions is None:
            return endpoint  # one revision: its replicas load a version beside the one serving
        azure = _azure(target)
        for revision in self._revisions(self.clients(azure.subscription_id), azure, fresh=True):
            shown = revision.get("properties") or {}
            if shown.get("active") and shown.get("fqdn") and versions_run(shown.get("template"), target.name) == versions:
                return f"https://{shown['fqdn']}"
        return None

    def _health(
        self, clients: AzureClients, azure: AzureSpec, observed: dict[str, dict[str, Any] | None], busy: dict[str, str]
    ) -> Failure | None:
        """The first thing Azure says is wrong with a running resource (not one being written)."""
        for kind in KINDS:
            current = observed[kind.name]
            if current is None or kind.name in busy:
                continue
            try:
                failure = kind.health(clients, azure, current)
            except ResourceNotFoundError:
                continue  # what it read went meanwhile: the next pass sees the new state
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"reading how {kind.name} {kind.resource_name(azure)} runs") from exc
            if failure is not None:
                return failure
        return None

    def _may_restart(self, target: Target, failure: Failure | None) -> bool:
        if failure is None or failure.revision is None:
            return True
        with self._lock:
            last = self._restarted.get((target.uid, failure.revision))
        return last is None or self.monotonic() - last >= self.config.revision_restart_seconds

    def _dist(
        self, target: Target, azure: AzureSpec, app: dict[str, Any] | None, wheel: str | None
    ) -> tuple[tuple[str, ...] | None, frozenset[str]]:
        """The wheels on the share and those the group's apps install, looked at when the app's
        newest revision is ready and installs ``wheel``, and only while there may be one to
        delete: not again once the folder held nothing else, nor while what else it held is
        still installed. A steady state lists nothing and scans no app."""
        if wheel is None or app is None:
            return None, frozenset()
        properties = app.get("properties") or {}
        if properties.get("latestRevisionName") != properties.get("latestReadyRevisionName"):
            return None, frozenset()
        if wheels_named(properties.get("template")) != {wheel}:
            return None, frozenset()
        with self._lock:
            seen = self._wheels_seen.get(target.uid)
        in_use: frozenset[str] | None = None
        if seen is not None and seen[0] == wheel:
            if not seen[1]:
                return None, frozenset()
            in_use = self._wheels_in_use(azure)
            if seen[1] <= in_use:
                return None, in_use
        with self.share(target) as share:
            names = tuple(share.names(DIST_FOLDER) or ())
        others = frozenset(name for name in names if name.startswith(WHEEL_PREFIX) and name.endswith(".whl") and name != wheel)
        if others and in_use is None:
            in_use = self._wheels_in_use(azure)
        in_use = in_use or frozenset()
        if others <= in_use:
            with self._lock:
                self._wheels_seen[target.uid] = (wheel, others)
        return names, in_use

    def _wheels_in_use(self, azure: AzureSpec) -> frozenset[str]:
        """The serving wheels the group's container apps install, from their last list."""
        prefix = f"{ResourceGroup().resource_id(azure)}/providers/{ContainerApp.arm_type}/".lower()
        found: set[str] = set()
        for app in self.inventory.known(prefix):
            found |= wheels_named((app.get("properties") or {}).get("template"))
        return frozenset(found)

    @staticmethod
    def _calls_app(target: Target) -> bool:
        """Whether loraplane calls the app to judge it: not where it cannot reach it (internal
        ingress, an IP allow list), nor where the app scales to zero, since a request of
        loraplane's would keep a replica up (an HTTP scale rule counts every request). There
        it reads what the replicas report on the share."""
        return _azure(target).endpoint_reachable() and target.spec.scale.min_replicas > 0

    def _probe(self, target: Target, app: dict[str, Any] | None, replicas: int, *, seen: Hashable = None) -> tuple[str | None, bool, str]:
        """Whether the app serves at its endpoint. An app that answered ready is not asked
        again while nothing ARM says of it (``seen``: the versions of the app and its revisions
        as read) has changed, for up to ``probe_recheck_seconds``: a replica that stops
        serving is restarted or replaced by Container Apps, which its revisions show."""
        if app is None:
            return None, False, "the container app does not exist yet"
        properties = app.get("properties") or {}
        fqdn = value_at(properties, ("configuration", "ingress", "fqdn"))
        endpoint = f"https://{fqdn}" if fqdn else None
        latest, ready_revision = properties.get("latestRevisionName"), properties.get("latestReadyRevisionName")
        # With several revisions active the app serves from the one users get while the newest
        # (a version being proved) starts: its readiness is the app's answer, not the newest's.
        if latest and latest != ready_revision and target.revisions is None:
            return endpoint, False, f"waiting for revision {latest} to become ready"
        if endpoint is None:
            return None, False, "the container app has no ingress address yet"
        if target.spec.scale.min_replicas == 0 and replicas == 0 and latest and latest == ready_revision:
            cold = "the model's load" if _azure(target).image else "the serving wheel's pip install and the model's load"
            return (
                endpoint,
                True,
                (
                    f"scaled to zero at {endpoint}: the next request starts a replica and waits for it "
                    f"(a cold start: {cold}, minutes on a GPU)"
                ),
            )
        if not self._calls_app(target):
            return (endpoint, *self._replicas_ready(target, endpoint))
        confirmed = (seen, endpoint, target.revisions)
        with self._lock:
            last = self._ready_seen.get(target.uid)
        if last is not None and last[0] == confirmed and self.monotonic() - last[1] < self.config.probe_recheck_seconds:
            return endpoint, True, f"serving at {endpoint}"
        with self._lock:
            self._ready_seen.pop(target.uid, None)
        try:
            response = self.endpoints.get(f"{endpoint}/readyz")
        except httpx.HTTPError as exc:
            return endpoint, False, f"waiting for the serving app to answer on {endpoint} ({type(exc).__name__})"
        if response.status_code == 200:
            with self._lock:
                self._ready_seen[target.uid] = (confirmed, self.monotonic())
            return endpoint, True, f"serving at {endpoint}"
        return endpoint, False, f"the serving app is not ready: {response.text.strip()[:300]}"

    # ------------------------------------------------------------------------ operations

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
                busy[record.kind] = OPERATION_WORDS[record.operation]
                continue
            with self._lock:
                self._pollers.pop((target.uid, key), None)
            if record.operation == "delete":
                self.journal.forget(target.uid, record.resource_id)
            else:
                self.journal.save(target.uid, replace(record, operation=None, continuation_token=None))
            if poller is None:
                self._touch(record.resource_id)
                continue
            try:
                result = poller.result(timeout=0)
            except AzureError as exc:
                self._touch(record.resource_id)
                failure = classify_azure_error(exc, doing=f"{record.operation} {record.kind} {record.resource_id.rsplit('/', 1)[-1]}")
                failure.__cause__ = exc
                continue
            if record.operation != "delete" and hasattr(result, "as_dict"):
                # The operation's last answer is the resource as it is now: no read needed.
                self.inventory.read_now(record.resource_id, result.as_dict())
            else:
                self._touch(record.resource_id)
        if failure is not None:
            raise failure
        return busy

    def _touch(self, resource_id: str) -> None:
        """Read it afresh next time; a container app's revisions too (a write makes revisions)."""
        self.inventory.touched(resource_id)
        if "/providers/microsoft.app/containerapps/" in resource_id.lower():
            self.inventory.touched(f"{resource_id}/revisions")

    def _poller(self, clients: AzureClients, target: Target, record: ResourceRecord) -> LROPoller | None:
        """The poller of an operation in flight: the one this process started, or one rebuilt
        from the journal's continuation token by its kind (after a restart). None when there is
        no token (the operation finished within its request, or its token held a secret)."""
        key = (target.uid, record.resource_id)
        with self._lock:
            poller = self._pollers.get(key)
        if poller is not None or record.continuation_token is None or record.operation is None:
            return poller
        kind = BY_NAME.get(record.kind)
        try:
            if kind is None:
                raise ValueError(f"no kind {record.kind!r}")
            poller = kind.resume(clients, _azure(target), record.operation, {}, record.continuation_token)
        except ValueError as exc:
            # A token this SDK cannot read (e.g. from another version): the resource is
            # observed afresh, and planned again if need be.
            log.warning("cannot resume the %s of %s from its token (%s); looking again", record.operation, record.resource_id, exc)
            return None
        log.info("resumed polling the %s of %s", record.operation, record.resource_id)
        with self._lock:
            self._pollers[key] = poller
        return poller

    def _started(
        self,
        target: Target,
        resource_id: str,
        kind: str,
        verb: str,
        poller: LROPoller | None,
        sent_secrets: tuple[str, ...] = (),
        *,
        answer: dict[str, Any] | None = None,
    ) -> None:
        self._touch(resource_id)
        if answer is not None:
            # The write's answer is the resource as it is now (e.g. InProgress): no read needed.
            self.inventory.read_now(resource_id, answer)
        known = self.journal.records(target.uid).get(resource_id.lower())
        created = verb == "create" or (known is not None and known.created)
        if poller is None or poller.done():
            if poller is not None:
                poller.result()
            if verb == "delete":
                self.journal.forget(target.uid, resource_id)
            else:
                self.journal.save(target.uid, ResourceRecord(resource_id.lower(), kind, created=created))
            return
        token: str | None = poller.continuation_token()
        if token and any(secret and secret in _token_text(token) for secret in sent_secrets):
            # Azure echoed a secret in the first answer: keep no token rather than store it.
            token = None
        with self._lock:
            self._pollers[(target.uid, resource_id.lower())] = poller
        self.journal.save(target.uid, ResourceRecord(resource_id.lower(), kind, created=created, operation=verb, continuation_token=token))

    # ------------------------------------------------------------------------------- plan

    def plan(self, target: Target, observation: Observation[AzureObserved]) -> list[Action]:
        plan = observation.private.plan
        if plan.problem is not None:
            raise plan.problem
        if _azure(target).policy == "observe":
            return []  # drift is reported in the status, not fixed
        return plan.actions

    # ------------------------------------------------------------------------------ apply

    def apply(self, target: Target, actions: list[Action]) -> None:
        azure = _azure(target)
        if azure.policy == "observe":
            raise PermanentError("spec.azure.policy is observe: loraplane changes nothing in Azure", reason="ObserveOnly")
        clients = self.clients(azure.subscription_id)
        for action in actions:
            if action.kind == WHEEL:
                with self.share(target) as share:
                    share.delete(wheel_path(action.name))
                log.info("removed the superseded serving wheel %s from the share of %s", action.name, target.name)
                continue
            if action.kind == REVISION and action.verb in ("activate", "deactivate"):
                self._switch_revision(clients, target, action.name, on=action.verb == "activate")
                continue
            if action.kind == REVISION:
                self._restart_revision(clients, target, action.name)
                continue
            resource: DesiredResource = action.payload
            try:
                self._write(clients, target, BY_NAME[action.kind], resource, action.verb)
            except AzureError as exc:
                error = classify_azure_error(exc, doing=f"{action.verb} {action.kind} {action.name}")
                raise self.refusals.judge(error, cause=exc, resource_id=resource.id, body=resource.body) from exc

    def _restart_revision(self, clients: AzureClients, target: Target, revision: str) -> None:
        azure = _azure(target)
        with self._lock:
            self._restarted[(target.uid, revision)] = self.monotonic()
        try:
            clients.apps.container_apps_revisions.restart_revision(azure.resource_group, azure.app or "", revision)
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"restarting revision {revision}") from exc
        self.inventory.touched(ContainerApp().resource_id(azure))
        log.info("restarted revision %s of %s", revision, target.name)

    def _switch_revision(self, clients: AzureClients, target: Target, revision: str, *, on: bool) -> None:
        azure = _azure(target)
        revisions = clients.apps.container_apps_revisions
        try:
            (revisions.activate_revision if on else revisions.deactivate_revision)(azure.resource_group, azure.app or "", revision)
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"{'activating' if on else 'deactivating'} revision {revision}") from exc
        self.inventory.touched(ContainerApp().resource_id(azure))
        self.inventory.touched(f"{ContainerApp().resource_id(azure)}/revisions")
        log.info("%s revision %s of %s", "activated" if on else "deactivated", revision, target.name)

    def _write(self, clients: AzureClients, target: Target, kind: Kind, resource: DesiredResource, verb: str) -> None:
        azure = _azure(target)
        body = copy.deepcopy(resource.body)
        current = self._get(clients, azure, kind, fresh=True) if verb == "update" else None
        adopted = current is not None and not owned_by_tags(current, target.name) and not self._created(target, resource.id)
        if adopted:
            assert current is not None
            body = adopted_body(resource, current, kind.read_only)
        written = kind.write(
            clients, azure, resource, body, verb=verb, current=current, adopted=adopted, secrets=_ApplySecrets(self, clients, target)
        )
        log.info("%s %s %s%s", verb, kind.name, resource.name, " (adopted)" if adopted else "")
        self._started(target, resource.id, kind.name, verb, written.poller, written.sent, answer=written.answer)

    def _created(self, target: Target, resource_id: str) -> bool:
        record = self.journal.records(target.uid).get(resource_id.lower())
        return record is not None and record.created

    # ------------------------------------------------------------------ the adapter plane

    def admin_token(self, target: Target) -> str | None:
        """The serving app's admin token, read from the app's secrets when needed (the reload
        and adapter-status endpoints), kept in memory only, for ADMIN_TOKEN_SECONDS: a
        rollout's verification asks the app several times, and listSecrets is an ARM POST."""
        azure = _azure(target)
        key = f"{azure.subscription_id}/{azure.resource_group}/{azure.app}".lower()
        with self._admin_tokens_lock:
            known = self._admin_tokens.get(key)
            if known is not None and known[1] > self.monotonic():
                return known[0]
        clients = self.clients(azure.subscription_id)
        try:
            listed = clients.apps.container_apps.list_secrets(azure.resource_group, azure.app or "")["value"] or []
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"reading the secrets of {azure.app}") from exc
        token = next((s.get("value") for s in listed if s.get("name") == ADMIN_TOKEN_SECRET), None)
        with self._admin_tokens_lock:
            self._admin_tokens[key] = (token, self.monotonic() + ADMIN_TOKEN_SECONDS)
        return token

    def adapter_status(self, target: Target, endpoint: str) -> dict:
        """One replica's answer at ``endpoint`` (the app's, or a revision's own): asked when
        loraplane can reach it, else a replica's report."""
        if _azure(target).endpoint_reachable():
            return self.endpoints.adapter_status(endpoint, self.admin_token(target))
        return self.adapter_statuses(target, endpoint, 1)[0]

    def adapter_statuses(self, target: Target, endpoint: str, probes: int) -> list[dict]:
        if self._calls_app(target):
            token = self.admin_token(target)
            return [self.endpoints.adapter_status(endpoint, token) for _ in range(probes)]
        reports = self._replica_reports(target)
        if not reports and target.spec.scale.min_replicas == 0:
            return []  # scaled to zero: no replica to ask; the next one follows the pointer
        if not reports:
            raise TemporaryError(
                f"no replica of {endpoint} has reported on the share in the last {REPLICA_FRESH_SECONDS:.0f}s", reason="EndpointUnavailable"
            )
        return [report.get("adapter") or {} for report in reports]

    def reload_adapter(self, target: Target, endpoint: str) -> dict:
        if not self._calls_app(target):
            # Out of loraplane's reach: the replicas follow the pointer on the share themselves.
            return {"status": "following", "message": "the replicas follow the pointer on the share"}
        return self.endpoints.reload_adapter(endpoint, self.admin_token(target))

    def ask(self, target: Target, endpoint: str, route: str, body: dict, timeout: float) -> AppAnswer:
        return self.endpoints.ask(endpoint, self.admin_token(target), route, body, timeout)

    def _replica_reports(self, target: Target) -> list[dict[str, Any]]:
        """What each replica wrote about itself on the share in the last REPLICA_FRESH_SECONDS
        (serving.reports): how loraplane hears from replicas it cannot reach."""
        now = datetime.now(UTC)
        with self.share(target) as share:
            reports = read_reports(share, replicas_folder(target.name, target.uid))
        fresh = []
        for report in reports:
            try:
                written = datetime.fromisoformat(report["updatedAt"])
            except (KeyError, TypeError, ValueError):
                continue
            if (now - written).total_seconds() <= REPLICA_FRESH_SECONDS:
                fresh.append(report)
        return fresh

    def _replicas_ready(self, target: Target, endpoint: str) -> tuple[bool, str]:
        azure = _azure(target)
        if not azure.endpoint_reachable():
            why = f"loraplane does not call an app behind {'internal ingress' if azure.ingress == 'internal' else 'an IP allow list'}"
        else:
            why = "loraplane does not call an app that scales to zero: its requests would keep a replica up"
        reports = self._replica_reports(target)
        ready = [r for r in reports if r.get("ready")]
        if ready:
            return True, f"serving at {endpoint} ({len(ready)} of {len(reports)} replica(s) ready, as they report on the share: {why})"
        if reports:
            return False, f"the serving app is not ready: {str(reports[0].get('detail') or '')[:300]}"
        return False, f"waiting for a replica to report on the share ({why})"

    def share(self, target: Target) -> ShareFiles:
        """The deployment's file share, through its data plane. The account's endpoint and
        key are fetched once and then kept in memory only (never stored), for a while: each
        resync looks at the adapter folder, and a listKeys each time would be a write. One
        client per share serves every caller (closing it is a no-op), keeping its connections
        open: a new one per pass cost a TLS handshake each time."""
        azure = _azure(target)
        cache_key = f"{azure.subscription_id}/{azure.resource_group}/{azure.storage_account}".lower()
        with self._lock:
            cached = self._share_access.get(cache_key)
        if cached is None or self.monotonic() - cached[2] > SHARE_KEY_SECONDS:
            clients = self.clients(azure.subscription_id)
            try:
                account = clients.storage.storage_accounts.get_properties(azure.resource_group, azure.storage_account or "").as_dict()
                key = _ApplySecrets(self, clients, target).account_key()
            except AzureError as exc:
                raise classify_azure_error(exc, doing=f"opening the file share {azure.file_share}") from exc
            url = value_at(account, ("properties", "primaryEndpoints", "file"))
            if not url:
                raise TemporaryError(f"the storage account {azure.storage_account} has no file endpoint yet", reason="DependencyNotReady")
            cached = (url.rstrip("/"), key, self.monotonic(), hashlib.sha256(key.encode()).hexdigest())
            with self._lock:
                self._share_access[cache_key] = cached
        share_id = f"{cache_key}/{azure.file_share}"
        with self._lock:
            files = self._share_files.get(share_id)
            if files is None or files.key_digest != cached[3]:
                stale, files = (
                    files,
                    ShareFiles(
                        cached[0],
                        azure.file_share or "",
                        cached[1],
                        ca_bundle=self.config.ca_bundle,
                        on_auth_failure=lambda: self._forget_share_key(cache_key),
                        shared=True,
                    ),
                )
                self._share_files[share_id] = files
            else:
                stale = None
        if stale is not None:
            stale.close_shared()
        return files

    def _forget_share_key(self, cache_key: str) -> None:
        with self._lock:
            self._share_access.pop(cache_key, None)
            dropped = [self._share_files.pop(k) for k in [k for k in self._share_files if k.startswith(cache_key + "/")]]
        for files in dropped:
            files.close_shared()

    # ----------------------------------------------------------------------------- delete

    def delete(self, target: Target) -> bool:
        """Tear down what loraplane created, children first; adopted resources stay. Under
        ``detachOnDelete`` (and ``observe``) nothing in Azure is touched."""
        azure = _azure(target)
        if azure.policy != "manage":
            self.journal.forget(target.uid)
            self._forget(target.uid)
            return True
        clients = self.clients(azure.subscription_id)
        if self._advance_operations(clients, target):
            return False
        records = self.journal.records(target.uid)
        observed: dict[str, dict[str, Any] | None] = {}
        for kind in KINDS:
            parent_gone = kind.parent is not None and observed.get(kind.parent) is None
            observed[kind.name] = None if parent_gone else self._get(clients, azure, kind)
        ours = {
            kind.name
            for kind in KINDS
            if observed[kind.name] is not None
            and (
                (records.get(kind.resource_id(azure).lower()) is not None and records[kind.resource_id(azure).lower()].created)
                or owned_by_tags(observed[kind.name], target.name)
            )
        }
        container = next((k for k in KINDS if k.deletes_contents and k.name in ours), None)
        if container is not None and ContainerApp.name not in ours and not self._foreign_resources(clients, azure, ours):
            # A group loraplane made goes in one operation once its app is gone (the app first:
            # its replicas stop before their share and environment go), if nothing else is in it.
            self._delete_one(clients, target, container)
            return False
        started = False
        for kind in reversed(KINDS):
            if kind.name not in ours or kind.deletes_contents:
                continue
            # What depends on it goes first; adopted dependents stay, and need nothing of ours
            # but the environment storage and app, which are always ours to delete first.
            if any(kind.name in other.depends_on and other.name in ours for other in KINDS):
                continue
            self._delete_one(clients, target, kind)
            started = True
        if started:
            return False
        if container is not None:
            left = self._foreign_resources(clients, azure, set())
            log.warning("leaving resource group %s: it holds resources loraplane did not create: %s", azure.resource_group, ", ".join(left))
        if FileShare.name not in ours and observed[FileShare.name] is not None:
            self._remove_share_folder(target)
        self.journal.forget(target.uid)
        self._forget(target.uid)
        return True

    def _remove_share_folder(self, target: Target) -> None:
        """An adopted share stays, but not the deployment's folder in it (pointer, staged
        versions). Best effort: the folder is keyed by the deployment's uid, so one left behind
        (shared keys off, a network error) is only storage, never served to a successor."""
        folder = deployment_folder(target.name, target.uid)
        try:
            with self.share(target) as share:
                share.remove_tree(folder)
        except (AzureError, PermanentError, TemporaryError) as exc:
            log.warning("left %s on the share of %s: %s", folder, target.name, exc)

    def _forget(self, uid: str) -> None:
        with self._lock:
            self._wheels_seen.pop(uid, None)
            self._ready_seen.pop(uid, None)
            self._plans.pop(uid, None)
            self._revisions_listed_with.pop(uid, None)
            for key in [k for k in self._restarted if k[0] == uid]:
                del self._restarted[key]

    def _foreign_resources(self, clients: AzureClients, azure: AzureSpec, ours: set[str]) -> list[str]:
        mine = {kind.resource_id(azure).lower() for kind in KINDS if kind.name in ours}
        try:
            listed = list(clients.resources.resources.list_by_resource_group(azure.resource_group))
        except AzureError as exc:
            raise classify_azure_error(exc, doing="listing the resource group") from exc
        return [item.id for item in listed if item.id and item.id.lower() not in mine]

    def _delete_one(self, clients: AzureClients, target: Target, kind: Kind) -> None:
        azure = _azure(target)
        poller: LROPoller | None = None
        try:
            poller = kind.remove(clients, azure)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise classify_azure_error(exc, doing=f"deleting {kind.name} {kind.resource_name(azure)}") from exc
        log.info("delete %s %s", kind.name, kind.resource_name(azure))
        self._started(target, kind.resource_id(azure), kind.name, "delete", poller)

    def logs(self, target: Target, tail: int) -> str:
        azure = _azure(target)
        return (
            f"the azure target does not fetch logs; read them with:\n"
            f"  az containerapp logs show --name {azure.app} --resource-group {azure.resource_group} --tail {tail}\n"
        )


def _token_text(token: str) -> str:
    """A continuation token as text, the first response's body included (it is base64 within)."""
    try:
        text = base64.b64decode(token).decode("utf-8", errors="replace")
        content = json.loads(text).get("data", {}).get("response", {}).get("content") or ""
        return text + "\n" + base64.b64decode(content).decode("utf-8", errors="replace")
    except (ValueError, AttributeError):
        return token
