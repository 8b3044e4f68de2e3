"""Stacked LoRA gives what PEFT's own per-row adapters give, row by row, for adapters of
different ranks and target modules, with base-model rows among them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.mixed_lora import StackedLora
from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, write_random_adapter


@pytest.fixture
def model_with_adapters(tiny_share: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # A third adapter of another rank, on other modules as well.
    write_random_adapter(
        tiny_share / TINY_MODEL_PATH, tiny_share / "models/wide", seed=5, rank=4, target_modules=("q_proj", "k_proj", "o_proj")
    )
    config = json.loads((tiny_share / "models/wide/adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj"]
    base = AutoModelForCausalLM.from_pretrained(tiny_share / TINY_MODEL_PATH, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, str(tiny_share / ADAPTER_PATH), adapter_name="one", is_trainable=False)
    model.load_adapter(str(tiny_share / SECOND_ADAPTER_PATH), adapter_name="two", is_trainable=False)
    model.load_adapter(str(tiny_share / "models/wide"), adapter_name="wide", is_trainable=False)
    model.eval()
    return model


def test_stacked_rows_give_peft_s_own_logits(model_with_adapters):
    import torch

    model = model_with_adapters
    rows: list[str | None] = ["one", "two", None, "wide", "one"]
    ids = torch.randint(3, 100, (len(rows), 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(input_ids=ids, adapter_names=[name or "__base__" for name in rows]).logits
        stacked = StackedLora(model)
        assert stacked.supports({"one", "two", "wide"})
        with stacked.rows(rows):
            got = model(input_ids=ids).logits
        after = model(input_ids=ids).logits  # the hooks are idle outside rows(): PEFT's active adapter, one
        plain = model(input_ids=ids, adapter_names=["one"] * len(rows)).logits
        stacked.close()
    # Float rounding apart (the active adapter's delta is added, then taken back): the same
    # logits, and the same choice of token everywhere.
    assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert not torch.allclose(got[0], got[1])  # the adapters did differ
    assert torch.allclose(after, plain, atol=1e-5)
