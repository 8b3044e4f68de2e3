"""The public JSON kept per deployment: its newest version's, and only that."""

from __future__ import annotations

import json

from api.views import PublicViews
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import local_manifest


def test_each_deployment_keeps_its_newest_json_only(sqlite_store: DeploymentStore) -> None:
    views = PublicViews(capacity=10)
    first = sqlite_store.create(InferenceDeploymentCreate.model_validate(local_manifest("support-bot")))
    assert json.loads(views.json_of(first))["metadata"]["resourceVersion"] == str(first.resource_version)
    assert views.cached_json(first.uid, first.resource_version) == views.json_of(first)
    ready = sqlite_store.update_status("support-bot", DeploymentStatus(phase="Ready"), uid=first.uid)
    assert ready is not None and ready.resource_version > first.resource_version
    assert views.cached_json(ready.uid, ready.resource_version) is None  # not made yet
    assert json.loads(views.json_of(ready))["status"]["phase"] == "Ready"
    # The older version is let go once the newer one is made; a reader of the older row who
    # comes late gets its JSON, but does not displace the newer one.
    assert views.cached_json(first.uid, first.resource_version) is None
    assert json.loads(views.json_of(first))["status"].get("phase") != "Ready"
    assert json.loads(views.cached_json(ready.uid, ready.resource_version) or b"{}")["status"]["phase"] == "Ready"


def test_the_oldest_deployment_read_is_let_go_past_the_capacity(sqlite_store: DeploymentStore) -> None:
    views = PublicViews(capacity=2)
    rows = [sqlite_store.create(InferenceDeploymentCreate.model_validate(local_manifest(f"bot-{n}"))) for n in range(3)]
    for row in rows:
        views.json_of(row)
    assert views.cached_json(rows[0].uid, rows[0].resource_version) is None
    assert all(views.cached_json(row.uid, row.resource_version) is not None for row in rows[1:])
