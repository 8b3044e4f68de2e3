"""Leader election over the database's lease (``state.lease``): one replica reconciles.

Every ``retry_seconds`` the elector takes or renews the lease. It leads from the moment it
holds the lease, and stops leading at once when another replica holds it, or when it could
not renew for ``renew_deadline_seconds`` (shorter than the lease, so a replica cut off from
the database stops before anyone else may start). What leading means is the callbacks': the
service starts a controller whose writes carry the epoch as a fence, and stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from reconciler.controller import Controller
from state.lease import Lease

log = logging.getLogger("loraplane.reconciler.leader")


class LeaderElector:
    def __init__(
        self,
        lease: Lease,
        *,
        on_started_leading: Callable[[int], None],
        on_stopped_leading: Callable[[], None],
        retry_seconds: float = 2.0,
        renew_deadline_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.retry_seconds = retry_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.monotonic = monotonic
        self.epoch: int | None = None
        self._renewed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def step(self) -> None:
        """One round: take or renew, and lead or step down accordingly."""
        try:
            epoch = self.lease.try_acquire()
        except Exception as exc:  # the database is away: keep leading only until the deadline
            log.warning("could not renew the leader lease: %s", str(exc).splitlines()[0])
            if self.leading and self.monotonic() - self._renewed > self.renew_deadline_seconds:
                self._step_down("the lease could not be renewed in time")
            return
        if epoch is None:
            if self.leading:
                self._step_down("another replica holds the lease")
            return
        self._renewed = self.monotonic()
        if self.epoch != epoch:
            if self.leading:
                self._step_down("the lease moved to a new epoch")
            self.epoch = epoch
            log.info("leading (lease epoch %d, holder %s)", epoch, self.lease.holder)
            self.on_started_leading(epoch)

    def _step_down(self, why: str) -> None:
        log.warning("no longer leading (epoch %s): %s", self.epoch, why)
        self.epoch = None
        self.on_stopped_leading()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="leader-elector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.retry_seconds)

    def stop(self) -> None:
        """Stop electing; a leader stops leading and hands the lease over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_seconds + 10)
        if self.leading:
            self._step_down("shutting down")
            try:
                self.lease.release()
            except Exception as exc:  # the successor then waits for the expiry instead
                log.warning("could not release the leader lease: %s", str(exc).splitlines()[0])


class LeadingController:
    """The reconcile loop of a replicated service: it runs only while this replica holds the
    lease, and every write it makes is fenced by the lease's epoch (set once, on the
    reconciler's one writer). Otherwise the replica serves the API alone (a standby)."""

    def __init__(self, controller: Controller, lease: Lease, *, retry_seconds: float = 2.0, renew_deadline_seconds: float = 10.0) -> None:
        self.controller = controller
        self.lease = lease
        self.elector = LeaderElector(
            lease,
            on_started_leading=self._lead,
            on_stopped_leading=self._follow,
            retry_seconds=retry_seconds,
            renew_deadline_seconds=renew_deadline_seconds,
        )

    def _lead(self, epoch: int) -> None:
        self.controller.reconciler.writer.lead(self.lease.fence(epoch))
        self.controller.start()

    def _follow(self) -> None:
        # The fence stays: it names the epoch this replica lost, so a pass still running when
        # the controller stops is refused at its next write.
        self.controller.stop()

    def start(self) -> None:
        self.elector.start()

    def stop(self) -> None:
        self.elector.stop()

    def wake(self, name: str) -> None:
        self.controller.wake(name)

    def liveness(self) -> tuple[bool, str]:
        if self.elector.leading:
            return self.controller.liveness()
        current = self.lease.current()
        return True, f"standby: {current.holder if current else 'no replica'} reconciles"
