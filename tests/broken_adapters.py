"""Adapters that pass every check made before loading (config, base model, rank, header,
shapes) and still must not serve, as training runs leave them: one whose weights hold NaN (a
diverged run), and one whose weights are finite but so large that the model's activations
overflow (its answers are NaN logits). Made from a good adapter's files."""

from __future__ import annotations

import shutil
from pathlib import Path


def _rewrite(source: Path, destination: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "adapter_config.json", destination / "adapter_config.json")
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file({name: change(name, tensor) for name, tensor in tensors.items()}, str(destination / "adapter_model.safetensors"))


def write_nan_adapter(source: Path, destination: Path) -> None:
    """One value of one LoRA matrix is NaN: the rest is the good adapter's."""
    first = []

    def poison(name, tensor):
        if not first and "lora_B" in name:
            first.append(name)
            tensor = tensor.clone()
            tensor.view(-1)[0] = float("nan")
        return tensor

    _rewrite(source, destination, poison)


def write_overflowing_adapter(source: Path, destination: Path, factor: float = 1e20) -> None:
    """Every LoRA matrix scaled by ``factor``: finite weights, overflowing activations."""
    _rewrite(source, destination, lambda name, tensor: tensor * factor if "lora_" in name else tensor)
