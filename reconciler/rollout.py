"""Adapter rollout: detect → settle → validate → stage → activate → verify, or roll back.

Runs in the reconcile pass of a deployment whose infrastructure has converged, level-
triggered like the rest: what is on the share, the version rows, the status and what the
endpoint answers decide each step; nothing is remembered between passes but how long the
adapter's files have looked the same (settling), which a restart merely starts again.

It writes nothing to the database itself: a pass's version changes and events go into its
``RolloutReport``, and the reconciler commits them with the status, in one fenced transaction.

- Detect: list the adapter folder (listing and properties only, no download). A change is a
  candidate once it is complete (adapter_config.json and adapter_model.safetensors or .bin,
  and the marker file when ``spec.adapter.marker`` names one) and unchanged for
  ``settleSeconds``.
- Validate before anything serves it, with the serving app's own validator
  (``serving.adapter_check``): the config parses, is LoRA, was trained for this base model,
  has a sane rank and target modules; the safetensors header is whole and its LoRA shapes
  agree with the rank. A bad candidate is Rejected, with the reason, until its files change.
- Stage: copy its adapter files (the config and the weights; not a README, not the marker)
  to ``.loraplane/NAME/UID8/adapters/VERSION/`` on the share (server-side on Azure Files);
  training may overwrite its output, serving reads the immutable copy. A version's staged copy
  that is gone from the share (the share root changed) is staged again from the adapter
  folder while that still holds it, else the version is Failed and never pointed at.
- Activate: write the pointer every replica follows; hotReload asks the app to reload now,
  restart marks the version Activating, which the app's environment then names (a restart,
  a new revision).
- Verify: every probe of ``GET /v1/adapter`` reports the version before a deadline; else go
  back to the last good version, mark the version Failed, and say so (Degraded,
  AdapterRolloutFailed, an event).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from infra.errors import ProviderError
from infra.provider import (
    AdapterHost,
    AdapterShare,
    Observation,
    ShareEntry,
    Target,
    pointer_path,
    read_reports,
    replicas_folder,
    staged_path,
)
from reconciler.canary import Counts, counts_of, shown, since
from reconciler.canary import describe as canary_describe
from reconciler.canary import judge as judge_canary
from reconciler.gate import GateInvalid
from reconciler.gate import prompts_of as gate_prompts
from reconciler.gate import reason_of as gate_reason
from reconciler.gate import run as run_gate
from reconciler.listing import FolderListings, ShareKey, share_key
from serving.adapter_check import CONFIG, MAX_HEADER_BYTES, WEIGHTS, check_config, check_safetensors_header, header_length
from state.models import AdapterFile, AdapterVersion, CanaryRecord, GateResult, InferenceDeployment, NewEvent, utcnow
from state.resource import AdapterStatus, CanaryStatus, DeploymentStatus, NamedAdapterSpec, NamedAdapterStatus, RolloutRecord
from state.store import ActivateVersion, AddVersion, MarkVersion, RecordCanary, RecordGate, VersionChange

log = logging.getLogger("loraplane.reconciler.rollout")

SERVABLE = ("Staged", "Gating", "Canary", "Activating", "Active", "Superseded")
# The files a version is made of: what peft loads. A README beside them, the marker, anything
# else training leaves is not staged (nor read), and does not make a new version.
STAGED_FILES = frozenset({CONFIG, *WEIGHTS})
# How long a rollout may take to be verified before it is rolled back.
VERIFY_SECONDS = {"hotReload": 120.0, "restart": 1800.0}
# Versions settled but not yet verified, remembered for the settled-to-serving metric; a bound
# keeps a stream of versions that never verify from growing it.
MAX_SETTLED_REMEMBERED = 10_000


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "loraplane_adapter_rollout_duration_seconds",
            "From activating an adapter version to its verification (or its rollback)",
            ["strategy", "result"],
            registry=registry,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800),
        )
        self.settled_to_serving = Histogram(
            "loraplane_adapter_settled_to_serving_seconds",
            "From an adapter's files settling on the share to every probe reporting it",
            ["strategy"],
            registry=registry,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800),
        )


@dataclass
class AdapterReport:
    """What a pass found for one adapter, and what it wants written with it: events and
    adapter-version changes."""

    adapter: AdapterStatus
    synced: bool
    reason: str
    message: str
    failed: bool = False
    requeue_after: float | None = None
    events: list[NewEvent] = field(default_factory=list)  # (type, reason, message)
    versions: list[VersionChange] = field(default_factory=list)


@dataclass
class RolloutReport:
    """What a pass found for every adapter of the deployment, for the status (AdapterSynced,
    and Degraded when a rollout failed), and what it wants written with it."""

    adapters: list[NamedAdapterStatus]
    synced: bool
    reason: str
    message: str
    failed: bool = False
    requeue_after: float | None = None
    events: list[NewEvent] = field(default_factory=list)
    versions: list[VersionChange] = field(default_factory=list)

    @property
    def adapter(self) -> AdapterStatus:
        """The first adapter's: what a request that names no model gets."""
        first = self.adapters[0]
        return AdapterStatus(
            desired_version=first.desired_version,
            serving_version=first.serving_version,
            last_rollout=first.last_rollout,
            canary=first.canary,
        )

    @classmethod
    def of(cls, reports: dict[str, AdapterReport]) -> RolloutReport:
        """One report for the deployment: synced when every adapter is, failed when any is;
        with several adapters, the reason is the first one's that is behind, and each message
        says which adapter it is about."""
        many = len(reports) > 1
        statuses = [NamedAdapterStatus(name=name, **r.adapter.model_dump()) for name, r in reports.items()]
        behind = [(name, r) for name, r in reports.items() if r.failed or not r.synced]
        failed = [(name, r) for name, r in behind if r.failed]
        lead = (failed or behind or list(reports.items()))[0]
        if many and behind:
            message = "; ".join(f"adapter {name}: {r.message}" for name, r in (failed or behind))
        elif many:
            message = "serving " + ", ".join(f"{name} {r.adapter.serving_version}" for name, r in reports.items())
        else:
            message = lead[1].message
        waits = [r.requeue_after for r in reports.values() if r.requeue_after is not None]
        return cls(
            adapters=statuses,
            synced=not behind,
            reason=lead[1].reason,
            message=message,
            failed=bool(failed),
            requeue_after=min(waits) if waits else None,
            events=[
                (kind, reason, f"adapter {name}: {text}" if many else text)
                for name, r in reports.items()
                for kind, reason, text in r.events
            ],
            versions=[change for r in reports.values() for change in r.versions],
        )


class Pointer:
    """The pointer every replica follows, as this pass knows it: each adapter's version and
    staged folder, the versions loaded beside it (one being proved, the one before it for an
    instant rollback) and its canary, written whole (one atomic replace) whenever one of them
    changes. A deployment of ``spec.adapter`` gets the one-adapter form older serving apps
    read too (they ignore what they do not know)."""

    def __init__(
        self,
        share: AdapterShare,
        row: InferenceDeployment,
        target: Target,
        *,
        known: str | None = None,
        written: Callable[[str | None], None] | None = None,
    ) -> None:
        """``known``: the document's JSON as this process last read or wrote it (loraplane
        alone writes the pointer), so that a pass reads nothing; ``written`` hears each new one
        (None: a write failed part way, and what is on the share is not known). Kept as text:
        a pass parses it (microseconds) where a deep copy of the dicts walked them in Python."""
        self.share, self.path = share, pointer_path(row.name, row.uid)
        self.names = [e.name for e in target.spec.adapter_entries(target.name)]
        self.legacy = target.spec.adapters is None
        self.entries: dict[str, dict[str, Any]] = {}
        self.written = written
        folder, _, file_name = self.path.rpartition("/")
        document: Any = json.loads(known) if known is not None else None
        if document is None:
            try:
                listed = any(e.name == file_name for e in share.list(folder) or [])
                document = json.loads(share.read(self.path)) if listed else {}
            except ValueError:
                document = {}  # replaced whole by the next write
            if written is not None and isinstance(document, dict):
                written(json.dumps(document))
        found = document.get("adapters", {self.names[0]: document} if "version" in document else {}) if isinstance(document, dict) else {}
        self.entries = {n: e for n, e in found.items() if n in self.names and isinstance(e, dict)}
        self.stale = set(found) - set(self.names)  # adapters no longer in the spec

    def active(self, name: str) -> str | None:
        return self.entries.get(name, {}).get("version")

    def digest(self) -> str:
        """What the pointer says, in a few bytes: equal digests, equal pointers."""
        return hashlib.sha256(json.dumps(self.entries, sort_keys=True).encode()).hexdigest()

    def beside(self, name: str) -> list[str]:
        """The versions loaded beside the active one."""
        return [str(e.get("version")) for e in self.entries.get(name, {}).get("loaded") or [] if isinstance(e, dict)]

    def point(self, name: str, version: str, path: str, *, keep_previous: bool = True) -> None:
        """``version`` serves ``name`` now; the one it replaces stays loaded beside it (a
        rollback is then a flip), unless ``keep_previous`` is false (it failed)."""
        entry = self.entries.get(name, {})
        previous = entry.get("version")
        loaded = []
        if keep_previous and previous is not None and previous != version and entry.get("path"):
            loaded = [{"version": previous, "path": entry["path"]}]
        self.entries[name] = {"version": version, "path": path, **({"loaded": loaded} if loaded else {})}
        self.write()

    def load(self, name: str, version: str, path: str) -> bool:
        """Load ``version`` beside the one serving (for its gate, or as a canary); False when
        it is there already."""
        if self.active(name) == version or version in self.beside(name):
            return False
        entry = self.entries.setdefault(name, {})
        entry["loaded"] = [*(entry.get("loaded") or []), {"version": version, "path": path}]
        self.write()
        return True

    def unload(self, name: str, version: str) -> bool:
        """``version`` is no longer loaded beside (nor the canary); the adapter's entry goes
        when it was its active version (a first version that failed its gate)."""
        entry = self.entries.get(name)
        if entry is None:
            return False
        if entry.get("version") == version:
            del self.entries[name]
            self.write()
            return True
        loaded = [e for e in entry.get("loaded") or [] if isinstance(e, dict) and e.get("version") != version]
        canary = entry.get("canary")
        if len(loaded) == len(entry.get("loaded") or []) and not (isinstance(canary, dict) and canary.get("version") == version):
            return False
        entry["loaded"] = loaded
        if isinstance(canary, dict) and canary.get("version") == version:
            del entry["canary"]
        self.write()
        return True

    def set_canary(self, name: str, version: str, weight: int) -> None:
        entry = self.entries.setdefault(name, {})
        if entry.get("canary") != {"version": version, "weight": weight}:
            entry["canary"] = {"version": version, "weight": weight}
            self.write()

    def write(self) -> None:
        ordered = {n: self.entries[n] for n in self.names if n in self.entries}
        body = ordered[self.names[0]] if self.legacy and self.names[0] in ordered else {"adapters": ordered}
        text = json.dumps(body)
        try:
            self.share.write(self.path, text.encode())
        except BaseException:
            if self.written is not None:
                self.written(None)
            raise
        self.stale = set()
        if self.written is not None:
            self.written(text)


class VersionBook:
    """A pass's view of the deployment's version rows (newest first): read once, changed in
    memory as the pass decides, the changes kept for the one commit at the end."""

    def __init__(self, rows: Sequence[AdapterVersion], report: AdapterReport, clock: Callable[[], datetime]) -> None:
        self.rows = [AdapterVersion.model_validate(r.model_dump()) for r in rows]
        self.report, self.clock = report, clock

    def find(self, version: str) -> AdapterVersion | None:
        return next((v for v in self.rows if v.version == version), None)

    def add(self, row: AdapterVersion) -> None:
        if self.find(row.version) is None:
            self.rows.insert(0, row)
            self.report.versions.append(AddVersion(row))

    def activate(self, version: str) -> None:
        for row in self.rows:
            if row.version == version and row.state != "Active":
                row.state, row.activated_at, row.message = "Active", self.clock(), None
            elif row.version != version and row.state == "Active":
                row.state = "Superseded"
        self.report.versions.append(ActivateVersion(version))

    def mark(self, version: str, state: str, message: str | None = None) -> None:
        row = self.find(version)
        if row is not None and (row.state, row.message) != (state, message):
            row.state, row.message = state, message
            self.report.versions.append(MarkVersion(version, state, message))

    def record_gate(self, version: str, result: GateResult) -> None:
        row = self.find(version)
        if row is not None:
            row.gate = result.wire()
            self.report.versions.append(RecordGate(version, row.gate))

    def record_canary(self, version: str, record: CanaryRecord | None, *, decided: bool = False) -> None:
        row = self.find(version)
        if row is not None:
            row.canary = record.wire() if record is not None else None
            if decided:
                row.canary_decision = None
            self.report.versions.append(RecordCanary(version, row.canary, decided))


# ------------------------------------------------------------------------------- pure parts


def adapter_files(files: list[ShareEntry]) -> list[ShareEntry]:
    """What makes an adapter, and all a version is made of: what is staged and fingerprinted."""
    return [f for f in files if f.name in STAGED_FILES]


def fingerprint(files: list[ShareEntry]) -> str:
    """Names, sizes and what identifies each file's content (MD5 where kept, else etag/mtime)."""
    lines = sorted(f"{f.name}\t{f.size}\t{f.md5 or f.etag or ''}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def incomplete(files: list[ShareEntry], marker: str | None, marker_field: str = "spec.adapter.marker") -> str | None:
    names = {f.name for f in files}
    if CONFIG not in names:
        return f"no {CONFIG} yet"
    if not any(w in names for w in WEIGHTS):
        return "no adapter_model.safetensors (or .bin) yet"
    if marker and marker not in names:
        return f"no {marker} marker yet ({marker_field})"
    return None


def validate_on_share(share: AdapterShare, folder: str, files: list[ShareEntry], model_path: str) -> str | None:
    """Why the adapter in ``folder`` must not be served, or None: the serving app's own checks
    (``serving.adapter_check``), made with listings and ranged reads of the share."""
    config, problem = check_config(share.read(f"{folder}/{CONFIG}"), [model_path], served_as=model_path)
    if problem is not None or config is None:
        return problem
    weights = next(f for w in WEIGHTS for f in files if f.name == w)
    if weights.name.endswith(".safetensors"):
        head = share.read(f"{folder}/{weights.name}", offset=0, length=min(weights.size, 8))
        length = header_length(head)
        if length is not None and 8 + length <= min(weights.size, 8 + MAX_HEADER_BYTES):
            head += share.read(f"{folder}/{weights.name}", offset=8, length=length)
        return check_safetensors_header(head, weights.size, config["r"], name=weights.name)[1]
    return None if weights.size > 0 else "adapter_model.bin is empty"


def version_id(adapter: str, deployment: str, found: str) -> str:
    """A version's id: its fingerprint's first 12 hex digits for the adapter named after the
    deployment (spec.adapter's, as ids always were), else mixed with the adapter's name, so
    that two adapters of one deployment holding the same files are two versions."""
    if adapter == deployment:
        return found[:12]
    return hashlib.sha256(f"{adapter}\n{found}".encode()).hexdigest()[:12]


def desired_version(
    versions: list[AdapterVersion], pin: str | None, field_name: str = "spec.adapter.pin"
) -> tuple[AdapterVersion | None, str | None]:
    """The version that should serve: the pinned one, else the newest that may serve."""
    if pin:
        row = next((v for v in versions if v.version == pin), None)
        if row is None:
            return None, f"{field_name} names version {pin!r}, which is not among this adapter's versions"
        if row.state == "Rejected":
            return None, f"{field_name} names version {pin!r}, which was rejected: {row.message}"
        return row, None
    return next((v for v in versions if v.state in SERVABLE), None), None


def restart_version(versions: Sequence[AdapterVersion], *, proving: bool = False) -> str | None:
    """Under the restart strategy, the version the app must be started with: the one being
    rolled out (Activating), else the one serving (Active). ``proving``: the version being
    proved runs in a revision of its own (a gate or a canary on the azure target), so the
    newest revision runs it."""
    states = ("Canary", "Gating", "Activating", "Active") if proving else ("Activating", "Active")
    for state in states:
        found = next((v for v in versions if v.state == state), None)
        if found is not None:
            return found.version
    return None


def previous_status(previous: DeploymentStatus, name: str, first: bool) -> AdapterStatus:
    """An adapter's status from the last pass: its entry, or for the first adapter the status
    written before there were entries."""
    entry = next((a for a in previous.adapters if a.name == name), None)
    if entry is not None:
        return AdapterStatus(
            desired_version=entry.desired_version,
            serving_version=entry.serving_version,
            last_rollout=entry.last_rollout,
            canary=entry.canary,
        )
    return previous.adapter.model_copy(deep=True) if first and not previous.adapters else AdapterStatus()


def _read_if_there(share: AdapterShare, path: str) -> bytes | None:
    folder, _, name = path.rpartition("/")
    if not any(e.name == name and not e.is_dir for e in share.list(folder) or []):
        return None
    return share.read(path)


def served_by(answer: dict, name: str, default: str) -> dict:
    """One replica's answer about adapter ``name``: its entry in ``adapters``; a serving app
    that lists none serves one adapter, the deployment's."""
    listed = answer.get("adapters")
    if isinstance(listed, list):
        return next((a for a in listed if isinstance(a, dict) and a.get("name") == name), {})
    return answer if name == default else {}


def reload_answer(answer: dict, name: str) -> dict:
    """The reload endpoint's answer about adapter ``name`` (its own, or the whole one's)."""
    adapters = answer.get("adapters")
    if isinstance(adapters, dict) and isinstance(adapters.get(name), dict):
        return adapters[name]
    return answer


# ------------------------------------------------------------------------------ the steps


@dataclass
class _Pass:
    """One adapter's turn in a deployment's pass: who it is and what it works with."""

    row: InferenceDeployment
    target: Target
    host: AdapterHost
    share: AdapterShare
    pointer: Pointer
    entry: NamedAdapterSpec
    many: bool  # the deployment serves several adapters (a restart restarts them all)
    observed: Hashable | None = None  # the observation's token (infra.provider.Observation)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def pin_field(self) -> str:
        return f"spec.adapters[{self.name}].pin" if self.target.spec.adapters is not None else "spec.adapter.pin"

    @property
    def marker_field(self) -> str:
        return f"spec.adapters[{self.name}].marker" if self.target.spec.adapters is not None else "spec.adapter.marker"


class AdapterRollout:
    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: RolloutMetrics | None = None,
        verify_seconds: dict[str, float] | None = None,
        poll_seconds: float = 1.0,
        steady_recheck_seconds: float = 300.0,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = metrics
        self.verify_seconds = {**VERIFY_SECONDS, **(verify_seconds or {})}
        self.poll_seconds = poll_seconds
        # Shared by the workers (each deployment is in one pass at a time, but the dicts are one).
        self._lock = threading.Lock()
        self._settling: dict[tuple[str, str], tuple[str, float]] = {}  # (uid, adapter) -> (fingerprint, first seen)
        self._settled_at: dict[tuple[str, str], float] = {}  # (uid, version) -> when it settled
        self._loading_since: dict[tuple[str, str], float] = {}  # (uid, version) -> when it was pointed at to load beside
        # What a pass reads from memory rather than the share: the adapter poller's listings,
        # and each deployment's pointer as this process last read or wrote it.
        self.listings = FolderListings(monotonic)
        self._pointers: dict[str, tuple[ShareKey, str]] = {}  # uid -> (its share, the document's JSON)
        # (uid, adapter) -> (what was observed, the version, the pointer; when) at the last
        # steady check that every replica serves the version (see _confirmed)
        self._steady: dict[tuple[str, str], tuple[tuple, float]] = {}
        self.steady_recheck_seconds = steady_recheck_seconds

    def forget(self, uid: str) -> None:
        """The deployment is gone: nothing of it is kept."""
        with self._lock:
            self._pointers.pop(uid, None)
            for key in [k for k in self._steady if k[0] == uid]:
                del self._steady[key]
            for key in [k for k in self._settling if k[0] == uid]:
                del self._settling[key]
            for key in [k for k in self._settled_at if k[0] == uid]:
                del self._settled_at[key]
            for key in [k for k in self._loading_since if k[0] == uid]:
                del self._loading_since[key]

    def forget_shares(self) -> None:
        """What was kept of the shares may be out of date (another replica led meanwhile):
        read them again."""
        with self._lock:
            self._pointers.clear()

    def _passes(self, row: InferenceDeployment, target: Target, host: AdapterHost, share: AdapterShare) -> list[_Pass]:
        entries = target.spec.adapter_entries(target.name)
        on = share_key(target)
        with self._lock:
            kept = self._pointers.get(row.uid)
        known = kept[1] if kept is not None and kept[0] == on else None

        def written(document: str | None) -> None:
            with self._lock:
                if document is None:
                    self._pointers.pop(row.uid, None)
                else:
                    self._pointers[row.uid] = (on, document)

        pointer = Pointer(share, row, target, known=known, written=written)
        return [_Pass(row, target, host, share, pointer, entry, len(entries) > 1) for entry in entries]

    def step(
        self,
        row: InferenceDeployment,
        target: Target,
        host: AdapterHost,
        observation: Observation,
        previous: DeploymentStatus,
        versions: Sequence[AdapterVersion],
    ) -> RolloutReport:
        """Each adapter's turn, one after the other, each on its own versions: one adapter's
        bad version is that adapter's news only."""
        assert observation.endpoint is not None  # the reconciler steps only once it is ready
        reports: dict[str, AdapterReport] = {}
        with closing(host.share(target)) as share:
            passes = self._passes(row, target, host, share)
            for index, turn in enumerate(passes):
                turn.observed = observation.token
                report = AdapterReport(previous_status(previous, turn.name, index == 0), False, "Waiting", "")
                book = VersionBook([v for v in versions if v.adapter == turn.name], report, self.clock)
                reports[turn.name] = self._step_one(turn, observation.endpoint, book)
            if passes and passes[0].pointer.stale:
                passes[0].pointer.write()  # an adapter left the spec: the replicas stop serving it
        return RolloutReport.of(reports)

    def stage_ahead(
        self, row: InferenceDeployment, target: Target, host: AdapterHost, previous: DeploymentStatus, versions: Sequence[AdapterVersion]
    ) -> tuple[list[NewEvent], list[VersionChange]]:
        """Before the app serves anything: each adapter the pointer does not name yet gets its
        first version staged and named in the pointer (a restart-strategy one is marked
        Activating, so that the app starts with it), so the app never serves a version the
        history does not know. The passes that follow verify it as any rollout."""
        events: list[NewEvent] = []
        changes: list[VersionChange] = []
        with closing(host.share(target)) as share:
            for index, turn in enumerate(self._passes(row, target, host, share)):
                if turn.name in turn.pointer.entries:
                    continue
                report = AdapterReport(previous_status(previous, turn.name, index == 0), False, "Waiting", "")
                book = VersionBook([v for v in versions if v.adapter == turn.name], report, self.clock)
                self._detect(turn, book)
                desired, problem = desired_version(book.rows, turn.entry.pin, turn.pin_field)
                if problem is None and desired is not None and desired.path is not None and self._restage_if_lost(turn, desired) is None:
                    turn.pointer.point(turn.name, desired.version, desired.path)
                    if turn.entry.strategy == "restart" and desired.state == "Staged":
                        book.mark(desired.version, "Activating")
                prefix = f"adapter {turn.name}: " if turn.many else ""
                events += [(kind, reason, prefix + text) for kind, reason, text in report.events]
                changes += report.versions
        return events, changes

    def _step_one(self, turn: _Pass, endpoint: str, book: VersionBook) -> AdapterReport:
        report = book.report
        waiting = self._detect(turn, book)
        desired, problem = desired_version(book.rows, turn.entry.pin, turn.pin_field)
        if problem is not None:
            report.reason, report.message, report.failed = "PinnedVersionUnknown", problem, True
            return report
        if desired is None:
            report.reason = "NoAdapter"
            report.message = waiting or f"no complete adapter at {turn.entry.path} yet"
            return report
        report.adapter.desired_version = desired.version
        report.adapter.canary = None  # said again below while one is under way
        self._end_overtaken(turn, endpoint, desired, book)
        proving = self._prove(turn, endpoint, desired, book)
        if proving is not None:
            return proving
        return self._activate(turn, endpoint, desired, book)

    def watch_in_flight(
        self,
        row: InferenceDeployment,
        target: Target,
        host: AdapterHost,
        observation: Observation,
        previous: DeploymentStatus,
        versions: Sequence[AdapterVersion],
    ) -> RolloutReport | None:
        """While the endpoint is not ready: a restart rollout may be why (the new version
        keeps the app from starting). Roll back when the app says it refused the version, or
        when the deadline passes; else None (nothing to say yet)."""
        entries = target.spec.adapter_entries(target.name)
        statuses = {e.name: previous_status(previous, e.name, i == 0) for i, e in enumerate(entries)}
        stuck = {
            name: status
            for name, status in statuses.items()
            if status.last_rollout is not None
            and status.last_rollout.result == "InProgress"
            and status.last_rollout.version is not None
            and status.last_rollout.started_at is not None
        }
        if not stuck:
            return None
        answer: dict = {}
        if observation.endpoint is not None:
            try:
                answer = host.adapter_status(target, observation.endpoint)
            except ProviderError:
                answer = {}
        reports: dict[str, AdapterReport] = {}
        rolled_back = False
        with closing(host.share(target)) as share:
            for turn in self._passes(row, target, host, share):
                status = statuses[turn.name]
                report = AdapterReport(status.model_copy(deep=True), status.serving_version is not None, "Serving", "")
                report.message = f"serving adapter {status.serving_version}" if status.serving_version else "waiting for the app"
                reports[turn.name] = report
                rollout = status.last_rollout
                if turn.name not in stuck or rollout is None or rollout.version is None or rollout.started_at is None:
                    continue
                error = served_by(answer, turn.name, target.name).get("last_error")
                refusal = str(error) if error and rollout.version in str(error) else None
                strategy = rollout.strategy or "restart"
                elapsed = (self.clock() - rollout.started_at).total_seconds()
                if refusal is None and elapsed < self.verify_seconds[strategy]:
                    report.synced, report.reason, report.message = False, "RollingOut", f"rolling out adapter {rollout.version}"
                    continue
                book = VersionBook(
                    [v for v in versions if v.adapter == turn.name],
                    AdapterReport(status.model_copy(deep=True), False, "RollingOut", ""),
                    self.clock,
                )
                failed = book.find(rollout.version)
                if failed is None:
                    continue
                error_text = refusal or f"the app did not become ready with it within {self.verify_seconds[strategy]:.0f}s"
                reports[turn.name] = self._roll_back(turn, None, failed, book, rollout, error_text)
                rolled_back = True
        return RolloutReport.of(reports) if rolled_back else None

    # ----------------------------------------------------------------------------- detect

    def _detect(self, turn: _Pass, book: VersionBook) -> str | None:
        """Find a new complete, settled adapter and stage it (or reject it). Returns what is
        being waited for, if anything."""
        row, share, spec, report = turn.row, turn.share, turn.entry, book.report
        key = (row.uid, turn.name)
        with self._lock:
            seen = self._settling.get(key)
        # The poller's listing, while fresh; settling is proved by a listing made after it.
        settled_from = seen[1] + spec.settle_seconds if seen is not None else None
        entries = self.listings.list(share, share_key(turn.target), spec.path, max_age=spec.poll_seconds, listed_after=settled_from)
        if entries is None:
            self._stop_settling(key)
            return f"no adapter folder at {spec.path}"
        listed = [e for e in entries if not e.is_dir]
        why = incomplete(listed, spec.marker, turn.marker_field)
        if why is not None:
            self._stop_settling(key)
            return f"the adapter at {spec.path} is not complete: {why}"
        files = adapter_files(listed)
        found = fingerprint(files)
        if any(v.fingerprint == found for v in book.rows):
            self._stop_settling(key)
            return None  # seen before: staged, serving, or rejected until its files change
        now = self.monotonic()
        with self._lock:
            seen = self._settling.get(key)
            if seen is None or seen[0] != found:
                seen = self._settling[key] = (found, now)
        remaining = spec.settle_seconds - (now - seen[1])
        if remaining > 0:
            report.requeue_after = remaining
            return f"a new adapter at {spec.path} is settling (unchanged for {spec.settle_seconds}s before it is used)"
        self._stop_settling(key)
        version = version_id(turn.name, row.name, found)
        reason = validate_on_share(share, spec.path, files, turn.target.spec.model.path)
        record = AdapterVersion(
            deployment_uid=row.uid,
            version=version,
            deployment_name=row.name,
            adapter=turn.name,
            state="Rejected",
            fingerprint=found,
            source_path=spec.path,
            detected_at=self.clock(),
            files=[AdapterFile(name=f.name, size=f.size, etag=f.etag, md5=f.md5).wire() for f in files],
        )
        if reason is not None:
            record.message = reason
            book.add(record)
            report.events.append(("Warning", "AdapterRejected", f"adapter {version} from {spec.path} was rejected: {reason}"))
            log.warning("%s: adapter %s version %s rejected: %s", row.name, turn.name, version, reason)
            return None
        destination = staged_path(row.name, row.uid, version)
        for f in files:
            share.copy(f"{spec.path}/{f.name}", f"{destination}/{f.name}")
        after = share.list(spec.path) or []
        if fingerprint(adapter_files([e for e in after if not e.is_dir])) != found:
            report.requeue_after = max(1.0, float(spec.settle_seconds))
            return f"the adapter at {spec.path} changed while it was being staged; waiting for it to settle again"
        record.state, record.path, record.staged_at = "Staged", destination, self.clock()
        book.add(record)
        with self._lock:
            if len(self._settled_at) >= MAX_SETTLED_REMEMBERED:
                self._settled_at.clear()
            self._settled_at[(row.uid, version)] = self.monotonic()
        size = sum(f.size for f in files)
        report.events.append(
            (
                "Normal",
                "AdapterStaged",
                f"adapter {version} from {spec.path} staged at {destination} ({len(files)} files, {size / 1e6:.1f} MB)",
            )
        )
        return None

    def _stop_settling(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._settling.pop(key, None)

    # ---------------------------------------------------------------------- gate, canary

    def _end_overtaken(self, turn: _Pass, endpoint: str, desired: AdapterVersion, book: VersionBook) -> None:
        """A version being proved that is no longer the one to serve (a newer one came, or a
        pin names another) stops being proved: unloaded, Staged again, its canary forgotten."""
        for other in list(book.rows):
            if other.state not in ("Gating", "Canary") or other.version == desired.version:
                continue
            book.mark(other.version, "Staged", f"overtaken by {desired.version} while it was being proved")
            if other.canary is not None:
                book.record_canary(other.version, None, decided=True)
            if turn.pointer.unload(turn.name, other.version):
                self._reload(turn, endpoint)
            book.report.events.append(
                (
                    "Normal",
                    "AdapterRolloutOvertaken",
                    f"adapter {other.version} stops being proved: {desired.version} is the one to serve now",
                )
            )

    def _prove(self, turn: _Pass, endpoint: str, desired: AdapterVersion, book: VersionBook) -> AdapterReport | None:
        """A version that never served, rolled out with ``rollout.gate`` or ``rollout.canary``,
        proves itself first: its report while it does (or once it failed); None once it may
        serve everyone. A pinned version is the team's own choice, and one that served
        before has proved itself: neither is proved again."""
        rollout = turn.entry.rollout
        if rollout is None or desired.activated_at is not None or desired.version == turn.entry.pin:
            return None
        stable = next((v for v in book.rows if v.state == "Active" and v.version != desired.version), None)
        if rollout.gate is not None and desired.gate is None:
            report = self._gate(turn, endpoint, desired, stable, book)
            if report is not None:
                return report
        canary = rollout.canary
        if canary is None or stable is None:
            return None
        record = desired.canary_record
        if record is None:
            return self._start_canary(turn, endpoint, desired, stable, book)
        if record.result is None:
            return self._judge_canary(turn, endpoint, desired, record, book)
        return None  # promoted: being activated

    def _reload(self, turn: _Pass, endpoint: str) -> dict:
        """The replicas look at the pointer now (hotReload; under restart the running process
        loads a version beside too, for its gate)."""
        return reload_answer(turn.host.reload_adapter(turn.target, endpoint), turn.name)

    @staticmethod
    def _in_revision(turn: _Pass) -> bool:
        """The version is proved in a revision of its own (a restart rollout on the azure
        target), not loaded beside the serving one."""
        return turn.entry.strategy == "restart" and turn.target.revisions is not None

    def _loaded_everywhere(
        self, turn: _Pass, endpoint: str, version: AdapterVersion, book: VersionBook, doing: str
    ) -> tuple[AdapterReport | None, str]:
        """``version`` answering where it is proved: loaded beside the serving one on every
        replica (as the pointer asks), or running in a revision of its own. (None, where to ask
        it) once it is; else the report while it loads, or once it was refused (the version
        Failed, nothing else changed)."""
        report = book.report
        assert version.path is not None
        lost = self._restage_if_lost(turn, version)
        if lost is not None:
            book.mark(version.version, "Failed", lost)
            report.reason, report.message, report.requeue_after = "Waiting", lost, self.poll_seconds
            return report, endpoint
        key = (turn.row.uid, version.version)
        where: str | None = endpoint
        if self._in_revision(turn):
            # The newest revision runs it once the provider made it (its environment names it).
            where = turn.host.version_endpoint(turn.target, endpoint, {**turn.target.restart_versions(), turn.name: version.version})
            served = self._served_at(turn, where) if where is not None else []
            limit = self.verify_seconds["restart"]
        else:
            if turn.pointer.load(turn.name, version.version, version.path):
                with self._lock:
                    self._loading_since[key] = self.monotonic()
                self._reload(turn, endpoint)
            served = self._served(turn, endpoint)
            limit = self.verify_seconds["hotReload"]
        refusals = [
            str(error)
            for s in served
            for error in [
                *(e.get("error") for e in s.get("loaded") or [] if isinstance(e, dict) and e.get("version") == version.version),
                s.get("last_error") if version.version in str(s.get("last_error") or "") else None,
            ]
            if error
        ]
        present = [
            s.get("version") == version.version
            or any(isinstance(e, dict) and e.get("version") == version.version and not e.get("error") for e in s.get("loaded") or [])
            for s in served
        ]
        with self._lock:
            since = self._loading_since.setdefault(key, self.monotonic())
        if not refusals and served and all(present) and where is not None:
            with self._lock:
                self._loading_since.pop(key, None)
            return None, where
        waited = self.monotonic() - since
        if not refusals and waited < limit:
            report.reason, report.requeue_after = "RollingOut", self.poll_seconds
            report.message = (
                f"starting a revision that runs adapter {version.version}, for {doing}"
                if self._in_revision(turn)
                else f"loading adapter {version.version} beside the serving one, for {doing}"
            )
            return report, endpoint
        with self._lock:
            self._loading_since.pop(key, None)
        why = refusals[0] if refusals else f"it did not answer within {limit:.0f}s"
        message = f"adapter version {version.version} failed: the serving app did not load it for {doing}: {why}"
        book.mark(version.version, "Failed", message)
        if turn.pointer.unload(turn.name, version.version):
            self._reload(turn, endpoint)
        report.failed, report.reason, report.message, report.requeue_after = True, "AdapterRolloutFailed", message, self.poll_seconds
        report.events.append(("Warning", "AdapterRolloutFailed", message))
        return report, endpoint

    def _served_at(self, turn: _Pass, where: str) -> list[dict]:
        """What the replicas behind ``where`` (a revision's own address) serve of this adapter;
        nothing while none answers there."""
        try:
            return [served_by(turn.host.adapter_status(turn.target, where), turn.name, turn.target.name)]
        except ProviderError:
            return []

    def _gate(
        self, turn: _Pass, endpoint: str, desired: AdapterVersion, stable: AdapterVersion | None, book: VersionBook
    ) -> AdapterReport | None:
        """Ask the version its golden prompts, loaded beside the serving one, named: None once it
        passed (recorded); else its report (loading, or rejected)."""
        gate = turn.entry.rollout.gate if turn.entry.rollout is not None else None
        assert gate is not None
        report = book.report
        if desired.state != "Gating":
            book.mark(desired.version, "Gating")
            report.events.append(
                ("Normal", "AdapterGateStarted", f"adapter {desired.version} is loaded beside the serving one for its gate")
            )
        waiting, where = self._loaded_everywhere(turn, endpoint, desired, book, "its gate")
        if waiting is not None:
            return waiting
        try:
            prompts = gate_prompts(gate, lambda path: _read_if_there(turn.share, path))
        except GateInvalid as exc:
            report.failed, report.reason, report.message = True, "GateInvalid", f"adapter {desired.version} waits for its gate: {exc}"
            report.requeue_after = max(self.poll_seconds, 10.0)
            return report
        candidate = f"{turn.name}@{desired.version}"
        result = run_gate(
            prompts,
            # The version is asked where it answers (its own revision, under restart on Azure);
            # the serving one where users are answered.
            lambda route, body: turn.host.ask(
                turn.target, where if body["model"] == candidate else endpoint, route, body, float(gate.timeout_seconds)
            ),
            candidate=candidate,
            baseline=f"{turn.name}@{stable.version}" if stable is not None else None,
            min_pass_rate=gate.min_pass_rate,
            timeout=float(gate.timeout_seconds),
            clock=self.clock,
        )
        book.record_gate(desired.version, result)
        if result.passed:
            report.events.append(
                (
                    "Normal",
                    "AdapterGatePassed",
                    f"adapter {desired.version} passed its gate: {result.pass_rate:.0%} of {len(result.prompts)} golden prompts",
                )
            )
            if turn.entry.rollout is None or turn.entry.rollout.canary is None or stable is None:
                book.mark(desired.version, "Activating")
            return None
        reason = gate_reason(result)
        book.mark(desired.version, "Rejected", reason)
        if turn.pointer.unload(turn.name, desired.version):
            self._reload(turn, endpoint)
        message = f"adapter version {desired.version} was rejected: {reason}" + (f"; {stable.version} keeps serving" if stable else "")
        report.events.append(("Warning", "AdapterGateFailed", message))
        log.warning("%s: adapter %s: %s", turn.row.name, turn.name, message)
        report.failed, report.reason, report.message, report.requeue_after = True, "AdapterGateFailed", message, self.poll_seconds
        return report

    def _counts(self, turn: _Pass) -> Counts:
        return counts_of(read_reports(turn.share, replicas_folder(turn.row.name, turn.row.uid)), turn.name)

    def _start_canary(
        self, turn: _Pass, endpoint: str, desired: AdapterVersion, stable: AdapterVersion, book: VersionBook
    ) -> AdapterReport:
        spec = turn.entry.rollout.canary if turn.entry.rollout is not None else None
        assert spec is not None
        waiting, _ = self._loaded_everywhere(turn, endpoint, desired, book, "its canary")
        if waiting is not None:
            return waiting
        record = CanaryRecord(
            started_at=self.clock(),
            stable_version=stable.version,
            weight=spec.weight,
            duration_seconds=spec.duration_seconds,
            baseline=self._counts(turn),
        )
        if not self._in_revision(turn):  # else the traffic weights split it, from the next pass on
            turn.pointer.set_canary(turn.name, desired.version, spec.weight)
            self._reload(turn, endpoint)
        book.mark(desired.version, "Canary")
        book.record_canary(desired.version, record)
        book.report.events.append(
            (
                "Normal",
                "AdapterCanaryStarted",
                f"adapter {desired.version} takes {spec.weight}% of the requests for {spec.duration_seconds}s, against {stable.version}",
            )
        )
        return self._canary_report(turn, desired, record, record.baseline, book)

    def _canary_report(
        self, turn: _Pass, desired: AdapterVersion, record: CanaryRecord, counts: Counts, book: VersionBook
    ) -> AdapterReport:
        report = book.report
        figures = shown(desired.version, since(counts, record.baseline, desired.version))
        stable = shown(record.stable_version, since(counts, record.baseline, record.stable_version))
        ends = record.started_at + timedelta(seconds=record.duration_seconds)
        report.adapter.canary = CanaryStatus(
            version=desired.version, weight=record.weight, started_at=record.started_at, ends_at=ends, canary=figures, stable=stable
        )
        left = max(0.0, (ends - self.clock()).total_seconds())
        report.reason = "Canary"
        report.message = f"canary {desired.version} takes {record.weight}% of the requests, {left:.0f}s left: {canary_describe(figures)}; stable {canary_describe(stable)}"
        report.requeue_after = max(0.05, min(self.poll_seconds, left))
        return report

    def _judge_canary(
        self, turn: _Pass, endpoint: str, desired: AdapterVersion, record: CanaryRecord, book: VersionBook
    ) -> AdapterReport | None:
        spec = turn.entry.rollout.canary if turn.entry.rollout is not None else None
        assert spec is not None
        counts = self._counts(turn)
        report = self._canary_report(turn, desired, record, counts, book)
        assert report.adapter.canary is not None
        elapsed = (self.clock() - record.started_at).total_seconds()
        verdict = judge_canary(spec, report.adapter.canary.canary, report.adapter.canary.stable, elapsed, desired.canary_decision)
        if verdict.action == "wait":
            return report
        decided = desired.canary_decision is not None
        finished = self.clock()
        if verdict.action == "promote":
            book.record_canary(
                desired.version, record.model_copy(update={"result": "Promoted", "message": verdict.reason}), decided=decided
            )
            book.mark(desired.version, "Activating")
            report.events.append(("Normal", "AdapterCanaryPromoted", f"adapter {desired.version} is promoted: {verdict.reason}"))
            report.adapter.canary = None
            return None
        # Rolled back: the stable version takes every request again, at once.
        aborted = (desired.canary_decision or "").startswith("abort")
        if turn.pointer.unload(turn.name, desired.version):
            self._reload(turn, endpoint)
        message = (
            f"adapter version {desired.version}'s canary was rolled back: {verdict.reason}; {record.stable_version} serves every request"
        )
        book.record_canary(desired.version, record.model_copy(update={"result": "RolledBack", "message": verdict.reason}), decided=decided)
        book.mark(desired.version, "Failed", message)
        report.adapter.canary = None
        report.adapter.last_rollout = RolloutRecord(
            version=desired.version,
            strategy=turn.entry.strategy,
            result="Aborted" if aborted else "RolledBack",
            started_at=record.started_at,
            finished_at=finished,
            duration_seconds=round((finished - record.started_at).total_seconds(), 3),
            message=message,
        )
        report.adapter.desired_version = record.stable_version
        report.adapter.serving_version = record.stable_version
        report.requeue_after = self.poll_seconds
        if aborted:
            report.synced, report.reason, report.message = True, "CanaryAborted", message
            report.events.append(("Normal", "AdapterCanaryAborted", message))
        else:
            report.failed, report.reason, report.message = True, "AdapterCanaryFailed", message
            report.events.append(("Warning", "AdapterCanaryFailed", message))
            log.warning("%s: adapter %s: %s", turn.row.name, turn.name, message)
        return report

    # --------------------------------------------------------------------------- activate

    def _confirmed(self, turn: _Pass, desired: AdapterVersion) -> tuple | None:
        """The steady check that every replica serves ``desired``, kept from an earlier pass:
        while nothing observed changed (the observation's token) and the pointer says the
        same, for up to ``steady_recheck_seconds``, asking the replicas again could only say
        what they said (they follow the pointer). None: ask them."""
        if turn.observed is None:
            return None
        key = (turn.row.uid, turn.name)
        seen = (turn.observed, desired.version, turn.pointer.digest())
        with self._lock:
            kept = self._steady.get(key)
        if kept is not None and kept[0] == seen and self.monotonic() - kept[1] < self.steady_recheck_seconds:
            return kept
        return None

    def _confirm(self, turn: _Pass, desired: AdapterVersion, served: list[dict]) -> None:
        key = (turn.row.uid, turn.name)
        with self._lock:
            if turn.observed is not None and served and all(s.get("version") == desired.version for s in served):
                self._steady[key] = ((turn.observed, desired.version, turn.pointer.digest()), self.monotonic())
            else:
                self._steady.pop(key, None)

    def _served(self, turn: _Pass, endpoint: str) -> list[dict]:
        """What the replicas serve of this adapter: an answer from each (the provider knows
        how to reach them)."""
        probes = max(2, min(10, 2 * turn.target.spec.scale.max_replicas))
        return [served_by(answer, turn.name, turn.target.name) for answer in turn.host.adapter_statuses(turn.target, endpoint, probes)]

    def _activate(self, turn: _Pass, endpoint: str, desired: AdapterVersion, book: VersionBook) -> AdapterReport:
        report = book.report
        strategy = turn.entry.strategy
        rollout = report.adapter.last_rollout
        in_flight = rollout is not None and rollout.result == "InProgress" and rollout.version == desired.version
        # Ask the replicas what they serve when the answer can end the pass: a rollout in
        # flight, or the version already verified (a steady pass checks it still serves). A
        # version never verified is a rollout to start: asking first would only delay it.
        steady = not in_flight and desired.state == "Active"
        confirmed = self._confirmed(turn, desired) if steady else None
        if confirmed is not None:
            served = [{"version": desired.version}]  # as confirmed, and nothing changed since
        else:
            served = self._served(turn, endpoint) if in_flight or desired.state == "Active" else []
        if steady and confirmed is None:
            self._confirm(turn, desired, served)
        if not in_flight and served and all(s.get("version") == desired.version for s in served):
            if desired.state != "Active":
                book.activate(desired.version)
            report.adapter.serving_version = desired.version
            failed_before = rollout is not None and rollout.result == "RolledBack"
            report.synced = True
            report.reason = "Serving"
            report.message = f"serving adapter {desired.version}"
            if failed_before and rollout is not None:
                report.failed, report.reason, report.message = True, "AdapterRolloutFailed", rollout.message or ""
            return report
        refusal: str | None = None
        if not in_flight:
            previous = report.adapter.serving_version
            assert desired.path is not None
            lost = self._restage_if_lost(turn, desired)
            if lost is not None:
                if (desired.state, desired.message) != ("Failed", lost):  # news once, not every pass
                    report.events.append(("Warning", "AdapterVersionLost", f"adapter version {desired.version}: {lost}"))
                book.mark(desired.version, "Failed", lost)
                report.reason, report.message, report.requeue_after = "Waiting", lost, self.poll_seconds
                return report
            turn.pointer.point(turn.name, desired.version, desired.path)
            rollout = RolloutRecord(
                version=desired.version,
                strategy=strategy,
                result="InProgress",
                started_at=self.clock(),
                message=f"from {previous or 'no adapter'} to {desired.version}",
            )
            report.adapter.last_rollout = rollout
            restarts_all = (
                " (the app restarts: every adapter of the deployment restarts with it)" if strategy == "restart" and turn.many else ""
            )
            report.events.append(
                ("Normal", "AdapterRolloutStarted", f"rolling out adapter {desired.version} ({strategy}), {rollout.message}{restarts_all}")
            )
            for other in book.rows:
                if other.state == "Activating" and other.version != desired.version:
                    book.mark(other.version, "Staged")  # a rollout overtaken by this one
            if strategy == "restart":
                # Activating: the app's environment names it from the next pass on, so the app
                # restarts with it (a new revision on Azure); the next passes verify it.
                if desired.state != "Active":
                    book.mark(desired.version, "Activating")
                report.reason, report.message, report.requeue_after = (
                    "RollingOut",
                    f"restarting to serve adapter {desired.version}",
                    self.poll_seconds,
                )
                return report
            answer = reload_answer(turn.host.reload_adapter(turn.target, endpoint), turn.name)
            if answer.get("status") == "refused":
                refusal = str(answer.get("message") or "the serving app refused it")
            else:
                served = self._served(turn, endpoint)
        assert rollout is not None and rollout.started_at is not None
        if refusal is None and all(s.get("version") == desired.version for s in served):
            return self._succeeded(turn, desired, rollout, book)
        if refusal is None:
            errors = [s.get("last_error") for s in served if s.get("last_error") and desired.version in str(s.get("last_error"))]
            refusal = errors[0] if errors else None
        elapsed = (self.clock() - rollout.started_at).total_seconds()
        if refusal is None and elapsed < self.verify_seconds[strategy]:
            seen = sorted({str(s.get("version")) for s in served})
            report.reason, report.requeue_after = "RollingOut", self.poll_seconds
            report.message = f"rolling out adapter {desired.version}: replicas report {', '.join(seen)}"
            return report
        error = refusal or f"not every replica reported it within {self.verify_seconds[strategy]:.0f}s"
        return self._roll_back(turn, endpoint, desired, book, rollout, error)

    @staticmethod
    def _restage_if_lost(turn: _Pass, desired: AdapterVersion) -> str | None:
        """Before a version is pointed at: its staged copy is on this share, or it is staged
        again from the adapter folder while that still holds exactly it. Else why it cannot be
        served (the share root or the share changed since it was staged)."""
        assert desired.path is not None
        share = turn.share
        staged = [e for e in share.list(desired.path) or [] if not e.is_dir]
        if incomplete(staged, None) is None:
            return None
        source = turn.entry.path
        files = adapter_files([e for e in share.list(source) or [] if not e.is_dir])
        if not files or fingerprint(files) != desired.fingerprint:
            return (
                f"its staged copy {desired.path} is not on the share (was the share or spec.local.shareRoot changed?) "
                f"and {source} no longer holds it; it cannot serve again"
            )
        for f in files:
            share.copy(f"{source}/{f.name}", f"{desired.path}/{f.name}")
        return None

    def _succeeded(self, turn: _Pass, desired: AdapterVersion, rollout: RolloutRecord, book: VersionBook) -> AdapterReport:
        report = book.report
        strategy = turn.entry.strategy
        finished = self.clock()
        assert rollout.started_at is not None
        duration = (finished - rollout.started_at).total_seconds()
        book.activate(desired.version)
        report.adapter.serving_version = desired.version
        report.adapter.last_rollout = rollout.model_copy(
            update={"result": "Succeeded", "finished_at": finished, "duration_seconds": round(duration, 3)}
        )
        report.synced, report.reason, report.message = True, "Serving", f"serving adapter {desired.version}"
        report.events.append(
            ("Normal", "AdapterActivated", f"adapter {desired.version} serves on every replica probed ({strategy}, {duration:.1f}s)")
        )
        with self._lock:
            settled = self._settled_at.pop((turn.row.uid, desired.version), None)
        if self.metrics is not None:
            self.metrics.duration.labels(strategy, "Succeeded").observe(duration)
            if settled is not None:
                self.metrics.settled_to_serving.labels(strategy).observe(self.monotonic() - settled)
        return report

    def _roll_back(
        self,
        turn: _Pass,
        endpoint: str | None,
        failed: AdapterVersion,
        book: VersionBook,
        rollout: RolloutRecord,
        error: str,
    ) -> AdapterReport:
        report = book.report
        strategy = turn.entry.strategy
        good = next((v for v in book.rows if v.state == "Active" and v.version != failed.version), None)
        book.mark(failed.version, "Failed", error)
        with self._lock:
            self._settled_at.pop((turn.row.uid, failed.version), None)
        if good is not None and good.path is not None:
            turn.pointer.point(turn.name, good.version, good.path, keep_previous=False)
            if strategy == "hotReload" and endpoint is not None:
                turn.host.reload_adapter(turn.target, endpoint)
        back = f"rolled back to {good.version}" if good is not None else "nothing to roll back to"
        message = f"adapter version {failed.version} failed: {error}; {back}"
        finished = self.clock()
        assert rollout.started_at is not None
        duration = (finished - rollout.started_at).total_seconds()
        report.adapter.serving_version = good.version if good is not None else report.adapter.serving_version
        report.adapter.desired_version = good.version if good is not None else None
        report.adapter.last_rollout = rollout.model_copy(
            update={"result": "RolledBack", "finished_at": finished, "duration_seconds": round(duration, 3), "message": message}
        )
        report.failed, report.reason, report.message = True, "AdapterRolloutFailed", message
        report.requeue_after = self.poll_seconds
        report.events.append(("Warning", "AdapterRolloutFailed", message))
        log.warning("%s: adapter %s: %s", turn.row.name, turn.name, message)
        if self.metrics is not None:
            self.metrics.duration.labels(strategy, "RolledBack").observe(duration)
        return report
