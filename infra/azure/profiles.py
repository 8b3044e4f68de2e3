"""Which workload profile the app runs on, and what the environment must gain for it. Pure.

Rules (workload-profiles-overview, workload-profiles-manage-cli, and what ARM answers):
- the app's ``workloadProfileName`` must name a profile of its environment;
- profile names are unique ignoring case, and ``Consumption`` is the Consumption profile's;
- an environment may hold several profiles of one type under different names ("friendly
  names"), so a profile of the wanted type is reused under whatever name it has, e.g. the AI
  Toolkit's dedicated A100 profile ``GPU``;
- a dedicated GPU profile is added only when the environment is created;
- a serverless GPU profile takes no minimumCount or maximumCount (Azure answers
  WorkloadProfilePropertyNotSupported); a dedicated one scales between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from state import azure_limits
from state.resource import WorkloadProfileSpec


@dataclass(frozen=True)
class ProfileChoice:
    name: str  # the app's workloadProfileName
    add: dict[str, Any] | None = None  # the profile the environment must gain (REST shape), if any
    problem: str | None = None  # why the app cannot have its profile: for a permanent error


def _profiles(environment: dict[str, Any] | None) -> list[dict[str, Any]]:
    found = ((environment or {}).get("properties") or {}).get("workloadProfiles") or []
    return [p for p in found if isinstance(p, dict) and isinstance(p.get("name"), str)]


def choose_profile(wanted: WorkloadProfileSpec, environment: dict[str, Any] | None, *, max_replicas: int) -> ProfileChoice:
    """The profile for ``wanted`` in ``environment`` (as Azure shows it; None: it does not exist
    yet and will be created with what ``add`` says)."""
    kind = azure_limits.profile_type(wanted.type)
    assert kind is not None  # the spec's validation guarantees a known type
    if kind.category == "Consumption":
        return ProfileChoice("Consumption")
    existing = _profiles(environment)
    same_type = [p for p in existing if str(p.get("workloadProfileType", "")).lower() == kind.name.lower()]
    named = next((p for p in same_type if wanted.name is not None and p["name"].lower() == wanted.name.lower()), None)
    if named is not None or same_type:
        # One of that type is there: the one named, else the first, under the name it has.
        return ProfileChoice((named or same_type[0])["name"])
    name = wanted.name or azure_limits.derived_profile_name(kind.name)
    environment_name = (environment or {}).get("name", "the environment")
    if environment is not None and kind.category == "DedicatedGPU":
        return ProfileChoice(
            name,
            problem=(
                f"{environment_name} has no {kind.name} profile, and Azure adds a dedicated GPU profile only when it "
                f"creates an environment ({azure_limits.WORKLOAD_PROFILES_PAGE}): use a serverless GPU type "
                f"(Consumption-GPU-NC24-A100), or name a new spec.azure.environment for loraplane to create with it"
            ),
        )
    clash = next((p for p in existing if p["name"].lower() == name.lower()), None)
    if clash is not None:
        return ProfileChoice(
            name,
            problem=(
                f"{environment_name} already has a profile named {clash['name']!r} of type {clash.get('workloadProfileType')}, "
                f"and profile names are unique ignoring case: give spec.azure.workloadProfile.name another name"
            ),
        )
    profile: dict[str, Any] = {"name": name, "workloadProfileType": kind.name}
    if kind.category != "ConsumptionGPU":
        profile.update(minimumCount=0, maximumCount=max(1, max_replicas))
    return ProfileChoice(name, add=profile)
