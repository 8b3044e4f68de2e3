"""The simulated Azure: resources by id, long-running operations, faults, and call counts.

Plain data and rules, no HTTP: ``azuresim.arm`` turns requests into calls here.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class ResourceType:
    """How one ARM resource type behaves in the simulator."""

    name: str  # e.g. "Microsoft.App/containerApps"
    parent: str | None  # the type that must exist first ("resourceGroups" for top-level ones)
    long_running: bool  # PUT and DELETE answer at once and finish after the LRO delay
    has_location: bool = True
    # How a long-running PUT answers: "async" (201/200 with the body and Azure-AsyncOperation,
    # as Container Apps and Log Analytics do) or "location" (202 with Location and no body,
    # as Storage does).
    put_style: str = "async"


TYPES: dict[str, ResourceType] = {
    t.name.lower(): t
    for t in [
        ResourceType("resourceGroups", None, long_running=False),
        ResourceType("Microsoft.Storage/storageAccounts", "resourceGroups", long_running=True, put_style="location"),
        ResourceType(
            "Microsoft.Storage/storageAccounts/fileServices/shares",
            "Microsoft.Storage/storageAccounts",
            long_running=False,
            has_location=False,
        ),
        ResourceType("Microsoft.OperationalInsights/workspaces", "resourceGroups", long_running=True),
        ResourceType("Microsoft.App/managedEnvironments", "resourceGroups", long_running=True),
        ResourceType(
            "Microsoft.App/managedEnvironments/storages", "Microsoft.App/managedEnvironments", long_running=False, has_location=False
        ),
        ResourceType("Microsoft.App/containerApps", "resourceGroups", long_running=True),
        ResourceType("Microsoft.App/containerApps/revisions", "Microsoft.App/containerApps", long_running=False, has_location=False),
    ]
}

REGIONS = {
    "eastus",
    "eastus2",
    "westus",
    "westus2",
    "westus3",
    "centralus",
    "northcentralus",
    "southcentralus",
    "westcentralus",
    "canadacentral",
    "canadaeast",
    "brazilsouth",
    "northeurope",
    "westeurope",
    "uksouth",
    "ukwest",
    "francecentral",
    "germanywestcentral",
    "norwayeast",
    "swedencentral",
    "switzerlandnorth",
    "uaenorth",
    "southafricanorth",
    "centralindia",
    "southindia",
    "japaneast",
    "japanwest",
    "koreacentral",
    "eastasia",
    "southeastasia",
    "australiaeast",
    "australiasoutheast",
    "eastus2(stage)",  # the staging region Microsoft's StorageAccountGetProperties example uses
    "eastus2euap",
    "centraluseuap",  # Azure's canary regions, which Microsoft's examples use
}


class ArmError(Exception):
    """An ARM error answer: status, code and message, as Azure sends them."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass
class Operation:
    id: str
    resource_id: str
    kind: str  # "put" or "delete"
    done_at: float
    started: datetime
    fail: ArmError | None = None
    finished: bool = False


@dataclass
class Faults:
    """What goes wrong, and how often: each request draws once against ``rate``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("throttle", "server_error")
    retry_after_seconds: int = 1
    slow_seconds: float = 0.5
    seed: int | None = None


# "refuse": a 400 with a code no table knows (UnheardOfRefusal), as a new Azure rule would.
FAULT_KINDS = ("throttle", "server_error", "slow", "failed_operation", "quota", "refuse")


class ArmLimits:
    """ARM's published throttling (the token-bucket algorithm, per subscription and region):
    reads 250 at once then 25/s, writes 200 then 10/s, deletes 200 then 10/s. A call over the
    budget is answered 429 with Retry-After, and counted."""

    BUCKETS = {"read": (250, 25.0), "write": (200, 10.0), "delete": (200, 10.0)}

    def __init__(self, clock: Callable[[], float] = time.monotonic, buckets: dict[str, tuple[int, float]] | None = None) -> None:
        """``buckets`` (burst, rate per second) by kind of call replaces ARM's, e.g. for a test
        that fills one in a few calls; ``clock`` is the limiter's time (a test's, to move by hand)."""
        self.clock = clock
        self.buckets = {**self.BUCKETS, **(buckets or {})}
        self._tokens: dict[tuple[str, str], tuple[float, float]] = {}  # (subscription, kind) -> (tokens, at)
        self._lock = threading.Lock()

    @staticmethod
    def kind_of(method: str) -> str:
        return {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method, "write")

    def take(self, subscription: str, method: str) -> float | None:
        """None when the call may go; else the seconds until a token is there."""
        kind = self.kind_of(method)
        burst, rate = self.buckets[kind]
        key = (subscription.lower(), kind)
        with self._lock:
            now = self.clock()
            tokens, at = self._tokens.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens >= 1:
                self._tokens[key] = (tokens - 1, now)
                return None
            self._tokens[key] = (tokens, now)
            return (1 - tokens) / rate


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimState:
    lro_delay_seconds: float = 0.2
    clock: Callable[[], float] = time.monotonic
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case id -> resource
    operations: dict[str, Operation] = field(default_factory=dict)
    calls: Counter = field(default_factory=Counter)  # (method, type) -> count
    calls_by_subscription: Counter = field(default_factory=Counter)  # (subscription, method) -> count
    faults: Faults = field(default_factory=Faults)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Called with a container app when its latest revision is about to become the ready one;
    # an answer other than None says why its replica failed, and the revision fails with it.
    on_revision_active: Callable[[dict[str, Any]], str | None] | None = None
    # Called with each resource as it is removed (deleted, or under a deleted parent).
    on_removed: Callable[[dict[str, Any]], None] | None = None
    _rng: random.Random = field(default_factory=random.Random)
    _pending: set[str] = field(default_factory=set)  # ids of operations not finished yet
    # ARM's own throttling, when set: token buckets per subscription and kind of call.
    limits: ArmLimits | None = None
    # The bodies of the last writes (method, path, body), for tests that check what was sent.
    written: deque[tuple[str, str, Any]] = field(default_factory=lambda: deque(maxlen=1000))

    # -------------------------------------------------------------------------- faults

    def set_faults(self, faults: Faults) -> None:
        unknown = set(faults.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        with self.lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def draw_fault(self, method: str) -> str | None:
        with self.lock:
            if self.faults.rate <= 0 or self._rng.random() >= self.faults.rate:
                return None
            kinds = [k for k in self.faults.kinds if method not in ("GET", "HEAD") or k not in ("failed_operation", "quota", "refuse")]
            return self._rng.choice(kinds) if kinds else None

    def count(self, method: str, type_name: str, subscription: str = "") -> None:
        with self.lock:
            self.calls[(method, type_name)] += 1
            if subscription:
                self.calls_by_subscription[(subscription.lower(), method)] += 1

    def subscription_counts(self) -> dict[str, dict[str, int]]:
        """Calls by subscription and method ("429" for a throttled one)."""
        with self.lock:
            out: dict[str, dict[str, int]] = {}
            for (subscription, method), n in sorted(self.calls_by_subscription.items()):
                out.setdefault(subscription, {})[method] = n
            return out

    def call_counts(self) -> dict[str, dict[str, int]]:
        with self.lock:
            out: dict[str, dict[str, int]] = {}
            for (method, type_name), n in sorted(self.calls.items()):
                out.setdefault(method, {})[type_name] = n
            return out

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()
            self.calls_by_subscription.clear()

    # ------------------------------------------------------------------------ resources

    def get(self, resource_id: str) -> dict[str, Any] | None:
        with self.lock:
            self._advance()
            found = self.resources.get(resource_id.lower())
            return copy.deepcopy(found) if found is not None else None

    def children(self, parent_id: str, type_name: str, *, start: int = 0, count: int | None = None) -> list[dict[str, Any]]:
        """Copies of the resources of ``type_name`` under ``parent_id``, in id order: all, or
        ``count`` from ``start`` (a page: only its resources are copied)."""
        prefix = parent_id.lower() + "/"
        with self.lock:
            self._advance()
            found = [r for key, r in sorted(self.resources.items()) if key.startswith(prefix) and r["type"].lower() == type_name.lower()]
            return [copy.deepcopy(r) for r in found[start : None if count is None else start + count]]

    def put(self, resource_id: str, resource: dict[str, Any]) -> None:
        with self.lock:
            self.resources[resource_id.lower()] = resource

    def remove(self, resource_id: str) -> None:
        """A resource and everything under it."""
        with self.lock:
            self._remove(resource_id.lower())

    def _remove(self, key: str) -> None:
        for other in sorted((k for k in self.resources if k == key or k.startswith(key + "/")), reverse=True):
            removed = self.resources.pop(other)
            if self.on_removed is not None:
                self.on_removed(removed)

    # ------------------------------------------------------------------------ operations

    def start_operation(self, resource_id: str, kind: str, fail: ArmError | None = None) -> Operation:
        operation = Operation(
            id=str(uuid.uuid4()),
            resource_id=resource_id,
            kind=kind,
            done_at=self.clock() + self.lro_delay_seconds,
            started=utc_now(),
            fail=fail,
        )
        with self.lock:
            self.operations[operation.id] = operation
            self._pending.add(operation.id)
        return operation

    def operation(self, operation_id: str) -> Operation | None:
        with self.lock:
            self._advance()
            return self.operations.get(operation_id)

    def _advance(self) -> None:
        """Finish the operations whose time has come: provisioningState moves on."""
        now = self.clock()
        for operation_id in [i for i in self._pending if self.operations[i].done_at <= now]:
            self._pending.discard(operation_id)
            operation = self.operations[operation_id]
            operation.finished = True
            key = operation.resource_id.lower()
            resource = self.resources.get(key)
            if operation.kind == "delete":
                if operation.fail is None:
                    self._remove(key)
                continue
            if resource is None:
                continue
            properties = resource.setdefault("properties", {})
            properties["provisioningState"] = "Failed" if operation.fail else "Succeeded"
            if resource["type"].lower() == "microsoft.app/containerapps" and not operation.fail:
                self._revision_ready(resource)

    def _revision_ready(self, app: dict[str, Any]) -> None:
        properties = app["properties"]
        latest = properties.get("latestRevisionName")
        if latest and properties.get("latestReadyRevisionName") != latest:
            failure = self.on_revision_active(copy.deepcopy(app)) if self.on_revision_active is not None else None
            revision = self.resources.get(f"{app['id']}/revisions/{latest}".lower())
            if failure is None:
                properties["latestReadyRevisionName"] = latest
            if revision is not None:
                revision["properties"].pop("provisioningError", None)
                revision["properties"].update(
                    {"provisioningState": "Provisioned", "runningState": "Running", "healthState": "Healthy"}
                    if failure is None
                    else {"provisioningState": "Failed", "runningState": "Failed", "healthState": "Unhealthy", "provisioningError": failure}
                )

    def restart_revision(self, revision_id: str) -> None:
        """Revisions_Restart: the revision's replicas start again; a failed newest revision is
        tried again (what failed it may have been fixed since, e.g. AcrPull granted)."""
        with self.lock:
            self._advance()
            app_id = revision_id.lower().rsplit("/revisions/", 1)[0]
            app = self.resources.get(app_id)
            if app is None:
                return
            if str(app["properties"].get("latestRevisionName", "")).lower() == revision_id.lower().rsplit("/", 1)[-1]:
                app["properties"].pop("latestReadyRevisionName", None)
                self._revision_ready(app)
