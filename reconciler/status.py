"""Status as a pure function of what the reconciler learned. Messages hold nothing that changes
from one pass to the next when the world does not (no timestamps, no counters), so a steady
state writes nothing.

The Ready condition is True exactly when the phase is Ready: a Degraded deployment whose
endpoint still answers (with what was applied before, or with the adapter a failed rollout
went back to) is not Ready, and its Ready condition says that the endpoint answers and why the
deployment is not as asked. ``loraplane get`` shows PHASE and READY side by side: they never
contradict each other."""

from __future__ import annotations

from datetime import datetime

from infra.provider import Observation
from reconciler.errors import Classified
from reconciler.rollout import RolloutReport
from state.resource import Condition, ConditionStatus, ConditionType, DeploymentStatus, ResourceRef


def set_condition(status: DeploymentStatus, type_: ConditionType, value: ConditionStatus, reason: str, message: str, now: datetime) -> None:
    """Set a condition; lastTransitionTime moves only when its status flips."""
    for index, existing in enumerate(status.conditions):
        if existing.type == type_:
            if (existing.status, existing.reason, existing.message) == (value, reason, message):
                return  # as it was: a steady pass sets four conditions, none of them new
            changed_at = existing.last_transition_time if existing.status == value else now
            status.conditions[index] = Condition(type=type_, status=value, reason=reason, message=message, last_transition_time=changed_at)
            return
    status.conditions.append(Condition(type=type_, status=value, reason=reason, message=message, last_transition_time=now))
    status.conditions.sort(key=lambda c: ["Ready", "Progressing", "Degraded", "AdapterSynced"].index(c.type))


def copied(status: DeploymentStatus) -> DeploymentStatus:
    """A copy to change: through its wire form, a few times cheaper than a deep copy, which
    walks the model in Python (a steady pass makes one)."""
    return DeploymentStatus.model_validate(status.wire())


def _base(previous: DeploymentStatus, generation: int, observation: Observation | None) -> DeploymentStatus:
    status = copied(previous)
    status.observed_generation = generation
    if observation is not None:
        status.endpoint = observation.endpoint
        seen = [(r.kind, r.id, r.state, r.managed_by) for r in observation.resources]
        if seen != [(r.kind, r.id, r.state, r.managed_by) for r in status.resources]:  # else the copy's are these
            status.resources = [ResourceRef(kind=kind, id=id_, state=state, managed_by=by) for kind, id_, state, by in seen]
    return status


def converged(previous: DeploymentStatus, generation: int, observation: Observation, now: datetime) -> DeploymentStatus:
    """Nothing left to do: Ready if the endpoint answers, Stopped if the spec asks that nothing
    run, else still coming up."""
    status = _base(previous, generation, observation)
    set_condition(status, "Degraded", "False", "AsExpected", "", now)
    if observation.ready:
        status.phase = "Ready"
        status.message = None
        set_condition(status, "Ready", "True", "Serving", observation.detail, now)
        set_condition(status, "Progressing", "False", "Reconciled", "the deployment matches its spec", now)
    elif observation.stopped:
        status.phase = "Stopped"
        status.message = observation.detail
        set_condition(status, "Ready", "False", "Stopped", observation.detail, now)
        set_condition(status, "Progressing", "False", "Reconciled", "the deployment matches its spec", now)
    else:
        status.phase = "Provisioning"
        status.message = observation.detail
        set_condition(status, "Ready", "False", "NotReady", observation.detail, now)
        set_condition(status, "Progressing", "True", "Starting", observation.detail, now)
    return status


def progressing(
    previous: DeploymentStatus, generation: int, observation: Observation | None, message: str, now: datetime
) -> DeploymentStatus:
    """Actions were just applied; Ready only if what answers now already is (e.g. adopted)."""
    status = _base(previous, generation, observation)
    ready = observation is not None and observation.ready
    status.phase = "Ready" if ready else "Provisioning"
    status.message = message
    set_condition(status, "Progressing", "True", "Applying", message, now)
    set_condition(status, "Degraded", "False", "AsExpected", "", now)
    if ready and observation is not None:
        set_condition(status, "Ready", "True", "Serving", observation.detail, now)
    else:
        set_condition(status, "Ready", "False", "Provisioning", message, now)
    return status


def failed(
    previous: DeploymentStatus, generation: int, observation: Observation | None, error: Classified, now: datetime
) -> DeploymentStatus:
    status = _base(previous, generation, observation)
    status.phase = "Degraded"
    status.message = error.message
    set_condition(status, "Degraded", "True", error.reason, error.message, now)
    answering = observation is not None and observation.ready
    set_condition(status, "Ready", "False", error.reason, _not_ready_but_answering(error.message) if answering else error.message, now)
    if error.permanent:
        set_condition(
            status,
            "Progressing",
            "False",
            error.reason,
            "stopped retrying: this needs a change to the spec or to what it points at",
            now,
        )
    else:
        set_condition(status, "Progressing", "True", "Retrying", "retrying with backoff", now)
    return status


def with_rollout(status: DeploymentStatus, report: RolloutReport, now: datetime) -> DeploymentStatus:
    """The adapter's part of a converged status: AdapterSynced, and Degraded (phase too) when
    the newest adapter failed and an older one serves, or a pin names no usable version."""
    status.adapter = report.adapter
    status.adapters = report.adapters
    synced = report.synced and not report.failed
    set_condition(status, "AdapterSynced", "True" if synced else "False", report.reason, report.message, now)
    if report.failed:
        status.phase = "Degraded"
        status.message = report.message
        set_condition(status, "Degraded", "True", report.reason, report.message, now)
        set_condition(status, "Ready", "False", report.reason, _not_ready_but_answering(report.message), now)
    elif not report.synced and status.phase == "Ready" and report.reason not in ("Serving",):
        status.message = report.message
    return status


def _not_ready_but_answering(why: str) -> str:
    return f"the endpoint answers, but the deployment is not as asked: {why}"


def deleting(previous: DeploymentStatus, message: str, now: datetime) -> DeploymentStatus:
    status = previous.model_copy(deep=True)
    status.phase = "Deleting"
    status.message = message
    set_condition(status, "Progressing", "True", "Deleting", message, now)
    set_condition(status, "Ready", "False", "Deleting", message, now)
    return status
