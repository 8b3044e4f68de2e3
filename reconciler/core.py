"""reconcile(name): read desired state, observe, plan, apply, write status and events."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from prometheus_client import CollectorRegistry

from infra.errors import PermanentError
from infra.provider import Action, Observation, Provider, Target
from reconciler import status as statuses
from reconciler.errors import Classified, classify
from reconciler.rollout import AdapterRollout, RolloutMetrics, restart_version
from state.errors import Fenced, NotFound
from state.models import InferenceDeployment, utcnow
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore

log = logging.getLogger("loraplane.reconciler")

Result = Literal["converged", "progressing", "temporary", "permanent", "deleted", "gone"]

EVENT_REASONS = {"create": "Created", "update": "Updated", "restart": "Restarted", "delete": "Deleted"}


@dataclass(frozen=True)
class Outcome:
    result: Result
    # Come back after this many seconds; None with a temporary result means "use backoff".
    requeue_after: float | None = None


def target_of(row: InferenceDeployment) -> Target:
    spec = DeploymentSpec.model_validate(row.spec)
    version = None
    if spec.adapter.strategy == "restart":
        version = restart_version(DeploymentStatus.model_validate(row.status))
    return Target(name=row.name, uid=row.uid, generation=row.generation, spec=spec, adapter_version=version)


class Reconciler:
    def __init__(
        self,
        store: DeploymentStore,
        providers: Mapping[str, Provider],
        *,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = 2.0,
        registry: CollectorRegistry | None = None,
        rollout: AdapterRollout | None = None,
    ) -> None:
        self.store = store
        self.providers = dict(providers)
        self.clock = clock
        self.rollout = rollout or AdapterRollout(
            store, clock=clock, metrics=RolloutMetrics(registry or CollectorRegistry()), poll_seconds=min(1.0, poll_seconds)
        )
        # How soon to look again while something is starting or being torn down.
        self.poll_seconds = poll_seconds
        # name -> generation whose apply failed permanently: not retried until the spec moves.
        self._stalled: dict[str, int] = {}
        self._lock = threading.Lock()

    def use_store(self, store: DeploymentStore) -> None:
        """Reconcile through ``store`` from now on (a leader's fenced view of the database)."""
        self.store = store
        self.rollout.store = store

    def provider_for(self, target: Target) -> Provider:
        provider = self.providers.get(target.spec.target)
        if provider is None:
            raise PermanentError(
                f"the {target.spec.target!r} target is not available in this loraplane "
                f"(available: {', '.join(sorted(self.providers)) or 'none'})",
                reason="TargetUnavailable",
            )
        return provider

    # -------------------------------------------------------------------------- reconcile

    def reconcile(self, name: str) -> Outcome:
        self.store.assert_leader()  # a deposed leader's pass ends here (Fenced)
        try:
            row = self.store.get(name)
        except NotFound:
            with self._lock:
                self._stalled.pop(name, None)
            return Outcome("gone")
        target = target_of(row)
        previous = DeploymentStatus.model_validate(row.status)
        if row.deletion_timestamp is not None:
            return self._finalize(row, target, previous)

        observation: Observation | None = None
        applying = False
        try:
            provider = self.provider_for(target)
            observation = provider.observe(target)
            actions = provider.plan(target, observation)
            if not actions:
                with self._lock:
                    self._stalled.pop(name, None)
                status = statuses.converged(previous, row.generation, observation, self.clock())
                if not observation.ready:  # adapters wait for an endpoint (and a share) to exist
                    stuck = self.rollout.watch_in_flight(row, target, provider, observation, previous)
                    if stuck is not None:  # a restart onto a version the app cannot start with
                        statuses.with_rollout(status, stuck, self.clock())
                        for type_, reason, message in stuck.events:
                            self.store.record_event(row, type_, reason, message)
                    self._write(row, previous, status)
                    return Outcome("converged", self.poll_seconds)
                report = self.rollout.step(row, target, provider, observation, previous)
                statuses.with_rollout(status, report, self.clock())
                self._write(row, previous, status)
                for type_, reason, message in report.events:
                    self.store.record_event(row, type_, reason, message)
                return Outcome("converged", report.requeue_after)
            with self._lock:
                stalled = self._stalled.get(name) == row.generation
            if stalled:
                # Applying this generation already failed for good; the status says why.
                return Outcome("permanent")
            applying = True
            self.store.assert_leader()  # cloud calls check the fence too, just before
            provider.apply(target, actions)
            for action in actions:
                self.store.record_event(row, "Normal", EVENT_REASONS[action.verb], _event_message(action))
            observation = provider.observe(target)
            message = "; ".join(action.describe() for action in actions)
            status = statuses.progressing(previous, row.generation, observation, message, self.clock())
            self._write(row, previous, status)
            return Outcome("progressing", self.poll_seconds)
        except Fenced:
            raise  # not the leader any more: nothing to write, nothing to retry here
        except Exception as exc:  # classified in one place; nothing escapes to the loop
            error = classify(exc)
            if error.reason == "UnexpectedError":
                log.exception("reconciling %s failed unexpectedly", name)
            else:
                log.warning("reconciling %s: %s: %s", name, error.reason, error.message)
            if error.permanent and applying:
                with self._lock:
                    self._stalled[name] = row.generation
            self._fail(row, previous, observation, error)
            return Outcome("permanent") if error.permanent else Outcome("temporary", error.delay)

    def _finalize(self, row: InferenceDeployment, target: Target, previous: DeploymentStatus) -> Outcome:
        """The finalizer: tear down what loraplane created, then let the row go."""
        try:
            provider = self.providers.get(target.spec.target)
            self._write(row, previous, statuses.deleting(previous, "tearing down", self.clock()))
            self.store.assert_leader()
            done = provider.delete(target) if provider is not None else True
            if not done:
                return Outcome("progressing", self.poll_seconds)
            self.store.remove(row.name, uid=row.uid)
            self.rollout.forget(row.uid)
            with self._lock:
                self._stalled.pop(row.name, None)
            log.info("deployment %s deleted", row.name)
            return Outcome("deleted")
        except Fenced:
            raise
        except Exception as exc:
            error = classify(exc)
            log.warning("tearing down %s: %s: %s", row.name, error.reason, error.message)
            status = statuses.failed(previous, row.generation, None, error, self.clock())
            status.phase = "Deleting"
            self._write(row, previous, status, event_reason=error.reason)
            # Teardown is retried even after a permanent error: the row must not linger.
            return Outcome("temporary", None)

    # ----------------------------------------------------------------------------- writes

    def _fail(self, row: InferenceDeployment, previous: DeploymentStatus, observation: Observation | None, error: Classified) -> None:
        status = statuses.failed(previous, row.generation, observation, error, self.clock())
        self._write(row, previous, status, event_reason=error.reason)

    def _write(
        self,
        row: InferenceDeployment,
        previous: DeploymentStatus,
        status: DeploymentStatus,
        *,
        event_reason: str | None = None,
    ) -> None:
        events = []
        if event_reason is not None and status.message != previous.message:
            events.append(("Warning", event_reason, status.message or event_reason))
        elif status.phase == "Ready" and previous.phase != "Ready":
            events.append(("Normal", "Ready", f"serving at {status.endpoint}"))
        # One transaction for both; None: deleted (or replaced by a new one of that name) meanwhile.
        written = self.store.update_status(row.name, status, uid=row.uid, read=row, events=events)
        if written is not None:
            row.status = written.status  # a second write in this pass compares with this one

    # ------------------------------------------------------------------------------- logs

    def logs(self, name: str, tail: int) -> str:
        target = target_of(self.store.get(name))
        return self.provider_for(target).logs(target, tail)


def _event_message(action: Action) -> str:
    return f"{action.kind} {action.name}: {action.reason}"
