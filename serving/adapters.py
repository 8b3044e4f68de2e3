"""LoRA adapters on disk: what version is there, whether it may be served, and which versions
are in use. No torch here: inspecting an adapter reads JSON and the safetensors header, and
the verdict is ``serving.adapter_check``'s, the same as the reconciler's."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    """One version in the pointer: its id and its staged folder."""

    version: str
    folder: Path


@dataclass(frozen=True)
class PointedAdapter:
    """One adapter's entry in the pointer: the version new requests get (None: none yet, while
    loraplane gates a first version), versions loaded beside it that users are not given
    (a version being gated, the one before for an instant rollback), and a canary: one of
    those that takes ``canary_weight`` percent of the adapter's requests."""

    active: PointedVersion | None
    loaded: tuple[PointedVersion, ...] = ()
    canary: str | None = None
    canary_weight: int = 0

    @property
    def version(self) -> str | None:
        return self.active.version if self.active is not None else None

    def versions(self) -> list[PointedVersion]:
        """Every version the entry names, the active one first."""
        return [*([self.active] if self.active is not None else []), *self.loaded]


VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def read_pointer(pointer: Path, share_root: Path, default_name: str) -> dict[str, PointedAdapter]:
    """The pointer file, adapter name to what to serve, in the order it lists them:
    ``{"adapters": {"NAME": {"version": "...", "path": "<folder under the share root>",
    "loaded": [{"version": ..., "path": ...}], "canary": {"version": ..., "weight": 10}}}}``
    (``loaded`` and ``canary`` optional). The one-adapter form loraplane wrote before
    (``{"version": ..., "path": ...}``) is the adapter ``default_name``."""
    try:
        document = json.loads(pointer.read_text())
        entries = document.get("adapters", {default_name: document})
        if not isinstance(entries, dict):
            raise TypeError("adapters is not an object")
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise AdapterError(f"the adapter pointer {pointer} cannot be read: {exc!r}") from exc
    root = share_root.resolve()

    def pointed(name: str, entry: Any) -> PointedVersion:
        try:
            version, folder = entry["version"], entry["path"]
        except (KeyError, TypeError) as exc:
            raise AdapterError(f"the adapter pointer {pointer} has an entry for {name} without a version and a path") from exc
        if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
            raise AdapterError(f"the adapter pointer {pointer} names an invalid version {version!r} for {name}")
        target = (share_root / str(folder)).resolve()
        if root not in target.parents and target != root:
            raise AdapterError(f"the adapter pointer {pointer} points outside the share root: {folder!r}")
        return PointedVersion(version, target)

    found: dict[str, PointedAdapter] = {}
    for name, entry in entries.items():
        if not ADAPTER_NAME.fullmatch(str(name)):
            raise AdapterError(f"the adapter pointer {pointer} names an invalid adapter {name!r}")
        if not isinstance(entry, dict):
            raise AdapterError(f"the adapter pointer {pointer} has an entry for {name} that is not an object")
        active = pointed(name, entry) if entry.get("version") is not None else None
        loaded = tuple(pointed(name, e) for e in entry.get("loaded") or [])
        canary = entry.get("canary")
        canary_version, weight = None, 0
        if canary is not None:
            try:
                canary_version, weight = str(canary["version"]), int(canary["weight"])
            except (KeyError, TypeError, ValueError) as exc:
                raise AdapterError(f"the adapter pointer {pointer} has a canary for {name} without a version and a weight") from exc
            if canary_version not in {v.version for v in loaded} or not 0 <= weight <= 100:
                raise AdapterError(
                    f"the adapter pointer {pointer} gives {name} a canary {canary_version!r} at {weight}%: "
                    "a canary must be one of the versions loaded beside the active one, at 0-100%"
                )
        found[str(name)] = PointedAdapter(active, loaded, canary_version, weight)
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
    """One adapter, by the name clients ask for: the version new requests get, versions loaded
    beside it that users are not given (``standby``: a version being gated, the one before it
    for an instant rollback; one of them may be the canary, which takes ``canary_weight``
    percent of requests), older versions still draining, and why versions were refused."""

    name: str
    active: Loaded | None = None
    draining: dict[str, Loaded] = field(default_factory=dict)
    last_error: str | None = None
    standby: dict[str, Loaded] = field(default_factory=dict)
    canary: str | None = None
    canary_weight: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # a standby version -> why it is not loaded

    def copy(self) -> AdapterSlot:
        return AdapterSlot(
            self.name,
            self.active,
            dict(self.draining),
            self.last_error,
            dict(self.standby),
            self.canary,
            self.canary_weight,
            dict(self.refused),
        )

    def find(self, version: str) -> Loaded | None:
        """The version in any role: active, standby or draining."""
        if self.active is not None and self.active.version == version:
            return self.active
        return self.standby.get(version) or self.draining.get(version)

    def holds(self, loaded: Loaded) -> bool:
        """Whether ``loaded`` still has a role (active or standby): else it may be unloaded
        once nothing holds it."""
        return loaded is self.active or self.standby.get(loaded.version) is loaded


def split_bucket(key: str | None) -> int:
    """0-99: where a request falls in a canary's split. The same key falls in the same place on
    every replica (sticky per user or session); no key, anywhere."""
    if key is None:
        return random.randrange(100)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100


class AdapterRegistry:
    """Which version of each adapter new requests get, which are loaded beside it, and which
    older versions still have requests running.

    A request ``acquire``s a version when it is admitted and ``release``s it when done: the
    active one, the canary for its share of requests, or one it names (``NAME@VERSION``). A
    version that loses its role while requests hold it drains, and is handed back for
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
            return [s.copy() for s in self._slots.values()]

    def slot(self, name: str) -> AdapterSlot | None:
        with self._lock:
            found = self._slots.get(name)
            return found.copy() if found else None

    def find(self, name: str, version: str) -> Loaded | None:
        with self._lock:
            slot = self._slots.get(name)
            return slot.find(version) if slot is not None else None

    @property
    def active(self) -> Loaded | None:
        """The default adapter's active version."""
        with self._lock:
            first = next(iter(self._slots.values()), None)
            return first.active if first else None

    def residents(self) -> list[Loaded]:
        """Every version whose weights are in the model now, in any role."""
        with self._lock:
            found: dict[int, Loaded] = {}
            for s in self._slots.values():
                for v in [s.active, *s.standby.values(), *s.draining.values()]:
                    if v is not None and v.resident and v.peft_name:
                        found[id(v)] = v
            return list(found.values())

    # ------------------------------------------------------------------------- changing

    def ensure(self, names: list[str]) -> list[Loaded]:
        """Keep exactly these adapters, in this order. Returns versions of removed adapters
        that nothing holds (to unload); held ones drain first."""
        drained: list[Loaded] = []
        with self._lock:
            for gone in [n for n in self._slots if n not in names]:
                slot = self._slots.pop(gone)
                held = list({id(v): v for v in [*slot.draining.values(), *slot.standby.values(), slot.active] if v is not None}.values())
                drained += [v for v in held if v.in_flight == 0]
                # Held ones are released against a slot that is gone: hand them back then.
                self._orphans.update({id(v): v for v in held if v.in_flight > 0})
            self._slots = {n: self._slots.get(n) or AdapterSlot(n) for n in names}
        return drained

    def acquire(self, name: str | None = None, count: int = 1, *, version: str | None = None, split: str | None = None) -> Loaded | None:
        """A version of ``name`` (the default adapter when None), held ``count`` times (one per
        job: a request with several prompts gets one version for all of them, released job by
        job): the one ``version`` names, if it is loaded here (active, standby or canary);
        else the canary for its share of requests (``split``: the key that keeps a user on one
        side), else the active one."""
        with self._lock:
            slot = self._slots.get(name) if name is not None else next(iter(self._slots.values()), None)
            if slot is None:
                return None
            if version is not None:
                chosen = slot.active if slot.active is not None and slot.active.version == version else slot.standby.get(version)
            else:
                chosen = slot.active
                canary = slot.standby.get(slot.canary) if slot.canary is not None else None
                if canary is not None and slot.canary_weight > 0 and split_bucket(split) < slot.canary_weight:
                    chosen = canary
            if chosen is None:
                return None
            self._tick += 1
            chosen.in_flight += count
            chosen.last_used = self._tick
            return chosen

    def release(self, loaded: Loaded) -> Loaded | None:
        """Returns the version when it is drained and may be unloaded."""
        with self._lock:
            loaded.in_flight -= 1
            if loaded.in_flight > 0:
                return None
            if self._orphans.pop(id(loaded), None) is not None:
                return loaded
            slot = self._slots.get(loaded.adapter)
            if slot is not None and not slot.holds(loaded) and slot.draining.get(loaded.version) is loaded:
                del slot.draining[loaded.version]
                return loaded
        return None

    def arrange(self, name: str, active: Loaded | None, standby: list[Loaded], canary: tuple[str, int] | None = None) -> list[Loaded]:
        """Give the adapter's versions their roles: ``active`` for new requests, ``standby``
        loaded beside it, one of those the canary (version, weight). A version that loses its
        role drains while requests hold it; returns those nothing holds (to unload)."""
        with self._lock:
            slot = self._slots.setdefault(name, AdapterSlot(name))
            before = [v for v in [slot.active, *slot.standby.values()] if v is not None]
            slot.active = active
            slot.standby = {v.version: v for v in standby if v is not active}
            slot.canary, slot.canary_weight = (canary[0], canary[1]) if canary is not None and canary[0] in slot.standby else (None, 0)
            kept = {id(v) for v in [active, *slot.standby.values()] if v is not None}
            for version in [*slot.standby, *([active.version] if active is not None else [])]:
                slot.draining.pop(version, None)  # rolled back to: its requests and new ones share it
            slot.refused = {}  # what is refused now is said again (``fail``) by whoever arranged this
            if active is not None:
                slot.last_error = None
                self._tick += 1
                active.last_used = self._tick
            drained: list[Loaded] = []
            for old in before:
                if id(old) in kept:
                    continue
                if old.in_flight == 0:
                    drained.append(old)
                else:
                    slot.draining[old.version] = old
            return drained

    def activate(self, loaded: Loaded) -> Loaded | None:
        """Make ``loaded`` what new requests for its adapter get, the versions loaded beside it
        and the canary kept; returns the old version if nothing holds it."""
        with self._lock:
            slot = self._slots.get(loaded.adapter)
            standby = [v for v in slot.standby.values() if v is not loaded] if slot is not None else []
            canary = (slot.canary, slot.canary_weight) if slot is not None and slot.canary is not None else None
        drained = self.arrange(loaded.adapter, loaded, standby, canary)
        return drained[0] if drained else None

    def fail(self, name: str, message: str, version: str | None = None) -> None:
        """A version of ``name`` was refused: the one to serve (``last_error``), or one to load
        beside it (``version``)."""
        with self._lock:
            slot = self._slots.setdefault(name, AdapterSlot(name))
            if version is None:
                slot.last_error = message
            else:
                slot.refused[version] = message

    def holding(self, peft_name: str) -> Loaded | None:
        """The resident version loaded under ``peft_name``, in any role, if any."""
        with self._lock:
            for s in self._slots.values():
                for v in [s.active, *s.standby.values(), *s.draining.values()]:
                    if v is not None and v.resident and v.peft_name == peft_name:
                        return v
            return None

    def least_recently_used(self, keep: Loaded | None) -> Loaded | None:
        """The resident version to unload first to make room, one that nothing holds (not
        ``keep``): a version loaded beside the active one (not the canary) before any that
        users get; among them, the one used longest ago."""
        with self._lock:

            def idle(v: Loaded | None) -> bool:
                return v is not None and v.resident and bool(v.peft_name) and v.in_flight == 0 and v is not keep

            standby = [v for s in self._slots.values() for n, v in s.standby.items() if n != s.canary and idle(v)]
            serving = [v for s in self._slots.values() for v in [s.active, s.standby.get(s.canary or "")] if idle(v)]
            return min(standby or serving, key=lambda v: v.last_used, default=None)
