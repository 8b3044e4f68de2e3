"""reconcile(name): read desired state, observe, plan, apply, write status and events.

Every write of a pass goes through the reconciler's ``PassWriter``: the status, the events and
the adapter-version changes a pass decides are committed together, at its end, fenced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from infra.errors import PermanentError, ProviderError
from infra.provider import Action, Observation, Refusal, RevisionSplit, Target, TargetProvider
from infra.ratelimit import fail_fast
from reconciler import status as statuses
from reconciler.errors import Classified, classify
from reconciler.keys import KeySync, read_usage
from reconciler.metering import NEARLY, GpuMetering, Metered, PriceTable, budget_status
from reconciler.rollout import AdapterRollout, RolloutMetrics, restart_version
from reconciler.writer import PassWriter, ReadStore
from state.errors import Fenced, NotFound
from state.models import AdapterVersion, InferenceDeployment, KeyUsage, NewEvent, utcnow
from state.resource import AS_STORED, CostStatus, DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore, UsageWrite, VersionChange

log = logging.getLogger("loraplane.reconciler")

THROTTLED = "Throttled"  # the reason of infra.ratelimit.Throttled

Result = Literal["converged", "progressing", "temporary", "permanent", "deleted", "gone"]

EVENT_REASONS = {
    "create": "Created",
    "update": "Updated",
    "restart": "Restarted",
    "activate": "Activated",
    "deactivate": "Deactivated",
    "delete": "Deleted",
}


@dataclass(frozen=True)
class Outcome:
    result: Result
    # Come back after this many seconds; None with a temporary result means "use backoff".
    requeue_after: float | None = None


def target_of(row: InferenceDeployment, versions: Sequence[AdapterVersion] = ()) -> Target:
    """The deployment as a provider sees it. Under the restart strategy the adapter version the
    app must run with is an explicit input, from the version rows (the one being rolled out,
    else the one serving), for each adapter rolled out so; under hotReload the pointer on the
    share decides.

    A deployment being deleted is read as stored, without Azure's rules (``AS_STORED``): one
    stored before a rule was tightened can still be torn down, since it can no longer change."""
    context = AS_STORED if row.deletion_timestamp is not None else None
    spec = DeploymentSpec.model_validate(row.spec, context=context)
    split = revision_split(row.name, spec, versions)
    restarting = {
        entry.name: version
        for entry in spec.adapter_entries(row.name)
        if entry.strategy == "restart"
        and (version := restart_version([v for v in versions if v.adapter == entry.name], proving=split is not None)) is not None
    }
    if spec.adapters is None:  # spec.adapter: the one version in LORAPLANE_ADAPTER_VERSION, as always
        return Target(
            name=row.name, uid=row.uid, generation=row.generation, spec=spec, adapter_version=restarting.get(row.name), revisions=split
        )
    return Target(name=row.name, uid=row.uid, generation=row.generation, spec=spec, adapter_versions=restarting, revisions=split)


def revision_split(name: str, spec: DeploymentSpec, versions: Sequence[AdapterVersion]) -> RevisionSplit | None:
    """On the azure target, a restart rollout with a gate or a canary proves its version in a
    revision of its own beside the one users get: what that one runs (each restart adapter's
    Active version), and the newest revision's share while a version is proved (0 in its gate,
    the canary's weight)."""
    entries = [e for e in spec.adapter_entries(name) if e.strategy == "restart"]
    if spec.target != "azure" or not any(e.rollout is not None and (e.rollout.gate or e.rollout.canary) for e in entries):
        return None
    stable: dict[str, str] = {}
    weight: int | None = None
    for entry in entries:
        own = [v for v in versions if v.adapter == entry.name]
        active = next((v for v in own if v.state == "Active"), None)
        if active is not None:
            stable[entry.name] = active.version
        for version in own:
            if version.state == "Gating":
                weight = 0 if weight is None else min(weight, 0)
            elif version.state == "Canary" and version.canary_record is not None:
                weight = version.canary_record.weight if weight is None else min(weight, version.canary_record.weight)
    return RevisionSplit(stable=stable, weight=weight)


class Reconciler:
    def __init__(
        self,
        store: DeploymentStore,
        providers: Mapping[str, TargetProvider[Any]],
        *,
        writer: PassWriter | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = 2.0,
        registry: CollectorRegistry | None = None,
        rollout: AdapterRollout | None = None,
        metering: GpuMetering | None = None,
    ) -> None:
        # Reads go to the store; every write goes through the writer (the one the leader fences,
        # shared with the providers' journal: ``loraplane serve`` hands the same one to both).
        self.store: ReadStore = store
        self.writer = writer or PassWriter(store)
        self.providers = dict(providers)
        self.clock = clock
        self.rollout = rollout or AdapterRollout(
            clock=clock, metrics=RolloutMetrics(registry or CollectorRegistry()), poll_seconds=min(1.0, poll_seconds)
        )
        self.keys = KeySync(store)
        # GPU time, its cost, and where each deployment stands against its budget.
        self.metering = metering or GpuMetering(store, PriceTable.load(None), clock=clock, registry=registry)
        # How soon to look again while something is starting or being torn down.
        self.poll_seconds = poll_seconds
        # name -> generation whose apply failed permanently: not retried until the spec moves.
        self._stalled: dict[str, int] = {}
        self._lock = threading.Lock()
        # What a pass starts from, kept from the last one (an informer's cache): the row and
        # its adapter versions. Only this reconciler writes a deployment's status and versions;
        # what others change (spec, deletion, keys, a canary decision) comes with a signal,
        # ``desired_changed``, that moves the name's count and so drops what was kept.
        self._changes: dict[str, int] = {}
        self._kept: dict[str, tuple[int, InferenceDeployment, list[AdapterVersion] | None]] = {}
        self._versions_written: set[str] = set()  # names whose versions this pass wrote
        store.add_listener(self.desired_changed)  # this process's API writes

    def provider_for(self, target: Target) -> TargetProvider[Any]:
        provider = self.providers.get(target.spec.target)
        if provider is None:
            raise PermanentError(
                f"the {target.spec.target!r} target is not available in this loraplane (available: {', '.join(sorted(self.providers)) or 'none'})",
                reason="TargetUnavailable",
            )
        return provider

    def key_usage(self, row: InferenceDeployment) -> tuple[dict[str, KeyUsage] | None, str | None]:
        """What the deployment's replicas served under each inference key, from its share; or
        None and why it could not be read."""
        try:
            target = target_of(row)
            return read_usage(target, self.provider_for(target)), None
        except Exception as exc:  # a share not reachable now: the keys are still listed
            error = classify(exc)
            return None, f"the replicas' usage could not be read from the share: {error.message}"

    def admit(self, spec: DeploymentSpec) -> list[Refusal]:
        """What the spec's target refuses beyond the schema (the operator's policy); the API
        asks before it stores or plans a spec, and every pass asks again."""
        provider = self.providers.get(spec.target)
        return provider.admit(spec) if provider is not None else []

    # -------------------------------------------------------------------------- reconcile

    def reconcile(self, name: str) -> Outcome:
        # A pass never waits for a cloud's rate limit: a call that would is ``Throttled``, and
        # the pass is requeued for when its token is there, giving the worker back.
        with fail_fast(name):
            return self._reconcile(name)

    def desired_changed(self, name: str) -> None:
        """Someone changed what ``name`` should be (its spec, deletion, keys, a decision on its
        canary): the next pass reads it again from the database."""
        with self._lock:
            self._changes[name] = self._changes.get(name, 0) + 1
            self._kept.pop(name, None)

    def forget_kept(self) -> None:
        """Read every deployment again (another replica may have reconciled it meanwhile)."""
        with self._lock:
            self._kept.clear()
        self.rollout.forget_shares()
        self.keys.forget()

    def _inputs(self, name: str) -> tuple[int, InferenceDeployment, list[AdapterVersion]]:
        """The row and its versions: as the last pass left them when nothing changed since,
        else read (versions alone when only they moved, by this reconciler's own writes)."""
        with self._lock:
            count = self._changes.get(name, 0)
            kept = self._kept.get(name)
        if kept is not None and kept[0] == count:
            row, versions = kept[1], kept[2]
            if versions is None:
                versions = self.store.adapter_versions(row.uid)
            return count, row, versions
        row, versions = self.store.get_with_versions(name)
        return count, row, versions

    def _keep(self, name: str, count: int, row: InferenceDeployment, versions: list[AdapterVersion]) -> None:
        with self._lock:
            wrote = name in self._versions_written
            self._versions_written.discard(name)
            if self._changes.get(name, 0) != count or row.deletion_timestamp is not None:
                self._kept.pop(name, None)
                return
            # Versions that others may decide on (a canary, a gate) are read every pass.
            proving = any(v.state in ("Gating", "Canary") for v in versions)
            self._kept[name] = (count, row, None if wrote or proving else versions)

    def _reconcile(self, name: str) -> Outcome:
        try:
            count, row, versions = self._inputs(name)
        except NotFound:
            with self._lock:
                self._stalled.pop(name, None)
                self._kept.pop(name, None)
            return Outcome("gone")
        # Another replica's shard (or one being handed over): not this replica's to touch.
        if not self.writer.begin_pass(row.uid):
            with self._lock:
                self._kept.pop(name, None)
            return Outcome("gone")
        try:
            outcome = self._reconcile_row(name, row, versions, count)
        except BaseException:
            with self._lock:
                self._kept.pop(name, None)
                self._versions_written.discard(name)
            raise
        finally:
            self.writer.end_pass(row.uid)
        if outcome.result in ("deleted", "gone"):
            with self._lock:
                self._kept.pop(name, None)
                self._versions_written.discard(name)
        else:
            self._keep(name, count, row, versions)
        return outcome

    def _reconcile_row(self, name: str, row: InferenceDeployment, versions: list[AdapterVersion], count: int) -> Outcome:
        previous = DeploymentStatus.model_validate(row.status)
        try:
            target = target_of(row, versions)
        except ValidationError as exc:
            # Stored by an older loraplane whose rules were looser: say so, and what to fix.
            problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            return self._invalid(row, previous, f"the stored spec no longer validates ({problems}); apply a corrected manifest")
        if row.deletion_timestamp is not None:
            return self._finalize(row, target, previous)
        refused = self.admit(target.spec)
        if refused:
            # Allowed when it was stored, not now (the operator narrowed the policy, or a link
            # now leads elsewhere): nothing is done on its behalf until it is corrected.
            problems = "; ".join(f"{field}: {why}" for field, why in refused)
            return self._invalid(row, previous, f"the stored spec is not allowed here any more ({problems}); apply a corrected manifest")

        observation: Observation | None = None
        applying = False
        try:
            provider = self.provider_for(target)
            observation = provider.observe(target)
            if observation.share_ready:
                staged = self._stage_ahead(row, target, provider, previous, versions, serving=observation.ready)
                if staged is not None:  # a first version staged: the app's environment may name it now
                    target, versions = staged
                    observation = provider.observe(target)
            metered = self._metered(row, target, observation, previous)
            if metered.held != target.held:  # a budget just spent, or restored: it changes what should run
                target = replace(target, held=metered.held)
                observation = provider.observe(target)
            actions = provider.plan(target, observation)
            if not actions:
                with self._lock:
                    self._stalled.pop(name, None)
                return self._converged(row, target, provider, observation, previous, versions, metered, count)
            with self._lock:
                stalled = self._stalled.get(name) == row.generation
            if stalled:
                # Applying this generation already failed for good; the status says why.
                return Outcome("permanent")
            applying = True
            self.writer.assert_leader(row.uid)  # cloud calls check the fence too, just before
            provider.apply(target, actions)
            events: list[NewEvent] = [("Normal", EVENT_REASONS[a.verb], _event_message(a)) for a in actions]
            observation = provider.observe(target)
            # What runs now is what was just applied: the replicas counted from here on.
            metered = self._metered(row, target, observation, previous)
            message = "; ".join(action.describe() for action in actions)
            status = metered.apply(statuses.progressing(previous, row.generation, observation, message, self.clock()))
            self._commit(row, status, events=[*events, *metered.events], usage=metered)
            return Outcome("progressing", self.poll_seconds)
        except Fenced:
            raise  # not the leader any more: nothing to write, nothing to retry here
        except Exception as exc:  # classified in one place; nothing escapes to the loop
            error = self._classified(exc, f"reconciling {name}")
            if error.permanent and applying:
                with self._lock:
                    self._stalled[name] = row.generation
            return self._failed(row, previous, statuses.failed(previous, row.generation, observation, error, self.clock()), error)

    def _stage_ahead(
        self,
        row: InferenceDeployment,
        target: Target,
        provider: TargetProvider[Any],
        previous: DeploymentStatus,
        versions: list[AdapterVersion],
        *,
        serving: bool,
    ) -> tuple[Target, list[AdapterVersion]] | None:
        """Before the infrastructure is planned, once the share exists: a new adapter's first
        version staged and in the pointer before the app starts, committed at once, so that the
        app's environment names it from the start (the restart strategy). Best effort: the
        pass that finds the app waiting for its pointer stages it then, and says what stops
        it. The target and versions as they are now; None when nothing changed."""
        observing = target.spec.azure is not None and target.spec.azure.policy == "observe"
        pointed = {a.name for a in previous.adapters if a.desired_version} or ({target.name} if previous.adapter.desired_version else set())
        waiting = [entry for entry in target.spec.adapter_entries(target.name) if entry.name not in pointed]
        if observing or not waiting:
            return None  # every adapter was pointed at before: the rollout's business now
        if serving and all(entry.strategy == "hotReload" for entry in waiting):
            # The app serves already and no environment names these: this pass's rollout step
            # stages and activates them as any version (a steady deployment with no adapter
            # yet looked for one twice a pass).
            return None
        try:
            events, changes = self.rollout.stage_ahead(row, target, provider, previous, versions)
        except Fenced:
            raise
        except Exception as exc:
            log.debug("%s: nothing staged ahead yet: %s", row.name, exc)
            return None
        if not events and not changes:
            return None
        self._commit(row, previous, events=events, versions=changes)
        versions = self.store.adapter_versions(row.uid)
        return target_of(row, versions), versions

    def _converged(
        self,
        row: InferenceDeployment,
        target: Target,
        provider: TargetProvider[Any],
        observation: Observation,
        previous: DeploymentStatus,
        versions: Sequence[AdapterVersion],
        metered: PassMetering,
        count: int,
    ) -> Outcome:
        """Nothing left to do to the infrastructure: the inference keys onto the share (the app
        asks for one from its start), then the adapter's turn, once the endpoint is up."""
        status = metered.apply(statuses.converged(previous, row.generation, observation, self.clock()))
        if target.held is not None and observation.stopped:
            statuses.set_condition(status, "Ready", "False", "BudgetExceeded", target.held, self.clock())
            status.message = target.held
        # Under policy observe loraplane writes nothing, to the share neither: keys are the team's.
        observing = target.spec.azure is not None and target.spec.azure.policy == "observe"
        if target.spec.api_keys and not observation.stopped and not observing:
            try:
                self.keys.sync(target, provider, changes=count)
            except Fenced:
                raise
            except Exception as exc:
                error = self._classified(exc, f"writing the inference keys of {row.name}")
                return self._failed(row, previous, statuses.failed(previous, row.generation, observation, error, self.clock()), error)
        if not observation.ready:  # adapters wait for an endpoint (and a share) to exist
            events: list[NewEvent] = []
            changes: list[VersionChange] = []
            if not observation.stopped and not observing:
                try:  # the app may be waiting for its first pointer (a new share, a new adapter)
                    events, changes = self.rollout.stage_ahead(row, target, provider, previous, versions)
                except Fenced:
                    raise
                except Exception as exc:
                    error = self._classified(exc, f"staging the adapters of {row.name}")
                    return self._failed(row, previous, statuses.failed(previous, row.generation, observation, error, self.clock()), error)
            stuck = self.rollout.watch_in_flight(row, target, provider, observation, previous, versions)
            events = [*events, *metered.events]
            if stuck is None:
                self._commit(row, status, events=events, versions=changes, usage=metered)
            else:  # a restart onto a version the app cannot start with
                statuses.with_rollout(status, stuck, self.clock())
                self._commit(row, status, events=[*events, *stuck.events], versions=[*changes, *stuck.versions], usage=metered)
            # Coming up: look again soon. Stopped as asked: the resync timer is enough.
            return Outcome("converged", None if observation.stopped else self.poll_seconds)
        try:
            report = self.rollout.step(row, target, provider, observation, previous, versions)
        except Fenced:
            raise
        except Exception as exc:
            # The rollout cannot go on; what serves is still what the app says it serves, not
            # what the last status said.
            error = self._classified(exc, f"rolling out the adapter of {row.name}")
            status = statuses.failed(previous, row.generation, observation, error, self.clock())
            status.adapter.serving_version = self._reported_version(provider, target, observation, status.adapter.serving_version)
            return self._failed(row, previous, status, error)
        statuses.with_rollout(status, report, self.clock())
        self._commit(row, status, events=[*report.events, *metered.events], versions=report.versions, usage=metered)
        return Outcome("converged", report.requeue_after)

    @staticmethod
    def _classified(exc: Exception, doing: str) -> Classified:
        """The failure, classified in one place and logged: with its traceback when it is
        nothing we know."""
        error = classify(exc)
        if error.reason == "UnexpectedError":
            log.exception("%s failed unexpectedly", doing)
        elif error.reason == THROTTLED:
            log.debug("%s: %s", doing, error.message)  # thousands of these in a big converge
        else:
            log.warning("%s: %s: %s", doing, error.reason, error.message)
        return error

    def _failed(self, row: InferenceDeployment, previous: DeploymentStatus, status: DeploymentStatus, error: Classified) -> Outcome:
        """A failed pass's status committed (with the events it is news for), and when to retry."""
        if error.reason == THROTTLED:
            # Not a failure: the pass goes on when its token is there. A deployment on its way
            # says why it waits (once; the message names no time); a Ready one says nothing.
            if previous.phase != "Ready":
                waiting = previous.model_copy(deep=True)
                statuses.set_condition(waiting, "Progressing", "True", THROTTLED, error.message, self.clock())
                self._commit(row, waiting)
            return Outcome("temporary", error.delay)
        self._commit(row, status, events=self._failure_events(previous, status, error))
        return Outcome("permanent") if error.permanent else Outcome("temporary", error.delay)

    @staticmethod
    def _reported_version(provider: TargetProvider[Any], target: Target, observation: Observation, fallback: str | None) -> str | None:
        if observation.endpoint is None:
            return fallback
        try:
            reported = provider.adapter_status(target, observation.endpoint).get("version")
        except ProviderError:
            return fallback
        return str(reported) if reported else None

    def _invalid(self, row: InferenceDeployment, previous: DeploymentStatus, message: str) -> Outcome:
        error = Classified(True, "InvalidSpec", message)
        status = statuses.failed(previous, row.generation, None, error, self.clock())
        self._commit(row, status, events=self._failure_events(previous, status, error))
        return Outcome("permanent")

    def _finalize(self, row: InferenceDeployment, target: Target, previous: DeploymentStatus) -> Outcome:
        """The finalizer: tear down what loraplane created, then let the row go."""
        try:
            provider = self.providers.get(target.spec.target)
            self._commit(row, statuses.deleting(previous, "tearing down", self.clock()))
            self.writer.assert_leader(row.uid)
            done = provider.delete(target) if provider is not None else True
            if not done:
                return Outcome("progressing", self.poll_seconds)
            self.writer.remove(row)
            self.rollout.forget(row.uid)
            self.keys.forget(row.uid)
            self.metering.forget(row.uid, row.name)
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
            self._commit(row, status, events=self._failure_events(previous, status, error))
            # Teardown is retried even after a permanent error: the row must not linger.
            return Outcome("temporary", None)

    # ----------------------------------------------------------------------------- writes

    @staticmethod
    def _failure_events(previous: DeploymentStatus, status: DeploymentStatus, error: Classified) -> list[NewEvent]:
        """A warning when the failure is news (its message changed), not on every retry."""
        return [("Warning", error.reason, status.message or error.reason)] if status.message != previous.message else []

    def _commit(
        self,
        row: InferenceDeployment,
        status: DeploymentStatus,
        *,
        events: Sequence[NewEvent] = (),
        versions: Sequence[VersionChange] = (),
        usage: PassMetering | None = None,
    ) -> None:
        events = list(events)
        if status.phase == "Ready" and (row.status or {}).get("phase") != "Ready":
            events.append(("Normal", "Ready", f"serving at {status.endpoint}"))
        # One transaction for all of it; nothing written when the deployment (that uid) is gone.
        write = usage.write if usage is not None else None
        if versions:
            with self._lock:
                self._versions_written.add(row.name)
        self.writer.commit(row, status, events=events, versions=versions, usage=write)
        if write is not None:
            self.metering.settle(row.uid, write)

    def _metered(self, row: InferenceDeployment, target: Target, observation: Observation, previous: DeploymentStatus) -> PassMetering:
        """The GPU time since the last look, the status's cost part (written when the usage is:
        a running deployment's status moves once a flush, not every pass), where it stands
        against its budget, whether that holds it at zero, and the news of it."""
        metered = self.metering.measure(row, target, observation.replicas)
        now = self.clock()
        budget = target.spec.budget
        standing = budget_status(budget, metered.cost, now) if budget is not None else None
        before = previous.cost.budget if previous.cost is not None else None
        news = standing is not None and (before is None or (before.state, before.period) != (standing.state, standing.period))
        if news and metered.write is None:  # the news and its figures are written together
            metered = self.metering.measure(row, target, observation.replicas, force=True)
        # A shallow copy with its budget set: nothing changes a cost in place afterwards, and a
        # deep copy every pass of every deployment cost more than the rest of the metering.
        cost = (metered.cost if metered.write is not None or previous.cost is None else previous.cost).model_copy(
            update={"budget": standing if news or metered.write is not None else (before if standing is not None else None)}
        )
        events: list[NewEvent] = []
        held = None
        if budget is not None and standing is not None:
            spent = f"{standing.used:.4g} of {standing.limit} ({standing.fraction:.0%}) in {standing.period}"
            if standing.state == "Exceeded" and budget.action == "scaleToZero":
                held = (
                    f"held at zero replicas: the budget is spent ({spent}); it serves again when the "
                    f"{'day' if budget.period == 'day' else 'month'} turns (UTC) or spec.budget is raised"
                )
            if news and standing.state == "NearlySpent":
                events.append(("Warning", "BudgetNearlySpent", f"{spent}: past {NEARLY:.0%} of the budget"))
            elif news and standing.state == "Exceeded":
                what = "scaled to zero and held there" if held else "nothing is stopped (action warn)"
                events.append(("Warning", "BudgetExceeded", f"{spent}: the budget is spent; {what}"))
            elif news and before is not None and before.state == "Exceeded":
                events.append(("Normal", "BudgetRestored", f"{spent}: within the budget again"))
        events += self._scale_events(target, previous, metered, held)
        return PassMetering(metered.write, cost, held, events)

    @staticmethod
    def _scale_events(target: Target, previous: DeploymentStatus, metered: Metered, held: str | None) -> list[NewEvent]:
        """A deployment that may scale to zero says when it did, and when a request (or the end
        of a hold) woke it."""
        was = previous.cost.replicas if previous.cost is not None else None
        now = metered.cost.replicas
        stopped_before = previous.phase == "Stopped" or (
            previous.cost is not None and previous.cost.budget is not None and previous.cost.budget.state == "Exceeded"
        )
        if target.spec.scale.min_replicas > 0 and held is None and not stopped_before:
            return []  # a replica that stops and starts again here is a crash or a change, said elsewhere
        if was and now == 0:
            why = "its budget is spent" if held else f"idle for {target.spec.scale.idle_seconds}s"
            return [("Normal", "ScaledToZero", f"no replica runs: {why}; a GPU costs nothing now")]
        if was == 0 and now:
            return [("Normal", "ColdStart", f"{now} replica(s) started from zero: the first request waited for the model to load")]
        return []

    # ------------------------------------------------------------------------------- logs

    def logs(self, name: str, tail: int) -> str:
        target = target_of(self.store.get(name))
        return self.provider_for(target).logs(target, tail)


@dataclass(frozen=True)
class PassMetering:
    """What a pass learned of GPU use: the usage to write with its status (None: not yet), the
    status's cost part, why the deployment is held at zero (None: it is not), and the news."""

    write: UsageWrite | None
    cost: CostStatus
    held: str | None
    events: list[NewEvent]

    def apply(self, status: DeploymentStatus) -> DeploymentStatus:
        status.cost = self.cost
        return status


def _event_message(action: Action) -> str:
    return f"{action.kind} {action.name}: {action.reason}"
