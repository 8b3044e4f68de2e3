"""The store's rules, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from state.db import make_engine, sqlite_url, upgrade_database
from state.errors import AlreadyExists, Conflict, InvalidChange, NotFound, PreconditionFailed
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.selectors import parse_selector
from state.store import DeploymentStore
from tests.conftest import azure_manifest, local_manifest


def create(store: DeploymentStore, name: str = "support-bot", labels: dict | None = None, **spec):
    manifest = local_manifest(name=name, **spec)
    if labels is not None:
        manifest["metadata"]["labels"] = labels
    return store.create(InferenceDeploymentCreate.model_validate(manifest))


def spec_of(**changes) -> DeploymentSpec:
    return DeploymentSpec.model_validate(local_manifest(**changes)["spec"])


def test_create_then_get_round_trips(store):
    row = create(store)
    got = store.get("support-bot")
    assert got.uid == row.uid
    assert (got.generation, got.resource_version) == (1, 1)
    assert got.spec["local"]["shareRoot"] == "/srv/share"
    assert got.created_at.tzinfo is not None
    assert got.to_public().status.phase == "Pending"


def test_a_second_create_of_the_same_name_is_refused(store):
    create(store)
    with pytest.raises(AlreadyExists, match="already exists"):
        create(store)


def test_generation_moves_only_with_the_spec_and_version_with_every_write(store):
    create(store)
    row, changed = store.replace("support-bot", labels={"team": "support"}, spec=spec_of())
    assert (changed, row.generation, row.resource_version) == (False, 1, 1)

    row, changed = store.replace("support-bot", labels={"team": "search"}, spec=spec_of())
    assert (changed, row.generation, row.resource_version) == (True, 1, 2)

    row, changed = store.replace("support-bot", labels={"team": "search"}, spec=spec_of(scale={"maxReplicas": 2}))
    assert (changed, row.generation, row.resource_version) == (True, 2, 3)

    status = DeploymentStatus(phase="Ready", observed_generation=2)
    row = store.update_status("support-bot", status, uid=row.uid)
    assert (row.generation, row.resource_version) == (2, 4)
    # The same status again is not a write.
    row = store.update_status("support-bot", status, uid=row.uid)
    assert row.resource_version == 4


def test_a_stale_version_is_refused(store):
    create(store)
    store.replace("support-bot", labels={}, spec=spec_of(), expected_version=1)
    with pytest.raises(PreconditionFailed, match="changed since you read it"):
        store.replace("support-bot", labels={"a": "b"}, spec=spec_of(), expected_version=1)


def test_immutable_fields_cannot_change(store):
    store.create(InferenceDeploymentCreate.model_validate(azure_manifest()))
    moved = DeploymentSpec.model_validate(azure_manifest(location="swedencentral")["spec"])
    with pytest.raises(InvalidChange) as info:
        store.replace("support-bot", labels={}, spec=moved)
    assert info.value.fields == ["spec.azure.location"]


def test_deletion_marks_then_remove_drops_row_labels_and_events(store):
    row = create(store)
    marked = store.request_deletion("support-bot")
    assert marked.deletion_timestamp is not None
    assert marked.to_public().status.phase == "Deleting"
    again = store.request_deletion("support-bot")
    assert again.resource_version == marked.resource_version  # idempotent: no second write
    with pytest.raises(Conflict, match="being deleted"):
        store.replace("support-bot", labels={}, spec=spec_of())
    with pytest.raises(AlreadyExists, match="being deleted"):
        create(store)
    assert store.remove("support-bot", uid=row.uid)
    with pytest.raises(NotFound):
        store.get("support-bot")
    assert store.list(parse_selector("team=support"))[0] == []
    # A new deployment of the same name starts with a clean history.
    create(store)
    assert [e.reason for e in store.list_events("support-bot")] == ["Created"]


def test_remove_refuses_a_deployment_not_marked_for_deletion(store):
    row = create(store)
    with pytest.raises(Conflict):
        store.remove("support-bot", uid=row.uid)


def test_status_of_a_recreated_deployment_is_not_overwritten_by_the_old_uid(store):
    old = create(store)
    store.request_deletion("support-bot")
    store.remove("support-bot", uid=old.uid)
    create(store)
    assert store.update_status("support-bot", DeploymentStatus(phase="Ready"), uid=old.uid) is None
    assert store.get("support-bot").to_public().status.phase == "Pending"


def test_label_selectors(store):
    create(store, "a-bot", labels={"team": "support", "tier": "prod"})
    create(store, "b-bot", labels={"team": "support", "tier": "dev"})
    create(store, "c-bot", labels={"team": "search"})

    def names(selector: str) -> list[str]:
        return [row.name for row in store.list(parse_selector(selector))[0]]

    assert names("team=support") == ["a-bot", "b-bot"]
    assert names("team=support,tier!=dev") == ["a-bot"]
    assert names("tier") == ["a-bot", "b-bot"]
    assert names("!tier") == ["c-bot"]
    assert names("team==search") == ["c-bot"]
    assert names("team=nobody") == []


@pytest.mark.parametrize("selector", ["te am=x", "team=has space", "=x", "team=-bad-"])
def test_bad_selectors_name_the_term(selector):
    with pytest.raises(ValueError, match="label selector term"):
        parse_selector(selector)


def test_pagination_visits_every_deployment_once(store):
    for i in range(7):
        create(store, f"bot-{i}")
    seen, token = [], None
    while True:
        rows, token = store.list(limit=3, continue_token=token)
        seen += [row.name for row in rows]
        if token is None:
            break
    assert seen == [f"bot-{i}" for i in range(7)]


def test_a_forged_continue_token_is_refused(store):
    with pytest.raises(ValueError, match="continue token"):
        store.list(continue_token="not-a-token")


def test_repeated_events_collapse_into_one_with_a_count(store):
    row = create(store)
    status = DeploymentStatus.model_validate(row.status)
    for _ in range(3):
        store.update_status(row.name, status, uid=row.uid, events=[("Warning", "ProvisionFailed", "quota exceeded")])
    store.update_status(row.name, status, uid=row.uid, events=[("Normal", "Ready", "serving")])
    events = store.list_events("support-bot")
    assert [(e.reason, e.count) for e in events] == [("Ready", 1), ("ProvisionFailed", 3), ("Created", 1)]


def test_concurrent_writers_never_lose_an_update(store):
    """Eight threads each add one label with compare-and-swap retries: all eight land."""
    create(store, labels={})
    errors: list[Exception] = []

    def add_label(i: int) -> None:
        try:
            for _ in range(200):
                row = store.get("support-bot")
                try:
                    store.replace(
                        "support-bot",
                        labels={**row.labels, f"k{i}": "v"},
                        spec=spec_of(),
                        expected_version=row.resource_version,
                    )
                    return
                except PreconditionFailed:
                    continue
            raise AssertionError("writer starved")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=add_label, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    row = store.get("support-bot")
    assert sorted(row.labels) == sorted(f"k{i}" for i in range(8))
    assert row.resource_version == 9


def test_count_by_phase(store):
    create(store, "a-bot")
    row = create(store, "b-bot")
    store.update_status("b-bot", DeploymentStatus(phase="Ready"), uid=row.uid)
    assert store.count_by_phase() == {"Pending": 1, "Ready": 1}
    store.update_status("a-bot", DeploymentStatus(phase="Ready"), uid=store.get("a-bot").uid)
    assert store.count_by_phase() == {"Ready": 2}


def test_listeners_hear_desired_state_writes_but_not_status_or_label_writes(store):
    heard: list[str] = []
    store.add_listener(heard.append)
    row = create(store)
    assert heard == ["support-bot"]
    store.replace("support-bot", labels={"team": "search"}, spec=spec_of())  # labels only
    store.update_status("support-bot", DeploymentStatus(phase="Ready"), uid=row.uid)
    assert heard == ["support-bot"]
    store.replace("support-bot", labels={"team": "search"}, spec=spec_of(scale={"maxReplicas": 2}))
    store.request_deletion("support-bot")
    assert heard == ["support-bot", "support-bot", "support-bot"]


def test_upgrade_is_idempotent_and_sqlite_runs_in_wal_mode(tmp_path: Path):
    engine = make_engine(sqlite_url(tmp_path))
    upgrade_database(engine)
    upgrade_database(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"inference_deployment", "deployment_label", "event", "cloud_resource", "adapter_version", "alembic_version"} <= tables
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0009"
