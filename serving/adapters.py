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


@dataclass(frozen=True)
class PointedVersion:
    """One adapter's entry in the pointer: the version to serve and its staged folder."""

    version: str
    folder: Path


VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def read_pointer(pointer: Path, share_root: Path, default_name: str) -> dict[str, PointedVersion]:
    """The pointer file, adapter name to the version to serve, in the order it lists them:
    ``{"adapters": {"NAME": {"version": "...", "path": "<folder under the share root>"}}}``.
    The one-adapter form loraplane wrote before (``{"version": ..., "path": ...}``) is the
    adapter ``default_name``."""
    try:
        document = json.loads(pointer.read_text())
        entries = document.get("adapters", {default_name: document})
        pointed = {str(name): (entry["version"], entry["path"]) for name, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AdapterError(f"the adapter pointer {pointer} cannot be read: {exc!r}") from exc
    root = share_root.resolve()
    found: dict[str, PointedVersion] = {}
    for name, (version, folder) in pointed.items():
        if not ADAPTER_NAME.fullmatch(name):
            raise AdapterError(f"the adapter pointer {pointer} names an invalid adapter {name!r}")
        if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
            raise AdapterError(f"the adapter pointer {pointer} names an invalid version {version!r} for {name}")
        target = (share_root / str(folder)).resolve()
        if root not in target.parents and target != root:
            raise AdapterError(f"the adapter pointer {pointer} points outside the share root: {folder!r}")
        found[name] = PointedVersion(version, target)
    return found


def peft_name(adapter: str, version: str) -> str:
    """PEFT keys adapters in module dicts (no dots allowed); two adapters may hold the same
    files, so the adapter's name is part of it."""
    return "a_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{adapter}__{version}")


@dataclass(eq=False)
class Loaded:
    """One version of one adapter, accepted to serve. ``resident``: its weights are in the model
    now; one unloaded to make room is loaded again from ``path`` on its next request."""

    version: str
    fingerprint: str
    path: Path
    peft_name: str | None  # None: the base model, no adapter
    adapter: str = ""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    in_flight: int = 0
    resident: bool = True
    last_used: float = 0.0  # a tick of the registry's, for least-recently-used


@dataclass
class AdapterSlot:
    """One adapter, by the name clients ask for: the version new requests get, older versions
    still draining, and why its newest version was refused, if it was."""

    name: str
    active: Loaded | None = None
    draining: dict[str, Loaded] = field(default_factory=dict)
    last_error: str | None = None


class AdapterRegistry:
    """Which version of each adapter new requests get, and which older versions still have
    requests running.

    A request ``acquire``s its adapter's active version when it is admitted and ``release``s it
    when done; a version replaced while requests hold it drains, and is handed back for
    unloading once its last request finishes. Adapters are kept in the order the pointer lists
    them: the first is the one a request that names no model gets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, AdapterSlot] = {}
        self._orphans: dict[int, Loaded] = {}  # versions of removed adapters, still held
        self._tick = 0
        # Set once the watcher's first look has tried every adapter it names (loaded or
        # refused): before, an app that answers for one adapter may not have the others yet.
        self.looked = False

    # ------------------------------------------------------------------------- reading

    @property
    def default(self) -> str | None:
        """The adapter a request that names no model gets: the first one listed."""
        with self._lock:
            return next(iter(self._slots), None)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def slots(self) -> list[AdapterSlot]:
        """A copy of each adapter's slot, for reports."""
        with self._lock:
            return [AdapterSlot(s.name, s.active, dict(s.draining), s.last_error) for s in self._slots.values()]

    def slot(self, name: str) -> AdapterSlot | None:
        with self._lock:
            found = self._slots.get(name)
            return AdapterSlot(found.name, found.active, dict(found.draining), found.last_error) if found else None

    @property
    def active(self) -> Loaded | None:
        """The default adapter's active version."""
        with self._lock:
            first = next(iter(self._slots.values()), None)
            return first.active if first else None

    def residents(self) -> list[Loaded]:
        """Every version whose weights are in the model now, active or draining."""
        with self._lock:
            found = [s.active for s in self._slots.values() if s.active is not None and s.active.resident and s.active.peft_name]
            return found + [d for s in self._slots.values() for d in s.draining.values() if d.resident]

    # ------------------------------------------------------------------------- changing

    def ensure(self, names: list[str]) -> list[Loaded]:
        """Keep exactly these adapters, in this order. Returns versions of removed adapters
        that nothing holds (to unload); held ones drain first."""
        drained: list[Loaded] = []
        with self._lock:
            for gone in [n for n in self._slots if n not in names]:
                slot = self._slots.pop(gone)
                held = [*slot.draining.values(), *([slot.active] if slot.active else [])]
                drained += [v for v in held if v.in_flight == 0]
                # Held ones are released against a slot that is gone: hand them back then.
                self._orphans.update({id(v): v for v in held if v.in_flight > 0})
            self._slots = {n: self._slots.get(n) or AdapterSlot(n) for n in names}
        return drained

    def acquire(self, name: str | None = None, count: int = 1) -> Loaded | None:
        """The active version of ``name`` (the default adapter when None), held ``count`` times
        (one per job: a request with several prompts gets one version for all of them,
        released job by job)."""
        with self._lock:
            slot = self._slots.get(name) if name is not None else next(iter(self._slots.values()), None)
            if slot is None or slot.active is None:
                return None
            self._tick += 1
            slot.active.in_flight += count
            slot.active.last_used = self._tick
            return slot.active

    def release(self, loaded: Loaded) -> Loaded | None:
        """Returns the version when it is drained and may be unloaded."""
        with self._lock:
            loaded.in_flight -= 1
            if loaded.in_flight > 0:
                return None
            if self._orphans.pop(id(loaded), None) is not None:
                return loaded
            slot = self._slots.get(loaded.adapter)
            if slot is not None and loaded is not slot.active and slot.draining.pop(loaded.version, None) is not None:
                return loaded
        return None

    def activate(self, loaded: Loaded) -> Loaded | None:
        """Make ``loaded`` what new requests for its adapter get; returns the old version if
        nothing holds it."""
        with self._lock:
            slot = self._slots.setdefault(loaded.adapter, AdapterSlot(loaded.adapter))
            old, slot.active = slot.active, loaded
            slot.draining.pop(loaded.version, None)  # rolled back to: its requests and new ones share it
            slot.last_error = None
            self._tick += 1
            loaded.last_used = self._tick
            if old is None or old.version == loaded.version:
                return None
            if old.in_flight == 0:
                return old
            slot.draining[old.version] = old
            return None

    def fail(self, name: str, message: str) -> None:
        with self._lock:
            slot = self._slots.setdefault(name, AdapterSlot(name))
            slot.last_error = message

    def holding(self, peft_name: str) -> Loaded | None:
        """The resident version loaded under ``peft_name``, active or draining, if any."""
        with self._lock:
            for s in self._slots.values():
                for v in [s.active, *s.draining.values()]:
                    if v is not None and v.resident and v.peft_name == peft_name:
                        return v
            return None

    def least_recently_used(self, keep: Loaded | None) -> Loaded | None:
        """The resident active version used longest ago that nothing holds (not ``keep``)."""
        with self._lock:
            idle = [
                s.active
                for s in self._slots.values()
                if s.active is not None and s.active.resident and s.active.peft_name and s.active.in_flight == 0 and s.active is not keep
            ]
            return min(idle, key=lambda v: v.last_used, default=None)
