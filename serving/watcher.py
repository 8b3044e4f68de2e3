"""Hot reload: poll the adapter folder, or the reconciler's pointer file once one exists, and
swap in what is new.

SMB shares have no inotify, so this polls. A changed adapter folder is acted on only once its
files have stayed the same for one poll (a copy in progress is not an adapter). The reload
endpoint runs the same path at once. A refused adapter is not tried again until its files
(or the pointer) change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

from serving.adapters import AdapterError, inspect_adapter, read_pointer, stat_signature
from serving.engine import Engine
from serving.settings import ServingSettings

log = logging.getLogger("loraplane.serving")


@dataclass(frozen=True)
class ReloadResult:
    status: Literal["loaded", "unchanged", "refused", "waiting"]
    version: str | None
    message: str


class AdapterWatcher:
    def __init__(self, settings: ServingSettings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.registry = engine.registry
        self._last_seen: tuple | None = None  # the folder as the previous poll saw it
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
            if not self.settings.watch and not first:
                return  # what serves was decided at start; the reload endpoint can still act
            self._stop.wait(self.settings.watch_interval_seconds)

    def poll(self, *, force: bool = False) -> ReloadResult:
        with self._lock:
            if self.engine.base is None:
                return ReloadResult("waiting", None, "the base model is not loaded yet")
            if self.settings.version_dir is not None:
                return self._follow_version(force)
            if self.settings.pointer_file is not None:
                return self._follow_pointer(force)
            return self._follow_folder(force)

    def _follow_version(self, force: bool) -> ReloadResult:
        """The restart strategy: the process was started to serve one version, and serves it."""
        version, folder = self.settings.adapter_version, self.settings.version_dir
        assert version is not None and folder is not None
        active = self.registry.active
        if active is not None and active.version == version:
            return ReloadResult("unchanged", version, f"already serving {version}")
        signature = stat_signature(folder)
        if signature is None:
            return self._nothing_to_serve(f"adapter version {version} is not staged at {folder}")
        if not force and signature == self.registry.signature:
            return ReloadResult("unchanged", active.version if active else None, "refused before; waiting for a change")
        return self._load(folder, version, signature)

    def _follow_pointer(self, force: bool) -> ReloadResult:
        pointer = self.settings.pointer_file
        assert pointer is not None
        active = self.registry.active
        if not pointer.is_file():
            # No rollout has written it yet: serve the adapter folder meanwhile, as an app
            # without a reconciler would; from the first pointer on, the pointer decides.
            return self._follow_folder(force)
        signature = stat_signature(pointer.parent)
        previous, self._last_seen = self._last_seen, signature
        try:
            version, folder = read_pointer(pointer, self.settings.share_root)
        except AdapterError as exc:
            if signature != previous and not force:
                # Perhaps caught mid-write: judge it once it has stayed the same for a poll.
                return ReloadResult("waiting", active.version if active else None, str(exc))
            return self._refuse(str(exc), signature)
        if active is not None and active.version == version:
            return ReloadResult("unchanged", version, f"already serving {version}")
        if not force and signature == self.registry.signature:
            return ReloadResult("unchanged", active.version if active else None, "refused before; waiting for a change")
        return self._load(folder, version, signature)

    def _follow_folder(self, force: bool) -> ReloadResult:
        folder = self.settings.adapter_dir
        signature = stat_signature(folder)
        previous, self._last_seen = self._last_seen, signature
        active = self.registry.active
        if signature is None:
            return self._nothing_to_serve(f"no adapter at {folder}")
        if signature == self.registry.signature and not force:
            return ReloadResult("unchanged", active.version if active else None, "no change")
        if not force and signature != previous:
            return ReloadResult("waiting", None, "the adapter files are changing; waiting for them to settle")
        return self._load(folder, None, signature)

    def _load(self, folder, version: str | None, signature: tuple | None) -> ReloadResult:
        active = self.registry.active
        try:
            candidate = inspect_adapter(
                folder,
                version=version,
                model_dir=self.settings.model_dir,
                model_name=self.engine.model_name,
                share_root=self.settings.share_root,
            )
            if active is not None and version is None and candidate.fingerprint == active.fingerprint:
                self.registry.signature = signature
                return ReloadResult("unchanged", active.version, f"already serving {active.version}")
            loaded = self.engine.call(lambda: self.engine.load_adapter(candidate)).result()
        except AdapterError as exc:
            return self._refuse(str(exc), signature)
        self.registry.signature = signature
        return ReloadResult("loaded", loaded.version, f"now serving {loaded.version}")

    def _refuse(self, message: str, signature: tuple | None) -> ReloadResult:
        self.registry.signature = signature  # not tried again until the files change
        self.registry.fail(message)
        active = self.registry.active
        log.warning("adapter refused: %s", message)
        kept = f"; still serving {active.version}" if active else ""
        return ReloadResult("refused", active.version if active else None, message + kept)

    def _nothing_to_serve(self, message: str) -> ReloadResult:
        if self.registry.active is None:
            if self.settings.allow_base_only:
                self.engine.call(self.engine.serve_base_only).result()
                return ReloadResult("loaded", "base", f"{message}: serving the base model (LORAPLANE_ALLOW_BASE_ONLY=1)")
            self.registry.fail(message)
        return ReloadResult("waiting", self.registry.active.version if self.registry.active else None, message)
