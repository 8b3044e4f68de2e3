"""What Azure refuses, as the simulator enforces it: one table, each rule with the Microsoft page
it comes from. Where sources disagree, the strictest reading is kept (the page or the REST
specification's own descriptions), so that what the simulator accepts Azure accepts too.

Error codes are Azure's where Azure's own answers have been published (a public report is
named beside the rule); where they have not, the code is this simulator's, in Azure's style,
and says so. Every answer has ARM's shape: ``{"error": {"code", "message"}}`` with a 400.

The rules look at a write as it would be stored: the body of a PUT, or the resource with a
PATCH merged in, beside what existed before (``Write``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azuresim.state import ArmError

LEARN = "https://learn.microsoft.com/azure"
NAMES_PAGE = f"{LEARN}/azure-resource-manager/management/resource-name-rules"
ALLOCATIONS_PAGE = f"{LEARN}/container-apps/containers#allocations"
PROFILES_PAGE = f"{LEARN}/container-apps/workload-profiles-overview"
SERVERLESS_GPU_PAGE = f"{LEARN}/container-apps/gpu-serverless-overview#supported-regions"
PROFILES_CLI_PAGE = f"{LEARN}/container-apps/workload-profiles-manage-cli"
PROBES_PAGE = f"{LEARN}/container-apps/health-probes"
PROBES_SPEC = "Microsoft.App 2026-07-01 REST specification, ContainerAppProbe"
SCALE_PAGE = f"{LEARN}/container-apps/scale-app#scale-definition"
REGISTRY_PAGE = f"{LEARN}/container-apps/containers#managed-identity-with-azure-container-registry"
MUTABILITY_SPEC = "x-ms-mutability in the Microsoft.App 2026-07-01 REST specification; ARM's PropertyChangeNotAllowed"
SHARED_KEY_PAGE = f"{LEARN}/storage/common/shared-key-authorization-prevent"
IP_RESTRICTIONS_PAGE = f"{LEARN}/container-apps/ip-restrictions"
TRAFFIC_PAGE = f"{LEARN}/container-apps/traffic-splitting"
REVISION_MODE_SPEC = "activeRevisionsMode in the Microsoft.App 2026-07-01 REST specification"

APPS = "microsoft.app/containerapps"
ENVIRONMENTS = "microsoft.app/managedenvironments"
ENVIRONMENT_STORAGES = "microsoft.app/managedenvironments/storages"
ACCOUNTS = "microsoft.storage/storageaccounts"
SHARES = "microsoft.storage/storageaccounts/fileservices/shares"
WORKSPACES = "microsoft.operationalinsights/workspaces"
GROUPS = "resourcegroups"


@dataclass(frozen=True)
class ProfileType:
    cores: float
    memory_gib: float
    category: str  # Consumption, ConsumptionGPU, Dedicated, DedicatedGPU
    regions: frozenset[str] | None = None  # None: wherever Container Apps is


# Serverless GPU regions: the regions both gpu-serverless-overview (A100: West US 3, West US,
# Australia East, Sweden Central; T4: West US 3, Australia East, Sweden Central, West Europe)
# and workload-profiles-overview (West US 3, Australia East, Sweden Central) name.
SERVERLESS_GPU_REGIONS = frozenset({"westus3", "australiaeast", "swedencentral"})
DEDICATED_GPU_REGIONS = frozenset({"westus3", "northeurope"})  # workload-profiles-overview
PROFILE_TYPES: dict[str, ProfileType] = {
    "consumption": ProfileType(4, 8, "Consumption"),
    **{f"d{n}": ProfileType(n, 4 * n, "Dedicated") for n in (4, 8, 16, 32)},
    **{f"e{n}": ProfileType(n, 8 * n, "Dedicated") for n in (4, 8, 16, 32)},
    # The names of the same families in older API versions, which Microsoft's examples use.
    "generalpurpose": ProfileType(4, 16, "Dedicated"),
    "memoryoptimized": ProfileType(4, 32, "Dedicated"),
    "computeoptimized": ProfileType(4, 8, "Dedicated"),
    "nc24-a100": ProfileType(24, 220, "DedicatedGPU", DEDICATED_GPU_REGIONS),
    "nc48-a100": ProfileType(48, 440, "DedicatedGPU", DEDICATED_GPU_REGIONS),
    "nc96-a100": ProfileType(96, 880, "DedicatedGPU", DEDICATED_GPU_REGIONS),
    "consumption-gpu-nc24-a100": ProfileType(24, 220, "ConsumptionGPU", SERVERLESS_GPU_REGIONS),
    "consumption-gpu-nc8as-t4": ProfileType(8, 56, "ConsumptionGPU", SERVERLESS_GPU_REGIONS),
}
# What Container Apps gives a container that asks for nothing (containers#allocations).
DEFAULT_CPU, DEFAULT_MEMORY_GIB = 0.25, 0.5
# Azure refused the 24-character "Consumption-GPU-NC8as-T4" as a profile name
# (WorkloadProfileInvalidNameTooLong, Azure/azure-cli#31239), and Microsoft's own
# ManagedEnvironments_CreateOrUpdate example names a 17-character one: the strictest limit both
# allow. (loraplane's own names are at most 15.)
PROFILE_NAME_LIMIT = 17
MAX_REPLICAS = 300  # scale-app: 300 (another version says 1,000: the stricter)


def region_of(location: str | None) -> str:
    return (location or "").replace(" ", "").lower()


@dataclass(frozen=True)
class Write:
    type_name: str  # lower-case ARM type
    resource_id: str
    name: str
    resource: dict[str, Any]  # as it would be stored
    existing: dict[str, Any] | None  # as it was (None: a create)
    lookup: Callable[[str], dict[str, Any] | None]  # another resource by id, as stored

    @property
    def properties(self) -> dict[str, Any]:
        found = self.resource.get("properties")
        return found if isinstance(found, dict) else {}

    @property
    def location(self) -> str:
        return region_of(self.resource.get("location") or (self.existing or {}).get("location"))


def _refuse(code: str, message: str, status: int = 400) -> ArmError:
    return ArmError(status, code, message)


# ------------------------------------------------------------------------------- names

_NAME_RULES: dict[str, tuple[str, str, str]] = {
    # type: (pattern, code, what the rule says) - resource-name-rules, and Container Apps' own
    # messages for apps and environments (ContainerAppInvalidName, ManagedEnvironmentInvalidName)
    APPS: (
        r"(?!.*--)[a-z][a-z0-9-]{0,30}[a-z0-9]",
        "ContainerAppInvalidName",
        "A name must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an "
        "alphanumeric character and cannot have '--'. The length must not be more than 32 characters.",
    ),
    ENVIRONMENTS: (
        r"(?!.*--)[a-z][a-z0-9-]{0,58}[a-z0-9]",
        "ManagedEnvironmentInvalidName",
        "A name must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an "
        "alphanumeric character and cannot have '--'. The length must not be more than 60 characters.",
    ),
    # The simulator's code (Azure's is unpublished); the rule is the apps' and environments'.
    ENVIRONMENT_STORAGES: (
        r"(?!.*--)[a-z0-9][a-z0-9-]{0,30}[a-z0-9]",
        "ManagedEnvironmentStorageInvalidName",
        "A name must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character and "
        "cannot have '--'. The length must be 2 to 32 characters.",
    ),
    ACCOUNTS: (
        r"[a-z0-9]{3,24}",
        "AccountNameInvalid",
        "is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers "
        "and lower-case letters only.",
    ),
    SHARES: (
        r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]",
        "InvalidResourceName",
        "A share name must be 3-63 lowercase letters, numbers and hyphens, start and end with a letter or number, and cannot have '--'.",
    ),
    WORKSPACES: (
        r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
        "InvalidWorkspaceName",
        "A workspace name must be 4-63 alphanumerics and hyphens, starting and ending with an alphanumeric.",
    ),
    GROUPS: (
        r"[-\w.()]{0,89}[-\w()]",
        "InvalidResourceGroupName",
        "Resource group names must be 1-90 letters, digits, underscores, hyphens, periods and parentheses, and cannot end in a period.",
    ),
}


def _name(write: Write) -> ArmError | None:
    rule = _NAME_RULES.get(write.type_name)
    if rule is None or write.existing is not None:
        return None
    pattern, code, says = rule
    if re.fullmatch(pattern, write.name):
        return None
    if code == "AccountNameInvalid":
        return _refuse(code, f"{write.name} {says}")
    return _refuse(code, f"Invalid name '{write.name}'. {says}")


# ------------------------------------------------------------------- container resources

_CPU = re.compile(r"\d+(\.\d{1,2})?")
_MEMORY = re.compile(r"(\d+(?:\.\d{1,2})?)(Gi|Mi)")


def _memory_gib(value: Any) -> float | None:
    match = _MEMORY.fullmatch(str(value))
    if match is None:
        return None
    amount = float(match.group(1))
    return amount if match.group(2) == "Gi" else amount / 1024


def app_profile(write: Write) -> tuple[str | None, ProfileType | None, dict[str, Any] | None]:
    """The app's workload profile: (name, type, its environment)."""
    environment_id = write.properties.get("managedEnvironmentId") or write.properties.get("environmentId")
    environment = write.lookup(environment_id) if environment_id else None
    profiles = ((environment or {}).get("properties") or {}).get("workloadProfiles") or []
    name = write.properties.get("workloadProfileName")
    if not profiles:  # a Consumption-only environment: the Consumption plan
        return name, None, environment
    chosen = next((p for p in profiles if str(p.get("name", "")).lower() == str(name or "consumption").lower()), None)
    kind = PROFILE_TYPES.get(str((chosen or {}).get("workloadProfileType", "")).lower()) if chosen else None
    return name, kind, environment


def container_size(container: dict[str, Any]) -> tuple[float, float] | ArmError:
    resources = container.get("resources") or {}
    cpu, memory = resources.get("cpu", DEFAULT_CPU), resources.get("memory", f"{DEFAULT_MEMORY_GIB}Gi")
    if not isinstance(cpu, int | float) or isinstance(cpu, bool) or cpu <= 0 or not _CPU.fullmatch(f"{cpu:g}"):
        return _refuse(
            "ContainerAppInvalidResourceTotal",
            f"Container '{container.get('name')}' cpu {cpu!r} is invalid: it must be greater than zero, with at most two decimal places.",
        )
    gib = _memory_gib(memory)
    if gib is None or gib <= 0:
        return _refuse(
            "ContainerAppInvalidResourceTotal",
            f"Container '{container.get('name')}' memory {memory!r} is invalid: it must be greater than zero, in Gi, with at most two "
            "decimal places, e.g. '1.25Gi'.",
        )
    return float(cpu), gib


def _resources(write: Write) -> ArmError | None:
    """containers#allocations: Consumption (plan or profile): the total is one of 0.25/0.5Gi ...
    (2/4Gi on the plan, 4/8Gi on the profile); a dedicated profile: at most its cores and
    memory; a serverless GPU profile: the strictest reading of "8-24 vCPU, 56-220 GiB" across its
    two types is exactly the type's own size. A container that asks for nothing gets 0.25/0.5Gi."""
    template = write.properties.get("template") or {}
    total_cpu = total_memory = 0.0
    for container in template.get("containers") or []:
        size = container_size(container)
        if isinstance(size, ArmError):
            return size
        total_cpu, total_memory = total_cpu + size[0], total_memory + size[1]
    for init in template.get("initContainers") or []:
        size = container_size(init)
        if isinstance(size, ArmError):
            return size
    if not template.get("containers"):
        return None
    name, kind, _ = app_profile(write)
    shown = f"(CPU: {total_cpu:g}, memory: {total_memory:g})"
    if kind is None or kind.category == "Consumption":
        limit = 2.0 if kind is None else kind.cores
        combos = [(q / 4, q / 2) for q in range(1, int(limit * 4) + 1)]
        if (round(total_cpu, 2), round(total_memory, 2)) not in combos:
            listed = "; ".join(f"[cpu: {c:g}, memory: {m:.1f}Gi]" for c, m in combos)
            return _refuse(
                "ContainerAppInvalidResourceTotal",
                f"The total requested CPU and memory resources for this application {shown} is invalid. Total CPU and memory for all "
                f"containers defined in a Container App must add up to one of the following CPU - Memory combinations: {listed}",
            )
        return None
    if kind.category == "ConsumptionGPU":
        if (total_cpu, total_memory) != (kind.cores, kind.memory_gib):
            return _refuse(
                "ContainerAppInvalidResourceTotal",
                f"The total requested CPU and memory resources for this application {shown} is invalid. A replica of the workload "
                f"profile '{name}' is one whole GPU machine: cpu: {kind.cores:g}, memory: {kind.memory_gib:g}Gi.",
            )
        return None
    if total_cpu > kind.cores or total_memory > kind.memory_gib:
        return _refuse(
            "ContainerAppInvalidResourceTotal",
            f"The total requested CPU and memory resources for this application {shown} is invalid. It must not exceed the workload "
            f"profile '{name}': cpu: {kind.cores:g}, memory: {kind.memory_gib:g}Gi.",
        )
    return None


# ------------------------------------------------------------------------------- probes

# The REST specification's ContainerAppProbe: each bound is in the field's description.
# (health-probes shows defaults past some of them, e.g. failureThreshold 240: the stricter.)
_PROBE_BOUNDS = {
    "initialDelaySeconds": (1, 60),
    "periodSeconds": (1, 240),
    "timeoutSeconds": (1, 240),
    "failureThreshold": (1, 10),
    "successThreshold": (1, 10),
    "terminationGracePeriodSeconds": (0, 3600),
}


def _probes(write: Write) -> ArmError | None:
    for container in (write.properties.get("template") or {}).get("containers") or []:
        seen: set[str] = set()
        for probe in container.get("probes") or []:
            kind = str(probe.get("type", "")).lower()
            if kind in seen:  # health-probes: "You can only add one of each probe type per container."
                return _refuse(
                    "ContainerAppProbeTypeDuplicated", f"Container '{container.get('name')}' has more than one '{probe.get('type')}' probe."
                )
            seen.add(kind)
            for field, (low, high) in _PROBE_BOUNDS.items():
                value = probe.get(field)
                if value is None:
                    continue
                if kind in ("liveness", "startup") and field == "successThreshold":
                    low = high = 1  # "Must be 1 for liveness and startup."
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    code = f"ContainerAppProbe{field[0].upper()}{field[1:]}OutOfRange"
                    return _refuse(
                        code,
                        f"Container '{container.get('name')}' '{probe.get('type')}' probe's {field[0].upper()}{field[1:]} must be in the range of ['{low}', '{high}'].",
                    )
            if "exec" in probe:  # health-probes: "exec probes aren't supported"
                return _refuse(
                    "ContainerAppProbeInvalid",
                    f"Container '{container.get('name')}' '{probe.get('type')}' probe: exec probes aren't supported.",
                )
    return None


# -------------------------------------------------------------------------------- scale


def _scale(write: Write) -> ArmError | None:
    scale = (write.properties.get("template") or {}).get("scale") or {}
    low, high = scale.get("minReplicas", 0), scale.get("maxReplicas", 10)
    if not isinstance(high, int) or not 1 <= high <= MAX_REPLICAS:
        return _refuse(
            "ContainerAppMaxReplicasOutOfRange", f"The maximum number of replicas ({high}) must be in the range of ['1', '{MAX_REPLICAS}']."
        )
    if not isinstance(low, int) or not 0 <= low <= MAX_REPLICAS:
        return _refuse(
            "ContainerAppMinReplicasOutOfRange", f"The minimum number of replicas ({low}) must be in the range of ['0', '{MAX_REPLICAS}']."
        )
    if low > high:
        return _refuse(
            "ContainerAppMinReplicasGreaterThanMax", f"The minimum number of replicas ({low}) cannot be greater than the maximum ({high})."
        )
    return None


# --------------------------------------------------------------------- ingress


def _ip_restrictions(write: Write) -> ArmError | None:
    """ipSecurityRestrictions (ip-restrictions): each rule named, an IPv4 range in CIDR
    notation, Allow or Deny, and all rules of one action. The codes are the simulator's (Azure's
    are unpublished); the rules are the page's and the REST specification's (required: name,
    ipAddressRange, action)."""
    rules = ((write.properties.get("configuration") or {}).get("ingress") or {}).get("ipSecurityRestrictions") or []
    names: set[str] = set()
    for rule in rules:
        name, cidr, action = rule.get("name"), rule.get("ipAddressRange"), rule.get("action")
        if not name or not cidr or not action:
            return _refuse(
                "ContainerAppInvalidIpSecurityRestriction", "Each IP security restriction needs a name, an ipAddressRange and an action."
            )
        if name in names:
            return _refuse("ContainerAppInvalidIpSecurityRestriction", f"The IP security restriction name '{name}' is used more than once.")
        names.add(name)
        try:
            if "/" not in cidr:
                raise ValueError(cidr)
            ipaddress.IPv4Network(cidr, strict=False)
        except ValueError:
            return _refuse(
                "ContainerAppInvalidIpSecurityRestriction",
                f"The ipAddressRange '{cidr}' of rule '{name}' is not an IPv4 address range in CIDR notation.",
            )
        if action not in ("Allow", "Deny"):
            return _refuse("ContainerAppInvalidIpSecurityRestriction", f"The action '{action}' of rule '{name}' must be Allow or Deny.")
    if len({rule.get("action") for rule in rules}) > 1:
        return _refuse("ContainerAppInvalidIpSecurityRestriction", "IP security restrictions must all be Allow or all be Deny, not both.")
    return None


def _traffic(write: Write) -> ArmError | None:
    """ingress.traffic: each entry names a revision or the latest one; weights, where given, are
    whole percents that add up to 100 (traffic-splitting: "The combined weight of all traffic
    split rules must equal 100%"); in single revision mode no revision may be weighted but the
    latest, at 100 ("Revision weights can not be used in this mode": the REST specification's
    activeRevisionsMode). Microsoft's own examples name revisions by label without weights, in
    single mode, and are accepted. The codes are the simulator's (Azure's are unpublished)."""
    configuration = write.properties.get("configuration") or {}
    traffic = (configuration.get("ingress") or {}).get("traffic") or []
    multiple = str(configuration.get("activeRevisionsMode", "Single")).lower() == "multiple"
    weighted = [entry for entry in traffic if entry.get("weight") is not None]
    for entry in traffic:
        if not entry.get("revisionName") and not entry.get("latestRevision"):
            return _refuse("ContainerAppInvalidTrafficWeight", "Each traffic entry names a revisionName or latestRevision: true.")
    for entry in weighted:
        weight = entry["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            return _refuse("ContainerAppInvalidTrafficWeight", f"Traffic weight {weight!r} must be a whole percent from 0 to 100.")
        if not multiple and (entry.get("revisionName") or weight != 100):
            return _refuse(
                "ContainerAppInvalidTrafficWeight",
                "Revision weights can not be used in Single revision mode: set activeRevisionsMode to Multiple to split traffic.",
            )
    total = sum(entry["weight"] for entry in weighted)
    if weighted and total != 100:
        return _refuse("ContainerAppInvalidTrafficWeight", f"The traffic weights add up to {total}%: they must total 100%.")
    return None


# ------------------------------------------------------------------- workload profiles


def _app_profile_exists(write: Write) -> ArmError | None:
    """An app's workloadProfileName names a profile of its environment (workload-profiles-manage-cli)."""
    name, _, environment = app_profile(write)
    if environment is None:
        return None  # the environment rule (ManagedEnvironmentNotFound) answers
    profiles = (environment.get("properties") or {}).get("workloadProfiles") or []
    if name is None:
        return None
    if not profiles:
        return _refuse(
            "WorkloadProfileNotFound",
            f"The environment '{environment.get('name')}' has no workload profiles (a Consumption-only environment): leave out workloadProfileName.",
        )
    if not any(str(p.get("name", "")).lower() == str(name).lower() for p in profiles):
        names = ", ".join(str(p.get("name")) for p in profiles)
        return _refuse(
            "WorkloadProfileNotFound",
            f"The workload profile '{name}' was not found in the environment '{environment.get('name')}'. Its profiles: {names}.",
        )
    return None


def _profiles(write: Write) -> list[dict[str, Any]]:
    found = write.properties.get("workloadProfiles") or []
    return [p for p in found if isinstance(p, dict)]


def _profile_names(write: Write) -> ArmError | None:
    """Names are unique ignoring case ("friendly names" let one type be added several times),
    'Consumption' names the Consumption type only, and a name is at most 15 characters."""
    seen: dict[str, str] = {}
    for profile in _profiles(write):
        name, kind = str(profile.get("name", "")), str(profile.get("workloadProfileType", ""))
        if not name:
            return _refuse("WorkloadProfileNameInvalid", "A workload profile needs a name.")
        if len(name) > PROFILE_NAME_LIMIT:
            return _refuse(
                "WorkloadProfileInvalidNameTooLong",
                f"The workload profile name '{name}' is too long: at most {PROFILE_NAME_LIMIT} characters.",
            )
        if name.lower() in seen:
            return _refuse(
                "WorkloadProfileNameDuplicated",
                f"The workload profile name '{name}' is used more than once (names are compared ignoring case).",
            )
        seen[name.lower()] = kind
        if name.lower() == "consumption" and kind.lower() != "consumption":
            return _refuse(
                "WorkloadProfileNameReserved", f"The workload profile name '{name}' is reserved for the Consumption workload profile type."
            )
    return None


def _profile_types(write: Write) -> ArmError | None:
    """Known types, offered in the environment's region (workload-profiles-overview,
    gpu-serverless-overview); a serverless GPU profile takes no minimum or maximum count."""
    for profile in _profiles(write):
        kind_name = str(profile.get("workloadProfileType", ""))
        kind = PROFILE_TYPES.get(kind_name.lower())
        if kind is None:
            return _refuse(
                "InvalidWorkloadProfileType",
                f"The workload profile type '{kind_name}' is not supported. Supported: {', '.join(sorted(PROFILE_TYPES))}.",
            )
        if kind.regions is not None and write.location not in kind.regions:
            return _refuse(
                "InvalidWorkloadProfileType",
                f"The workload profile type '{kind_name}' is not supported in the region '{write.location}'. It is offered in: {', '.join(sorted(kind.regions))}.",
            )
        if kind.category in ("Consumption", "ConsumptionGPU"):
            for field in ("minimumCount", "maximumCount"):
                if profile.get(field) is not None:
                    label = field[0].upper() + field[1:]
                    return _refuse(
                        "WorkloadProfilePropertyNotSupported",
                        f"Workload Profile property '{label}' is not supported for {kind_name.replace('-', '_')}",
                    )
    return None


def _gpu_at_creation(write: Write) -> ArmError | None:
    """ "GPU-enabled Dedicated profiles must be configured when creating an environment"
    (workload-profiles-overview); serverless GPU profiles may be added later."""
    if write.existing is None:
        return None
    before = {
        str(p.get("name", "")).lower()
        for p in ((write.existing.get("properties") or {}).get("workloadProfiles") or [])
        if isinstance(p, dict)
    }
    for profile in _profiles(write):
        kind = PROFILE_TYPES.get(str(profile.get("workloadProfileType", "")).lower())
        if kind is not None and kind.category == "DedicatedGPU" and str(profile.get("name", "")).lower() not in before:
            return _refuse(
                "WorkloadProfileCannotBeAdded",
                f"The dedicated GPU workload profile '{profile.get('name')}' ({profile.get('workloadProfileType')}) can only be added "
                f"when the environment is created; '{write.name}' exists.",
            )
    return None


# -------------------------------------------------------------------------- registries


def _registries(write: Write) -> ArmError | None:
    """A registry pulled with a managed identity names one the app has: 'system' with a
    system-assigned identity, else a user-assigned identity's resource ID in identity."""
    identity = write.resource.get("identity") or {}
    kinds = str(identity.get("type", "None")).replace(" ", "").lower().split(",")
    assigned = {str(i).lower() for i in (identity.get("userAssignedIdentities") or {})}
    for registry in (write.properties.get("configuration") or {}).get("registries") or []:
        wanted = registry.get("identity")
        if wanted is None:
            continue
        if str(wanted).lower() == "system":
            if "systemassigned" not in kinds:
                return _refuse(
                    "InvalidContainerAppRegistryIdentity",
                    f"The registry '{registry.get('server')}' is pulled with the system-assigned identity, but the app has none: set identity.type to SystemAssigned.",
                )
        elif str(wanted).lower() not in assigned:
            return _refuse(
                "InvalidContainerAppRegistryIdentity",
                f"The registry '{registry.get('server')}' is pulled with the identity '{wanted}', which is not assigned to the app (identity.userAssignedIdentities).",
            )
    return None


# ------------------------------------------------------------------ create-only properties

# (type, path): the create-only properties (x-ms-mutability [read, create]) of the types loraplane
# writes. ``location`` is every tracked resource's.
_CREATE_ONLY: dict[str, tuple[tuple[str, ...], ...]] = {
    APPS: (("properties", "managedEnvironmentId"), ("properties", "environmentId"), ("kind",)),
    ENVIRONMENTS: (
        ("properties", "zoneRedundant"),
        ("properties", "infrastructureResourceGroup"),
        ("properties", "vnetConfiguration", "internal"),
        ("properties", "vnetConfiguration", "infrastructureSubnetId"),
        ("properties", "customDomainConfiguration", "dnsSuffix"),
    ),
}


def _at(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        document = document.get(part) if isinstance(document, dict) else None
    return document


def _create_only(write: Write) -> ArmError | None:
    if write.existing is None:
        return None
    before_location, after_location = region_of(write.existing.get("location")), write.location
    if before_location and after_location and before_location != after_location:
        return _refuse(
            "InvalidResourceLocation",
            f"The resource '{write.name}' already exists in location '{before_location}'. A resource with the same name cannot be created in location '{after_location}'.",
            409,
        )
    for path in _CREATE_ONLY.get(write.type_name, ()):
        before, after = _at(write.existing, path), _at(write.resource, path)
        if before is not None and after is not None and str(before).lower() != str(after).lower():
            return _refuse("PropertyChangeNotAllowed", f"Changing property '{'.'.join(path)}' is not allowed.")
    return None


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Rule:
    name: str
    types: frozenset[str]
    source: str
    check: Callable[[Write], ArmError | None]


RULES: tuple[Rule, ...] = (
    Rule("names", frozenset(_NAME_RULES), NAMES_PAGE, _name),
    Rule("create-only properties", frozenset({APPS, ENVIRONMENTS, ACCOUNTS, WORKSPACES}), MUTABILITY_SPEC, _create_only),
    Rule("workload profile names", frozenset({ENVIRONMENTS}), PROFILES_CLI_PAGE, _profile_names),
    Rule("workload profile types and regions", frozenset({ENVIRONMENTS}), f"{PROFILES_PAGE}; {SERVERLESS_GPU_PAGE}", _profile_types),
    Rule("dedicated GPU profiles at creation only", frozenset({ENVIRONMENTS}), PROFILES_PAGE, _gpu_at_creation),
    Rule("the app's workload profile exists", frozenset({APPS}), PROFILES_CLI_PAGE, _app_profile_exists),
    Rule("container resources", frozenset({APPS}), ALLOCATIONS_PAGE, _resources),
    Rule("probe ranges", frozenset({APPS}), f"{PROBES_SPEC}; {PROBES_PAGE}", _probes),
    Rule("scale ranges", frozenset({APPS}), SCALE_PAGE, _scale),
    Rule("IP security restrictions", frozenset({APPS}), IP_RESTRICTIONS_PAGE, _ip_restrictions),
    Rule("traffic weights", frozenset({APPS}), f"{TRAFFIC_PAGE}; {REVISION_MODE_SPEC}", _traffic),
    Rule("registry identities", frozenset({APPS}), REGISTRY_PAGE, _registries),
)


def check(write: Write) -> None:
    """Raise the first rule's refusal of ``write``."""
    for rule in RULES:
        if write.type_name in rule.types:
            refusal = rule.check(write)
            if refusal is not None:
                raise refusal


# ----------------------------------------------------------------- what a revision needs

# A replica that installs the serving app and loads a model needs the model's bytes in memory
# and room for the runtime: a coarse stand-in for an out-of-memory kill at the requested size.
RUNTIME_OVERHEAD_GIB = 0.5


def app_memory_gib(app: dict[str, Any]) -> float:
    total = 0.0
    for container in ((app.get("properties") or {}).get("template") or {}).get("containers") or []:
        size = container_size(container)
        if not isinstance(size, ArmError):
            total += size[1]
    return total
