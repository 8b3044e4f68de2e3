"""The providers' durable memory (``infra.provider.ResourceJournal``), kept in the database:
read from the store, written through the reconciler's fenced writer.

Only the replica that reconciles a deployment writes its records, so they are also kept in
memory, written through: a steady pass reads them twice and would query the database twice.
What is kept is dropped whenever what the writer holds changes (this replica wins or hands
back a shard): another replica may have written meanwhile.
"""

from __future__ import annotations

import threading

from infra.provider import ResourceRecord
from reconciler.writer import PassWriter, ReadStore
from state.store import DeploymentStore


class DatabaseJournal:
    def __init__(self, store: DeploymentStore, writer: PassWriter | None = None) -> None:
        self.store: ReadStore = store
        self.writer = writer or PassWriter(store)
        self._kept: dict[str, dict[str, ResourceRecord]] = {}  # deployment uid -> its records
        self._kept_under = self.writer.generation  # what this replica held when they were read
        self._lock = threading.Lock()

    def _current(self) -> None:
        generation = self.writer.generation
        if generation != self._kept_under:
            self._kept.clear()
            self._kept_under = generation

    def records(self, deployment_uid: str) -> dict[str, ResourceRecord]:
        with self._lock:
            self._current()
            kept = self._kept.get(deployment_uid)
        if kept is not None:
            return dict(kept)
        read = {
            row.resource_id: ResourceRecord(
                resource_id=row.resource_id,
                kind=row.kind,
                created=row.created,
                operation=row.operation,
                continuation_token=row.continuation_token,
            )
            for row in self.store.cloud_resources(deployment_uid)
        }
        with self._lock:
            self._current()
            self._kept[deployment_uid] = dict(read)
        return read

    def save(self, deployment_uid: str, record: ResourceRecord) -> None:
        try:
            self.writer.save_cloud_resource(
                deployment_uid,
                record.resource_id,
                kind=record.kind,
                created=record.created,
                operation=record.operation,
                continuation_token=record.continuation_token,
            )
        finally:  # written or not, the database says; the next read asks it
            self._drop(deployment_uid)

    def forget(self, deployment_uid: str, resource_id: str | None = None) -> None:
        try:
            self.writer.forget_cloud_resources(deployment_uid, resource_id)
        finally:
            self._drop(deployment_uid)

    def _drop(self, deployment_uid: str) -> None:
        with self._lock:
            self._kept.pop(deployment_uid, None)
