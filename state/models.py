"""Tables and wire models, in the SQLModel family shape.

``InferenceDeploymentCreate`` is what a client sends (POST, PUT, plan); a PATCH is a JSON merge
patch applied to it (``InferenceDeploymentUpdate`` documents the fields a patch may touch);
``InferenceDeployment`` is the row; ``InferenceDeploymentPublic`` is what the API answers.
Spec and status are stored as JSON documents in their wire (camelCase) form, so the database
reads like the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, field_validator
from pydantic import Field as PydanticField
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, String, Text, TypeDecorator
from sqlmodel import Field, SQLModel

from state.resource import (
    API_VERSION,
    AS_STORED,
    KIND,
    CamelModel,
    DeploymentSpec,
    DeploymentStatus,
    ObjectMeta,
    ObjectMetaIn,
)

FINALIZER = "loraplane.io/teardown"


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# InferenceDeployment


class InferenceDeploymentBase(CamelModel):
    api_version: Literal["loraplane/v1"] = API_VERSION
    kind: Literal["InferenceDeployment"] = KIND


class InferenceDeploymentCreate(InferenceDeploymentBase):
    """The body of POST /v1/deployments, PUT /v1/deployments/{name} and POST /v1/plan."""

    metadata: ObjectMetaIn
    spec: DeploymentSpec
    # Accepted so that the output of GET can be sent back as it is; status is server-set.
    status: dict[str, Any] | None = None


class InferenceDeploymentUpdate(CamelModel):
    """Documents a PATCH body (application/merge-patch+json, RFC 7396): the patch is merged
    into the current resource and the result validated as a whole, so any spec field may be
    set, and ``null`` removes a field (it falls back to its default)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    metadata: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None


class InferenceDeployment(SQLModel, table=True):
    __tablename__ = "inference_deployment"

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    uid: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    generation: int = Field(default=1, nullable=False)
    resource_version: int = Field(default=1, nullable=False)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    owner: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    deletion_timestamp: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    finalizers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))

    def to_public(self) -> InferenceDeploymentPublic:
        # Validated once, as a whole, with the spec read as stored (AS_STORED): a deployment a
        # tightened rule would now refuse is still shown. (A model instance handed to another
        # model's constructor runs its validators again, without the context.)
        return InferenceDeploymentPublic.model_validate(
            {
                "metadata": ObjectMeta(
                    name=self.name,
                    labels=dict(self.labels),
                    uid=self.uid,
                    generation=self.generation,
                    resource_version=str(self.resource_version),
                    created_at=self.created_at,
                    updated_at=self.updated_at,
                    owner=self.owner,
                    deletion_timestamp=self.deletion_timestamp,
                    finalizers=list(self.finalizers),
                ),
                "spec": self.spec,
                "status": self.status,
            },
            context=AS_STORED,
        )


class DeploymentLabel(SQLModel, table=True):
    """Labels again, one row each, so a label selector is an indexed query on any backend."""

    __tablename__ = "deployment_label"
    __table_args__ = (Index("ix_deployment_label_key_value", "key", "value"),)

    deployment_name: str = Field(
        sa_column=Column(
            String(63),
            ForeignKey("inference_deployment.name", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    key: str = Field(sa_column=Column(String(317), primary_key=True))
    value: str = Field(sa_column=Column(String(63), nullable=False))


class InferenceDeploymentPublic(InferenceDeploymentBase):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    metadata: ObjectMeta
    spec: DeploymentSpec
    status: DeploymentStatus


class InferenceDeploymentList(CamelModel):
    api_version: Literal["loraplane/v1"] = API_VERSION
    kind: Literal["InferenceDeploymentList"] = "InferenceDeploymentList"
    items: list[InferenceDeploymentPublic]
    # Pass as ?continue= to read the next page; absent on the last page.
    continue_: str | None = PydanticField(default=None, alias="continue")


# --------------------------------------------------------------------------------------------
# Event


EventType = Literal["Normal", "Warning"]
# An event to record: (type, reason, message).
NewEvent = tuple[EventType, str, str]


class EventBase(CamelModel):
    type: EventType = "Normal"
    reason: str
    message: str


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (Index("ix_event_deployment_uid_id", "deployment_uid", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment_uid: str = Field(sa_column=Column(String(36), nullable=False))
    deployment_name: str = Field(sa_column=Column(String(63), nullable=False))
    type: EventType = Field(sa_column=Column(String(16), nullable=False))
    reason: str = Field(sa_column=Column(String(128), nullable=False))
    message: str = Field(sa_column=Column(Text, nullable=False))
    # Repeats of the newest event collapse into it (count, last_timestamp), as Kubernetes
    # does, so a retry loop cannot flood the history.
    count: int = Field(default=1, nullable=False)
    first_timestamp: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_timestamp: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    def to_public(self) -> EventPublic:
        return EventPublic(
            type=self.type,
            reason=self.reason,
            message=self.message,
            count=self.count,
            first_timestamp=self.first_timestamp,
            last_timestamp=self.last_timestamp,
        )


class EventPublic(EventBase):
    count: int
    first_timestamp: datetime
    last_timestamp: datetime


class EventList(CamelModel):
    items: list[EventPublic]


# --------------------------------------------------------------------------------------------
# CloudResource


class CloudResource(SQLModel, table=True):
    """A provider's durable memory of one cloud resource of a deployment: whether loraplane
    created it (only then may it delete it) and the long-running operation in flight on it, as
    the SDK's continuation token, so that a restart resumes polling rather than sending the
    request again. Never holds a secret."""

    __tablename__ = "cloud_resource"

    deployment_uid: str = Field(sa_column=Column(String(36), primary_key=True))
    resource_id: str = Field(sa_column=Column(String(512), primary_key=True))  # lower-cased
    kind: str = Field(sa_column=Column(String(64), nullable=False))
    created: bool = Field(default=False, nullable=False)
    operation: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    continuation_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# --------------------------------------------------------------------------------------------
# AdapterVersion

# Gating: loaded beside the serving version, answering its golden prompts. Canary: taking its
# share of the users' requests (spec.adapter(s)[].rollout).
AdapterState = Literal["Staged", "Gating", "Canary", "Activating", "Active", "Rejected", "Failed", "Superseded"]


class GatePromptResult(CamelModel):
    """How one golden prompt went: what the version answered (cut to a readable length) and
    each expectation it missed."""

    name: str
    passed: bool
    answer: str | None = None
    latency_ms: int | None = None
    failures: list[str] = PydanticField(default_factory=list)


class GateResult(CamelModel):
    passed: bool
    pass_rate: float
    min_pass_rate: float
    finished_at: datetime
    prompts: list[GatePromptResult] = PydanticField(default_factory=list)


class TrafficFigures(CamelModel):
    """Users' requests a version answered, summed over the replicas: how a canary is judged."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_seconds(self) -> float | None:
        return self.seconds / self.requests if self.requests else None

    def minus(self, before: TrafficFigures) -> TrafficFigures:
        return TrafficFigures(
            requests=max(0, self.requests - before.requests),
            errors=max(0, self.errors - before.errors),
            seconds=max(0.0, self.seconds - before.seconds),
        )

    def plus(self, other: TrafficFigures) -> TrafficFigures:
        return TrafficFigures(
            requests=self.requests + other.requests, errors=self.errors + other.errors, seconds=self.seconds + other.seconds
        )


class CanaryRecord(CamelModel):
    """A version's canary: when it started, against which stable version, at what weight, and
    the replicas' counts when it started (by report file, then version), from which its own
    figures and the stable version's are counted."""

    started_at: datetime
    stable_version: str
    weight: int
    duration_seconds: int
    baseline: dict[str, dict[str, TrafficFigures]] = PydanticField(default_factory=dict)
    result: Literal["Promoted", "RolledBack"] | None = None
    message: str | None = None


class AdapterFile(CamelModel):
    name: str
    size: int
    # What identifies this content where it lives: an ETag on Azure Files, an mtime locally,
    # and the content MD5 when the store keeps one.
    etag: str | None = None
    md5: str | None = None


class AdapterVersionBase(CamelModel):
    adapter: str  # the adapter's name (spec.adapters[].name; the deployment's, for spec.adapter)
    version: str
    state: AdapterState
    fingerprint: str
    source_path: str  # the adapter folder it was found in, under the share root
    path: str | None = None  # its immutable staged copy, under the share root
    files: list[AdapterFile] = PydanticField(default_factory=list)
    message: str | None = None  # why it was rejected or failed
    gate: GateResult | None = None  # its golden prompts' results, once it was gated
    canary: CanaryRecord | None = None


class AdapterVersion(SQLModel, table=True):
    """One adapter the reconciler found on the share, by content: its history row."""

    __tablename__ = "adapter_version"
    __table_args__ = (Index("ix_adapter_version_uid_fingerprint", "deployment_uid", "fingerprint"),)

    deployment_uid: str = Field(sa_column=Column(String(36), primary_key=True))
    version: str = Field(sa_column=Column(String(64), primary_key=True))
    deployment_name: str = Field(sa_column=Column(String(63), nullable=False))
    # Which of the deployment's adapters it is a version of. Version ids are unique within a
    # deployment (``reconciler.rollout.version_id``), so the key stays (deployment, version).
    adapter: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    source_path: str = Field(sa_column=Column(String(1024), nullable=False))
    path: str | None = Field(default=None, sa_column=Column(String(1024), nullable=True))
    files: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    detected_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    staged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    activated_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    gate: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    canary: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # promote or abort, asked through the API for a canary under way (and who asked): written
    # by the API alone, read and cleared by the reconciler, so neither overwrites the other.
    canary_decision: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))

    @property
    def gate_result(self) -> GateResult | None:
        return GateResult.model_validate(self.gate) if self.gate is not None else None

    @property
    def canary_record(self) -> CanaryRecord | None:
        return CanaryRecord.model_validate(self.canary) if self.canary is not None else None

    def to_public(self) -> AdapterVersionPublic:
        return AdapterVersionPublic(
            adapter=self.adapter,
            version=self.version,
            state=self.state,  # type: ignore[arg-type]
            fingerprint=self.fingerprint,
            source_path=self.source_path,
            path=self.path,
            files=[AdapterFile.model_validate(f) for f in self.files],
            message=self.message,
            gate=self.gate_result,
            canary=self.canary_record,
            detected_at=self.detected_at,
            staged_at=self.staged_at,
            activated_at=self.activated_at,
        )


class AdapterVersionPublic(AdapterVersionBase):
    detected_at: datetime
    staged_at: datetime | None = None
    activated_at: datetime | None = None


class AdapterVersionList(CamelModel):
    items: list[AdapterVersionPublic]  # newest first


# --------------------------------------------------------------------------------------------
# ApiToken and AuditEvent

Role = Literal["viewer", "deployer", "admin"]


class ApiTokenBase(CamelModel):
    name: str = PydanticField(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="who holds it, e.g. alice or ci")
    role: Role


class ApiTokenCreate(ApiTokenBase):
    pass


class ApiToken(SQLModel, table=True):
    """A bearer token, by its holder's name. Only a hash of the secret is kept."""

    __tablename__ = "api_token"

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    created_by: str | None = Field(default=None, sa_column=Column(String(63), nullable=True))

    def to_public(self) -> ApiTokenPublic:
        return ApiTokenPublic(name=self.name, role=self.role, created_at=self.created_at, created_by=self.created_by)  # type: ignore[arg-type]


class ApiTokenPublic(ApiTokenBase):
    created_at: datetime
    created_by: str | None = None


class ApiTokenCreated(ApiTokenPublic):
    token: str = PydanticField(description="the secret: shown this once, never again")


class ApiTokenList(CamelModel):
    items: list[ApiTokenPublic]


# --------------------------------------------------------------------------------------------
# InferenceKey: who may call a deployment's model


KEY_NAME = r"^[a-z][a-z0-9-]{0,62}$"


class InferenceKeyBase(CamelModel):
    name: str = PydanticField(pattern=KEY_NAME, description="who holds it, e.g. support-web or eval-ci")
    rpm: int | None = PydanticField(default=None, ge=1, le=1_000_000, description="requests a minute; none: no limit")
    tpm: int | None = PydanticField(default=None, ge=1, le=1_000_000_000, description="tokens (prompt and completion) a minute")
    expires_at: datetime | None = PydanticField(default=None, description="refused from then on (UTC if no zone is given); none: never")


class InferenceKeyCreate(InferenceKeyBase):
    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        if moment <= datetime.now(UTC):
            raise ValueError(f"{moment.isoformat()} has passed: a key must expire in the future (or leave it out for never)")
        return moment


class InferenceKey(SQLModel, table=True):
    """An inference key of one deployment. Only a hash of the secret is kept; the serving app
    gets the hashes (and limits) through a file on the share."""

    __tablename__ = "inference_key"

    deployment_uid: str = Field(sa_column=Column(String(36), primary_key=True))
    name: str = Field(sa_column=Column(String(63), primary_key=True))
    deployment_name: str = Field(sa_column=Column(String(63), nullable=False, index=True))
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    rpm: int | None = Field(default=None)
    tpm: int | None = Field(default=None)
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    created_by: str | None = Field(default=None, sa_column=Column(String(63), nullable=True))

    def to_public(self, usage: KeyUsage | None = None) -> InferenceKeyPublic:
        return InferenceKeyPublic(
            name=self.name,
            rpm=self.rpm,
            tpm=self.tpm,
            expires_at=self.expires_at,
            created_at=self.created_at,
            created_by=self.created_by,
            usage=usage,
        )


class KeyUsage(CamelModel):
    """What the deployment's replicas served under a key, summed over them."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refused: int = 0  # past the key's limits (429)


class InferenceKeyPublic(InferenceKeyBase):
    created_at: datetime
    created_by: str | None = None
    usage: KeyUsage | None = PydanticField(default=None, description="absent when the replicas' counts could not be read")


class InferenceKeyCreated(InferenceKeyPublic):
    key: str = PydanticField(description="the secret: shown this once, never again")
    endpoint: str | None = PydanticField(default=None, description="the deployment's endpoint, when it has one")


class InferenceKeyList(CamelModel):
    items: list[InferenceKeyPublic]
    # Why usage is absent, when it is.
    usage_note: str | None = None


class AuditEvent(SQLModel, table=True):
    """Who changed what, when: one row per change made through the API."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_resource", "resource"), Index("ix_audit_event_actor", "actor"))

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    actor: str = Field(sa_column=Column(String(63), nullable=False))
    action: str = Field(sa_column=Column(String(32), nullable=False))
    resource: str = Field(sa_column=Column(String(128), nullable=False))  # e.g. deployment/support-bot
    generation_before: int | None = Field(default=None)
    generation_after: int | None = Field(default=None)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    def to_public(self) -> AuditEventPublic:
        return AuditEventPublic(
            id=self.id or 0,
            at=self.at,
            actor=self.actor,
            action=self.action,
            resource=self.resource,
            generation_before=self.generation_before,
            generation_after=self.generation_after,
            detail=self.detail,
        )


class AuditEventPublic(CamelModel):
    id: int
    at: datetime
    actor: str
    action: str
    resource: str
    generation_before: int | None = None
    generation_after: int | None = None
    detail: str | None = None


class AuditEventList(CamelModel):
    items: list[AuditEventPublic]  # newest first


class LeaderLease(SQLModel, table=True):
    """Who reconciles: one row per lease; ``epoch`` grows with every new holder (the fence)."""

    __tablename__ = "leader_lease"

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    holder: str = Field(sa_column=Column(String(255), nullable=False))
    epoch: int = Field(nullable=False)
    acquired_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# --------------------------------------------------------------------------------------------
# GPU usage


class GpuUsageDay(SQLModel, table=True):
    """GPU-seconds a deployment's replicas ran on one UTC day (what its cost is estimated from)."""

    __tablename__ = "gpu_usage_day"

    deployment_uid: str = Field(sa_column=Column(String(36), primary_key=True))
    day: str = Field(sa_column=Column(String(10), primary_key=True))  # YYYY-MM-DD, UTC
    deployment_name: str = Field(sa_column=Column(String(63), nullable=False, index=True))
    gpu_seconds: float = Field(default=0.0, nullable=False)
    # The workload profile type its GPUs were of (its price), as last seen that day.
    profile: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))


class GpuMeter(SQLModel, table=True):
    """A deployment's last look at its replicas: how many ran, with how many GPUs each, and
    when; the time since is counted at that many (also across a restart of loraplane, since
    the replicas run on without it)."""

    __tablename__ = "gpu_meter"

    deployment_uid: str = Field(sa_column=Column(String(36), primary_key=True))
    replicas: int = Field(default=0, nullable=False)
    gpus_per_replica: float = Field(default=0.0, nullable=False)
    profile: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class UsageLine(CamelModel):
    """One deployment's GPU use and its estimated cost, as ``loraplane cost`` lists them."""

    name: str
    target: str
    profile: str | None = None
    replicas: int | None = None
    gpu_hours_today: float
    gpu_hours_this_month: float
    estimated_cost_this_month: float | None = None
    currency: str | None = None
    budget: str | None = None  # e.g. "12.5 of 40 GPU-hours this month (31%)"


class UsageList(CamelModel):
    items: list[UsageLine]
    prices: str  # where the price table comes from, and its date
