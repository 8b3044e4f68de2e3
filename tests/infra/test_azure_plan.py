"""The azure target's plan, apart from any doing: from what was observed to what must be done,
what is waited for, and what cannot be done. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from infra.azure.desired import value_at
from infra.azure.kinds import KINDS, DesiredContext, Failure, desired_resources
from infra.azure.plan import REVISION, WHEEL, AzureFacts, changes
from infra.errors import PermanentError, TemporaryError
from infra.provider import Target
from state.resource import DeploymentSpec
from tests.conftest import azure_manifest

WHEEL_NAME = "loraplane_serving-0.1.0+gaaaaaaaaaaaa-py3-none-any.whl"


def target(**azure: Any) -> Target:
    manifest = azure_manifest("support-bot", **azure)
    return Target("support-bot", "uid-1", 1, DeploymentSpec.model_validate(manifest["spec"]).with_defaults("support-bot"))


def as_azure_shows(t: Target, **states: str) -> dict[str, dict[str, Any]]:
    """Every kind as Azure would show it after creating the desired body, with a
    provisioningState (Succeeded unless given)."""
    shown: dict[str, dict[str, Any]] = {}
    for resource in desired_resources(t, wheel=WHEEL_NAME):
        body = {**resource.body, "id": resource.id, "name": resource.name, "properties": dict(resource.body.get("properties") or {})}
        body["properties"]["provisioningState"] = states.get(resource.kind, "Succeeded")
        shown[resource.kind] = body
    app = shown["ContainerApp"]["properties"]
    app["latestRevisionName"] = app["latestReadyRevisionName"] = "support-bot--abc"
    return shown


def facts(t: Target, observed: dict[str, Any], **more: Any) -> AzureFacts:
    return AzureFacts(observed=observed, wheel=WHEEL_NAME, **more)


def test_from_nothing_the_first_kinds_are_created_and_the_rest_wait_for_them():
    t = target()
    plan = changes(t, facts(t, {kind.name: None for kind in KINDS}))
    assert [(c.verb, c.kind) for c in plan.changes] == [("create", "ResourceGroup")]  # the rest live in it
    assert plan.problem is None


def test_a_converged_deployment_plans_nothing():
    t = target()
    plan = changes(t, facts(t, as_azure_shows(t)))
    assert (plan.changes, plan.waiting, plan.problem) == ((), (), None)


BUSY = {
    "ResourceGroup": ["Deleting"],
    "StorageAccount": ["Creating", "ResolvingDNS"],
    "Workspace": ["Creating", "Deleting", "ProvisioningAccount", "Updating"],
    "ManagedEnvironment": [
        "Waiting",
        "InitializationInProgress",
        "InfrastructureSetupInProgress",
        "InfrastructureSetupComplete",
        "ScheduledForDelete",
        "UpgradeRequested",
    ],
    "ContainerApp": ["InProgress", "Deleting"],
}
FAILED = {
    "StorageAccount": ["Failed", "Canceled"],
    "Workspace": ["Failed", "Canceled"],
    "ManagedEnvironment": ["Failed", "Canceled", "UpgradeFailed"],
    "ContainerApp": ["Failed", "Canceled"],
}


@pytest.mark.parametrize(("kind", "state"), [(k, s) for k, states in BUSY.items() for s in states])
def test_every_busy_state_of_every_kind_is_waited_for(kind: str, state: str):
    t = target()
    plan = changes(t, facts(t, as_azure_shows(t, **{kind: state})))
    assert any(f"({state})" in waited and kind in waited for waited in plan.waiting), plan.waiting
    assert not [c for c in plan.changes if c.kind == kind]


@pytest.mark.parametrize(("kind", "state"), [(k, s) for k, states in FAILED.items() for s in states])
def test_every_failed_state_of_every_kind_is_tried_again(kind: str, state: str):
    t = target()
    plan = changes(t, facts(t, as_azure_shows(t, **{kind: state})))
    assert [(c.verb, c.kind, c.reason) for c in plan.changes if c.kind == kind] == [
        ("update", kind, f"its provisioning {state.lower()}; trying again")
    ]


def test_what_loraplane_holds_an_adopted_resource_to_is_what_the_deployment_needs_of_it():
    t = target()
    shown = as_azure_shows(t)
    shown["StorageAccount"]["sku"] = {"name": "Premium_ZRS"}  # their choice, not drift for us
    shown["ManagedEnvironment"]["properties"]["appLogsConfiguration"] = {"destination": "azure-monitor"}
    assert changes(t, facts(t, shown, adopted=frozenset({"StorageAccount", "ManagedEnvironment"}))).changes == ()
    assert [c.kind for c in changes(t, facts(t, shown)).changes] == ["StorageAccount", "ManagedEnvironment"]  # ours: fixed


def test_a_failed_revision_is_reported_with_azures_text_unless_a_change_to_the_app_is_planned():
    t = target()
    failure = Failure("RevisionFailed", "revision support-bot--abc failed to start: OOMKilled", revision="support-bot--abc")
    plan = changes(t, facts(t, as_azure_shows(t), failure=failure))
    assert isinstance(plan.problem, PermanentError) and plan.problem.reason == "RevisionFailed" and "OOMKilled" in plan.problem.message
    changed = target(workloadProfile={"type": "Consumption-GPU-NC8as-T4"})
    plan = changes(changed, facts(changed, as_azure_shows(t), failure=failure))
    assert plan.problem is None and "ContainerApp" in [c.kind for c in plan.changes]  # the change may be the fix


def test_a_revision_that_could_not_pull_from_the_teams_registry_is_restarted_now_and_then():
    t = target(image="myteam.azurecr.io/loraplane-serving:1", registry={"server": "myteam.azurecr.io"})
    failure = Failure("RevisionFailed", "revision r failed to start: unauthorized", revision="support-bot--abc", image_pull=True)
    shown = as_azure_shows(t)
    plan = changes(t, AzureFacts(observed=shown, failure=failure))
    assert [(c.verb, c.kind, c.name) for c in plan.changes] == [("restart", REVISION, "support-bot--abc")]
    plan = changes(t, AzureFacts(observed=shown, failure=failure, restart_allowed=False))
    assert isinstance(plan.problem, TemporaryError) and "AcrPull" in plan.problem.message


def test_a_profile_the_environment_cannot_gain_is_a_permanent_problem_before_any_write():
    t = target(workloadProfile={"type": "NC24-A100"})
    shown = as_azure_shows(target())  # an environment that exists, without an NC24-A100 profile
    shown["ManagedEnvironment"]["properties"]["workloadProfiles"] = [{"name": "Consumption", "workloadProfileType": "Consumption"}]
    plan = changes(t, facts(t, shown))
    assert isinstance(plan.problem, PermanentError) and plan.problem.reason == "WorkloadProfileUnavailable"
    assert not [c for c in plan.changes if c.kind in ("ManagedEnvironment", "ContainerApp")]


def test_superseded_wheels_are_removed_only_once_the_app_runs_the_new_one():
    t = target()
    shown = as_azure_shows(t)
    dist = ("loraplane_serving-0.0.1+gbbbbbbbbbbbb-py3-none-any.whl", WHEEL_NAME, "notes.txt")
    plan = changes(t, facts(t, shown, dist=dist))
    assert [(c.verb, c.kind, c.name) for c in plan.changes] == [("delete", WHEEL, dist[0])]
    assert changes(t, facts(t, shown, dist=dist, wheels_in_use=frozenset({dist[0]}))).changes == ()  # another app installs it
    shown["ContainerApp"]["properties"]["latestReadyRevisionName"] = "support-bot--old"  # the new revision is not ready
    assert changes(t, facts(t, shown, dist=dist)).changes == ()


def test_the_app_asks_the_size_and_the_profile_the_environment_has():
    t = target()
    context = DesiredContext(
        t,
        WHEEL_NAME,
        {
            "ManagedEnvironment": {
                "name": "env",
                "properties": {"workloadProfiles": [{"name": "A100s", "workloadProfileType": "Consumption-GPU-NC24-A100"}]},
            }
        },
    )
    app = next(kind for kind in KINDS if kind.name == "ContainerApp").desired(context).body
    assert value_at(app, ("properties", "workloadProfileName")) == "A100s"
    assert value_at(app, ("properties", "template", "containers"))[0]["resources"] == {"cpu": 24.0, "memory": "220Gi"}
