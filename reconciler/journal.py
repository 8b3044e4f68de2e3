"""The providers' durable memory (``infra.provider.ResourceJournal``), kept in the database."""

from __future__ import annotations

from infra.provider import ResourceRecord
from state.store import DeploymentStore


class DatabaseJournal:
    def __init__(self, store: DeploymentStore) -> None:
        self.store = store

    def use_store(self, store: DeploymentStore) -> None:
        """Write through ``store`` from now on (a leader's fenced view of the database)."""
        self.store = store

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
        self.store.save_cloud_resource(
            deployment_uid,
            record.resource_id,
            kind=record.kind,
            created=record.created,
            operation=record.operation,
            continuation_token=record.continuation_token,
        )

    def forget(self, deployment_uid: str, resource_id: str | None = None) -> None:
        self.store.forget_cloud_resources(deployment_uid, resource_id)
