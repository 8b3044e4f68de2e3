"""The one adapter validator (serving.adapter_check): its rules, and that the reconciler (before
staging, from the share) and the serving app (before loading, from its files) give the same
verdict on the same files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from infra.local.share import LocalShare
from reconciler.rollout import validate_on_share
from serving.adapter_check import check_config, check_safetensors_header, fits_model
from serving.adapters import AdapterError, inspect_adapter
from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH

MODEL = "model-cache/microsoft/Phi-3-mini-4k-instruct"


def config(**changes) -> bytes:
    document = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "microsoft/Phi-3-mini-4k-instruct",
    } | changes
    return json.dumps(document).encode()


def check(raw: bytes) -> str | None:
    return check_config(raw, [MODEL], served_as=MODEL)[1]


def test_a_config_must_be_lora_spelled_as_peft_spells_it_for_this_model_with_a_sane_rank():
    assert check(config()) is None
    assert check(b"{not json").startswith("adapter_config.json does not parse")
    assert "only LORA adapters are served" in check(config(peft_type="IA3"))
    # PEFT keys its configs by the enum value "LORA": "lora" would be staged, then fail to load.
    assert "only LORA adapters are served" in check(config(peft_type="lora"))
    assert "rank r=0" in check(config(r=0))
    assert "rank r=True" in check(config(r=True))
    assert "target_modules" in check(config(target_modules=[]))
    assert check(config(base_model_name_or_path="meta-llama/Meta-Llama-3-8B")) == (
        f"it was trained for 'meta-llama/Meta-Llama-3-8B', but this deployment serves {MODEL}"
    )
    assert fits_model("/home/me/models/Phi-3-mini-4k-instruct", [MODEL])
    assert fits_model(None, [MODEL])


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
    assert check_safetensors_header(head, size, rank=8) == (
        {"base.q_proj.lora_A.weight": [8, 64], "base.q_proj.lora_B.weight": [64, 8]},
        None,
    )
    assert "truncated" in check_safetensors_header(head, size - 100, rank=8)[1]
    assert "truncated" in check_safetensors_header(head[:20], 20, rank=8)[1]
    assert "rank 8" in check_safetensors_header(head, size, rank=16)[1]
    plain_head, plain_size = safetensors({"weight": [4, 4]})
    assert check_safetensors_header(plain_head, plain_size, rank=8)[1] == "adapter_model.safetensors holds no LoRA weights"


def _spoil_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _truncate_weights(folder: Path) -> None:
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])


def _rank_mismatch(folder: Path) -> None:
    _spoil_config(folder, r=2 * json.loads((folder / "adapter_config.json").read_text())["r"])


SPOILERS = {
    "valid": lambda folder: None,
    "peft_type lower case": lambda folder: _spoil_config(folder, peft_type="lora"),
    "not LoRA": lambda folder: _spoil_config(folder, peft_type="PREFIX_TUNING"),
    "another base model": lambda folder: _spoil_config(folder, base_model_name_or_path="meta-llama/Meta-Llama-3-8B"),
    "rank zero": lambda folder: _spoil_config(folder, r=0),
    "no target modules": lambda folder: _spoil_config(folder, target_modules=[]),
    "rank disagrees with the weights": _rank_mismatch,
    "truncated weights": _truncate_weights,
    "config not JSON": lambda folder: (folder / "adapter_config.json").write_text("{nope"),
}


@pytest.mark.parametrize("case", sorted(SPOILERS))
def test_the_reconciler_and_the_serving_app_give_the_same_verdict_on_the_same_files(tiny_share: Path, case: str):
    folder = tiny_share / ADAPTER_PATH
    SPOILERS[case](folder)
    share = LocalShare(tiny_share)
    entries = [e for e in share.list(ADAPTER_PATH) or [] if not e.is_dir]
    reconciler_says = validate_on_share(share, ADAPTER_PATH, entries, TINY_MODEL_PATH)
    try:
        inspect_adapter(folder, version=None, model_dir=tiny_share / TINY_MODEL_PATH, model_name=None, share_root=tiny_share)
        serving_says = None
    except AdapterError as exc:
        serving_says = str(exc)
    if case == "valid":
        assert reconciler_says is None and serving_says is None
    else:
        assert reconciler_says is not None, case
        assert serving_says is not None and reconciler_says.split(", but this deployment serves")[0] in serving_says, (
            reconciler_says,
            serving_says,
        )
