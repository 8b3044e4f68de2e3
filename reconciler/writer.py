"""The reconciler's one way to write: every write a reconcile pass makes goes through
``PassWriter``, which checks the fence of the leader lease this replica holds (when the
service is replicated), and commits a pass's status, events and adapter-version changes in
one transaction.

The fence is set here, once, when this replica starts leading; nothing else of the
reconciler holds a store it could write to unfenced: the rollout and the providers' journal
hand their writes to this object, and read through ``ReadStore``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

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


class PassWriter:
    def __init__(self, store: DeploymentStore) -> None:
        self.store = store
        self._fence: Fence | None = None
        self._lock = threading.Lock()

    def lead(self, fence: Fence | None) -> None:
        """From now on every write must pass ``fence`` (None: a single replica, no lease)."""
        with self._lock:
            self._fence = fence

    @property
    def fence(self) -> Fence | None:
        with self._lock:
            return self._fence

    def assert_leader(self) -> None:
        """Before an action outside the database (a cloud call): still the leader? Raises
        state.errors.Fenced when not."""
        fence = self.fence
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
            row.name, status, uid=row.uid, read=row, events=events, versions=versions, fence=self.fence, usage=usage
        )
        if written is not None:
            row.status = written.status  # a second commit in this pass compares with this one
        return written

    def remove(self, row: InferenceDeployment) -> bool:
        """The finalizer's last step: the row goes."""
        return self.store.remove(row.name, uid=row.uid, fence=self.fence)

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
            fence=self.fence,
        )

    def forget_cloud_resources(self, deployment_uid: str, resource_id: str | None = None) -> None:
        self.store.forget_cloud_resources(deployment_uid, resource_id, fence=self.fence)
