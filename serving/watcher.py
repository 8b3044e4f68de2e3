"""Hot reload: poll the reconciler's pointer file (or, without one, the adapter folder) and swap
in what is new, adapter by adapter.

SMB shares have no inotify, so this polls. The pointer names each adapter's version and its
staged folder; an adapter whose version changed is loaded beside the others, and its old
version drains; the others are not touched. Without a pointer, the one adapter folder is
served, acted on only once its files have stayed the same for one poll (a copy in progress is
not an adapter). The reload endpoint runs the same path at once. A refused version is not
tried again until the pointer (or the folder) changes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from serving.adapters import AdapterError, PointedVersion, inspect_adapter, read_pointer, stat_signature
from serving.engine import Engine
from serving.settings import ServingSettings

log = logging.getLogger("loraplane.serving")


@dataclass(frozen=True)
class AdapterResult:
    status: Literal["loaded", "unchanged", "refused", "waiting"]
    version: str | None
    message: str


@dataclass(frozen=True)
class ReloadResult:
    """A poll's outcome: each adapter's, and one summary (refused when any was)."""

    status: Literal["loaded", "unchanged", "refused", "waiting"]
    version: str | None  # the default adapter's
    message: str
    adapters: dict[str, AdapterResult] = field(default_factory=dict)

    @classmethod
    def of(cls, adapters: dict[str, AdapterResult], default: str | None) -> ReloadResult:
        results = list(adapters.values())
        status = next((s for s in ("refused", "loaded", "waiting") if any(r.status == s for r in results)), "unchanged")
        first = adapters.get(default) if default is not None else None
        message = (
            "; ".join(f"{name}: {r.message}" for name, r in adapters.items())
            if len(adapters) > 1
            else (results[0].message if results else "")
        )
        return cls(status, first.version if first else None, message, adapters)  # type: ignore[arg-type]


class AdapterWatcher:
    def __init__(self, settings: ServingSettings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.registry = engine.registry
        self._last_seen: tuple | None = None  # the pointer (or folder) as the previous poll saw it
        self._tried: dict[str, tuple[str | None, tuple | None]] = {}  # adapter -> (version, signature) refused
        self._lock = threading.Lock()  # one poll at a time (the timer and the endpoint)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="adapter-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.engine.loaded.wait(timeout=0.5) and self.engine.base is not None:
                break
        first = True
        while not self._stop.is_set():
            try:
                self.poll(force=first)  # at start the files are as they are: no settling wait
                first = False
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("adapter poll failed")
            if not self.settings.watch and not first and self.registry.active is not None:
                return  # what serves was decided at start; the reload endpoint can still act
            self._stop.wait(self.settings.watch_interval_seconds)

    def poll(self, *, force: bool = False) -> ReloadResult:
        with self._lock:
            if self.engine.base is None:
                return ReloadResult("waiting", None, "the base model is not loaded yet")
            pinned = self.settings.pinned_versions()
            pointer = self.settings.pointer_file
            if pointer is not None and pointer.is_file():
                results = self._follow_pointer(pointer, pinned, force)
            elif pinned:
                self._keep(list(pinned))
                results = {}
            elif pointer is not None:
                # loraplane stages each adapter's first version before the app serves it: until
                # the pointer names one, nothing is served that the history would not know.
                name = self.settings.default_adapter
                self._keep(self.registry.names() or [name])
                results = {
                    name: self._nothing_to_serve(name, f"waiting for loraplane to stage the first adapter version (no {pointer} yet)")
                }
            else:
                # No reconciler: serve the adapter folder, as it is.
                name = self.settings.default_adapter
                self._keep([name])
                results = {name: self._follow_folder(name, force)}
            for name, version in pinned.items():
                results[name] = self._serve_pinned(name, version, force)
            self.registry.looked = True
            return ReloadResult.of(results, self.registry.default)

    def _keep(self, names: list[str]) -> None:
        drained = self.registry.ensure(names)
        if drained:
            self.engine.call(lambda: self.engine.unload_all(drained))

    def _serve_pinned(self, name: str, version: str, force: bool) -> AdapterResult:
        """The restart strategy: the process was started to serve one version, and serves it."""
        folder = self.settings.staged_dir(version)
        slot = self.registry.slot(name)
        if slot is not None and slot.active is not None and slot.active.version == version:
            return AdapterResult("unchanged", version, f"already serving {version}")
        if folder is None:
            return self._nothing_to_serve(name, f"adapter version {version} is named, but LORAPLANE_ADAPTER_POINTER is not set")
        signature = stat_signature(folder)
        if signature is None:
            return self._nothing_to_serve(name, f"adapter version {version} is not staged at {folder}")
        if not force and self._tried.get(name) == (version, signature):
            return AdapterResult("unchanged", None, "refused before; waiting for a change")
        return self._load(name, folder, version, signature)

    def _follow_pointer(self, pointer: Path, pinned: dict[str, str], force: bool) -> dict[str, AdapterResult]:
        signature = stat_signature(pointer.parent)
        previous, self._last_seen = self._last_seen, signature
        try:
            pointed = read_pointer(pointer, self.settings.share_root, self.settings.default_adapter)
        except AdapterError as exc:
            names = self.registry.names() or [self.settings.default_adapter]
            if signature != previous and not force:
                # Perhaps caught mid-write: judge it once it has stayed the same for a poll.
                return {n: AdapterResult("waiting", self._version(n), str(exc)) for n in names}
            return {n: self._refuse(n, None, str(exc), signature) for n in names}
        self._keep([*pointed, *(n for n in pinned if n not in pointed)])
        return {name: self._follow(name, entry, signature, force) for name, entry in pointed.items() if name not in pinned}

    def _follow(self, name: str, entry: PointedVersion, signature: tuple | None, force: bool) -> AdapterResult:
        if self._version(name) == entry.version:
            return AdapterResult("unchanged", entry.version, f"already serving {entry.version}")
        if not force and self._tried.get(name) == (entry.version, signature):
            return AdapterResult("unchanged", self._version(name), "refused before; waiting for a change")
        return self._load(name, entry.folder, entry.version, signature)

    def _follow_folder(self, name: str, force: bool) -> AdapterResult:
        folder = self.settings.adapter_dir
        signature = stat_signature(folder)
        previous, self._last_seen = self._last_seen, signature
        if signature is None:
            return self._nothing_to_serve(name, f"no adapter at {folder}")
        if not force and self._tried.get(name) == (None, signature):
            return AdapterResult("unchanged", self._version(name), "no change")
        if not force and signature != previous:
            return AdapterResult("waiting", None, "the adapter files are changing; waiting for them to settle")
        return self._load(name, folder, None, signature)

    def _version(self, name: str) -> str | None:
        slot = self.registry.slot(name)
        return slot.active.version if slot is not None and slot.active is not None else None

    def _load(self, name: str, folder: Path, version: str | None, signature: tuple | None) -> AdapterResult:
        slot = self.registry.slot(name)
        active = slot.active if slot is not None else None
        try:
            candidate = inspect_adapter(
                folder,
                version=version,
                model_dir=self.settings.model_dir,
                model_name=self.engine.model_name,
                share_root=self.settings.share_root,
            )
            if active is not None and version is None and candidate.fingerprint == active.fingerprint:
                self._tried[name] = (version, signature)
                return AdapterResult("unchanged", active.version, f"already serving {active.version}")
            loaded = self.engine.call(lambda: self.engine.load_adapter(candidate, name)).result()
        except AdapterError as exc:
            return self._refuse(name, version, str(exc), signature)
        self._tried[name] = (version, signature)
        return AdapterResult("loaded", loaded.version, f"now serving {loaded.version}")

    def _refuse(self, name: str, version: str | None, message: str, signature: tuple | None) -> AdapterResult:
        self._tried[name] = (version, signature)  # not tried again until the files change
        self.registry.fail(name, message)
        serving = self._version(name)
        log.warning("adapter %s refused: %s", name, message)
        kept = f"; still serving {serving}" if serving else ""
        return AdapterResult("refused", serving, message + kept)

    def _nothing_to_serve(self, name: str, message: str) -> AdapterResult:
        if self._version(name) is None:
            if self.settings.allow_base_only and name == self.settings.default_adapter:
                self.engine.call(self.engine.serve_base_only).result()
                return AdapterResult("loaded", "base", f"{message}: serving the base model (LORAPLANE_ALLOW_BASE_ONLY=1)")
            self.registry.fail(name, message)
        return AdapterResult("waiting", self._version(name), message)
