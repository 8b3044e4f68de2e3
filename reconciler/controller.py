"""When to reconcile: resync timers, wake-ups, the work queue and its workers."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.adapter_poll import AdapterPoller
from reconciler.core import Outcome, Reconciler
from reconciler.workqueue import Backoff, WorkQueue
from state.errors import Fenced

log = logging.getLogger("loraplane.reconciler")


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry, queue: Callable[[], WorkQueue]) -> None:
        self.reconciles = Counter("loraplane_reconciles", "Reconcile passes by result", ["result"], registry=registry)
        self.duration = Histogram(
            "loraplane_reconcile_duration_seconds",
            "Time one reconcile pass took, by result",
            ["result"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        depth = Gauge("loraplane_workqueue_depth", "Deployments waiting to be reconciled", registry=registry)
        depth.set_function(lambda: queue().depth())
        busy = Gauge("loraplane_workqueue_busy", "Deployments being reconciled now", registry=registry)
        busy.set_function(lambda: queue().busy())


class ReconcileLoop(Protocol):
    """What the service needs of the reconcile loop, shared across replicas
    (``reconciler.shards.ShardedController``) or not (``Controller``): run it for the app's
    lifetime, wake it for a deployment, ask if it lives."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wake(self, name: str) -> None: ...

    def liveness(self) -> tuple[bool, str]: ...


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        *,
        resync_seconds: float = 30.0,
        workers: int = 4,
        registry: CollectorRegistry | None = None,
        backoff: Backoff | None = None,
        queue: WorkQueue | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        shutdown_grace_seconds: float = 30.0,
        stop_children: bool = False,
        poll_tick_seconds: float = 1.0,
    ) -> None:
        self.reconciler = reconciler
        self.store = reconciler.store
        self.resync_seconds = resync_seconds
        self.worker_count = workers
        self.queue = queue or WorkQueue()
        self.backoff = backoff or Backoff()
        self.monotonic = monotonic
        self.shutdown_grace_seconds = shutdown_grace_seconds
        # On stop, also stop what providers run (serving processes); by default they keep
        # serving and the next start adopts them.
        self.stop_children = stop_children
        registry = registry or CollectorRegistry()
        self.metrics = ReconcilerMetrics(registry, lambda: self.queue)
        # Adapter folders listed between resyncs (spec.adapters[].pollSeconds): a change wakes
        # its deployments, as a write through the API does.
        self.poll_tick_seconds = poll_tick_seconds
        self.poller = AdapterPoller(reconciler, lambda name: self.queue.add(name), monotonic=monotonic, registry=registry)
        self.scheduler = self._new_scheduler()
        self._workers: list[threading.Thread] = []
        self._last_progress = monotonic()
        self._started = False
        self._stopped_once = False
        self._listening = False
        self._versions: dict[str, tuple[str, int, bool, str]] = {}
        self._looked = False
        self._jitter = random.Random()
        # Names woken since the last sync_timers: their change is being handled already.
        self._woken: set[str] = set()
        self._woken_lock = threading.Lock()

    # ------------------------------------------------------------------------- lifecycle

    @staticmethod
    def _new_scheduler() -> BackgroundScheduler:
        return BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    def start(self) -> None:
        if self._stopped_once:  # a replica that leads again: a fresh queue and timers
            self.queue = WorkQueue()
            self.scheduler = self._new_scheduler()
            self._workers = []
        self.store = self.reconciler.store
        # Another replica may have led meanwhile: what was kept of it is read again.
        self.reconciler.forget_kept()
        if not self._listening:
            self.store.add_listener(self.wake)
            self._listening = True
        for provider in self.reconciler.providers.values():
            provider.start()
        # Look for new and moved deployments often; each pass then books its key's next resync.
        self.scheduler.add_job(
            self.sync_timers,
            IntervalTrigger(seconds=min(5.0, self.resync_seconds)),
            id="sync-timers",
        )
        self.scheduler.add_job(self._heartbeat, IntervalTrigger(seconds=max(0.5, self.resync_seconds / 3)), id="heartbeat")
        self.scheduler.add_job(self._poll_adapters, IntervalTrigger(seconds=self.poll_tick_seconds), id="adapter-poll")
        self.scheduler.start()
        self.sync_timers()
        for name in self.store.names():  # converge everything at start, as after a crash
            self.queue.add(name)
        for index in range(self.worker_count):
            worker = threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._started = True
        log.info("reconciler started: %d workers, resync every %.0fs", self.worker_count, self.resync_seconds)

    def stop(self) -> None:
        """Stop taking work; let running passes finish (bounded)."""
        if not self._started:
            return
        self._started = False
        self._stopped_once = True
        self.scheduler.shutdown(wait=False)
        self.queue.shut_down()
        self.poller.close()
        deadline = time.monotonic() + self.shutdown_grace_seconds
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        unfinished = [w.name for w in self._workers if w.is_alive()]
        if unfinished:
            log.warning("stopped with passes still running in %s", ", ".join(unfinished))
        for provider in self.reconciler.providers.values():
            provider.stop()
            if self.stop_children:
                log.info("stopping what the %s target runs (--stop-children)", type(provider).__name__)
                provider.stop_all()
            else:
                left = provider.left_running()
                if left:
                    log.warning(
                        "leaving %d serving process(es) running: %s; they keep serving and the next start adopts them "
                        "(stop them with 'loraplane serve --stop-children' next time, or kill the pids)",
                        len(left),
                        ", ".join(left),
                    )
        log.info("reconciler stopped")

    # ------------------------------------------------------------------------------ when

    def wake(self, name: str) -> None:
        """The API wrote this deployment: reconcile it now."""
        self.reconciler.desired_changed(name)
        with self._woken_lock:
            self._woken.add(name)
        self.queue.add(name)

    def sync_timers(self) -> None:
        """A pass for each new deployment, and for each whose desired state (spec generation,
        deletion, keys) moved since the last look (written by another replica's API, which
        cannot wake this process). Our own status writes do not count, nor what this process's
        API wrote (it woke the reconciler already): each would cost a second pass for nothing.
        Every pass then books its key's next resync (see ``process``)."""
        with self._woken_lock:
            woken, self._woken = self._woken, set()
        versions = self.store.desired_versions()
        changed = [name for name, version in versions.items() if self._versions.get(name) not in (None, version)]
        for name in changed:  # written elsewhere too, maybe: what the reconciler kept is out of date
            self.reconciler.desired_changed(name)
        moved = [name for name in changed if name not in woken]
        # The first look (at start, when every deployment is queued anyway) only learns what is
        # there; from then on a name not seen before is new, also after an empty first look.
        new = [name for name in versions if name not in self._versions and name not in woken] if self._looked else []
        self._versions, self._looked = versions, True
        owns = self.reconciler.writer.owns
        self.poller.refresh({name: version for name, version in versions.items() if owns(version[0])})
        for name in (*moved, *new):
            if owns(versions[name][0]):  # another replica's shard: that replica's timers see it
                self.queue.add(name)

    def adopt_shard(self, shard: int) -> None:
        """This replica won a shard: what it kept of the shard's deployments may be out of date
        (another replica reconciled them meanwhile), and each gets a pass now."""
        self.reconciler.forget_kept()
        writer = self.reconciler.writer
        for name, (uid, *_rest) in self.store.desired_versions().items():
            if writer.shard_of(uid) == shard:
                self.queue.add(name)

    def _resync_after(self) -> float:
        """When a deployment's next resync is due: the interval, jittered ±25% so that
        passes do not fire in step."""
        return self.resync_seconds * self._jitter.uniform(0.75, 1.25)

    def _poll_adapters(self) -> None:
        try:
            self.poller.poll()
        except Exception:  # the timer must outlive one bad tick
            log.exception("polling the adapter folders failed")

    def _heartbeat(self) -> None:
        if self.queue.depth() == 0 and self.queue.busy() == 0:
            self._last_progress = self.monotonic()  # idle and caught up is progress

    # ----------------------------------------------------------------------------- work

    def _work(self) -> None:
        while True:
            name = self.queue.get()
            if name is None:
                return
            try:
                self.process(name)
            finally:
                self.queue.done(name)

    def process(self, name: str) -> Outcome:
        """One pass for one key, and what comes after it: requeue, backoff, or rest."""
        started = time.perf_counter()
        try:
            outcome = self.reconciler.reconcile(name)
        except Fenced as exc:
            # Another replica holds its shard now: nothing to write here, nothing to retry.
            log.info("not reconciling %s: %s", name, exc)
            return Outcome("gone")
        except Exception:
            # reconcile() classifies provider failures itself; this is the database failing
            # under it (while writing status, say). Retry with backoff; never lose the worker.
            log.exception("reconciling %s failed; retrying with backoff", name)
            outcome = Outcome("temporary")
        self.metrics.reconciles.labels(outcome.result).inc()
        self.metrics.duration.labels(outcome.result).observe(time.perf_counter() - started)
        self._last_progress = self.monotonic()
        if outcome.result == "temporary":
            # A key waiting out its backoff keeps waiting: no resync turns into a retry storm.
            delay = outcome.requeue_after
            if delay is None:
                delay = self.backoff.next_delay(name)
            self.queue.add_after(name, delay)
        elif outcome.result not in ("deleted", "gone"):
            self.backoff.reset(name)
            # Each pass books the next resync of its key (the queue's own timer, one heap for
            # every deployment, rather than a scheduler job each); sooner when it asks.
            self.queue.add_after(name, outcome.requeue_after if outcome.requeue_after is not None else self._resync_after())
        else:
            self.backoff.reset(name)
        return outcome

    # --------------------------------------------------------------------------- health

    def liveness(self) -> tuple[bool, str]:
        stalled_for = self.monotonic() - self._last_progress
        limit = 3 * self.resync_seconds
        if stalled_for > limit:
            return False, (f"the reconcile loop has made no progress for {stalled_for:.0f}s (limit {limit:.0f}s, 3 resync intervals)")
        return True, "the reconcile loop is making progress"
