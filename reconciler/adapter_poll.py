"""Adapter detection between resyncs: each adapter folder is listed every
``pollSeconds`` of its adapter, and a folder whose listing changed wakes the deployments that
serve from it, whose next pass then settles, validates and stages what is new.

Listings are shared: a folder is listed once per interval however many deployments (or
adapters) name it, through one share client per share, and only its listing is read (names,
sizes, ETags or mtimes: no file content). Each listing is kept (``reconciler.listing``) for the
passes, which look for new adapters in it rather than listing the folder again. A listing that fails (no share yet, the share's
keys rotating) is skipped until its next turn; the resync still comes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from infra.provider import AdapterShare, Target
from reconciler.core import Reconciler, target_of
from reconciler.listing import ShareKey, share_key

log = logging.getLogger("loraplane.reconciler.poll")

Folders = tuple[tuple[str, float], ...]  # each adapter's folder and its pollSeconds


@dataclass
class FolderWatch:
    """One folder of one share, and who wants to hear when its listing changes."""

    interval: float
    due: float
    listing: tuple | None = None  # as last listed; None before the first listing
    listed: bool = False
    names: set[str] = field(default_factory=set)


class AdapterPoller:
    def __init__(
        self,
        reconciler: Reconciler,
        wake: Callable[[str], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.wake = wake
        self.monotonic = monotonic
        self._lock = threading.Lock()
        # name -> ((uid, generation), its share, its adapters' (folder, pollSeconds)): what the
        # poller needs of each deployment, not its whole Target (4 KB of models a deployment).
        self._followed: dict[str, tuple[tuple[str, int], ShareKey, Folders]] = {}
        self._watches: dict[tuple[ShareKey, str], FolderWatch] = {}
        self._via: dict[ShareKey, Target] = {}  # a target on each share, to open its client with
        self._shares: dict[ShareKey, AdapterShare] = {}
        self.listings = Counter(
            "loraplane_adapter_folder_listings",
            "Adapter folders listed between resyncs (each once per pollSeconds, however many deployments name it)",
            registry=registry or CollectorRegistry(),
        )

    # ------------------------------------------------------------------------- what to watch

    def refresh(self, desired: Mapping[str, tuple[str, int, bool, str]]) -> None:
        """Follow the deployments as they are (name -> (uid, generation, deleting, …), what
        the controller's timers read): a spec read again only when its generation moved."""
        followed: dict[str, tuple[tuple[str, int], ShareKey, Folders]] = {}
        read: dict[ShareKey, Target] = {}  # a target read now on each share
        for name, (uid, generation, deleting, *_rest) in desired.items():
            if deleting:
                continue
            known = self._followed.get(name)
            if known is not None and known[0] == (uid, generation):
                followed[name] = known
                continue
            try:
                target = target_of(self.reconciler.store.get(name))
            except Exception as exc:  # gone meanwhile, or a spec the reconciler reports on
                log.debug("not polling the adapters of %s: %s", name, exc)
                continue
            key = share_key(target)
            read.setdefault(key, target)
            folders = tuple((entry.path, float(entry.poll_seconds)) for entry in target.spec.adapter_entries(target.name))
            followed[name] = ((uid, generation), key, folders)
        watches: dict[tuple[ShareKey, str], FolderWatch] = {}
        via: dict[ShareKey, Target] = {}
        now = self.monotonic()
        for name, (_, key, folders) in followed.items():
            if key not in via:  # any target on the share opens its client: the key is the share
                via[key] = read.get(key) or self._via[key]
            for path, interval in folders:
                folder = (key, path)
                watch = watches.get(folder)
                if watch is None:
                    # The same watch goes on (its last listing is what a change is told from).
                    watch = self._watches.get(folder) or FolderWatch(interval=interval, due=now)
                    watch.names, watch.interval = set(), interval
                    watches[folder] = watch
                watch.names.add(name)
                watch.interval = min(watch.interval, interval)
                watch.due = min(watch.due, now + watch.interval)
        self.reconciler.rollout.listings.retain(watches)
        with self._lock:
            self._followed, self._watches, self._via = followed, watches, via
            gone = [key for key in self._shares if key not in via]
            closing = [self._shares.pop(key) for key in gone]
        for share in closing:
            with suppress(Exception):
                share.close()

    # ----------------------------------------------------------------------------- listing

    def poll(self) -> int:
        """List every folder that is due; wake who watches one whose listing changed. Returns
        how many folders were listed."""
        now = self.monotonic()
        with self._lock:
            due = [(folder, watch) for folder, watch in self._watches.items() if watch.due <= now]
        listed = 0
        for (key, path), watch in due:
            watch.due = now + watch.interval
            share = self._share(key)
            if share is None:
                continue
            listed_at = self.monotonic()
            try:
                entries = share.list(path)
            except Exception as exc:  # its next turn, or the resync, tries again
                log.debug("listing %s failed: %s", path, exc)
                self._drop_share(key)
                continue
            listed += 1
            self.listings.inc()
            self.reconciler.rollout.listings.keep(key, path, entries, listed_at)
            listing = tuple(sorted((e.name, e.size, e.etag, e.md5) for e in entries or [] if not e.is_dir)) if entries is not None else None
            changed = watch.listed and listing != watch.listing
            watch.listing, watch.listed = listing, True
            if changed:
                for name in sorted(watch.names):
                    self.wake(name)
        return listed

    def _share(self, key: ShareKey) -> AdapterShare | None:
        with self._lock:
            share, target = self._shares.get(key), self._via.get(key)
        if share is not None or target is None:
            return share
        try:
            opened: Any = self.reconciler.provider_for(target).share(target)
        except Exception as exc:
            log.debug("no share for %s yet: %s", target.name, exc)
            return None
        with self._lock:
            self._shares[key] = opened
        return opened

    def _drop_share(self, key: ShareKey) -> None:
        with self._lock:
            share = self._shares.pop(key, None)
        if share is not None:
            with suppress(Exception):
                share.close()

    def close(self) -> None:
        with self._lock:
            shares, self._shares = list(self._shares.values()), {}
        for share in shares:
            with suppress(Exception):
                share.close()
