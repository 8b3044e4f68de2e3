"""The providers' durable memory (``infra.provider.ResourceJournal``), kept in the database:
read from the store, written through the reconciler's fenced writer."""

from __future__ import annotations

from infra.provider import ResourceRecord
from reconciler.writer import PassWriter, ReadStore
from state.store import DeploymentStore


class DatabaseJournal:
    def __init__(self, store: DeploymentStore, writer: PassWriter | None = None) -> None:
        self.store: ReadStore = store
        self.writer = writer or PassWriter(store)

    def records(self, deployment_uid: str) -> dict[str, ResourceRecord]:
        return {
            row.resource_id: ResourceRecord(
                resource_id=row.resource_id,
                kind=row.kind,
                created=row.created,
                operation=row.operation,
                continuation_token=row.continuation_token,
            )
            for row in self.store.cloud_resources(deployment_uid)
        }

    def save(self, deployment_uid: str, record: ResourceRecord) -> None:
        self.writer.save_cloud_resource(
            deployment_uid,
            record.resource_id,
            kind=record.kind,
            created=record.created,
            operation=record.operation,
            continuation_token=record.continuation_token,
        )

    def forget(self, deployment_uid: str, resource_id: str | None = None) -> None:
        self.writer.forget_cloud_resources(deployment_uid, resource_id)
