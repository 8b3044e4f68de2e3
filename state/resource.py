"""The InferenceDeployment resource: what a team asks for (spec) and what loraplane reports (status).

Wire format is camelCase JSON with Kubernetes conventions. Every user-supplied string is held
to a pattern, so nothing odd (a NUL byte, a path escaping the share) ever reaches the database
or a cloud API. Azure names follow Azure's own naming rules, checked here so that a typo is
refused at the API with a message naming the field, not minutes later by ARM.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from state import azure_limits

API_VERSION: Final = "loraplane/v1"
KIND: Final = "InferenceDeployment"

# The AI Toolkit's remote fine-tuning layout on the Azure Files share: where its Phi-3 project
# keeps the base model (what ``loraplane import-toolkit`` writes; a manifest always names its
# model), and where training leaves the adapter (the default of spec.adapter.path).
TOOLKIT_MODEL_PATH = "model-cache/microsoft/Phi-3-mini-4k-instruct"
DEFAULT_ADAPTER_PATH = "models/qlora/qlora/gpu_model/adapter"
DEFAULT_WORKLOAD_PROFILE_TYPE = "Consumption-GPU-NC24-A100"


class CamelModel(BaseModel):
    """camelCase on the wire, unknown fields refused (a misspelt field must not be ignored)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON document as stored and sent: camelCase, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _rule(pattern: str, message: str):
    """A validator that checks a full-string regex and says what the rule is when it fails."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _no_double_hyphen(value: str) -> str:
    if "--" in value:
        raise ValueError("must not contain '--'")
    return value


DNS_LABEL = (
    r"[a-z][a-z0-9-]{0,30}[a-z0-9]",
    "must be 2-32 characters: lowercase letters, digits and '-', starting with a letter "
    "and not ending with '-' (for example 'support-bot')",
)

DeploymentName = Annotated[str, _rule(*DNS_LABEL), AfterValidator(_no_double_hyphen)]

# Azure naming rules: https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
SubscriptionId = Annotated[
    str,
    _rule(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        "must be a subscription GUID such as 00000000-0000-0000-0000-000000000000",
    ),
]
ResourceGroupName = Annotated[
    str,
    _rule(
        r"[-\w.()]{0,89}[-\w()]",
        "must be 1-90 characters: letters, digits, '_', '-', '.', '(' and ')', not ending with '.'",
    ),
]
Location = Annotated[
    str,
    _rule(
        r"[a-z][a-z0-9]{1,39}",
        "must be an Azure region's programmatic name: lowercase letters and digits, such as 'westus3' (not 'West US 3')",
    ),
]
StorageAccountName = Annotated[
    str,
    _rule(
        r"[a-z0-9]{3,24}",
        "must be 3-24 characters, lowercase letters and digits only (globally unique in Azure)",
    ),
]
FileShareName = Annotated[
    str,
    _rule(
        r"[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]",
        "must be 3-63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit",
    ),
    AfterValidator(_no_double_hyphen),
]
EnvironmentName = Annotated[
    str,
    _rule(
        r"[a-z][a-z0-9-]{0,58}[a-z0-9]",
        "must be 2-60 characters: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit",
    ),
    AfterValidator(_no_double_hyphen),
]
EnvironmentStorageName = Annotated[
    str,
    _rule(
        r"[a-z0-9][a-z0-9-]{0,30}[a-z0-9]",
        "must be 2-32 characters: lowercase letters, digits and '-', starting and ending with a letter or digit",
    ),
    AfterValidator(_no_double_hyphen),
]
ContainerAppName = Annotated[
    str,
    _rule(
        r"[a-z][a-z0-9-]{0,30}[a-z0-9]",
        "must be 2-32 characters: lowercase letters, digits and '-', starting with a letter and not ending with '-'",
    ),
    AfterValidator(_no_double_hyphen),
]
LogAnalyticsName = Annotated[
    str,
    _rule(
        r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
        "must be 4-63 characters: letters, digits and '-', starting and ending with a letter or digit",
    ),
]
WorkloadProfileName = Annotated[
    str,
    _rule(
        r"[A-Za-z][A-Za-z0-9-]{0,14}",
        "must be 1-15 characters: letters, digits and '-', starting with a letter",
    ),
]
WorkloadProfileType = Annotated[
    str,
    _rule(
        r"[A-Za-z][A-Za-z0-9-]{0,63}",
        "must be an Azure Container Apps workload profile type such as 'Consumption-GPU-NC24-A100' or 'NC24-A100'",
    ),
]
ImageReference = Annotated[
    str,
    _rule(
        r"[a-z0-9][a-z0-9._\-/:]{0,254}(@sha256:[a-f0-9]{64})?",
        "must be a container image reference such as 'myregistry.azurecr.io/loraplane-serving:1.0'",
    ),
]
VersionId = Annotated[
    str,
    _rule(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        "must be an adapter version id as listed by 'loraplane adapters NAME'",
    ),
]
SharePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    _rule(
        r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._\-/ ]+",
        "must be a path relative to the share root (no leading '/', no '..'), for example 'models/qlora/qlora/gpu_model/adapter'",
    ),
]
AbsolutePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4096),
    _rule(
        r"/(?!.*(?:^|/)\.\.(?:/|$))[^\x00-\x1f\x7f]*",
        "must be an absolute folder path on this machine (starting with '/', no '..', no control characters), for example '/srv/share'",
    ),
]
# Any other string a client may send: no control characters, which would forge a log line or
# drive a terminal that shows it.
PlainText = Annotated[str, _rule(r"[^\x00-\x1f\x7f]*", "must not contain control characters (newlines, escapes)")]
MarkerFileName = Annotated[
    str,
    _rule(r"[A-Za-z0-9._-]{1,255}", "must be a file name such as '_SUCCESS'"),
]

LABEL_KEY = re.compile(r"(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
LABEL_KEY_RULE = (
    "label keys are 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter "
    "or digit, optionally after a DNS prefix and '/' (for example 'team')"
)
LABEL_VALUE_RULE = (
    "label values are at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (for example 'support')"
)


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > 64:
        raise ValueError("at most 64 labels are allowed")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r} is invalid: {LABEL_KEY_RULE}")
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label {key!r} has an invalid value: {LABEL_VALUE_RULE}")
    return labels


Labels = Annotated[dict[str, str], AfterValidator(check_labels)]


# --------------------------------------------------------------------------------------------
# spec


class ModelSpec(CamelModel):
    # Required: a default base model would be filled in silently, and a manifest that left it
    # out would replace a working model with one that is not there.
    path: SharePath


# A gate prompt's text: newlines and tabs are text here, other control characters are not.
PromptText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=16384),
    _rule(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*", "must not contain control characters other than newlines and tabs"),
]
PromptName = Annotated[
    str,
    _rule(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,63}", "must be 1-64 letters, digits, spaces, '.', '_' or '-' (for example 'refund-policy')"),
]
MAX_GATE_PROMPTS = 200


def _texts(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


class GateMessage(CamelModel):
    role: Literal["system", "user", "assistant"]
    content: PromptText


class GatePrompt(CamelModel):
    """One golden prompt: a text (sent to /v1/completions) or chat messages (to
    /v1/chat/completions), answered at temperature 0, and what the answer must be."""

    name: PromptName | None = None
    prompt: PromptText | None = None
    messages: list[GateMessage] | None = Field(default=None, min_length=1, max_length=64)
    max_tokens: int = Field(default=64, ge=1, le=2048)
    contains: PromptText | list[PromptText] | None = None
    not_contains: PromptText | list[PromptText] | None = None
    regex: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    json_schema: dict[str, Any] | None = None
    max_latency_ms: int | None = Field(default=None, ge=1, le=600_000)
    equals_baseline: bool = False

    @model_validator(mode="after")
    def _one_input_and_an_expectation(self) -> GatePrompt:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        if (self.prompt is None) == (self.messages is None):
            problems.append((("prompt",), "give either prompt (a text) or messages (a chat), one of them", self.prompt))
        if not any(
            (_texts(self.contains), _texts(self.not_contains), self.regex, self.json_schema, self.max_latency_ms, self.equals_baseline)
        ):
            problems.append(
                (
                    ("contains",),
                    "a golden prompt needs an expectation: contains, notContains, regex, jsonSchema, maxLatencyMs or equalsBaseline",
                    None,
                )
            )
        if self.regex is not None:
            import regex

            try:
                regex.compile(self.regex)
            except regex.error as exc:
                problems.append((("regex",), f"is not a regular expression: {exc}", self.regex))
        if self.json_schema is not None:
            from jsonschema import SchemaError, validators

            try:
                validators.validator_for(self.json_schema).check_schema(self.json_schema)
            except SchemaError as exc:
                problems.append((("jsonSchema",), f"is not a JSON Schema: {exc.message}", self.json_schema))
        if problems:
            raise field_errors(*problems)
        return self

    @property
    def expected_texts(self) -> tuple[list[str], list[str]]:
        return _texts(self.contains), _texts(self.not_contains)


class GateSpec(CamelModel):
    """Golden prompts a new version must answer well before users get it: inline, from a JSONL
    file on the share (one prompt a line, in this same form), or both; the version passes when
    at least ``minPassRate`` of them pass."""

    prompts: list[GatePrompt] | None = Field(default=None, min_length=1, max_length=MAX_GATE_PROMPTS)
    file: SharePath | None = None
    min_pass_rate: float = Field(default=1.0, gt=0, le=1)
    # How long the whole gate may take before the version is judged on what answered.
    timeout_seconds: int = Field(default=300, ge=1, le=3600)

    @model_validator(mode="after")
    def _some_prompts(self) -> GateSpec:
        if self.prompts is None and self.file is None:
            raise ValueError("a gate needs golden prompts: give prompts, a file on the share (JSONL), or both")
        return self


class CanarySpec(CamelModel):
    """After its gate, a new version takes ``weight`` percent of the adapter's requests for
    ``durationSeconds``, then is promoted; past ``maxErrorRate`` (a fraction of its requests
    that fail) or ``maxLatencyRatio`` (its mean answer time over the stable version's), it is
    rolled back. It is judged early once it has answered ``minRequests``."""

    weight: int = Field(default=10, ge=1, le=99)
    duration_seconds: int = Field(default=600, ge=1, le=7 * 86400)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_ratio: float = Field(default=2.0, ge=1)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)


class RolloutSpec(CamelModel):
    gate: GateSpec | None = None
    canary: CanarySpec | None = None


class AdapterSpec(CamelModel):
    path: SharePath = DEFAULT_ADAPTER_PATH
    settle_seconds: int = Field(default=10, ge=0, le=3600)
    # How often the adapter folder is listed for a new version, apart from the resync.
    poll_seconds: int = Field(default=5, ge=1, le=3600)
    strategy: Literal["hotReload", "restart"] = "hotReload"
    pin: VersionId | None = None
    marker: MarkerFileName | None = None
    # What a new version must show before it takes all the traffic: a gate, a canary, both.
    rollout: RolloutSpec | None = None


# The model id clients ask for an adapter by: the request's ``model`` (a base model's id has a
# '/', so the two never meet).
AdapterName = Annotated[
    str,
    _rule(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (for example 'billing'): "
        "the model id clients ask for",
    ),
]
MAX_ADAPTERS = 64


class NamedAdapterSpec(AdapterSpec):
    """One entry of ``spec.adapters``: an adapter served under its own name, with its own
    rollouts."""

    name: AdapterName


class ScaleSpec(CamelModel):
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=0, le=1000)
    # With minReplicas 0: how long without a request before the last replica stops (the
    # cooldown, on Azure), and the concurrent requests a replica takes before another starts.
    idle_seconds: int = Field(default=300, ge=10, le=86400)
    concurrent_requests: int = Field(default=10, ge=1, le=10000)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ScaleSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})")
        return self


class LocalSpec(CamelModel):
    share_root: AbsolutePath


def field_errors(*problems: tuple[tuple[str | int, ...], str, Any]) -> ValidationError:
    """A validation error naming each field by its path below the model that raises it, so the
    API's 422 says ``spec.scale.maxReplicas`` rather than ``spec``."""
    return ValidationError.from_exception_data(
        "DeploymentSpec",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value) for loc, message, value in problems],
    )


# Validation context for a spec read back as it was stored (to show it, or to tear its
# deployment down): Azure's rules, which a newer loraplane may have tightened since, are for
# what is applied, so a deployment they would now refuse can still be read and deleted.
AS_STORED = {"azure_rules": False}


def azure_rules_apply(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("azure_rules", True))


class WorkloadProfileSpec(CamelModel):
    """The workload profile the app runs on. ``type`` decides; ``name`` is optional: loraplane
    reuses a profile of that type already in the environment under whatever name it has, and
    names one it adds after the type (``Consumption`` is the Consumption profile's own name)."""

    name: WorkloadProfileName | None = None
    type: WorkloadProfileType = DEFAULT_WORKLOAD_PROFILE_TYPE

    @model_validator(mode="after")
    def _known_type_and_fitting_name(self, info: ValidationInfo) -> WorkloadProfileSpec:
        kind = azure_limits.profile_type(self.type)
        if kind is None and not azure_rules_apply(info):
            return self
        if kind is None:
            raise field_errors(
                (
                    ("type",),
                    f"{self.type!r} is not a workload profile type loraplane knows; use one of {azure_limits.known_types()} "
                    f"({azure_limits.WORKLOAD_PROFILES_PAGE})",
                    self.type,
                )
            )
        self.type = kind.name  # Azure's own spelling, so that one type is one string
        if self.name is None:
            return self
        if kind.category == "Consumption" and self.name != "Consumption":
            raise field_errors((("name",), "the Consumption profile is named 'Consumption': leave out workloadProfile.name", self.name))
        if kind.category != "Consumption" and self.name.lower() == "consumption":
            raise field_errors(
                (
                    ("name",),
                    f"'Consumption' names the Consumption profile only; leave out workloadProfile.name for a {kind.name} profile",
                    self.name,
                )
            )
        return self


MemoryQuantity = Annotated[str, _rule(r"\d+(\.\d{1,2})?Gi", "must be gibibytes with at most two decimals, such as '220Gi' or '0.5Gi'")]
RegistryServer = Annotated[
    str,
    _rule(
        r"[a-z0-9][a-z0-9-]{3,48}[a-z0-9]\.azurecr\.io",
        "must be an Azure Container Registry's login server, such as 'myteam.azurecr.io'",
    ),
]
RegistryIdentity = Annotated[
    str,
    _rule(
        r"system|/subscriptions/[0-9a-fA-F-]{36}/resource[Gg]roups/[-\w.()]{1,90}/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[A-Za-z0-9][A-Za-z0-9_-]{2,127}",
        "must be 'system' (the app's system-assigned identity) or a user-assigned identity's resource ID "
        "(/subscriptions/…/resourceGroups/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)",
    ),
]


class ContainerResourcesSpec(CamelModel):
    """The serving container's size. Left out, it is the whole of one instance of the workload
    profile (24 vCPU and 220Gi on the A100 types, as the AI Toolkit's template asks)."""

    cpu: float = Field(gt=0, le=96)
    memory: MemoryQuantity


class RegistrySpec(CamelModel):
    """A private Azure Container Registry that ``spec.azure.image`` comes from, pulled with a
    managed identity that has AcrPull on it: ``system`` (the app's own, made with the app) or a
    user-assigned identity's resource ID."""

    server: RegistryServer
    identity: RegistryIdentity = "system"


def _ipv4_range(value: str) -> str:
    try:
        if "/" not in value:
            raise ValueError("no prefix length")
        ipaddress.IPv4Network(value, strict=False)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an IPv4 address range in CIDR notation: write it as 203.0.113.0/24, or 198.51.100.7/32 "
            f"for one address (Container Apps takes IPv4 ranges only: {azure_limits.IP_RESTRICTIONS_PAGE})"
        ) from exc
    return value


IPv4Range = Annotated[str, AfterValidator(_ipv4_range)]


class AzureSpec(CamelModel):
    subscription_id: SubscriptionId
    resource_group: ResourceGroupName
    location: Location
    # Left out, these are named after the deployment (see ``with_defaults``); a name that
    # already exists in Azure is adopted rather than created.
    storage_account: StorageAccountName | None = None
    file_share: FileShareName | None = None
    environment: EnvironmentName | None = None
    environment_storage: EnvironmentStorageName | None = None
    app: ContainerAppName | None = None
    log_analytics: LogAnalyticsName | None = None
    workload_profile: WorkloadProfileSpec = Field(default_factory=WorkloadProfileSpec)
    image: ImageReference | None = None
    registry: RegistrySpec | None = None
    resources: ContainerResourcesSpec | None = None
    policy: Literal["manage", "observe", "detachOnDelete"] = "manage"
    # Who may reach the app (INGRESS_PAGE): external (the AI Toolkit's, and the default), or
    # internal, only from within the environment's network.
    ingress: Literal["external", "internal"] = "external"
    # Only these IPv4 ranges may reach the app (ipSecurityRestrictions, Allow rules); absent,
    # the app's restrictions are left as they are; empty, there are none.
    ip_allow_list: list[IPv4Range] | None = Field(default=None, max_length=100)

    def endpoint_reachable(self) -> bool:
        """Whether loraplane can be expected to reach the app's endpoint: not with internal
        ingress, nor past an allow list (which need not hold loraplane's own address). Then it
        reads the replicas' status from the share instead."""
        return self.ingress == "external" and not self.ip_allow_list

    @model_validator(mode="after")
    def _fits_azure(self, info: ValidationInfo) -> AzureSpec:
        if not azure_rules_apply(info):
            return self
        kind = azure_limits.profile_type(self.workload_profile.type)
        assert kind is not None  # WorkloadProfileSpec checked it
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        where = azure_limits.region_problem(kind, self.location)
        if where is not None:
            problems.append((("workloadProfile", "type"), where, self.workload_profile.type))
        if self.resources is not None:
            memory = azure_limits.parse_memory(self.resources.memory)
            assert memory is not None  # MemoryQuantity checked it
            wrong = azure_limits.resources_problem(kind, self.resources.cpu, memory)
            if wrong is not None:
                problems.append((("resources",), wrong, self.resources.wire()))
        if self.registry is not None:
            if self.image is None:
                problems.append(
                    (("image",), f"is required with spec.azure.registry: name the serving image in {self.registry.server}", None)
                )
            elif self.image.split("/", 1)[0] != self.registry.server:
                problems.append(
                    (
                        ("image",),
                        f"{self.image!r} is not in the registry {self.registry.server}: name it as {self.registry.server}/NAME:TAG",
                        self.image,
                    )
                )
        if problems:
            raise field_errors(*problems)
        return self

    def container_resources(self) -> tuple[float, str]:
        """(cpu, memory) of the serving container: the spec's, else the profile's default."""
        if self.resources is not None:
            return self.resources.cpu, self.resources.memory
        kind = azure_limits.profile_type(self.workload_profile.type)
        assert kind is not None
        return azure_limits.default_resources(kind)


class BudgetSpec(CamelModel):
    """What a deployment may spend, in GPU-hours a day or a month, or in money a month (at the
    price table's rates): past 80% a Warning event; past 100% a Warning event, and with
    ``scaleToZero`` the deployment is held at zero replicas until the period turns (UTC) or the
    budget is raised."""

    gpu_hours_per_day: float | None = Field(default=None, gt=0, le=1_000_000)
    gpu_hours_per_month: float | None = Field(default=None, gt=0, le=10_000_000)
    cost_per_month: float | None = Field(default=None, gt=0, le=100_000_000)
    action: Literal["scaleToZero", "warn"] = "warn"

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetSpec:
        given = [v for v in (self.gpu_hours_per_day, self.gpu_hours_per_month, self.cost_per_month) if v is not None]
        if len(given) != 1:
            raise ValueError("a budget is one limit: gpuHoursPerDay, gpuHoursPerMonth or costPerMonth")
        return self

    @property
    def period(self) -> Literal["day", "month"]:
        return "day" if self.gpu_hours_per_day is not None else "month"


class AccessSpec(CamelModel):
    # Every call of the serving app but its probes needs one of the deployment's inference
    # keys (loraplane keys create). Default: on for the azure target, whose endpoint is
    # reachable by whoever learns it; off for the local target, which listens on loopback.
    api_keys: bool | None = None


class DeploymentSpec(CamelModel):
    target: Literal["local", "azure"]
    model: ModelSpec
    # One adapter, served under the deployment's name (the shorthand), or several by name.
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    adapters: list[NamedAdapterSpec] | None = Field(default=None, min_length=1, max_length=MAX_ADAPTERS)
    scale: ScaleSpec = Field(default_factory=ScaleSpec)
    access: AccessSpec = Field(default_factory=AccessSpec)
    budget: BudgetSpec | None = None
    local: LocalSpec | None = None
    azure: AzureSpec | None = None

    @property
    def api_keys(self) -> bool:
        """Whether the serving app asks for an inference key (the target's default when unset)."""
        return self.access.api_keys if self.access.api_keys is not None else self.target == "azure"

    def wire(self) -> dict[str, Any]:
        document = super().wire()
        if self.adapters is not None:
            document.pop("adapter", None)  # only its default: spec.adapters names them all
        return document

    def adapter_entries(self, deployment: str) -> list[NamedAdapterSpec]:
        """Every adapter, by name: ``spec.adapters``, or the one of ``spec.adapter`` named after
        the deployment (the model id its clients have always asked for)."""
        if self.adapters is not None:
            return self.adapters
        # Built from the adapter as validated, not validated again (a pass asks a dozen times);
        # a deployment's name, a DNS label, is always an adapter's name.
        fields = {name: getattr(self.adapter, name) for name in AdapterSpec.model_fields}
        return [NamedAdapterSpec.model_construct({*fields, "name"}, name=deployment, **fields)]

    @model_validator(mode="after")
    def _one_way_to_name_adapters(self) -> DeploymentSpec:
        if self.adapters is None:
            return self
        if "adapter" in self.model_fields_set:
            raise field_errors(
                (("adapter",), "give spec.adapter (one adapter) or spec.adapters (several, by name), not both", self.adapter.wire())
            )
        seen: set[str] = set()
        for index, entry in enumerate(self.adapters):
            if entry.name in seen:
                raise field_errors(
                    (("adapters", index, "name"), f"{entry.name!r} names two adapters: each needs a name of its own", entry.name)
                )
            seen.add(entry.name)
        return self

    @model_validator(mode="after")
    def _rollouts_fit_the_target(self) -> DeploymentSpec:
        """A canary splits requests between two versions: on the local target one process
        serves, so only a hot reload can hold both; a gate's prompts go from loraplane to the
        app, which it cannot reach past internal ingress or an IP allow list."""
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        entries: list[tuple[tuple[str | int, ...], AdapterSpec]] = (
            [(("adapters", i), e) for i, e in enumerate(self.adapters)] if self.adapters is not None else [(("adapter",), self.adapter)]
        )
        for where, entry in entries:
            rollout = entry.rollout
            if rollout is None:
                continue
            if rollout.canary is not None and entry.strategy == "restart" and self.target == "local":
                problems.append(
                    (
                        (*where, "rollout", "canary"),
                        "a canary on the local target needs strategy hotReload: the local target runs one serving process, which "
                        "holds both versions only by a hot reload (on the azure target a restart canary splits traffic between revisions)",
                        rollout.canary.wire(),
                    )
                )
            if rollout.gate is not None and self.azure is not None and not self.azure.endpoint_reachable():
                problems.append(
                    (
                        (*where, "rollout", "gate"),
                        "the gate's prompts go from loraplane to the app, which internal ingress or an IP allow list keep loraplane "
                        "from reaching: use external ingress without spec.azure.ipAllowList, or leave the gate out",
                        None,
                    )
                )
        if problems:
            raise field_errors(*problems)
        return self

    @model_validator(mode="after")
    def _target_section_present(self, info: ValidationInfo) -> DeploymentSpec:
        if self.target == "local" and self.local is None:
            raise ValueError(
                "spec.local is required when target is 'local': give spec.local.shareRoot, "
                "the folder that stands in for the Azure Files share"
            )
        if self.target == "azure" and self.azure is None:
            raise ValueError("spec.azure is required when target is 'azure': give at least subscriptionId, resourceGroup and location")
        if self.target == "azure" and azure_rules_apply(info):
            limit = azure_limits.MAX_REPLICAS_LIMIT
            problems: list[tuple[tuple[str | int, ...], str, Any]] = []
            if not 1 <= self.scale.max_replicas <= limit:
                problems.append(
                    (
                        ("scale", "maxReplicas"),
                        f"must be 1 to {limit} on the azure target: a container app runs at least one replica at its busiest "
                        f"({azure_limits.SCALE_PAGE}); set minReplicas: 0 to let it scale to zero when idle",
                        self.scale.max_replicas,
                    )
                )
            if self.scale.min_replicas > limit:
                problems.append(
                    (
                        ("scale", "minReplicas"),
                        f"must be 0 to {limit} on the azure target ({azure_limits.SCALE_PAGE})",
                        self.scale.min_replicas,
                    )
                )
            if problems:
                raise field_errors(*problems)
        return self

    def with_defaults(self, name: str) -> DeploymentSpec:
        """The spec with every defaulted Azure name filled in, so what is stored is explicit.

        Deterministic in (name, subscription, resource group): applying the same manifest
        twice gives the same spec, so it never looks like a change.
        """
        if self.access.api_keys is None:
            self = self.model_copy(update={"access": AccessSpec(api_keys=self.api_keys)})
        if self.azure is None:
            return self
        azure = self.azure
        digest = hashlib.sha256(f"{azure.subscription_id.lower()}/{azure.resource_group.lower()}/{name}".encode()).hexdigest()
        compact = name.replace("-", "")
        filled = azure.model_copy(
            update={
                # Storage account names are global: a hash of where it lives keeps two
                # teams' "support-bot" from colliding.
                "storage_account": azure.storage_account or f"lp{compact[:14]}{digest[:8]}",
                "file_share": azure.file_share or f"{name}-share",
                "environment": azure.environment or f"{name}-env",
                "environment_storage": azure.environment_storage or f"{name}-storage"[:32],
                "app": azure.app or name,
                "log_analytics": azure.log_analytics or f"{name}-logs",
            }
        )
        return self.model_copy(update={"azure": filled})


# Fields that cannot change once a deployment exists: changing them would orphan what the
# reconciler already built somewhere else.
IMMUTABLE_SPEC_FIELDS: tuple[tuple[str, ...], ...] = (
    ("target",),
    ("azure", "subscriptionId"),
    ("azure", "resourceGroup"),
    ("azure", "location"),
)


def _at(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        document = document.get(part) if isinstance(document, dict) else None
    return document


def immutable_field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted paths (``spec.target``) of immutable fields whose value differs."""
    return ["spec." + ".".join(path) for path in IMMUTABLE_SPEC_FIELDS if _at(old, path) is not None and _at(old, path) != _at(new, path)]


def changes_not_in_place(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, why) for changes Azure cannot make to what already exists: a dedicated GPU
    workload profile is added to an environment only when the environment is created
    (workload-profiles-overview: "GPU-enabled Dedicated profiles must be configured when
    creating an environment")."""
    found = []
    before, after = _at(old, ("azure", "workloadProfile", "type")), _at(new, ("azure", "workloadProfile", "type"))
    kind = azure_limits.profile_type(after) if isinstance(after, str) else None
    same_environment = _at(old, ("azure", "environment")) == _at(new, ("azure", "environment"))
    if before is not None and before != after and kind is not None and kind.category == "DedicatedGPU" and same_environment:
        found.append(
            (
                "spec.azure.workloadProfile.type",
                f"Azure adds a dedicated GPU profile ({after}) to an environment only when it creates it, and "
                f"{_at(new, ('azure', 'environment'))} exists: keep {before}, use a serverless GPU type "
                f"(Consumption-GPU-NC24-A100), or name a new spec.azure.environment to be created with it",
            )
        )
    if not same_environment and _at(old, ("azure", "app")) == _at(new, ("azure", "app")):
        found.append(
            (
                "spec.azure.environment",
                "a container app's environment is set when the app is created (managedEnvironmentId is create-only in "
                "the Microsoft.App API): to move to another environment, also name a new spec.azure.app",
            )
        )
    return found


# --------------------------------------------------------------------------------------------
# metadata


class ObjectMetaIn(CamelModel):
    """What a client may say in metadata. Server-set fields are accepted (so a resource read
    with GET can be sent back as it is) but ignored, except ``resourceVersion``, which is a
    precondition like ``If-Match``."""

    name: DeploymentName
    labels: Labels = Field(default_factory=dict)
    resource_version: PlainText | None = Field(default=None, max_length=32)
    uid: PlainText | None = Field(default=None, max_length=64)
    generation: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    owner: PlainText | None = Field(default=None, max_length=128)
    deletion_timestamp: datetime | None = None
    finalizers: list[PlainText] | None = None


class ObjectMeta(CamelModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    uid: str
    generation: int
    resource_version: str
    created_at: datetime
    updated_at: datetime
    owner: str | None = None
    deletion_timestamp: datetime | None = None
    finalizers: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# status

# Stopped: nothing runs because the spec asks for none (a local deployment with
# scale.maxReplicas 0); settled, not failing.
Phase = Literal["Pending", "Provisioning", "Ready", "Stopped", "Degraded", "Deleting", "Failed"]
ConditionType = Literal["Ready", "Progressing", "Degraded", "AdapterSynced"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CamelModel):
    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime


class RolloutRecord(CamelModel):
    version: str | None = None
    strategy: str | None = None
    result: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    message: str | None = None


class CanaryFigures(CamelModel):
    """One side of a canary: users' requests since it began, summed over the replicas."""

    version: str
    requests: int
    errors: int
    error_rate: float
    mean_latency_ms: float | None = None


class CanaryStatus(CamelModel):
    """A canary under way: its version takes ``weight`` percent of the adapter's requests until
    ``endsAt`` (or a promote or abort), judged against the stable version."""

    version: str
    weight: int
    started_at: datetime
    ends_at: datetime
    canary: CanaryFigures
    stable: CanaryFigures


class AdapterStatus(CamelModel):
    desired_version: str | None = None
    serving_version: str | None = None
    last_rollout: RolloutRecord | None = None
    canary: CanaryStatus | None = None


class NamedAdapterStatus(AdapterStatus):
    name: str


class ResourceRef(CamelModel):
    kind: str
    id: str
    state: str
    managed_by: Literal["loraplane", "adopted"] = "loraplane"


class BudgetStatus(CamelModel):
    limit: str  # "40 GPU-hours a month", "USD 500 a month"
    used: float  # in the limit's unit
    fraction: float
    period: str  # the day or month it counts: 2026-12-07, 2026-12
    state: Literal["Within", "NearlySpent", "Exceeded"]


class CostStatus(CamelModel):
    """What the deployment's replicas used, from what loraplane saw run, and its estimated cost
    at the price table's rate for its workload profile (None: no price known)."""

    gpu_hours_today: float
    gpu_hours_this_month: float
    estimated_cost_this_month: float | None = None
    currency: str | None = None
    replicas: int | None = None  # running at the last look
    budget: BudgetStatus | None = None


class DeploymentStatus(CamelModel):
    # Status is written by the server only, and may carry fields newer servers add.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase = "Pending"
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    endpoint: str | None = None
    # The first adapter's (the one a request naming no model gets); every adapter's in adapters.
    adapter: AdapterStatus = Field(default_factory=AdapterStatus)
    adapters: list[NamedAdapterStatus] = Field(default_factory=list)
    resources: list[ResourceRef] = Field(default_factory=list)
    message: str | None = None
    cost: CostStatus | None = None
