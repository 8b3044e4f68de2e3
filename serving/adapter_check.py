"""Whether a LoRA adapter may be served: the one validator both sides use.

The reconciler checks an adapter on the share before it stages it (reading the config and a
ranged read of the safetensors header); the serving app checks it again before it loads it
(from its files). Both call these functions, so they give the same verdict on the same files.
Standard library only: the reconciler imports this module, and nothing heavy comes with it.

Each check returns the problem as a sentence that starts with the file it is about, or None.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_RANK = 1024
# A module name or a PEFT regular expression over module names.
_TARGET = re.compile(r"[\w.*|()\[\]\\^$+?-]{1,200}")


def real_path_inside(root: Path, path: Path) -> Path | None:
    """``path`` as a real path (every link resolved) when it lies inside ``root``'s real path,
    else None: the reconciler and the serving app judge a link out of the share alike."""
    real_root, real = Path(os.path.realpath(root)), Path(os.path.realpath(path))
    return real if real == real_root or real_root in real.parents else None


def _tail(name: str, parts: int) -> str:
    pieces = [p for p in re.split(r"[\\/]", name.strip()) if p]
    return "/".join(pieces[-parts:]).lower()


def fits_model(adapter_base: str | None, model_names: Iterable[str]) -> bool:
    """The adapter's ``base_model_name_or_path`` names the served model: by hub id (org/name)
    against a name's last two components, or by its last component. Nothing recorded is no
    objection (the structural checks at load time decide)."""
    if not adapter_base:
        return True
    ours = {tail for name in model_names if name for tail in (_tail(name, 2), _tail(name, 1))}
    return _tail(adapter_base, 2) in ours or _tail(adapter_base, 1) in ours


def check_config(raw: bytes, model_names: Iterable[str], *, served_as: str) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed config, or why it must not be served. ``served_as`` names the model for the
    message (the deployment's model path, or the app's model folder)."""
    try:
        config = json.loads(raw)
    except ValueError as exc:
        return None, f"{CONFIG} does not parse as JSON: {exc}"
    if not isinstance(config, dict):
        return None, f"{CONFIG} is not a JSON object"
    # PEFT keys its configs by the PeftType enum, whose value is "LORA": any other spelling does
    # not load, so it is refused here rather than after it was staged and activated.
    if config.get("peft_type") != "LORA":
        return None, f'{CONFIG} has peft_type {config.get("peft_type")!r}: only LORA adapters are served (peft_type must be "LORA")'
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_RANK:
        return None, f"{CONFIG} has rank r={rank!r}: it must be an integer from 1 to {MAX_RANK}"
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not isinstance(targets, list) or not all(isinstance(t, str) and _TARGET.fullmatch(t) for t in targets):
        return None, f"{CONFIG} has target_modules {config.get('target_modules')!r}: name the modules the adapter changes"
    base = config.get("base_model_name_or_path")
    if not fits_model(base, model_names):
        return None, f"it was trained for {base!r}, but this deployment serves {served_as}"
    return config, None


def header_length(first: bytes) -> int | None:
    """The JSON header's length from a safetensors file's first 8 bytes (None: too short)."""
    return struct.unpack("<Q", first[:8])[0] if len(first) >= 8 else None


def check_safetensors_header(head: bytes, size: int, rank: int, *, name: str = WEIGHTS[0]) -> tuple[dict[str, list[int]], str | None]:
    """``head`` is the file's first 8 bytes and the JSON header after them (as much as was
    read), ``size`` the file's size. Returns the tensors' shapes, and the problem if any."""
    length = header_length(head)
    if size < 8 or length is None:
        return {}, f"{name} is truncated (no header)"
    if length > MAX_HEADER_BYTES or 8 + length > size or len(head) < 8 + length:
        return {}, f"{name} is truncated or not a safetensors file"
    try:
        header = json.loads(head[8 : 8 + length])
    except ValueError:
        return {}, f"{name} has a header that does not parse"
    if not isinstance(header, dict):
        return {}, f"{name} has a header that does not parse"
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if not any("lora_" in key for key in tensors):
        return {}, f"{name} holds no LoRA weights"
    end = max((int((meta.get("data_offsets") or [0, 0])[1]) for meta in tensors.values()), default=0)
    if 8 + length + end > size:
        return {}, f"{name} is truncated: its tensors need {8 + length + end} bytes, the file has {size}"
    shapes = {key: list(meta.get("shape") or []) for key, meta in tensors.items()}
    for key, shape in shapes.items():
        if "lora_A" in key and shape and shape[0] != rank:
            return shapes, f"{name}: {key} has rank {shape[0]}, but {CONFIG} says r={rank}"
    return shapes, None


def read_safetensors_head(path: Path) -> bytes:
    """A local file's first 8 bytes and its header (what ``check_safetensors_header`` reads)."""
    with path.open("rb") as handle:
        first = handle.read(8)
        length = header_length(first)
        if length is None or length > MAX_HEADER_BYTES:
            return first
        return first + handle.read(length)
