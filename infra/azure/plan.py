"""Decide, apart from doing: what would make Azure match the spec, from what was observed. Pure.

``changes(target, facts)`` walks the kinds parents first. A kind is looked at once its parents
exist and have finished provisioning; what is being waited for is said, what cannot be done
(a profile the environment cannot gain, an adopted account without shared keys, a revision
that cannot start) is a permanent problem for the status, and everything else is a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.azure.desired import DIST_FOLDER, WHEEL_PREFIX, DesiredResource, drifted_fields, value_at, wheels_named
from infra.azure.kinds import KINDS, ContainerApp, DesiredContext, Failure
from infra.azure.revisions import done
from infra.errors import PermanentError, ProviderError, TemporaryError
from infra.provider import Action, Target

WHEEL = "ServingWheel"  # a serving wheel on the share, superseded: a file, not an ARM resource
REVISION = "ContainerAppRevision"


@dataclass(frozen=True)
class AzureFacts:
    """What a pass saw (the provider-private part of its observation)."""

    observed: dict[str, dict[str, Any] | None]  # by kind name; None: it does not exist
    busy: dict[str, str] = field(default_factory=dict)  # kind -> "creating" etc., while loraplane's operation runs
    adopted: frozenset[str] = frozenset()
    wheel: str | None = None  # the serving wheel the app must run (None: a prebuilt image)
    failure: Failure | None = None  # what Azure says is wrong with the running app
    restart_allowed: bool = True  # a failed revision may be restarted now (not restarted lately)
    dist: tuple[str, ...] | None = None  # the wheels in .loraplane/dist, when listed
    wheels_in_use: frozenset[str] = frozenset()  # the wheels the group's apps install
    revisions: tuple[dict[str, Any], ...] = ()  # the app's revisions, when several may be active


@dataclass(frozen=True)
class Change:
    verb: str  # create | update | restart | delete
    kind: str
    name: str
    reason: str
    resource: DesiredResource | None = None

    def action(self) -> Action:
        return Action(self.verb, self.kind, self.name, self.reason, payload=self.resource)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    waiting: tuple[str, ...] = ()
    problem: ProviderError | None = None  # raised by the provider's plan(): the status says why

    @property
    def actions(self) -> list[Action]:
        return [c.action() for c in self.changes]


def changes(target: Target, facts: AzureFacts) -> Plan:
    context = DesiredContext(target, facts.wheel, facts.observed, facts.revisions)
    settled: set[str] = set()
    found: list[Change] = []
    waiting: list[str] = []
    for kind in KINDS:
        desired = kind.desired(context)
        current = facts.observed.get(kind.name)
        if kind.name in facts.busy:
            waiting.append(f"{facts.busy[kind.name]} {kind.name} {desired.name}")
            continue
        if current is None:
            if all(dependency in settled for dependency in kind.depends_on):
                found.append(Change("create", kind.name, desired.name, "does not exist", desired))
            continue
        state = kind.state(current)
        if state.lower() in kind.busy_states:
            waiting.append(f"Azure to finish {kind.name} {desired.name} ({state})")
            continue
        if state.lower() in kind.failed_states:
            found.append(Change("update", kind.name, desired.name, f"its provisioning {state.lower()}; trying again", desired))
            continue
        adopted = kind.name in facts.adopted
        problem = kind.check(context, current, adopted=adopted)
        if problem is not None:
            return Plan(tuple(found), tuple(waiting), PermanentError(problem[1], reason=problem[0]))
        drift = drifted_fields(desired, current, adopted=adopted)
        if drift:
            found.append(Change("update", kind.name, desired.name, "drifted: " + ", ".join(drift), desired))
        settled.add(kind.name)
    app_changing = any(c.kind == ContainerApp.name for c in found)
    if facts.failure is not None and not app_changing and not waiting:
        failure = facts.failure
        registry = target.spec.azure.registry if target.spec.azure else None
        if failure.image_pull and registry is not None and failure.revision:
            if not facts.restart_allowed:
                return Plan(
                    tuple(found), tuple(waiting), TemporaryError(_pull_hint(failure.message, registry.identity), reason=failure.reason)
                )
            reason = "its image could not be pulled; trying again, in case AcrPull was granted since"
            found.append(Change("restart", REVISION, failure.revision, reason))
        else:
            return Plan(tuple(found), tuple(waiting), PermanentError(failure.message, reason=failure.reason))
    if not app_changing and not waiting and ContainerApp.name in settled:
        found.extend(_revision_changes(target, facts))
    found.extend(_superseded_wheels(facts))
    return Plan(tuple(found), tuple(waiting))


def _revision_changes(target: Target, facts: AzureFacts) -> list[Change]:
    """Revisions to deactivate or activate: all of them while the deployment is held at zero
    (a spent budget: deactivating a revision stops its replicas, revisions-manage); the newest
    again once the hold is over; one whose part in a restart rollout is over."""
    app = facts.observed.get(ContainerApp.name)
    active = [r for r in facts.revisions if (r.get("properties") or {}).get("active")]
    if target.held is not None:
        return [Change("deactivate", REVISION, str(r["name"]), "the budget is spent (spec.budget, action scaleToZero)") for r in active]
    latest = ((app or {}).get("properties") or {}).get("latestRevisionName")
    if not active and latest and any(r.get("name") == latest for r in facts.revisions):
        return [Change("activate", REVISION, str(latest), "nothing holds the deployment at zero any more")]
    return [
        Change("deactivate", REVISION, name, "it takes no traffic and is not the newest: its part in the rollout is over")
        for name in done(list(facts.revisions), app)
    ]


def _pull_hint(message: str, identity: str) -> str:
    who = "the app's system-assigned identity" if identity == "system" else f"the identity {identity.rsplit('/', 1)[-1]}"
    return f"{message}; grant {who} the AcrPull role on the registry: loraplane restarts the revision every few minutes until it starts"


def _superseded_wheels(facts: AzureFacts) -> list[Change]:
    """Old serving wheels go once the app's newest revision runs the current one, and no app of
    the group installs them any more (the AI Toolkit's glob of the dist folder then finds one)."""
    app = facts.observed.get(ContainerApp.name)
    if facts.wheel is None or app is None or facts.dist is None:
        return []
    properties = app.get("properties") or {}
    if properties.get("latestRevisionName") != properties.get("latestReadyRevisionName"):
        return []
    if wheels_named(value_at(properties, ("template",))) != {facts.wheel}:
        return []
    keep = facts.wheels_in_use | {facts.wheel}
    return [
        Change("delete", WHEEL, name, f"superseded by {facts.wheel}, which the app runs; no app installs it")
        for name in facts.dist
        if name.startswith(WHEEL_PREFIX) and name.endswith(".whl") and name not in keep
    ]


def wheel_path(name: str) -> str:
    return f"{DIST_FOLDER}/{name}"
