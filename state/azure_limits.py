"""What Azure Container Apps allows, as loraplane checks it before anything reaches Azure.

Each fact names the Microsoft page it comes from. Where two pages (or a page and the REST API
specification) disagree, the strictest reading is kept, so that what loraplane accepts Azure
accepts too. The Azure simulator (``azuresim``) keeps its own table of the same rules: it plays
Azure, and a slip in one table is caught by the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Category = Literal["Consumption", "ConsumptionGPU", "Dedicated", "DedicatedGPU"]

WORKLOAD_PROFILES_PAGE = "https://learn.microsoft.com/azure/container-apps/workload-profiles-overview"
SERVERLESS_GPU_PAGE = "https://learn.microsoft.com/azure/container-apps/gpu-serverless-overview#supported-regions"
CONTAINERS_PAGE = "https://learn.microsoft.com/azure/container-apps/containers#allocations"
SCALE_PAGE = "https://learn.microsoft.com/azure/container-apps/scale-app#scale-definition"
# ipSecurityRestrictions: IPv4 ranges in CIDR notation, and all rules of one action.
IP_RESTRICTIONS_PAGE = "https://learn.microsoft.com/azure/container-apps/ip-restrictions"
# External: the environment's inbound address; internal: only from within the environment (and
# its virtual network), with an FQDN of the form APP.internal.UNIQUE_ID.REGION.azurecontainerapps.io.
INGRESS_PAGE = "https://learn.microsoft.com/azure/container-apps/ingress-overview#external-and-internal-ingress"

# Serverless GPUs: gpu-serverless-overview lists A100 in West US 3, West US, Australia East and
# Sweden Central, T4 in West US 3, Australia East, Sweden Central and (new environments only)
# West Europe; workload-profiles-overview lists West US 3, Australia East and Sweden Central
# for both. The strictest reading is the regions both pages name.
SERVERLESS_GPU_REGIONS = frozenset({"westus3", "australiaeast", "swedencentral"})
# Dedicated GPU profiles: "West US 3, North Europe" (workload-profiles-overview).
DEDICATED_GPU_REGIONS = frozenset({"westus3", "northeurope"})


@dataclass(frozen=True)
class ProfileType:
    """A workload profile type: the vCPU and memory one instance has (workload-profiles-overview).
    ``regions`` is None where every region that has Container Apps offers it."""

    name: str
    category: Category
    cores: float
    memory_gib: float
    gpus: int = 0
    regions: frozenset[str] | None = None

    @property
    def gpu(self) -> bool:
        return self.gpus > 0

    @property
    def consumption(self) -> bool:
        return self.category in ("Consumption", "ConsumptionGPU")


PROFILE_TYPES: dict[str, ProfileType] = {
    p.name.lower(): p
    for p in [
        ProfileType("Consumption", "Consumption", 4, 8),
        ProfileType("Consumption-GPU-NC24-A100", "ConsumptionGPU", 24, 220, 1, SERVERLESS_GPU_REGIONS),
        ProfileType("Consumption-GPU-NC8as-T4", "ConsumptionGPU", 8, 56, 1, SERVERLESS_GPU_REGIONS),
        *(ProfileType(f"D{n}", "Dedicated", n, 4 * n) for n in (4, 8, 16, 32)),
        *(ProfileType(f"E{n}", "Dedicated", n, 8 * n) for n in (4, 8, 16, 32)),
        ProfileType("NC24-A100", "DedicatedGPU", 24, 220, 1, DEDICATED_GPU_REGIONS),
        ProfileType("NC48-A100", "DedicatedGPU", 48, 440, 2, DEDICATED_GPU_REGIONS),
        ProfileType("NC96-A100", "DedicatedGPU", 96, 880, 4, DEDICATED_GPU_REGIONS),
    ]
}

# Scale limits per revision: minReplicas 0-300, maxReplicas 1-300 (scale-app; another version
# of the page says up to 1,000: the strictest reading is 300).
MAX_REPLICAS_LIMIT = 300


def profile_type(name: str) -> ProfileType | None:
    return PROFILE_TYPES.get(name.lower())


def known_types() -> str:
    return ", ".join(p.name for p in PROFILE_TYPES.values())


def region_problem(kind: ProfileType, location: str) -> str | None:
    """Why ``kind`` cannot run in ``location``, or None."""
    if kind.regions is None or location in kind.regions:
        return None
    page = SERVERLESS_GPU_PAGE if kind.category == "ConsumptionGPU" else WORKLOAD_PROFILES_PAGE
    return (
        f"{kind.name} is not offered in {location}; it is offered in {', '.join(sorted(kind.regions))} "
        f"({page}): pick one of those for spec.azure.location, or another workload profile type"
    )


_MEMORY = re.compile(r"(\d+(?:\.\d{1,2})?)Gi")


def parse_memory(memory: str) -> float | None:
    """'220Gi' -> 220.0; None when it is not gibibytes with at most two decimals."""
    match = _MEMORY.fullmatch(memory)
    return float(match.group(1)) if match else None


def format_memory(gib: float) -> str:
    text = f"{gib:.2f}".rstrip("0").rstrip(".")
    return f"{text}Gi"


def default_resources(kind: ProfileType) -> tuple[float, str]:
    """What the serving container asks for when the spec does not say: the whole of one
    instance of the profile. The AI Toolkit's inference template asks 24 vCPU and 220Gi on its
    NC24-A100 profile, and a serverless GPU replica is one whole GPU machine. On the Consumption
    profile it is the largest allowed combination (4 vCPU, 8Gi)."""
    return float(kind.cores), format_memory(kind.memory_gib)


def resources_problem(kind: ProfileType, cpu: float, memory_gib: float) -> str | None:
    """Why a container of ``cpu`` vCPU and ``memory_gib`` GiB cannot run on ``kind``, or None.

    - Consumption: the total must be one of the allocations 0.25/0.5Gi ... 4/8Gi, in steps of
      0.25 vCPU with 2Gi per vCPU (containers#allocations).
    - Serverless GPU: the replica is one whole GPU machine of the profile's size; the pages
      give the range 8-24 vCPU and 56-220 GiB across the two types, so the strictest reading is
      exactly the type's own size.
    - Dedicated (GPU or not): at most the profile's cores and memory (containers#allocations).
    """
    if round(cpu * 100) != cpu * 100:
        return f"cpu {cpu} has more than two decimals ({CONTAINERS_PAGE})"
    if kind.category == "Consumption":
        quarters = cpu * 4
        if cpu <= 0 or cpu > kind.cores or quarters != int(quarters) or memory_gib != cpu * 2:
            return (
                f"{cpu} vCPU with {format_memory(memory_gib)} is not an allocation the Consumption profile offers: "
                f"0.25 to 4 vCPU in steps of 0.25, with 2Gi per vCPU, e.g. 2 vCPU and 4Gi ({CONTAINERS_PAGE})"
            )
        return None
    size = f"{kind.cores:g} vCPU and {format_memory(kind.memory_gib)}"
    if kind.category == "ConsumptionGPU":
        if cpu != kind.cores or memory_gib != kind.memory_gib:
            return f"a {kind.name} replica is one whole GPU machine: ask for exactly {size} ({WORKLOAD_PROFILES_PAGE})"
        return None
    if cpu <= 0 or memory_gib <= 0 or cpu > kind.cores or memory_gib > kind.memory_gib:
        return f"a {kind.name} instance has {size}: ask for at most that ({CONTAINERS_PAGE})"
    return None


def derived_profile_name(type_name: str) -> str:
    """The name loraplane gives a profile it adds: from the type, so that one type always gets
    the same name, which names no other type ('Consumption' is the Consumption profile's own).
    Profile names are at most 15 characters (Azure answers WorkloadProfileInvalidNameTooLong)."""
    name = type_name.lower()
    if name == "consumption":
        return "Consumption"
    name = name.replace("consumption-gpu-", "gpu-")
    return name[:15].rstrip("-")
