"""The rollout's decisions, apart from any doing: completeness, fingerprints, which version
should serve. (Validation is serving.adapter_check's: tests/serving/test_adapter_check.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.provider import ShareEntry
from reconciler.rollout import desired_version, fingerprint, incomplete, restart_version
from state.models import AdapterVersion

MODEL = "model-cache/microsoft/Phi-3-mini-4k-instruct"


def entry(name: str, size: int = 10, etag: str = "1") -> ShareEntry:
    return ShareEntry(name, size, etag=etag)


def test_an_adapter_is_complete_with_its_config_and_weights_and_the_marker_when_asked():
    assert incomplete([entry("adapter_model.safetensors")], None) == "no adapter_config.json yet"
    assert "adapter_model.safetensors" in incomplete([entry("adapter_config.json")], None)
    done = [entry("adapter_config.json"), entry("adapter_model.bin")]
    assert incomplete(done, None) is None
    assert incomplete(done, "_SUCCESS") == "no _SUCCESS marker yet (spec.adapter.marker)"
    assert incomplete([*done, entry("_SUCCESS", 0)], "_SUCCESS") is None


def test_the_fingerprint_follows_names_sizes_and_content_identity_not_order():
    files = [entry("adapter_config.json"), entry("adapter_model.safetensors", 100)]
    assert fingerprint(files) == fingerprint(list(reversed(files)))
    assert fingerprint(files) != fingerprint([entry("adapter_config.json"), entry("adapter_model.safetensors", 101)])
    assert fingerprint(files) != fingerprint([entry("adapter_config.json", etag="2"), entry("adapter_model.safetensors", 100)])


def version(name: str, state: str, minutes: int) -> AdapterVersion:
    return AdapterVersion(
        deployment_uid="u",
        version=name,
        deployment_name="d",
        state=state,
        fingerprint=name,
        source_path="a",
        detected_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
    )


def test_the_newest_servable_version_serves_unless_one_is_pinned():
    versions = [version("v4", "Rejected", 4), version("v3", "Failed", 3), version("v2", "Staged", 2), version("v1", "Active", 1)]
    assert desired_version(versions, None)[0].version == "v2"  # rejected and failed ones never
    assert desired_version(versions, "v1")[0].version == "v1"
    assert desired_version(versions, "v3")[0].version == "v3"  # a pin may retry a failed one
    assert "rejected" in desired_version(versions, "v4")[1]
    assert "not among" in desired_version(versions, "v9")[1]
    assert desired_version([], None) == (None, None)


def test_under_restart_the_app_is_started_with_the_version_in_flight_else_the_one_serving():
    assert restart_version([version("v2", "Staged", 2), version("v1", "Active", 1)]) == "v1"
    assert restart_version([version("v2", "Activating", 2), version("v1", "Active", 1)]) == "v2"
    assert restart_version([version("v2", "Failed", 2), version("v1", "Active", 1)]) == "v1"  # rolled back
    assert restart_version([version("v1", "Staged", 1)]) is None
