"""The rollout's decisions, apart from any doing: completeness, fingerprints, validation,
which version should serve."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta

from infra.provider import ShareEntry
from reconciler.rollout import (
    check_config,
    check_safetensors_header,
    desired_version,
    fingerprint,
    fits_model,
    incomplete,
    restart_version,
)
from state.models import AdapterVersion
from state.resource import DeploymentStatus

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


def config(**changes) -> bytes:
    document = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "microsoft/Phi-3-mini-4k-instruct",
    } | changes
    return json.dumps(document).encode()


def test_a_config_must_be_lora_for_this_model_with_a_sane_rank():
    assert check_config(config(), MODEL)[1] is None
    assert check_config(b"{not json", MODEL)[1].startswith("adapter_config.json does not parse")
    assert "only LoRA" in check_config(config(peft_type="IA3"), MODEL)[1]
    assert "rank r=0" in check_config(config(r=0), MODEL)[1]
    assert "rank r=True" in check_config(config(r=True), MODEL)[1]
    assert "target_modules" in check_config(config(target_modules=[]), MODEL)[1]
    problem = check_config(config(base_model_name_or_path="meta-llama/Meta-Llama-3-8B"), MODEL)[1]
    assert problem == f"it was trained for 'meta-llama/Meta-Llama-3-8B', but this deployment serves {MODEL}"
    assert fits_model("/home/me/models/Phi-3-mini-4k-instruct", MODEL)
    assert fits_model(None, MODEL)


def safetensors(tensors: dict[str, list[int]], data_bytes: int | None = None) -> tuple[bytes, int]:
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    head = struct.pack("<Q", len(raw)) + raw
    return head, len(head) + (offset if data_bytes is None else data_bytes)


def test_a_truncated_or_mismatched_safetensors_file_is_refused_from_its_header_alone():
    tensors = {"base.q_proj.lora_A.weight": [8, 64], "base.q_proj.lora_B.weight": [64, 8]}
    head, size = safetensors(tensors)
    assert check_safetensors_header(head, size, rank=8) is None
    assert "truncated" in check_safetensors_header(head, size - 100, rank=8)
    assert "truncated" in check_safetensors_header(head[:20], 20, rank=8)
    assert "rank 8" in check_safetensors_header(head, size, rank=16)
    plain_head, plain_size = safetensors({"weight": [4, 4]})
    assert check_safetensors_header(plain_head, plain_size, rank=8) == "adapter_model.safetensors holds no LoRA weights"


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


def test_under_restart_the_environment_names_the_version_in_flight_else_the_one_serving():
    status = DeploymentStatus.model_validate({"adapter": {"servingVersion": "v1"}})
    assert restart_version(status) == "v1"
    status = DeploymentStatus.model_validate(
        {"adapter": {"servingVersion": "v1", "lastRollout": {"version": "v2", "result": "InProgress"}}}
    )
    assert restart_version(status) == "v2"
    status = DeploymentStatus.model_validate(
        {"adapter": {"servingVersion": "v1", "lastRollout": {"version": "v2", "result": "RolledBack"}}}
    )
    assert restart_version(status) == "v1"
