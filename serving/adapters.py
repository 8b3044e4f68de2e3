"""LoRA adapters on disk: what version is there, whether it may be served, and which versions
are in use. No torch here: inspecting an adapter reads JSON and the safetensors header, and
the verdict is ``serving.adapter_check``'s, the same as the reconciler's."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from serving.adapter_check import CONFIG, WEIGHTS, check_config, check_safetensors_header, read_safetensors_head, real_path_inside


class AdapterError(Exception):
    """An adapter that must not be served; the message says why, naming the path."""


@dataclass(frozen=True)
class Candidate:
    """An adapter folder that passed the checks that need no model."""

    path: Path
    version: str
    fingerprint: str
    config: dict
    weights: Path


def stat_signature(folder: Path) -> tuple | None:
    """Cheap change detection: names, sizes and mtimes (no reading: shares are slow)."""
    try:
        entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    except OSError:
        return None
    return tuple(entries) or None


def content_fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def within_share(share_root: Path, path: Path, what: str) -> Path:
    """``path`` as a real path, when it stays inside the share root's real path: the
    reconciler judges the same paths the same way, so the app never serves what it refused."""
    real = real_path_inside(share_root, path)
    if real is None:
        raise AdapterError(f"{what} {path} leads outside the share root {share_root}: a link out of the share is not followed")
    return real


def inspect_adapter(path: Path, *, version: str | None, model_dir: Path, model_name: str | None, share_root: Path) -> Candidate:
    """Checks that need no model (``serving.adapter_check``, as the reconciler makes them before
    staging): inside the share (links resolved), complete, parses, LoRA, for this base model, a
    sane rank, a whole header whose LoRA shapes agree with the rank."""
    path = within_share(share_root, path, "the adapter folder")
    if not path.is_dir():
        raise AdapterError(f"no adapter folder at {path}")
    config_file = path / CONFIG
    if not config_file.is_file():
        raise AdapterError(f"{config_file} is missing: not a complete adapter")
    weights = next((path / w for w in WEIGHTS if (path / w).is_file()), None)
    if weights is None:
        raise AdapterError(f"{path} has no adapter_model.safetensors (or .bin): not a complete adapter")
    config_file = within_share(share_root, config_file, "the adapter file")
    weights = within_share(share_root, weights, "the adapter file")
    try:
        raw = config_file.read_bytes()
    except OSError as exc:
        raise AdapterError(f"{config_file} cannot be read: {exc}") from exc
    config, problem = check_config(raw, [str(model_dir), model_name or ""], served_as=str(model_dir))
    if problem is not None or config is None:
        raise AdapterError(f"the adapter at {path} was refused: {problem}")
    if weights.suffix == ".safetensors":
        try:
            head = read_safetensors_head(weights)
        except OSError as exc:
            raise AdapterError(f"{weights} cannot be read: {exc}") from exc
        _, problem = check_safetensors_header(head, weights.stat().st_size, config["r"], name=weights.name)
        if problem is not None:
            raise AdapterError(f"the adapter at {path} was refused: {problem}")
    elif weights.stat().st_size == 0:
        raise AdapterError(f"the adapter at {path} was refused: adapter_model.bin is empty")
    fingerprint = content_fingerprint([config_file, weights])
    return Candidate(path, version or f"sha-{fingerprint[:12]}", fingerprint, config, weights)


def read_pointer(pointer: Path, share_root: Path) -> tuple[str, Path]:
    """The pointer file: {"version": "...", "path": "<folder under the share root>"}."""
    try:
        document = json.loads(pointer.read_text())
        version, folder = document["version"], document["path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"the adapter pointer {pointer} cannot be read: {exc}") from exc
    if not isinstance(version, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", version):
        raise AdapterError(f"the adapter pointer {pointer} names an invalid version {version!r}")
    target = (share_root / str(folder)).resolve()
    if share_root.resolve() not in target.parents and target != share_root.resolve():
        raise AdapterError(f"the adapter pointer {pointer} points outside the share root: {folder!r}")
    return version, target


def peft_name(version: str) -> str:
    """PEFT keys adapters in module dicts: no dots allowed."""
    return "v_" + re.sub(r"[^A-Za-z0-9_]", "_", version)


@dataclass
class Loaded:
    version: str
    fingerprint: str
    path: Path
    peft_name: str | None  # None: the base model, no adapter
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    in_flight: int = 0


class AdapterRegistry:
    """Which version new requests get, and which older versions still have requests running.

    A request ``acquire``s the active version when it is admitted and ``release``s it when done;
    a version replaced while requests hold it drains, and is handed back for unloading once its
    last request finishes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active: Loaded | None = None
        self.draining: dict[str, Loaded] = {}
        self.last_error: str | None = None
        self.signature: tuple | None = None  # what the watcher last acted on

    def acquire(self, count: int = 1) -> Loaded | None:
        """The active version, held ``count`` times (one per job: a request with several
        prompts gets one version for all of them, released job by job)."""
        with self._lock:
            if self.active is not None:
                self.active.in_flight += count
            return self.active

    def release(self, loaded: Loaded) -> Loaded | None:
        """Returns the version when it is drained and may be unloaded."""
        with self._lock:
            loaded.in_flight -= 1
            if loaded is not self.active and loaded.in_flight == 0 and self.draining.pop(loaded.version, None) is not None:
                return loaded
        return None

    def activate(self, loaded: Loaded) -> Loaded | None:
        """Make ``loaded`` what new requests get; returns the old version if nothing holds it."""
        with self._lock:
            old, self.active = self.active, loaded
            self.last_error = None
            if old is None or old.version == loaded.version:
                return None
            if old.in_flight == 0:
                return old
            self.draining[old.version] = old
            return None

    def fail(self, message: str) -> None:
        with self._lock:
            self.last_error = message
