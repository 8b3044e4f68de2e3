"""Dry runs: the actions reconcile would take, computed by the same observe + plan, applying
nothing. Serves POST /v1/deployments/{name}/plan and POST /v1/plan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from infra.provider import Target
from reconciler.core import Reconciler
from reconciler.errors import classify
from state.errors import NotFound
from state.resource import AS_STORED, DeploymentSpec


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PlannedAction(_Wire):
    verb: Literal["create", "update", "restart", "activate", "deactivate", "delete"]
    kind: str
    name: str
    reason: str


class Blocker(_Wire):
    reason: str
    message: str
    permanent: bool


class AdapterChange(_Wire):
    """What the serving app would load, unload, or have rolled out to it, adapter by adapter."""

    verb: Literal["load", "unload", "rollOut"]
    adapter: str
    reason: str


class Plan(_Wire):
    deployment: str
    target: str
    actions: list[PlannedAction] = Field(default_factory=list)
    adapters: list[AdapterChange] = Field(default_factory=list)
    # Why the reconciler could not act, when it could not (e.g. the model folder is missing).
    blocked: Blocker | None = None
    summary: dict[str, int] = Field(default_factory=dict)


def dry_run(reconciler: Reconciler, target: Target, *, deleting: bool = False) -> Plan:
    plan = Plan(deployment=target.name, target=target.spec.target)
    refused = reconciler.admit(target.spec)
    if refused and not deleting:
        # Nothing is looked at on the spec's behalf: a dry run says no more than apply would.
        message = "; ".join(f"{field}: {why}" for field, why in refused)
        plan.blocked = Blocker(reason="InvalidSpec", message=message, permanent=True)
        return plan
    try:
        provider = reconciler.provider_for(target)
        observation = provider.observe(target)
        if deleting:
            actions = [
                PlannedAction(verb="delete", kind=r.kind, name=r.id, reason="the deployment is being deleted")
                for r in observation.resources
                if r.managed_by == "loraplane"
            ]
        else:
            actions = [PlannedAction(verb=a.verb, kind=a.kind, name=a.name, reason=a.reason) for a in provider.plan(target, observation)]
        plan.actions = actions
    except Exception as exc:  # a dry run reports why it is blocked; it never fails the request
        error = classify(exc)
        plan.blocked = Blocker(reason=error.reason, message=error.message, permanent=error.permanent)
    plan.adapters = adapter_changes(reconciler, target)
    for action in plan.actions:
        plan.summary[action.verb] = plan.summary.get(action.verb, 0) + 1
    return plan


def adapter_changes(reconciler: Reconciler, target: Target) -> list[AdapterChange]:
    """The spec's adapters against the stored deployment's: new ones load (their first
    version, once staged), removed ones unload, one whose folder or pin changed rolls out."""
    try:
        stored = reconciler.store.get(target.name)
        before = {e.name: e for e in DeploymentSpec.model_validate(stored.spec, context=AS_STORED).adapter_entries(target.name)}
    except (NotFound, ValidationError):
        before = {}
    after = {e.name: e for e in target.spec.adapter_entries(target.name)}
    restarts = " (restart strategy: the app restarts, and every adapter of the deployment with it)" if len(after) > 1 else ""
    changes = [
        AdapterChange(verb="load", adapter=name, reason=f"a new adapter: its first version from {entry.path} once it has settled")
        for name, entry in after.items()
        if name not in before
    ]
    changes += [AdapterChange(verb="unload", adapter=name, reason="no longer in the spec") for name in before if name not in after]
    for name, entry in after.items():
        old = before.get(name)
        if old is None:
            continue
        why = []
        if old.path != entry.path:
            why.append(f"its folder is now {entry.path}")
        if old.pin != entry.pin:
            why.append(f"pinned to {entry.pin}" if entry.pin else "the pin is dropped: the newest good version serves")
        if why:
            suffix = restarts if entry.strategy == "restart" else ""
            changes.append(AdapterChange(verb="rollOut", adapter=name, reason="; ".join(why) + suffix))
    return changes
