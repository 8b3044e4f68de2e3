"""Adapter rollout: detect → settle → validate → stage → activate → verify, or roll back.

Runs in the reconcile pass of a deployment whose infrastructure has converged, level-
triggered like the rest: what is on the share, the version rows, the status and what the
endpoint answers decide each step; nothing is remembered between passes but how long the
adapter's files have looked the same (settling), which a restart merely starts again.

- Detect: list the adapter folder (listing and properties only, no download). A change is a
  candidate once it is complete (adapter_config.json and adapter_model.safetensors or .bin,
  and the marker file when ``spec.adapter.marker`` names one) and unchanged for
  ``settleSeconds``.
- Validate before anything serves it: the config parses, is LoRA, was trained for this base
  model, has a sane rank and target modules; the safetensors header is whole and its LoRA
  shapes agree with the rank. A bad candidate is Rejected, with the reason, until its files
  change.
- Stage: copy it to ``.loraplane/NAME/adapters/VERSION/`` on the share (server-side on Azure
  Files); training may overwrite its output, serving reads the immutable copy.
- Activate: write the pointer every replica follows; hotReload asks the app to reload now,
  restart makes the version part of the app's environment (a restart, a new revision).
- Verify: every probe of ``GET /v1/adapter`` reports the version before a deadline; else go
  back to the last good version, mark the version Failed, and say so (Degraded,
  AdapterRolloutFailed, an event).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram

from infra.errors import ProviderError
from infra.provider import AdapterShare, Observation, Provider, ShareEntry, Target, pointer_path, staged_path
from state.models import AdapterFile, AdapterVersion, InferenceDeployment, utcnow
from state.resource import AdapterStatus, DeploymentStatus, RolloutRecord
from state.store import DeploymentStore

log = logging.getLogger("loraplane.reconciler.rollout")

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
SERVABLE = ("Staged", "Active", "Superseded")
# How long a rollout may take to be verified before it is rolled back.
VERIFY_SECONDS = {"hotReload": 120.0, "restart": 1800.0}
MAX_HEADER_BYTES = 100 * 1024 * 1024


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
class RolloutReport:
    """What a pass found, for the status: AdapterSynced, and Degraded when a rollout failed."""

    adapter: AdapterStatus
    synced: bool
    reason: str
    message: str
    failed: bool = False
    requeue_after: float | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


# ------------------------------------------------------------------------------- pure parts


def fingerprint(files: list[ShareEntry]) -> str:
    """Names, sizes and what identifies each file's content (MD5 where kept, else etag/mtime)."""
    lines = sorted(f"{f.name}\t{f.size}\t{f.md5 or f.etag or ''}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def incomplete(files: list[ShareEntry], marker: str | None) -> str | None:
    names = {f.name for f in files}
    if CONFIG not in names:
        return f"no {CONFIG} yet"
    if not any(w in names for w in WEIGHTS):
        return "no adapter_model.safetensors (or .bin) yet"
    if marker and marker not in names:
        return f"no {marker} marker yet (spec.adapter.marker)"
    return None


def _tail(name: str, parts: int) -> str:
    pieces = [p for p in re.split(r"[\\/]", name.strip()) if p]
    return "/".join(pieces[-parts:]).lower()


def fits_model(adapter_base: str | None, model_path: str) -> bool:
    """The adapter's base_model_name_or_path names the deployment's model: by hub id
    (org/name) against the model path's tail, or by its last component."""
    if not adapter_base:
        return True  # nothing recorded: the serving app's structural checks decide
    ours = {_tail(model_path, 2), _tail(model_path, 1)}
    return _tail(adapter_base, 2) in ours or _tail(adapter_base, 1) in ours


def check_config(raw: bytes, model_path: str) -> tuple[dict | None, str | None]:
    try:
        config = json.loads(raw)
    except ValueError as exc:
        return None, f"{CONFIG} does not parse as JSON: {exc}"
    if not isinstance(config, dict):
        return None, f"{CONFIG} is not a JSON object"
    if str(config.get("peft_type", "")).upper() != "LORA":
        return None, f"{CONFIG} has peft_type {config.get('peft_type')!r}: only LoRA adapters are served"
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= 1024:
        return None, f"{CONFIG} has rank r={rank!r}: it must be an integer from 1 to 1024"
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not all(isinstance(t, str) and re.fullmatch(r"[\w.*|()\[\]\\^$+?-]{1,200}", t) for t in targets):
        return None, f"{CONFIG} has target_modules {config.get('target_modules')!r}: name the modules the adapter changes"
    base = config.get("base_model_name_or_path")
    if not fits_model(base, model_path):
        return None, f"it was trained for {base!r}, but this deployment serves {model_path}"
    return config, None


def check_safetensors_header(head: bytes, size: int, rank: int) -> str | None:
    """``head`` is the first 8 bytes and the JSON header after them (as much as was read)."""
    if size < 8 or len(head) < 8:
        return "adapter_model.safetensors is truncated (no header)"
    (length,) = struct.unpack("<Q", head[:8])
    if length > MAX_HEADER_BYTES or 8 + length > size or len(head) < 8 + length:
        return "adapter_model.safetensors is truncated or not a safetensors file"
    try:
        header = json.loads(head[8 : 8 + length])
    except ValueError:
        return "adapter_model.safetensors has a header that does not parse"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not any("lora_" in name for name in tensors):
        return "adapter_model.safetensors holds no LoRA weights"
    end = max((meta.get("data_offsets", [0, 0])[1] for meta in tensors.values()), default=0)
    if 8 + length + end > size:
        return f"adapter_model.safetensors is truncated: its tensors need {8 + length + end} bytes, the file has {size}"
    for name, meta in tensors.items():
        shape = meta.get("shape") or []
        if "lora_A" in name and shape and shape[0] != rank:
            return f"adapter_model.safetensors: {name} has rank {shape[0]}, but {CONFIG} says r={rank}"
    return None


def desired_version(versions: list[AdapterVersion], pin: str | None) -> tuple[AdapterVersion | None, str | None]:
    """The version that should serve: the pinned one, else the newest that may serve."""
    if pin:
        row = next((v for v in versions if v.version == pin), None)
        if row is None:
            return None, f"spec.adapter.pin names version {pin!r}, which is not among this deployment's adapters"
        if row.state == "Rejected":
            return None, f"spec.adapter.pin names version {pin!r}, which was rejected: {row.message}"
        return row, None
    return next((v for v in versions if v.state in SERVABLE), None), None


def restart_version(status: DeploymentStatus) -> str | None:
    """Under the restart strategy, the version the app's environment names: the one being
    rolled out, else the one serving."""
    rollout = status.adapter.last_rollout
    if rollout is not None and rollout.result == "InProgress":
        return rollout.version
    return status.adapter.serving_version


# ------------------------------------------------------------------------------ the steps


class AdapterRollout:
    def __init__(
        self,
        store: DeploymentStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: RolloutMetrics | None = None,
        verify_seconds: dict[str, float] | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = metrics
        self.verify_seconds = {**VERIFY_SECONDS, **(verify_seconds or {})}
        self.poll_seconds = poll_seconds
        self._settling: dict[str, tuple[str, float]] = {}  # uid -> (fingerprint, first seen)
        self._settled_at: dict[tuple[str, str], float] = {}  # (uid, version) -> when it settled

    def forget(self, uid: str) -> None:
        self._settling.pop(uid, None)

    def step(
        self, row: InferenceDeployment, target: Target, provider: Provider, observation: Observation, previous: DeploymentStatus
    ) -> RolloutReport:
        report = RolloutReport(previous.adapter.model_copy(deep=True), False, "Waiting", "")
        with closing(provider.share(target)) as share:
            waiting = self._detect(row, target, share, report)
            versions = self.store.adapter_versions(row.uid)
            desired, problem = desired_version(versions, target.spec.adapter.pin)
            if problem is not None:
                report.reason, report.message, report.failed = "PinnedVersionUnknown", problem, True
                return report
            if desired is None:
                report.reason = "NoAdapter"
                report.message = waiting or f"no complete adapter at {target.spec.adapter.path} yet"
                return report
            report.adapter.desired_version = desired.version
            assert observation.endpoint is not None  # the reconciler steps only once it is ready
            return self._activate(row, target, provider, share, observation.endpoint, desired, versions, report)

    def watch_in_flight(
        self, row: InferenceDeployment, target: Target, provider: Provider, observation: Observation, previous: DeploymentStatus
    ) -> RolloutReport | None:
        """While the endpoint is not ready: a restart rollout may be why (the new version
        keeps the app from starting). Roll back when the app says it refused the version, or
        when the deadline passes; else None (nothing to say yet)."""
        rollout = previous.adapter.last_rollout
        if rollout is None or rollout.result != "InProgress" or rollout.version is None or rollout.started_at is None:
            return None
        refusal = None
        if observation.endpoint is not None:
            try:
                answer = provider.adapter_status(target, observation.endpoint)
            except ProviderError:
                answer = {}
            error = answer.get("last_error")
            if error and rollout.version in str(error):
                refusal = str(error)
        elapsed = (self.clock() - rollout.started_at).total_seconds()
        if refusal is None and elapsed < self.verify_seconds[rollout.strategy or "restart"]:
            return None
        versions = self.store.adapter_versions(row.uid)
        failed = next((v for v in versions if v.version == rollout.version), None)
        if failed is None:
            return None
        report = RolloutReport(previous.adapter.model_copy(deep=True), False, "RollingOut", "")
        error = refusal or f"the app did not become ready with it within {self.verify_seconds[rollout.strategy or 'restart']:.0f}s"
        with closing(provider.share(target)) as share:
            return self._roll_back(row, target, provider, share, None, failed, versions, rollout, error, report)

    # ----------------------------------------------------------------------------- detect

    def _detect(self, row: InferenceDeployment, target: Target, share: AdapterShare, report: RolloutReport) -> str | None:
        """Find a new complete, settled adapter and stage it (or reject it). Returns what is
        being waited for, if anything."""
        spec = target.spec.adapter
        entries = share.list(spec.path)
        if entries is None:
            self._settling.pop(row.uid, None)
            return f"no adapter folder at {spec.path}"
        files = [e for e in entries if not e.is_dir]
        why = incomplete(files, spec.marker)
        if why is not None:
            self._settling.pop(row.uid, None)
            return f"the adapter at {spec.path} is not complete: {why}"
        found = fingerprint(files)
        if any(v.fingerprint == found for v in self.store.adapter_versions(row.uid)):
            self._settling.pop(row.uid, None)
            return None  # seen before: staged, serving, or rejected until its files change
        now = self.monotonic()
        seen = self._settling.get(row.uid)
        if seen is None or seen[0] != found:
            self._settling[row.uid] = (found, now)
            seen = (found, now)
        remaining = spec.settle_seconds - (now - seen[1])
        if remaining > 0:
            report.requeue_after = remaining
            return f"a new adapter at {spec.path} is settling (unchanged for {spec.settle_seconds}s before it is used)"
        self._settling.pop(row.uid, None)
        version = found[:12]
        reason = self._validate(share, target, files)
        record = AdapterVersion(
            deployment_uid=row.uid,
            version=version,
            deployment_name=row.name,
            state="Rejected",
            fingerprint=found,
            source_path=spec.path,
            detected_at=self.clock(),
            files=[AdapterFile(name=f.name, size=f.size, etag=f.etag, md5=f.md5).wire() for f in files],
        )
        if reason is not None:
            record.message = reason
            self.store.add_adapter_version(record)
            report.events.append(("Warning", "AdapterRejected", f"adapter {version} from {spec.path} was rejected: {reason}"))
            log.warning("%s: adapter %s rejected: %s", row.name, version, reason)
            return None
        destination = staged_path(row.name, version)
        for f in files:
            share.copy(f"{spec.path}/{f.name}", f"{destination}/{f.name}")
        after = share.list(spec.path) or []
        if fingerprint([e for e in after if not e.is_dir]) != found:
            report.requeue_after = max(1.0, float(spec.settle_seconds))
            return f"the adapter at {spec.path} changed while it was being staged; waiting for it to settle again"
        record.state, record.path, record.staged_at = "Staged", destination, self.clock()
        self.store.add_adapter_version(record)
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

    def _validate(self, share: AdapterShare, target: Target, files: list[ShareEntry]) -> str | None:
        folder = target.spec.adapter.path
        config, problem = check_config(share.read(f"{folder}/{CONFIG}"), target.spec.model.path)
        if problem is not None or config is None:
            return problem
        weights = next(f for w in WEIGHTS for f in files if f.name == w)
        if weights.name.endswith(".safetensors"):
            head = share.read(f"{folder}/{weights.name}", offset=0, length=min(weights.size, 8))
            if len(head) == 8:
                (length,) = struct.unpack("<Q", head)
                if 8 + length <= min(weights.size, 8 + MAX_HEADER_BYTES):
                    head += share.read(f"{folder}/{weights.name}", offset=8, length=length)
            return check_safetensors_header(head, weights.size, config["r"])
        return None if weights.size > 0 else "adapter_model.bin is empty"

    # --------------------------------------------------------------------------- activate

    def _served(self, provider: Provider, target: Target, endpoint: str) -> list[dict]:
        """Several answers of GET /v1/adapter: enough to reach each replica behind ingress."""
        probes = max(2, min(10, 2 * target.spec.scale.max_replicas))
        return [provider.adapter_status(target, endpoint) for _ in range(probes)]

    def _activate(
        self,
        row: InferenceDeployment,
        target: Target,
        provider: Provider,
        share: AdapterShare,
        endpoint: str,
        desired: AdapterVersion,
        versions: list[AdapterVersion],
        report: RolloutReport,
    ) -> RolloutReport:
        strategy = target.spec.adapter.strategy
        rollout = report.adapter.last_rollout
        in_flight = rollout is not None and rollout.result == "InProgress" and rollout.version == desired.version
        # Ask the replicas what they serve when the answer can end the pass: a rollout in
        # flight, or the version already verified (a steady pass checks it still serves). A
        # version never verified is a rollout to start: asking first would only delay it.
        served = self._served(provider, target, endpoint) if in_flight or desired.state == "Active" else []
        if not in_flight and served and all(s.get("version") == desired.version for s in served):
            if desired.state != "Active":
                self.store.activate_adapter_version(row.uid, desired.version)
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
            share.write(pointer_path(row.name), json.dumps({"version": desired.version, "path": desired.path}).encode())
            rollout = RolloutRecord(
                version=desired.version,
                strategy=strategy,
                result="InProgress",
                started_at=self.clock(),
                message=f"from {previous or 'no adapter'} to {desired.version}",
            )
            report.adapter.last_rollout = rollout
            report.events.append(
                ("Normal", "AdapterRolloutStarted", f"rolling out adapter {desired.version} ({strategy}), {rollout.message}")
            )
            if strategy == "restart":
                # The app restarts (a new revision on Azure) with the version in its environment;
                # the next passes verify it.
                report.reason, report.message, report.requeue_after = (
                    "RollingOut",
                    f"restarting to serve adapter {desired.version}",
                    self.poll_seconds,
                )
                return report
            answer = provider.reload_adapter(target, endpoint)
            if answer.get("status") == "refused":
                refusal = str(answer.get("message") or "the serving app refused it")
            else:
                served = self._served(provider, target, endpoint)
        assert rollout is not None and rollout.started_at is not None
        if refusal is None and all(s.get("version") == desired.version for s in served):
            return self._succeeded(row, target, desired, rollout, report)
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
        return self._roll_back(row, target, provider, share, endpoint, desired, versions, rollout, error, report)

    def _succeeded(
        self, row: InferenceDeployment, target: Target, desired: AdapterVersion, rollout: RolloutRecord, report: RolloutReport
    ) -> RolloutReport:
        finished = self.clock()
        assert rollout.started_at is not None
        duration = (finished - rollout.started_at).total_seconds()
        self.store.activate_adapter_version(row.uid, desired.version)
        report.adapter.serving_version = desired.version
        report.adapter.last_rollout = rollout.model_copy(
            update={"result": "Succeeded", "finished_at": finished, "duration_seconds": round(duration, 3)}
        )
        report.synced, report.reason, report.message = True, "Serving", f"serving adapter {desired.version}"
        report.events.append(
            (
                "Normal",
                "AdapterActivated",
                f"adapter {desired.version} serves on every replica probed ({target.spec.adapter.strategy}, {duration:.1f}s)",
            )
        )
        if self.metrics is not None:
            self.metrics.duration.labels(target.spec.adapter.strategy, "Succeeded").observe(duration)
            settled = self._settled_at.pop((row.uid, desired.version), None)
            if settled is not None:
                self.metrics.settled_to_serving.labels(target.spec.adapter.strategy).observe(self.monotonic() - settled)
        return report

    def _roll_back(
        self,
        row: InferenceDeployment,
        target: Target,
        provider: Provider,
        share: AdapterShare,
        endpoint: str | None,
        failed: AdapterVersion,
        versions: list[AdapterVersion],
        rollout: RolloutRecord,
        error: str,
        report: RolloutReport,
    ) -> RolloutReport:
        good = next((v for v in versions if v.state == "Active" and v.version != failed.version), None)
        self.store.update_adapter_version(row.uid, failed.version, state="Failed", message=error)
        if good is not None and good.path is not None:
            share.write(pointer_path(row.name), json.dumps({"version": good.version, "path": good.path}).encode())
            if target.spec.adapter.strategy == "hotReload" and endpoint is not None:
                provider.reload_adapter(target, endpoint)
        back = f"rolled back to {good.version}" if good is not None else "nothing to roll back to"
        message = f"adapter version {failed.version} failed: {error}; {back}"
        finished = self.clock()
        assert rollout.started_at is not None
        duration = (finished - rollout.started_at).total_seconds()
        report.adapter.serving_version = good.version if good is not None else report.adapter.serving_version
        report.adapter.desired_version = good.version if good is not None else None
        report.adapter.last_rollout = rollout.model_copy(
            update={
                "result": "RolledBack",
                "finished_at": finished,
                "duration_seconds": round(duration, 3),
                "message": message,
            }
        )
        report.failed, report.reason, report.message = True, "AdapterRolloutFailed", message
        report.requeue_after = self.poll_seconds
        report.events.append(("Warning", "AdapterRolloutFailed", message))
        log.warning("%s: %s", row.name, message)
        if self.metrics is not None:
            self.metrics.duration.labels(target.spec.adapter.strategy, "RolledBack").observe(duration)
        return report
