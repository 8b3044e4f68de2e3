"""Status transitions: pure, and stable when nothing changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.errors import PermanentError, TemporaryError
from infra.provider import Observation, ObservedResource
from reconciler import status as statuses
from reconciler.errors import Classified, classify
from state.resource import DeploymentStatus

T0 = datetime(2026, 11, 21, tzinfo=UTC)
READY = Observation(
    None,
    resources=[ObservedResource("ServingProcess", "pid:1", "Running")],
    endpoint="http://127.0.0.1:9",
    ready=True,
    detail="serving at http://127.0.0.1:9",
)


def conditions(status: DeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_converged_and_ready():
    status = statuses.converged(DeploymentStatus(), 3, READY, T0)
    assert status.phase == "Ready" and status.observed_generation == 3
    assert status.endpoint == "http://127.0.0.1:9"
    assert conditions(status) == {
        "Ready": ("True", "Serving"),
        "Progressing": ("False", "Reconciled"),
        "Degraded": ("False", "AsExpected"),
    }
    assert [c.type for c in status.conditions] == ["Ready", "Progressing", "Degraded"]


def test_the_same_facts_later_give_the_same_status():
    first = statuses.converged(DeploymentStatus(), 1, READY, T0)
    again = statuses.converged(first, 1, READY, T0 + timedelta(minutes=5))
    assert again == first  # lastTransitionTime did not move: no write


def test_a_flip_moves_last_transition_time():
    ready = statuses.converged(DeploymentStatus(), 1, READY, T0)
    later = T0 + timedelta(seconds=30)
    error = classify(TemporaryError("exited", reason="ServingProcessCrashed"))
    failed = statuses.failed(ready, 1, Observation(None, detail="not running"), error, later)
    assert failed.phase == "Degraded"
    by_type = {c.type: c for c in failed.conditions}
    assert by_type["Degraded"].last_transition_time == later
    assert by_type["Ready"].status == "False" and by_type["Ready"].last_transition_time == later
    assert by_type["Progressing"].reason == "Retrying"


def test_a_permanent_error_stops_progressing_and_says_why():
    error = classify(PermanentError("the base model folder /x is missing", reason="ModelNotFound"))
    assert error == Classified(True, "ModelNotFound", "the base model folder /x is missing")
    status = statuses.failed(DeploymentStatus(), 2, None, error, T0)
    assert conditions(status)["Degraded"] == ("True", "ModelNotFound")
    assert conditions(status)["Progressing"] == ("False", "ModelNotFound")
    assert status.message == "the base model folder /x is missing"


def test_anything_unexpected_is_temporary():
    error = classify(KeyError("boom"))
    assert (error.permanent, error.reason, error.delay) == (False, "UnexpectedError", None)


def test_a_restart_of_a_ready_deployment_is_not_reported_ready():
    ready = statuses.converged(DeploymentStatus(), 1, READY, T0)
    restarting = statuses.progressing(ready, 2, Observation(None, detail="starting"), "restart ServingProcess bot", T0)
    assert restarting.phase == "Provisioning"
    assert conditions(restarting)["Ready"] == ("False", "Provisioning")
    adopted = statuses.progressing(ready, 2, READY, "update ServingProcess bot: adopting it", T0)
    assert adopted.phase == "Ready"


def test_ready_is_true_exactly_when_the_phase_is_ready():
    """Before: a deployment whose new spec failed while the old process still answered showed
    PHASE Degraded and READY True in 'loraplane get'."""
    from reconciler.rollout import RolloutReport
    from state.resource import NamedAdapterStatus

    error = classify(PermanentError("the base model folder /x is missing", reason="ModelNotFound"))
    ready = statuses.converged(DeploymentStatus(), 1, READY, T0)
    rolled_back = RolloutReport(
        [NamedAdapterStatus(name="support-bot", serving_version="a")],
        False,
        "AdapterRolloutFailed",
        "b failed; rolled back to a",
        failed=True,
    )
    seen = [
        ready,
        statuses.failed(ready, 2, READY, error, T0),  # the old process still answers
        statuses.failed(ready, 2, None, error, T0),
        statuses.with_rollout(statuses.converged(ready, 1, READY, T0), rolled_back, T0),
        statuses.progressing(ready, 2, Observation(None, detail="starting"), "restart", T0),
        statuses.deleting(ready, "tearing down", T0),
    ]
    for status in seen:
        assert (status.phase == "Ready") == (conditions(status)["Ready"][0] == "True"), status
    answering = conditions(seen[1])["Ready"]
    assert answering == ("False", "ModelNotFound")
    assert "the endpoint answers" in next(c.message for c in seen[1].conditions if c.type == "Ready")
