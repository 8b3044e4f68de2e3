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

from serving.adapters import AdapterError, Loaded, PointedAdapter, PointedVersion, inspect_adapter, read_pointer, stat_signature
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
        self._pointed: dict[str, PointedAdapter] = {}  # the pointer as this poll read it
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
            self._pointed = {}
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
                results[name] = self._serve_pinned(name, version, force, self._pointed.get(name))
            self.registry.looked = True
            return ReloadResult.of(results, self.registry.default)

    def _keep(self, names: list[str]) -> None:
        drained = self.registry.ensure(names)
        if drained:
            self.engine.call(lambda: self.engine.unload_all(drained))

    def _serve_pinned(self, name: str, version: str, force: bool, pointed: PointedAdapter | None) -> AdapterResult:
        """The restart strategy: the process was started to serve one version, and serves it
        (with the versions the pointer loads beside it: one being gated)."""
        folder = self.settings.staged_dir(version)
        if folder is None:
            return self._nothing_to_serve(name, f"adapter version {version} is named, but LORAPLANE_ADAPTER_POINTER is not set")
        signature = stat_signature(folder)
        if signature is None:
            return self._nothing_to_serve(name, f"adapter version {version} is not staged at {folder}")
        beside = tuple(v for v in pointed.loaded if v.version != version) if pointed is not None else ()
        return self._follow(name, PointedAdapter(PointedVersion(version, folder), beside), signature, force)

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
        self._pointed = pointed
        return {name: self._follow(name, entry, signature, force) for name, entry in pointed.items() if name not in pinned}

    def _follow(self, name: str, entry: PointedAdapter, signature: tuple | None, force: bool) -> AdapterResult:
        """The adapter's versions as the pointer names them: each loaded (a refused one not
        tried again until the pointer changes), then all given their roles at once, so that a
        request never finds a version half-way into its role."""
        slot = self.registry.slot(name)
        standby = {v.version: v for v in entry.loaded}
        if (
            slot is not None
            and self._version(name) == entry.version
            and set(slot.standby) | set(slot.refused) == set(standby)
            and (slot.canary, slot.canary_weight) == ((entry.canary, entry.canary_weight) if entry.canary else (None, 0))
        ):
            return AdapterResult(
                "unchanged", entry.version, f"already serving {entry.version}" if entry.version else "nothing to serve yet"
            )
        if entry.active is not None and not force and self._tried.get(name) == (entry.version, signature):
            return AdapterResult("unchanged", self._version(name), "refused before; waiting for a change")
        # What serves now stays until the new version is loaded: refused, it keeps serving.
        active: Loaded | None = slot.active if slot is not None and entry.active is not None else None
        if entry.active is not None and entry.version != self._version(name):
            try:
                active = self._prepare(name, entry.active)
            except AdapterError as exc:
                return self._refuse(name, entry.version, str(exc), signature)
        loaded: list[Loaded] = []
        refused: dict[str, str] = {}
        for version in standby.values():
            try:
                loaded.append(self._prepare(name, version))
            except AdapterError as exc:
                refused[version.version] = str(exc)
        canary = (entry.canary, entry.canary_weight) if entry.canary is not None and entry.canary not in refused else None
        self.engine.arrange(name, active, loaded, canary)
        for refused_version, message in refused.items():
            self.registry.fail(name, message, refused_version)
            log.warning("adapter %s version %s (to load beside the one serving) refused: %s", name, refused_version, message)
        self._tried[name] = (entry.version, signature)
        beside = f"; loaded beside it: {', '.join(v.version for v in loaded)}" if loaded else ""
        split = f"; canary {canary[0]} at {canary[1]}%" if canary else ""
        refusals = f"; refused: {'; '.join(f'{v}: {m}' for v, m in refused.items())}" if refused else ""
        serving = f"now serving {entry.version}" if entry.version else "nothing to serve yet"
        return AdapterResult("refused" if refused else "loaded", entry.version, serving + beside + split + refusals)

    def _prepare(self, name: str, pointed: PointedVersion) -> Loaded:
        """A version the pointer names, checked and loaded into the model (on the engine's
        thread): the one already there when it is."""
        known = self.registry.find(name, pointed.version)
        if known is not None and known.path == pointed.folder:
            if not known.resident:  # unloaded to make room: its weights come back first
                self.engine.call(lambda: self.engine.make_resident(known)).result()
            return known
        candidate = inspect_adapter(
            pointed.folder,
            version=pointed.version,
            model_dir=self.settings.model_dir,
            model_name=self.engine.model_name,
            share_root=self.settings.share_root,
        )
        return self.engine.call(lambda: self.engine.prepare(candidate, name)).result()

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
