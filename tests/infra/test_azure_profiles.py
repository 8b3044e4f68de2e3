"""Which workload profile the app runs on, and what the environment must gain: pure."""

from __future__ import annotations

from infra.azure.profiles import choose_profile
from state.resource import WorkloadProfileSpec

CONSUMPTION = {"name": "Consumption", "workloadProfileType": "Consumption"}
TOOLKIT_GPU = {"name": "GPU", "workloadProfileType": "NC24-A100", "minimumCount": 0, "maximumCount": 1}


def environment(*profiles: dict) -> dict:
    return {"name": "ai-env", "properties": {"workloadProfiles": [CONSUMPTION, *profiles]}}


def wanted(type_: str, name: str | None = None) -> WorkloadProfileSpec:
    return WorkloadProfileSpec.model_validate({"type": type_, "name": name} if name else {"type": type_})


def test_the_consumption_profile_is_always_there_under_its_own_name():
    assert choose_profile(wanted("Consumption"), None, max_replicas=3).name == "Consumption"
    assert choose_profile(wanted("consumption"), environment(), max_replicas=3).add is None


def test_a_new_environment_gets_a_profile_named_after_its_type():
    serverless = choose_profile(wanted("Consumption-GPU-NC24-A100"), None, max_replicas=3)
    assert serverless.name == "gpu-nc24-a100" and serverless.problem is None
    assert serverless.add == {"name": "gpu-nc24-a100", "workloadProfileType": "Consumption-GPU-NC24-A100"}  # no counts
    dedicated = choose_profile(wanted("NC24-A100"), None, max_replicas=3)
    assert dedicated.add == {"name": "nc24-a100", "workloadProfileType": "NC24-A100", "minimumCount": 0, "maximumCount": 3}
    named = choose_profile(wanted("NC24-A100", "a100"), None, max_replicas=0)
    assert named.add == {"name": "a100", "workloadProfileType": "NC24-A100", "minimumCount": 0, "maximumCount": 1}


def test_a_profile_of_the_type_already_there_is_reused_under_whatever_name_it_has():
    # The AI Toolkit's environment has its dedicated A100 profile named "GPU".
    assert choose_profile(wanted("NC24-A100"), environment(TOOLKIT_GPU), max_replicas=1) == choose_profile(
        wanted("nc24-a100", "gpu"), environment(TOOLKIT_GPU), max_replicas=1
    )
    reused = choose_profile(wanted("NC24-A100", "a100"), environment(TOOLKIT_GPU), max_replicas=1)
    assert (reused.name, reused.add, reused.problem) == ("GPU", None, None)


def test_a_dedicated_gpu_profile_cannot_be_added_to_an_existing_environment():
    choice = choose_profile(wanted("NC24-A100"), environment(), max_replicas=1)
    assert choice.add is None
    assert choice.problem is not None and "only when it creates an environment" in choice.problem
    assert "serverless GPU type" in choice.problem and "new spec.azure.environment" in choice.problem
    # A serverless one may be added to it.
    later = choose_profile(wanted("Consumption-GPU-NC24-A100"), environment(), max_replicas=1)
    assert later.problem is None and later.add is not None


def test_a_name_another_profile_has_ignoring_case_is_a_problem_not_a_second_profile():
    taken = environment({"name": "GPU", "workloadProfileType": "D4", "minimumCount": 0, "maximumCount": 1})
    choice = choose_profile(wanted("Consumption-GPU-NC24-A100", "gpu"), taken, max_replicas=1)
    assert choice.add is None and "already has a profile named 'GPU' of type D4" in (choice.problem or "")
