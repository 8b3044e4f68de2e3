"""Documents kept in memory share their strings: what two rows have in common is held once."""

from __future__ import annotations

import json

from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.shared_strings import loads
from state.store import DeploymentStore
from tests.conftest import local_manifest


def test_two_documents_decoded_apart_hold_their_common_strings_once():
    text = json.dumps({"resources": [{"id": "/subscriptions/s/resourceGroups/rg-team", "state": "Succeeded"}], "replicas": 1, "ok": True})
    first, second = loads(text), loads(text.encode())
    assert first == second == json.loads(text)
    assert first is not second and first["resources"] is not second["resources"]  # each its own to change
    (one,), (other,) = first["resources"], second["resources"]
    assert one["id"] is other["id"] and one["state"] is other["state"]
    assert next(iter(one)) is next(iter(other))  # the keys too


def test_rows_read_from_the_database_share_their_strings(store: DeploymentStore):
    for name in ("support-bot", "billing-bot"):
        row = store.create(InferenceDeploymentCreate.model_validate(local_manifest(name)))
        store.update_status(name, DeploymentStatus(phase="Ready", message="the deployment matches its spec"), uid=row.uid)
    support, billing = store.get("support-bot"), store.get("billing-bot")
    assert support.status["message"] == "the deployment matches its spec"
    assert support.status["message"] is billing.status["message"]
    assert support.spec["model"]["path"] is billing.spec["model"]["path"]
