"""The work shared across replicas (PostgreSQL): the deployments fall into shards by a hash of
their uid (``reconciler.writer.shard_of``), each shard has a lease (``state.lease``), and each
replica reconciles the shards it holds.

Every ``retry_seconds`` (or sooner, just after another member's row or a wanted lease expires)
the elector renews this replica's membership and its shards' leases, and balances: with M
replicas alive each aims at its fair part, ceil(shards / M). One that holds more hands the
extra back, once the passes in flight there have ended (it starts no new one: a handover never
has two replicas acting on a deployment); one that holds fewer takes free or expired shards.
A replica that is killed stops renewing: its shards expire with their leases and the others
take them, each at a new epoch, which every write checks (the fence). A replica stops acting
on a shard as soon as it could not renew it for ``renew_deadline_seconds``, shorter than the
lease, so a replica cut off from the database stops before anyone else may start.

One shard is the single-leader case: one replica reconciles everything, the others stand by.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from reconciler.controller import Controller
from reconciler.writer import PassWriter
from state.lease import Lease, Membership, shard_lease_name

log = logging.getLogger("loraplane.reconciler.shards")

# How long after an expiry (by the database's clock) the round that acts on it comes: the
# database and this replica's timer need not agree to the millisecond.
EXPIRY_MARGIN_SECONDS = 0.05


@dataclass
class _Won:
    epoch: int
    renewed: float  # this replica's monotonic clock


class ShardElector:
    def __init__(
        self,
        engine: Engine,
        holder: str,
        writer: PassWriter,
        *,
        on_gained: Callable[[int], None] = lambda shard: None,
        retry_seconds: float = 2.0,
        lease_seconds: float = 15.0,
        renew_deadline_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if renew_deadline_seconds >= lease_seconds:
            raise ValueError("the renew deadline must be shorter than the lease")
        self.holder = holder
        self.writer = writer
        self.count = writer.shards
        self.on_gained = on_gained
        self.retry_seconds = retry_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.monotonic = monotonic
        self.leases = [
            Lease(engine, holder, name=shard_lease_name(i, self.count), duration_seconds=lease_seconds) for i in range(self.count)
        ]
        self.membership = Membership(engine, holder, duration_seconds=lease_seconds)
        self.members: list[str] = [holder]
        self._won: dict[int, _Won] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Where this replica starts looking for free shards: replicas joining together spread
        # out instead of all racing for shard 0.
        self._offset = sum(holder.encode()) % self.count
        # When the next round is due: every retry_seconds, or sooner, just after another
        # member's row or a wanted lease expires (a killed replica's shards are then taken at
        # their lease's end, not up to a whole retry later).
        self.next_round_seconds = retry_seconds

    # ------------------------------------------------------------------------------- a round

    def step(self) -> None:
        """One round: membership, renewals, then hand back or take to reach the fair part."""
        expiries: list[float] = []
        try:
            self.members = self.membership.beat()
            if self.membership.others_expire_in is not None:
                expiries.append(self.membership.others_expire_in)
        except Exception as exc:
            log.warning("could not renew this replica's membership: %s", str(exc).splitlines()[0])
        for shard in sorted(self._won):
            self._renew(shard)
        fair = math.ceil(self.count / max(1, len(self.members)))
        extra = len(self._won) - fair
        for shard in sorted(self._won, reverse=True)[: max(0, extra)]:
            self._hand_back(shard)
        if len(self._won) < fair:
            for step in range(self.count):
                shard = (self._offset + step) % self.count
                if len(self._won) >= fair:
                    break
                if shard not in self._won:
                    self._take(shard)
                    held_by_another = self.leases[shard].others_expire_in  # None once taken
                    if held_by_another is not None:
                        expiries.append(held_by_another)
        self.next_round_seconds = min([self.retry_seconds, *(expiry + EXPIRY_MARGIN_SECONDS for expiry in expiries)])

    def _renew(self, shard: int) -> None:
        won = self._won[shard]
        try:
            epoch = self.leases[shard].try_acquire()
        except Exception as exc:  # the database is away: act on it only until the deadline
            log.warning("could not renew the lease of shard %d: %s", shard, str(exc).splitlines()[0])
            if self.monotonic() - won.renewed > self.renew_deadline_seconds:
                self._lose(shard, "its lease could not be renewed in time")
            return
        if epoch != won.epoch:
            self._lose(shard, "another replica holds it" if epoch is None else "its lease moved to a new epoch")
            return
        won.renewed = self.monotonic()
        self.writer.renewed(shard, won.renewed + self.renew_deadline_seconds)

    def _take(self, shard: int) -> None:
        try:
            epoch = self.leases[shard].try_acquire()
        except Exception as exc:
            log.warning("could not take the lease of shard %d: %s", shard, str(exc).splitlines()[0])
            return
        if epoch is None:
            return  # another replica's
        now = self.monotonic()
        with self._lock:
            self._won[shard] = _Won(epoch, now)
        self.writer.hold(shard, self.leases[shard].fence(epoch), now + self.renew_deadline_seconds)
        log.info("reconciling shard %d of %d (lease epoch %d)", shard, self.count, epoch)
        self.on_gained(shard)

    def _hand_back(self, shard: int) -> None:
        """More than the fair part: start no new pass there, and once none is in flight give
        the lease back at once (its new holder need not wait for the expiry)."""
        if not self.writer.drain(shard):
            return  # a pass is still running there: the next round looks again
        self._lose(shard, f"{len(self.members)} replicas share the work now")
        try:
            self.leases[shard].release()
        except Exception as exc:  # the successor then waits for the expiry instead
            log.warning("could not hand back shard %d: %s", shard, str(exc).splitlines()[0])

    def _lose(self, shard: int, why: str) -> None:
        log.warning("no longer reconciling shard %d: %s", shard, why)
        with self._lock:
            self._won.pop(shard, None)
        self.writer.release(shard)

    # ------------------------------------------------------------------------------ running

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._won)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="shard-elector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the next round tries again
                log.exception("a round of the shard elector failed")
            self._stop.wait(self.next_round_seconds)

    def stop(self) -> None:
        """Stop electing; hand every shard back at once, and leave."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_seconds + 10)
        for shard in self.held():
            self._lose(shard, "shutting down")
            try:
                self.leases[shard].release()
            except Exception as exc:
                log.warning("could not hand back shard %d: %s", shard, str(exc).splitlines()[0])
        try:
            self.membership.leave()
        except Exception as exc:
            log.warning("could not leave the membership: %s", str(exc).splitlines()[0])


class ShardedController:
    """The reconcile loop of a replicated service: the controller runs on every replica and
    reconciles the deployments of the shards its elector holds; a shard won is reconciled at
    once, whole. With one shard, one replica reconciles and the others stand by."""

    def __init__(self, controller: Controller, elector: ShardElector) -> None:
        self.controller = controller
        self.elector = elector
        elector.on_gained = controller.adopt_shard

    def start(self) -> None:
        self.controller.start()
        self.elector.start()

    def stop(self) -> None:
        self.elector.stop()
        self.controller.stop()

    def wake(self, name: str) -> None:
        self.controller.wake(name)

    def liveness(self) -> tuple[bool, str]:
        held = self.elector.held()
        count, members = self.elector.count, len(self.elector.members)
        if not held:
            return True, f"standby: this replica ({self.elector.holder}) holds none of the {count} shard(s); {members} replica(s) alive"
        alive, detail = self.controller.liveness()
        shards = ", ".join(str(shard) for shard in held)
        return alive, f"reconciling shard(s) {shards} of {count} ({members} replica(s) alive): {detail}"
