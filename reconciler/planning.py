"""Dry runs: the actions reconcile would take, computed by the same observe + plan, applying
nothing. Serves POST /v1/deployments/{name}/plan and POST /v1/plan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from infra.provider import Target
from reconciler.core import Reconciler
from reconciler.errors import classify


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PlannedAction(_Wire):
    verb: Literal["create", "update", "restart", "delete"]
    kind: str
    name: str
    reason: str


class Blocker(_Wire):
    reason: str
    message: str
    permanent: bool


class Plan(_Wire):
    deployment: str
    target: str
    actions: list[PlannedAction] = Field(default_factory=list)
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
    for action in plan.actions:
        plan.summary[action.verb] = plan.summary.get(action.verb, 0) + 1
    return plan
