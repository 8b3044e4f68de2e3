"""The reconciler's one way to write: every write a reconcile pass makes goes through
``PassWriter``, which checks the fence of the leader lease this replica holds (when the
service is replicated), and commits a pass's status, events and adapter-version changes in
one transaction.

The fences are set here: one when this replica leads alone, or one per shard it holds when
the deployments are split into shards across replicas; nothing else of the reconciler holds a
store it could write to unfenced: the rollout and the providers' journal hand their writes to
this object, and read through ``ReadStore``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from state.errors import Fenced
from state.models import AdapterVersion, CloudResource, GpuMeter, GpuUsageDay, InferenceDeployment, InferenceKey, NewEvent
from state.resource import DeploymentStatus
from state.store import DeploymentStore, Fence, UsageWrite, VersionChange


class ReadStore(Protocol):
    """What the reconciler reads of the database (it writes through ``PassWriter`` only)."""

    def get(self, name: str) -> InferenceDeployment: ...

    def get_with_versions(self, name: str) -> tuple[InferenceDeployment, list[AdapterVersion]]: ...

    def names(self) -> list[str]: ...

    def desired_versions(self) -> dict[str, tuple[str, int, bool, str]]: ...

    def adapter_versions(self, deployment_uid: str) -> list[AdapterVersion]: ...

    def cloud_resources(self, deployment_uid: str) -> list[CloudResource]: ...

    def inference_keys(self, deployment_uid: str) -> list[InferenceKey]: ...

    def gpu_meter(self, deployment_uid: str) -> GpuMeter | None: ...

    def gpu_usage(self, deployment_uid: str | None = None, *, since_day: str) -> list[GpuUsageDay]: ...

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Be told the name of a deployment whose desired state this process's API changed."""
        ...


def shard_of(uid: str, count: int) -> int:
    """Which of ``count`` shards a deployment is in: by a hash of its uid, so that it stays
    put for its whole life and the shards fill evenly."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % count if count > 1 else 0


@dataclass
class _Held:
    fence: Fence
    valid_until: float  # this replica's monotonic clock: it steps down before the lease ends
    draining: bool = False  # handed back once its passes in flight end; no new one starts
    in_flight: int = 0


class PassWriter:
    """Every write of the reconciler, fenced by the lease of the writing deployment's shard.

    Alone (one process on SQLite), there is no fence; ``lead(fence)`` sets one for every
    deployment. Elected, the shard elector ``hold``s the shards this replica won, renews
    them, and ``drain``s and ``release``s them; a pass starts only for a deployment of a shard
    held (``begin_pass``), and every write checks that shard's fence."""

    def __init__(
        self, store: DeploymentStore, *, shards: int = 1, elected: bool = False, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        """``elected``: replicas share the database and this one writes only for the shards a
        ``reconciler.shards.ShardElector`` won for it (``shards`` of them, 1 for one leader)."""
        self.store = store
        self.shards = shards
        self.elected = elected
        self.monotonic = monotonic
        self._fence: Fence | None = None
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        # Moves whenever what this replica holds changes: a cache of what the database said
        # (the journal's) is good only while it stays.
        self.generation = 0

    # ------------------------------------------------------------------------------ fences

    @property
    def sharded(self) -> bool:
        return self.elected

    def lead(self, fence: Fence | None) -> None:
        """From now on every write must pass ``fence`` (None: a single replica, no lease)."""
        with self._lock:
            self._fence = fence
            self.generation += 1

    @property
    def fence(self) -> Fence | None:
        with self._lock:
            return self._fence

    def hold(self, shard: int, fence: Fence, valid_until: float) -> None:
        """This replica won ``shard`` (a new epoch): its writes carry ``fence``."""
        with self._lock:
            self._held[shard] = _Held(fence, valid_until)
            self.generation += 1

    def renewed(self, shard: int, valid_until: float) -> None:
        with self._lock:
            held = self._held.get(shard)
            if held is not None:
                held.valid_until = valid_until

    def drain(self, shard: int) -> bool:
        """Start no new pass of ``shard``; whether none is in flight (it may be handed back)."""
        with self._lock:
            held = self._held.get(shard)
            if held is None:
                return True
            held.draining = True
            return held.in_flight == 0

    def release(self, shard: int) -> None:
        """Not this replica's any more: its deployments' writes are refused from now on."""
        with self._lock:
            if self._held.pop(shard, None) is not None:
                self.generation += 1

    def held_shards(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def shard_of(self, uid: str) -> int:
        return shard_of(uid, self.shards)

    def owns(self, uid: str) -> bool:
        """Whether this replica may reconcile the deployment now (locally known: a held shard,
        not draining, its lease renewed within the renew deadline)."""
        if not self.sharded:
            return True
        with self._lock:
            held = self._held.get(shard_of(uid, self.shards))
            return held is not None and not held.draining and self.monotonic() < held.valid_until

    def begin_pass(self, uid: str) -> bool:
        """A pass of this deployment may start here (and is counted in flight until
        ``end_pass``); False: another replica's, or its shard is being handed back."""
        if not self.sharded:
            return True
        with self._lock:
            held = self._held.get(shard_of(uid, self.shards))
            if held is None or held.draining or self.monotonic() >= held.valid_until:
                return False
            held.in_flight += 1
            return True

    def end_pass(self, uid: str) -> None:
        if not self.sharded:
            return
        with self._lock:
            held = self._held.get(shard_of(uid, self.shards))
            if held is not None and held.in_flight > 0:
                held.in_flight -= 1

    def fence_for(self, uid: str) -> Fence | None:
        """The fence a write for this deployment must pass; Fenced when its shard is not held."""
        if not self.sharded:
            return self.fence
        with self._lock:
            held = self._held.get(shard_of(uid, self.shards))
        if held is None:
            raise Fenced(f"this replica does not hold shard {shard_of(uid, self.shards)}: the write was refused")
        return held.fence

    def assert_leader(self, uid: str | None = None) -> None:
        """Before an action outside the database (a cloud call): does this replica still hold
        the deployment's shard (or lead)? Asks the database; raises state.errors.Fenced when not."""
        fence = self.fence_for(uid) if uid is not None else self.fence
        if fence is not None:
            self.store.check_fence(fence)

    def commit(
        self,
        row: InferenceDeployment,
        status: DeploymentStatus,
        *,
        events: Sequence[NewEvent] = (),
        versions: Sequence[VersionChange] = (),
        usage: UsageWrite | None = None,
    ) -> InferenceDeployment | None:
        """A pass's outcome: status, events, adapter-version changes and GPU usage, in one
        transaction (none at all when nothing changed). None when the deployment is gone."""
        written = self.store.update_status(
            row.name, status, uid=row.uid, read=row, events=events, versions=versions, fence=self.fence_for(row.uid), usage=usage
        )
        if written is not None:
            row.status = written.status  # a second commit in this pass compares with this one
        return written

    def remove(self, row: InferenceDeployment) -> bool:
        """The finalizer's last step: the row goes."""
        return self.store.remove(row.name, uid=row.uid, fence=self.fence_for(row.uid))

    def save_cloud_resource(
        self, deployment_uid: str, resource_id: str, *, kind: str, created: bool, operation: str | None, continuation_token: str | None
    ) -> None:
        self.store.save_cloud_resource(
            deployment_uid,
            resource_id,
            kind=kind,
            created=created,
            operation=operation,
            continuation_token=continuation_token,
            fence=self.fence_for(deployment_uid),
        )

    def forget_cloud_resources(self, deployment_uid: str, resource_id: str | None = None) -> None:
        self.store.forget_cloud_resources(deployment_uid, resource_id, fence=self.fence_for(deployment_uid))
