"""Adapter version rows, on SQLite and PostgreSQL: history newest first, one Active, changed in
the transaction of a status write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from state.models import AdapterVersion, InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import ActivateVersion, AddVersion, MarkVersion
from tests.conftest import local_manifest


def row(uid: str, version: str, minutes: int, state: str = "Staged") -> AdapterVersion:
    return AdapterVersion(
        deployment_uid=uid,
        version=version,
        deployment_name="support-bot",
        state=state,
        fingerprint=version * 4,
        source_path="models/adapter",
        path=f".loraplane/support-bot/adapters/{version}",
        files=[{"name": "adapter_config.json", "size": 10, "etag": "1"}],
        detected_at=datetime(2026, 11, 21, tzinfo=UTC) + timedelta(minutes=minutes),
    )


def test_versions_come_newest_first_and_one_is_active_at_a_time(store):
    deployment = store.create(InferenceDeploymentCreate.model_validate(local_manifest()))
    uid = deployment.uid
    store.add_adapter_version(row(uid, "aaa", 1))
    store.add_adapter_version(row(uid, "bbb", 2))
    assert store.add_adapter_version(row(uid, "aaa", 9, state="Rejected")).state == "Staged"  # first one wins
    assert [v.version for v in store.adapter_versions(uid)] == ["bbb", "aaa"]
    status = DeploymentStatus()
    store.update_status("support-bot", status, uid=uid, versions=[ActivateVersion("aaa")])
    store.update_status("support-bot", status, uid=uid, versions=[ActivateVersion("bbb"), AddVersion(row(uid, "ccc", 3))])
    states = {v.version: v.state for v in store.adapter_versions(uid)}
    assert states == {"aaa": "Superseded", "bbb": "Active", "ccc": "Staged"}
    assert store.adapter_version(uid, "bbb").activated_at is not None
    store.update_status("support-bot", status, uid=uid, versions=[MarkVersion("aaa", "Failed", "refused by the serving app")])
    public = store.adapter_version(uid, "aaa").to_public()
    assert public.state == "Failed" and public.files[0].name == "adapter_config.json"
    store.request_deletion("support-bot")
    store.remove("support-bot", uid=uid)
    assert store.adapter_versions(uid) == []
