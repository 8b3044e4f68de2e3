"""The one way in and out of the database for deployments and their events.

Rules kept here, so that every writer (the API now, the reconciler, an HA replica) obeys them:
- ``resourceVersion`` changes on every write and on nothing else: a write that would change
  nothing is not made (the reconciler's steady state costs zero writes);
- ``generation`` changes only when the spec does;
- preconditions (If-Match) are checked inside the write transaction, under a row lock;
- a deployment being deleted takes no more changes to its spec.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, and_, delete, exists, func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from state.access import add_audit
from state.db import Sessions
from state.errors import AlreadyExists, Conflict, InvalidChange, NotFound, PreconditionFailed
from state.models import (
    FINALIZER,
    AdapterVersion,
    CloudResource,
    DeploymentLabel,
    Event,
    EventType,
    GpuMeter,
    GpuUsageDay,
    InferenceDeployment,
    InferenceDeploymentCreate,
    InferenceKey,
    NewEvent,
    utcnow,
)
from state.resource import DNS_LABEL, DeploymentSpec, DeploymentStatus, changes_not_in_place, immutable_field_changes
from state.selectors import Requirement

Clock = Callable[[], datetime]
ChangeListener = Callable[[str], None]
# A check run first in a write transaction: a leader's fence, refusing (Fenced) the writes of a
# replica that lost the lease.
Fence = Callable[[Session], None]


@dataclass(frozen=True)
class AddVersion:
    """An adapter version seen for the first time (one of that id already there stays as it is)."""

    row: AdapterVersion


@dataclass(frozen=True)
class ActivateVersion:
    """It serves now: Active; whatever version of its adapter was Active before is Superseded."""

    version: str


@dataclass(frozen=True)
class MarkVersion:
    version: str
    state: str
    message: str | None = None


@dataclass(frozen=True)
class RecordGate:
    """A version's golden prompts were answered: their results (``GateResult``'s wire form)."""

    version: str
    gate: dict[str, Any]


@dataclass(frozen=True)
class RecordCanary:
    """A version's canary as it stands (``CanaryRecord``'s wire form; None: it has none), and
    whether the decision asked through the API was acted on (then it is cleared)."""

    version: str
    canary: dict[str, Any] | None
    decided: bool = False


VersionChange = AddVersion | ActivateVersion | MarkVersion | RecordGate | RecordCanary


@dataclass(frozen=True)
class UsageWrite:
    """GPU-seconds to add, by UTC day, and the deployment's new last look at its replicas."""

    deployment_name: str
    seconds_by_day: dict[str, float]
    replicas: int
    gpus_per_replica: float
    profile: str
    at: datetime


_NAME = re.compile(DNS_LABEL[0])
# A GET's first read, made on every GET: its compiled form is looked up by a cheap key.
VERSION_OF = text("SELECT uid, resource_version FROM inference_deployment WHERE name = :name")


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def encode_continue(after_name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after_name}).encode()).decode()


def decode_continue(token: str) -> str:
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("the continue token is not one this server issued; list again without it") from exc
    if not isinstance(after, str) or not _NAME.fullmatch(after):
        raise ValueError("the continue token is not one this server issued; list again without it")
    return after


def check_change(old: dict[str, Any], new: dict[str, Any]) -> None:
    """InvalidChange when ``new`` (a spec as stored, with defaults) may not replace ``old``: an
    immutable field moved, or Azure cannot make the change in place. The store checks it on
    every replace, and a dry run of a change asks it too, so plan says what apply says."""
    frozen = immutable_field_changes(old, new)
    if frozen:
        raise InvalidChange(
            f"{', '.join(frozen)} cannot change once the deployment exists; delete it and create it again to move it", frozen
        )
    not_in_place = changes_not_in_place(old, new)
    if not_in_place:
        raise InvalidChange(
            "; ".join(f"{field}: {why}" for field, why in not_in_place),
            [field for field, _ in not_in_place],
            [why for _, why in not_in_place],
        )


class DeploymentStore:
    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self._sessions = Sessions(engine)
        self.clock = clock
        # Called with the deployment's name after a write to its desired state commits (create,
        # spec change, deletion request): how the API wakes the reconciler.
        self._listeners: list[ChangeListener] = []

    # ----------------------------------------------------------------------------- plumbing

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def notify(self, name: str) -> None:
        """Tell the listeners (the reconciler) that what ``name`` should be has changed."""
        self._notify(name)

    def _notify(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def _read(self) -> AbstractContextManager[Session]:
        return self._sessions.read()

    def _write(self, fence: Fence | None = None) -> AbstractContextManager[Session]:
        return self._sessions.write(fence)

    def check_fence(self, fence: Fence) -> None:
        """Before an action outside the database (a cloud call): does ``fence`` still hold?"""
        with self._write(fence):
            pass

    @staticmethod
    def _lock(session: Session, name: str, uid: str | None = None) -> InferenceDeployment | None:
        """The row, locked for this transaction (and only if it still has that uid)."""
        query = select(InferenceDeployment).where(col(InferenceDeployment.name) == name)
        if uid is not None:
            query = query.where(col(InferenceDeployment.uid) == uid)
        return session.exec(query.with_for_update()).one_or_none()

    @classmethod
    def _locked(cls, session: Session, name: str) -> InferenceDeployment:
        row = cls._lock(session, name)
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        return row

    @staticmethod
    def _check_version(row: InferenceDeployment, expected: int | None) -> None:
        if expected is not None and expected != row.resource_version:
            raise PreconditionFailed(
                f"deployment {row.name!r} changed since you read it (you sent resourceVersion "
                f"{expected}, it is now {row.resource_version}); read it again and retry"
            )

    @staticmethod
    def _replace_labels(session: Session, name: str, labels: dict[str, str]) -> None:
        session.exec(delete(DeploymentLabel).where(col(DeploymentLabel.deployment_name) == name))
        for key, value in labels.items():
            session.add(DeploymentLabel(deployment_name=name, key=key, value=value))

    # ------------------------------------------------------------------------------- reads

    def get(self, name: str) -> InferenceDeployment:
        with self._read() as session:
            row = session.get(InferenceDeployment, name)
        if row is None:
            raise NotFound(f"deployment {name!r} not found")
        return row

    def list(
        self,
        requirements: Sequence[Requirement] = (),
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[InferenceDeployment], str | None]:
        """Deployments ordered by name; returns the page and the token for the next one."""
        query = self._page(select(InferenceDeployment), requirements, limit, continue_token)
        with self._read() as session:
            rows = list(session.exec(query))
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            return rows, encode_continue(rows[-1].name)
        return rows, None

    def list_versions(
        self,
        requirements: Sequence[Requirement] = (),
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[builtins.list[tuple[str, str, int]], str | None]:
        """``list`` as (name, uid, resourceVersion): what names a public form an API replica
        may already hold, read without the JSON documents (decoding those was most of a list's
        cost). ``rows`` fetches the ones it does not hold."""
        columns = select(InferenceDeployment.name, InferenceDeployment.uid, InferenceDeployment.resource_version)
        query = self._page(columns, requirements, limit, continue_token)
        with self.engine.connect() as connection:  # Core: no ORM session for a few columns
            found = [(row[0], row[1], row[2]) for row in connection.execute(query)]
        if limit is not None and len(found) > limit:
            found = found[:limit]
            return found, encode_continue(found[-1][0])
        return found, None

    def version_of(self, name: str) -> tuple[str, int]:
        """(uid, resourceVersion) of one deployment, without its documents; NotFound if none."""
        with self.engine.connect() as connection:  # Core: no ORM session for two columns
            found = connection.execute(VERSION_OF, {"name": name}).first()
        if found is None:
            raise NotFound(f"deployment {name!r} not found")
        return found[0], found[1]

    def rows(self, names: Sequence[str]) -> dict[str, InferenceDeployment]:
        """The deployments of these names that exist, by name."""
        if not names:
            return {}
        with self._read() as session:
            return {row.name: row for row in session.exec(select(InferenceDeployment).where(col(InferenceDeployment.name).in_(names)))}

    @staticmethod
    def _page(query: Any, requirements: Sequence[Requirement], limit: int | None, continue_token: str | None) -> Any:
        query = query.order_by(col(InferenceDeployment.name))
        if continue_token:
            query = query.where(col(InferenceDeployment.name) > decode_continue(continue_token))
        for req in requirements:
            label_here = and_(
                col(DeploymentLabel.deployment_name) == col(InferenceDeployment.name),
                col(DeploymentLabel.key) == req.key,
            )
            if req.operator in ("=", "!="):
                label_here = and_(label_here, col(DeploymentLabel.value) == req.value)
            found = exists().where(label_here)
            query = query.where(found if req.operator in ("=", "exists") else ~found)
        if limit is not None:
            query = query.limit(limit + 1)
        return query

    def versions(self, name: str | None = None) -> dict[str, tuple[str, int]]:
        """name -> (uid, resourceVersion): what a watch compares between two looks."""
        query = select(InferenceDeployment.name, InferenceDeployment.uid, InferenceDeployment.resource_version)
        if name is not None:
            query = query.where(col(InferenceDeployment.name) == name)
        with self._read() as session:
            return {row[0]: (row[1], row[2]) for row in session.exec(query)}

    def desired_versions(self) -> dict[str, tuple[str, int, bool, str]]:
        """name -> (uid, generation, being deleted, its inference keys): what the reconciler
        acts on (a key made or revoked through any replica's API must reach the share). Status
        writes (the reconciler's own) and label changes move the resourceVersion but not this."""
        query = select(
            InferenceDeployment.name,
            InferenceDeployment.uid,
            InferenceDeployment.generation,
            col(InferenceDeployment.deletion_timestamp).is_not(None),
        )
        keys = select(InferenceKey.deployment_uid, func.count(), func.max(InferenceKey.created_at)).group_by(
            col(InferenceKey.deployment_uid)
        )
        with self._read() as session:
            marks = {row[0]: f"{row[1]}@{row[2]}" for row in session.exec(keys)}
            return {row[0]: (row[1], row[2], bool(row[3]), marks.get(row[1], "")) for row in session.exec(query)}

    def names(self) -> builtins.list[str]:
        with self._read() as session:
            return list(session.exec(select(InferenceDeployment.name)))

    def count_by_phase(self) -> dict[str, int]:
        # Counted by the database: a scrape of /metrics at 1,000 deployments decoded every
        # status in Python before (about 0.1 s of the daemon's CPU a scrape).
        phase = func.coalesce(col(InferenceDeployment.status)["phase"].as_string(), "Pending")
        with self._read() as session:
            return {str(found): int(count) for found, count in session.exec(select(phase, func.count()).group_by(phase))}

    def list_events(self, name: str, *, limit: int = 50) -> builtins.list[Event]:
        row = self.get(name)
        with self._read() as session:
            return list(session.exec(select(Event).where(col(Event.deployment_uid) == row.uid).order_by(col(Event.id).desc()).limit(limit)))

    # ------------------------------------------------------------------------------ writes

    def create(self, body: InferenceDeploymentCreate, *, owner: str | None = None, actor: str | None = None) -> InferenceDeployment:
        name = body.metadata.name
        now = self.clock()
        spec = body.spec.with_defaults(name).wire()
        row = InferenceDeployment(
            name=name,
            uid=str(uuid.uuid4()),
            labels=dict(body.metadata.labels),
            spec=spec,
            status=DeploymentStatus().wire(),
            generation=1,
            resource_version=1,
            created_at=now,
            updated_at=now,
            owner=owner,
            finalizers=[FINALIZER],
        )
        try:
            with self._write() as session:
                existing = session.get(InferenceDeployment, name)
                if existing is not None:
                    raise self._exists_error(existing)
                session.add(row)
                session.flush()
                self._replace_labels(session, name, row.labels)
                self._add_event(session, row, "Normal", "Created", "deployment created", first=True)
                if actor is not None:
                    add_audit(session, at=now, actor=actor, action="create", resource=f"deployment/{name}", after=1)
        except IntegrityError as exc:
            # Lost a race with another creator between the check and the insert.
            raise AlreadyExists(f"deployment {name!r} already exists") from exc
        self._notify(name)
        return row

    @staticmethod
    def _exists_error(existing: InferenceDeployment) -> AlreadyExists:
        if existing.deletion_timestamp is not None:
            return AlreadyExists(
                f"deployment {existing.name!r} is being deleted; wait until it is gone "
                f"(loraplane delete {existing.name} --wait) and create it again"
            )
        return AlreadyExists(
            f"deployment {existing.name!r} already exists; change it with PUT or PATCH (loraplane apply) or delete it first"
        )

    def replace(
        self,
        name: str,
        *,
        labels: dict[str, str],
        spec: DeploymentSpec,
        expected_version: int | None = None,
        actor: str | None = None,
        action: str = "update",
    ) -> tuple[InferenceDeployment, bool]:
        """Set labels and spec; returns the row and whether anything was written."""
        new_spec = spec.with_defaults(name).wire()
        with self._write() as session:
            row = self._locked(session, name)
            self._check_version(row, expected_version)
            if row.deletion_timestamp is not None:
                raise Conflict(f"deployment {name!r} is being deleted and can no longer change")
            check_change(row.spec, new_spec)
            spec_changed = _canonical(new_spec) != _canonical(row.spec)
            labels_changed = labels != row.labels
            if not spec_changed and not labels_changed:
                return row, False
            before = row.generation
            if spec_changed:
                row.spec = new_spec
                row.generation += 1
                self._add_event(session, row, "Normal", "SpecChanged", f"spec changed (generation {row.generation})")
            if labels_changed:
                row.labels = dict(labels)
                self._replace_labels(session, name, row.labels)
            row.resource_version += 1
            row.updated_at = self.clock()
            session.add(row)
            if actor is not None:
                changed = [what for what, did in (("spec", spec_changed), ("labels", labels_changed)) if did]
                add_audit(
                    session,
                    at=row.updated_at,
                    actor=actor,
                    action=action,
                    resource=f"deployment/{name}",
                    before=before,
                    after=row.generation,
                    detail=" and ".join(changed) + " changed",
                )
        if spec_changed:  # labels are for people and selectors: nothing to reconcile
            self._notify(name)
        return row, True

    def request_deletion(self, name: str, *, expected_version: int | None = None, actor: str | None = None) -> InferenceDeployment:
        """Mark for deletion (idempotent); the reconciler tears down, then ``remove`` runs."""
        with self._write() as session:
            row = self._locked(session, name)
            self._check_version(row, expected_version)
            if row.deletion_timestamp is None:
                row.deletion_timestamp = self.clock()
                row.resource_version += 1
                row.updated_at = row.deletion_timestamp
                status = DeploymentStatus.model_validate(row.status)
                status.phase = "Deleting"
                row.status = status.wire()
                session.add(row)
                self._add_event(session, row, "Normal", "DeletionRequested", "deletion requested")
                if actor is not None:
                    add_audit(
                        session,
                        at=row.updated_at,
                        actor=actor,
                        action="delete",
                        resource=f"deployment/{name}",
                        before=row.generation,
                        after=row.generation,
                    )
        self._notify(name)
        return row

    def update_status(
        self,
        name: str,
        status: DeploymentStatus,
        *,
        uid: str,
        read: InferenceDeployment | None = None,
        events: Sequence[NewEvent] = (),
        versions: Sequence[VersionChange] = (),
        fence: Fence | None = None,
        usage: UsageWrite | None = None,
    ) -> InferenceDeployment | None:
        """Write status if it differs, with ``events`` (type, reason, message), adapter
        ``versions`` changes and GPU ``usage``, all in one transaction; ``None`` when the
        deployment (that uid) is gone. ``read`` is the row as the caller read it, when only its
        caller writes status (the reconciler, one pass per deployment at a time): compared with
        that, an unchanged status with nothing else to write costs no read at all."""
        document = status.wire()
        # Compare first on a read: a steady state then takes no write lock at all.
        current = read
        if current is None:
            with self._read() as session:
                current = session.get(InferenceDeployment, name)
        if current is None or current.uid != uid:
            return None
        # Dicts compared as they are (both are JSON's types): a steady pass made a sorted dump of
        # each of the two to tell that nothing changed.
        if document == current.status and not events and not versions and usage is None:
            return current
        # Core statements: the status column read under the row's lock, and one UPDATE that
        # moves the resourceVersion in the database and gives back the row (the ORM's way
        # loaded the whole row to lock it and wrote it back through the unit of work).
        key = (col(InferenceDeployment.name) == name, col(InferenceDeployment.uid) == uid)
        with self._write(fence) as session:
            locked = session.execute(select(InferenceDeployment.status).where(*key).with_for_update()).first()
            if locked is None:
                return None
            for change in versions:
                self._apply_version_change(session, uid, change)
            for type_, reason, message in events:
                self._add_event(session, current, type_, reason, message)
            if usage is not None:
                self._add_usage(session, uid, usage)
            if document == locked[0]:
                return current
            written = session.execute(
                update(InferenceDeployment)
                .where(*key)
                .values(status=document, resource_version=col(InferenceDeployment.resource_version) + 1, updated_at=self.clock())
                .returning(InferenceDeployment),
                execution_options={"synchronize_session": False},
            ).scalar_one()
        return written

    @staticmethod
    def _add_usage(session: Session, uid: str, usage: UsageWrite) -> None:
        for day, seconds in usage.seconds_by_day.items():
            row = session.get(GpuUsageDay, (uid, day))
            if row is None:
                row = GpuUsageDay(deployment_uid=uid, day=day, deployment_name=usage.deployment_name, gpu_seconds=0.0)
            row.gpu_seconds += seconds
            row.profile = usage.profile
            session.add(row)
        meter = session.get(GpuMeter, uid) or GpuMeter(deployment_uid=uid, at=usage.at)
        meter.replicas, meter.gpus_per_replica, meter.profile, meter.at = usage.replicas, usage.gpus_per_replica, usage.profile, usage.at
        session.add(meter)

    def gpu_meter(self, deployment_uid: str) -> GpuMeter | None:
        with self._read() as session:
            return session.get(GpuMeter, deployment_uid)

    def gpu_usage(self, deployment_uid: str | None = None, *, since_day: str) -> builtins.list[GpuUsageDay]:
        """GPU-seconds by deployment and UTC day, from ``since_day`` on (of one deployment, or all)."""
        query = select(GpuUsageDay).where(col(GpuUsageDay.day) >= since_day)
        if deployment_uid is not None:
            query = query.where(col(GpuUsageDay.deployment_uid) == deployment_uid)
        with self._read() as session:
            return list(session.exec(query.order_by(col(GpuUsageDay.deployment_name), col(GpuUsageDay.day))))

    def remove(self, name: str, *, uid: str, fence: Fence | None = None) -> bool:
        """Drop a deployment whose teardown is done, with its labels and events."""
        with self._write(fence) as session:
            row = self._lock(session, name, uid)
            if row is None:
                return False
            if row.deletion_timestamp is None:
                raise Conflict(f"deployment {name!r} is not marked for deletion")
            session.exec(delete(DeploymentLabel).where(col(DeploymentLabel.deployment_name) == name))
            session.exec(delete(Event).where(col(Event.deployment_uid) == uid))
            session.exec(delete(CloudResource).where(col(CloudResource.deployment_uid) == uid))
            session.exec(delete(AdapterVersion).where(col(AdapterVersion.deployment_uid) == uid))
            session.exec(delete(InferenceKey).where(col(InferenceKey.deployment_uid) == uid))
            session.exec(delete(GpuUsageDay).where(col(GpuUsageDay.deployment_uid) == uid))
            session.exec(delete(GpuMeter).where(col(GpuMeter.deployment_uid) == uid))
            session.delete(row)
        return True

    def inference_keys(self, deployment_uid: str) -> builtins.list[InferenceKey]:
        """The deployment's inference keys, by name (their hashes: no secret is stored)."""
        with self._read() as session:
            query = select(InferenceKey).where(col(InferenceKey.deployment_uid) == deployment_uid).order_by(col(InferenceKey.name))
            return list(session.exec(query))

    # ---------------------------------------------------------------------- cloud resources

    def cloud_resources(self, deployment_uid: str) -> builtins.list[CloudResource]:
        with self._read() as session:
            return list(session.exec(select(CloudResource).where(col(CloudResource.deployment_uid) == deployment_uid)))

    def save_cloud_resource(
        self,
        deployment_uid: str,
        resource_id: str,
        *,
        kind: str,
        created: bool,
        operation: str | None,
        continuation_token: str | None,
        fence: Fence | None = None,
    ) -> None:
        """Insert or replace the record of one resource (ids are compared lower-cased, as ARM does)."""
        key = resource_id.lower()
        with self._write(fence) as session:
            row = session.get(CloudResource, (deployment_uid, key))
            if row is None:
                row = CloudResource(deployment_uid=deployment_uid, resource_id=key, kind=kind, updated_at=self.clock())
            row.kind, row.created, row.operation = kind, created, operation
            row.continuation_token = continuation_token
            row.updated_at = self.clock()
            session.add(row)

    def forget_cloud_resources(self, deployment_uid: str, resource_id: str | None = None, *, fence: Fence | None = None) -> None:
        query = delete(CloudResource).where(col(CloudResource.deployment_uid) == deployment_uid)
        if resource_id is not None:
            query = query.where(col(CloudResource.resource_id) == resource_id.lower())
        with self._write(fence) as session:
            session.exec(query)

    def _add_event(
        self, session: Session, row: InferenceDeployment, type_: EventType, reason: str, message: str, *, first: bool = False
    ) -> None:
        """Add an event, or count one more of the newest if it says the same (``first``: the
        deployment is new and has none, nothing to look up)."""
        now = self.clock()
        newest = (
            None
            if first
            else session.exec(
                select(Event).where(col(Event.deployment_uid) == row.uid).order_by(col(Event.id).desc()).limit(1)
            ).one_or_none()
        )
        if newest is not None and (newest.type, newest.reason, newest.message) == (
            type_,
            reason,
            message,
        ):
            newest.count += 1
            newest.last_timestamp = now
            session.add(newest)
            return
        session.add(
            Event(
                deployment_uid=row.uid,
                deployment_name=row.name,
                type=type_,
                reason=reason,
                message=message,
                count=1,
                first_timestamp=now,
                last_timestamp=now,
            )
        )

    # ---------------------------------------------------------------------- adapter versions

    def adapter_versions(self, deployment_uid: str, adapter: str | None = None) -> builtins.list[AdapterVersion]:
        """Newest first; of one adapter, or of them all."""
        query = select(AdapterVersion).where(col(AdapterVersion.deployment_uid) == deployment_uid)
        if adapter is not None:
            query = query.where(col(AdapterVersion.adapter) == adapter)
        query = query.order_by(col(AdapterVersion.detected_at).desc(), col(AdapterVersion.version))
        with self._read() as session:
            return list(session.exec(query))

    def get_with_versions(self, name: str) -> tuple[InferenceDeployment, builtins.list[AdapterVersion]]:
        """The deployment and its adapter versions (newest first), read together: what each
        reconcile pass starts from, in one session rather than two."""
        with self._read() as session:
            row = session.get(InferenceDeployment, name)
            if row is None:
                raise NotFound(f"deployment {name!r} not found")
            query = select(AdapterVersion).where(col(AdapterVersion.deployment_uid) == row.uid)
            versions = list(session.exec(query.order_by(col(AdapterVersion.detected_at).desc(), col(AdapterVersion.version))))
        return row, versions

    def adapter_version(self, deployment_uid: str, version: str) -> AdapterVersion | None:
        with self._read() as session:
            return session.get(AdapterVersion, (deployment_uid, version))

    def decide_canary(self, name: str, adapter: str, decision: Literal["promote", "abort"], *, actor: str) -> AdapterVersion:
        """Ask the reconciler to end ``adapter``'s canary now: promote it, or abort it (roll it
        back). Audited; Conflict when no canary of that adapter is under way."""
        with self._write() as session:
            row = self._locked(session, name)
            canary = session.exec(
                select(AdapterVersion).where(
                    col(AdapterVersion.deployment_uid) == row.uid,
                    col(AdapterVersion.adapter) == adapter,
                    col(AdapterVersion.state) == "Canary",
                )
            ).first()
            if canary is None:
                raise Conflict(
                    f"adapter {adapter!r} of deployment {name!r} has no canary under way to {decision}; "
                    f"see its versions with GET /v1/deployments/{name}/adapters"
                )
            canary.canary_decision = f"{decision}:{actor}"
            session.add(canary)
            add_audit(
                session,
                at=self.clock(),
                actor=actor,
                action=decision,
                resource=f"deployment/{name}",
                before=row.generation,
                after=row.generation,
                detail=f"adapter {adapter} version {canary.version}",
            )
        self._notify(name)
        return canary

    def add_adapter_version(self, row: AdapterVersion) -> AdapterVersion:
        """A version seen for the first time; an existing one of that id is left as it is."""
        with self._write() as session:
            existing = session.get(AdapterVersion, (row.deployment_uid, row.version))
            if existing is not None:
                return existing
            session.add(row)
        return row

    def _apply_version_change(self, session: Session, deployment_uid: str, change: VersionChange) -> None:
        if isinstance(change, AddVersion):
            if session.get(AdapterVersion, (deployment_uid, change.row.version)) is None:
                session.add(AdapterVersion.model_validate(change.row.model_dump()))
            return
        row = session.get(AdapterVersion, (deployment_uid, change.version))
        if row is None:
            raise NotFound(f"adapter version {change.version!r} not found")
        if isinstance(change, MarkVersion):
            row.state, row.message = change.state, change.message
            session.add(row)
            return
        if isinstance(change, RecordGate):
            row.gate = change.gate
            session.add(row)
            return
        if isinstance(change, RecordCanary):
            row.canary = change.canary
            if change.decided:
                row.canary_decision = None
            session.add(row)
            return
        actives = session.exec(
            select(AdapterVersion).where(
                col(AdapterVersion.deployment_uid) == deployment_uid,
                col(AdapterVersion.adapter) == row.adapter,  # each adapter has its own Active version
                col(AdapterVersion.state) == "Active",
            )
        )
        for active in actives:
            if active.version != change.version:
                active.state = "Superseded"
                session.add(active)
        if row.state != "Active":
            row.state, row.activated_at, row.message = "Active", self.clock(), None
            session.add(row)
