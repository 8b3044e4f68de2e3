"""The providers' durable memory in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

from infra.provider import ResourceRecord
from reconciler.journal import DatabaseJournal
from state.models import InferenceDeploymentCreate
from tests.conftest import local_manifest

APP = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.App/containerApps/Bot"


def test_records_survive_a_new_journal_and_go_with_their_deployment(store):
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest()))
    journal = DatabaseJournal(store)
    journal.save(row.uid, ResourceRecord(APP, "ContainerApp", created=True, operation="create", continuation_token="dG9rZW4="))
    journal.save(row.uid, ResourceRecord(APP.upper(), "ContainerApp", created=True))  # ARM ids ignore case
    again = DatabaseJournal(store).records(row.uid)
    assert again == {APP.lower(): ResourceRecord(APP.lower(), "ContainerApp", created=True)}
    journal.save(row.uid, ResourceRecord(APP + "2", "ContainerApp", operation="delete", continuation_token="x"))
    journal.forget(row.uid, APP)
    assert list(journal.records(row.uid)) == [(APP + "2").lower()]
    store.request_deletion(row.name)
    store.remove(row.name, uid=row.uid)
    assert DatabaseJournal(store).records(row.uid) == {}
