"""The interfaces a target implements, and the values that cross them.

A target is three small jobs, each its own Protocol:

- ``Provider`` is the lifecycle of what a deployment runs on: ``observe`` (read only), ``plan``
  (pure: desired + observed -> actions), ``apply`` (make the calls), ``delete`` (tear down what
  loraplane created). Its observation carries a typed, provider-private part (``P``) that only
  its own ``plan`` reads.
- ``AdapterHost`` is the adapter data plane: the share, and the serving app's adapter calls.
- ``LogSource`` is where the serving app's log can be read.

``Background`` is what a target runs beside the reconciler (the local target's process monitor):
started and stopped with the reconcile loop. ``Target`` providers implement all four.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from infra.endpoints import AppAnswer
from infra.errors import ProviderError
from state.resource import DeploymentSpec

Verb = Literal["create", "update", "restart", "activate", "deactivate", "delete"]
P = TypeVar("P")


@dataclass(frozen=True)
class RevisionSplit:
    """A restart-strategy rollout proved by a gate or a canary on the azure target: the app keeps
    the revision that serves users beside the newest (activeRevisionsMode Multiple). The newest
    revision runs the target's versions (``adapter_version(s)``); ``stable`` names the versions
    of the revision users get (by adapter); ``weight`` is the newest revision's share of the
    requests while it is proved (0 during its gate, the canary's weight), None otherwise: the
    newest takes every request once it is ready, when it runs what users should get."""

    stable: dict[str, str]
    weight: int | None = None


@dataclass(frozen=True)
class Target:
    """One deployment as a provider sees it: who it is, what it should be, and the adapter
    versions its serving app must run with (under the restart strategy a new version is a new
    process or revision; under hotReload the pointer on the share decides)."""

    name: str
    uid: str
    generation: int
    spec: DeploymentSpec
    adapter_version: str | None = None  # spec.adapter's, under the restart strategy
    # spec.adapters': the version of each adapter rolled out by restart
    adapter_versions: dict[str, str] = field(default_factory=dict)
    # Several revisions at once, for a restart rollout's gate or canary (None: one revision).
    revisions: RevisionSplit | None = None
    # Why nothing may run now, whatever the spec's scale (a budget spent, with scaleToZero).
    held: str | None = None

    def restart_versions(self) -> dict[str, str]:
        """The versions the newest revision runs, by adapter (restart strategy)."""
        return dict(self.adapter_versions) if self.adapter_versions else ({self.name: self.adapter_version} if self.adapter_version else {})

    def restart_env(self) -> dict[str, str]:
        """The serving app's environment that names the versions it must serve (the restart
        strategy) and whether it follows the pointer at all."""
        env: dict[str, str] = {}
        if all(entry.strategy == "restart" for entry in self.spec.adapter_entries(self.name)):
            env["LORAPLANE_WATCH"] = "false"  # a new adapter is a new process (revision), never a swap
        if self.adapter_version:
            env["LORAPLANE_ADAPTER_VERSION"] = self.adapter_version
        if self.adapter_versions:
            env["LORAPLANE_ADAPTER_VERSIONS"] = json.dumps(dict(sorted(self.adapter_versions.items())))
        return env


def deployment_folder(deployment: str, uid: str) -> str:
    """The deployment's own folder on the share (its pointer and staged versions), relative to
    the share root. Keyed by uid as well as name: a deployment deleted and created again under
    the same name never finds the pointer or the versions of the one before (a pointer left
    behind would have the new one serve the old adapter)."""
    return f".loraplane/{deployment}/{uid[:8] or 'new'}"


def pointer_path(deployment: str, uid: str) -> str:
    """The pointer file every replica follows, relative to the share root."""
    return f"{deployment_folder(deployment, uid)}/current.json"


def keys_path(deployment: str, uid: str) -> str:
    """The inference keys' hashes and limits (keys.json), beside the pointer, relative to the
    share root: every replica follows it as it follows the pointer."""
    return f"{deployment_folder(deployment, uid)}/keys.json"


def replicas_folder(deployment: str, uid: str) -> str:
    """Where each serving replica reports how it is doing (one file a replica process)."""
    return f"{deployment_folder(deployment, uid)}/replicas"


def usage_folder(deployment: str, uid: str) -> str:
    """Where each replica writes what it served under each key (one file a replica)."""
    return f"{deployment_folder(deployment, uid)}/usage"


def staged_path(deployment: str, uid: str, version: str) -> str:
    """Where a version is staged: an immutable copy, relative to the share root."""
    return f"{deployment_folder(deployment, uid)}/adapters/{version}"


@dataclass(frozen=True)
class Action:
    verb: Verb
    kind: str  # the resource kind, e.g. "ServingProcess" or "ContainerApp"
    name: str
    reason: str  # why, for a person: "not running", "spec changed: model.path"
    # What the provider decided to send, for its own apply (e.g. the desired body): the plan
    # is made once, and apply does exactly what it says. Not part of what an action is.
    payload: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.verb} {self.kind} {self.name}: {self.reason}"


@dataclass(frozen=True)
class ObservedResource:
    kind: str
    id: str
    state: str
    managed_by: Literal["loraplane", "adopted"] = "loraplane"


@dataclass
class Observation(Generic[P]):
    """What exists now. ``ready`` means the endpoint answers as a deployment should;
    ``private`` is the provider's own record of what it saw, for its ``plan``."""

    private: P
    resources: list[ObservedResource] = field(default_factory=list)
    endpoint: str | None = None
    ready: bool = False
    detail: str = ""  # what is going on, for the status message
    # Nothing answers, and that is what the spec asks (scaled to zero replicas): settled, not
    # coming up.
    stopped: bool = False
    # The share the adapters are on exists, so they can be staged (the azure target: once its
    # file share is there; a local share root always is).
    share_ready: bool = True
    # Serving replicas running now (what GPU time is counted by); None: not known this pass.
    replicas: int | None = None
    # What was observed, as a value equal from one pass to the next only when nothing observed
    # changed (the resources as read, the replicas, readiness); None: the provider cannot tell.
    # A pass may then trust what it confirmed before instead of asking the app again.
    token: Hashable | None = None


@dataclass(frozen=True)
class ShareEntry:
    name: str
    size: int
    is_dir: bool = False
    etag: str | None = None  # changes whenever the content may have (an mtime locally)
    md5: str | None = None  # the content's MD5, where the store keeps one


class AdapterShare(Protocol):
    """The deployment's share, as the adapter rollout uses it (paths relative to its root)."""

    def list(self, folder: str) -> list[ShareEntry] | None:
        """The folder's entries; None when there is no such folder."""
        ...

    def read(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes: ...

    def copy(self, source: str, destination: str) -> None:
        """A file, within the share (server-side where the store can); folders made as needed."""
        ...

    def write(self, path: str, content: bytes) -> None:
        """Replace a file atomically: a reader sees the old content or the new, never a part."""
        ...

    def remove_tree(self, folder: str) -> None:
        """Remove a folder and everything in it; one that is already gone is fine."""
        ...

    def close(self) -> None: ...


Refusal = tuple[str, str]  # (the field as the user wrote it, e.g. "spec.local.shareRoot"; why)


class Provider(Protocol[P]):
    def admit(self, spec: DeploymentSpec) -> list[Refusal]:
        """What this target refuses in a spec that its schema accepts: the operator's policy
        (the local target's allowed share roots). Asked before a spec is stored or planned and
        at every pass, so a spec the policy no longer allows stops being acted on."""
        ...

    def observe(self, target: Target) -> Observation[P]: ...

    def plan(self, target: Target, observation: Observation[P]) -> list[Action]:
        """Pure: the same inputs give the same actions; raises PermanentError or
        TemporaryError when the desired state cannot be reached from what was observed."""
        ...

    def apply(self, target: Target, actions: list[Action]) -> None: ...

    def delete(self, target: Target) -> bool:
        """Tear down what loraplane created for this deployment; True once nothing is left."""
        ...


class AdapterHost(Protocol):
    def share(self, target: Target) -> AdapterShare: ...

    def adapter_status(self, target: Target, endpoint: str) -> dict:
        """What the serving app serves (``/v1/adapter``'s answer; one replica's)."""
        ...

    def adapter_statuses(self, target: Target, endpoint: str, probes: int) -> list[dict]:
        """What the replicas serve: enough answers to hear from each (``probes`` asks through
        ingress, which picks a replica for each; or each replica's report on the share)."""
        ...

    def reload_adapter(self, target: Target, endpoint: str) -> dict:
        """Ask the serving app to look at the pointer now (with its admin token)."""
        ...

    def version_endpoint(self, target: Target, endpoint: str, versions: dict[str, str]) -> str | None:
        """Where a version being proved answers: the app's endpoint, where every replica loads
        it beside the serving one; or, where a restart rollout runs it in a revision of its own,
        that revision's endpoint (None while no active revision runs ``versions``)."""
        ...

    def ask(self, target: Target, endpoint: str, route: str, body: dict, timeout: float) -> AppAnswer:
        """Ask the serving app at ``endpoint`` as loraplane (a gate's golden prompt): ``route``
        is ``chat/completions`` or ``completions``. Raises TemporaryError when nothing answers."""
        ...


def read_reports(share: AdapterShare, folder: str) -> list[dict[str, Any]]:
    """The JSON files the replicas wrote in ``folder`` of the share (serving.reports), parsed;
    one being replaced, or not a report, is skipped: the next look reads it."""
    reports = []
    for entry in share.list(folder) or []:
        if entry.is_dir or entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        try:
            report = json.loads(share.read(f"{folder}/{entry.name}"))
        except (ValueError, OSError, ProviderError):
            continue
        if isinstance(report, dict):
            reports.append(report)
    return reports


class LogSource(Protocol):
    def logs(self, target: Target, tail: int) -> str: ...


class Background(Protocol):
    def start(self) -> None:
        """With the reconcile loop: start what the target watches in the background."""
        ...

    def stop(self) -> None:
        """With the reconcile loop: stop watching and close connections; what serves keeps
        serving (a restart adopts it)."""
        ...

    def stop_all(self) -> None:
        """Also stop what serves (``serve --stop-children``)."""
        ...

    def left_running(self) -> list[str]:
        """What keeps running on this machine when the daemon stops without stopping it, for
        the log to say (e.g. "demo (pid 4242)")."""
        ...


class TargetProvider(Provider[P], AdapterHost, LogSource, Background, Protocol[P]):
    """Everything the reconciler needs of one target."""


@dataclass(frozen=True)
class ResourceRecord:
    """What a provider must remember about one cloud resource across restarts: whether
    loraplane created it (so it may delete it), and the long-running operation in flight on
    it, as the SDK's continuation token (never holding a secret)."""

    resource_id: str
    kind: str
    created: bool = False
    operation: str | None = None  # "create", "update" or "delete" while one runs
    continuation_token: str | None = None


class ResourceJournal(Protocol):
    """Durable memory for providers, by deployment uid (the reconciler backs it with the
    database, through its one fenced writer)."""

    def records(self, deployment_uid: str) -> dict[str, ResourceRecord]:
        """By resource id, lower-cased."""
        ...

    def save(self, deployment_uid: str, record: ResourceRecord) -> None: ...

    def forget(self, deployment_uid: str, resource_id: str | None = None) -> None:
        """One record, or (``resource_id`` None) all of the deployment's."""
        ...
