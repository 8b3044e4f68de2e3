"""Adapter folder listings, kept per share and folder so that a reconcile pass reads them from
memory.

The adapter poller lists each watched folder every ``pollSeconds`` of its adapters, once however
many deployments name it, and keeps the listing here. A pass that looks for a new adapter uses
the poller's listing while it is younger than the adapter's ``pollSeconds``: a change it could
see by listing again would have woken it already. It lists the folder itself only where no
poller keeps that folder fresh (a pass made outside the controller, or a folder the poller
cannot reach now), and when settling needs a listing made after a given moment; what it
lists is kept too, for the other deployments that name the folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from infra.provider import AdapterShare, ShareEntry, Target

ShareKey = tuple[str, ...]


def share_key(target: Target) -> ShareKey:
    """Which share a deployment's adapters are on: two deployments with the same key share
    listings and a client."""
    spec = target.spec
    if spec.local is not None and spec.target == "local":
        return ("local", spec.local.share_root)
    assert spec.azure is not None
    azure = spec.azure
    return ("azure", azure.subscription_id.lower(), azure.resource_group.lower(), str(azure.storage_account), str(azure.file_share))


class FolderListings:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._kept: dict[tuple[ShareKey, str], tuple[float, list[ShareEntry] | None]] = {}  # -> (when listed, entries)
        self._lock = threading.Lock()

    def keep(self, key: ShareKey, folder: str, entries: list[ShareEntry] | None, listed_at: float) -> None:
        """What the poller just listed."""
        with self._lock:
            self._kept[(key, folder)] = (listed_at, entries)

    def retain(self, folders: Iterable[tuple[ShareKey, str]]) -> None:
        """Forget the folders no deployment names any more (the poller's watch list)."""
        wanted = set(folders)
        with self._lock:
            for folder in [f for f in self._kept if f not in wanted]:
                del self._kept[folder]

    def list(
        self, share: AdapterShare, key: ShareKey, folder: str, *, max_age: float, listed_after: float | None = None
    ) -> list[ShareEntry] | None:
        """The folder's entries (None: no such folder): the poller's listing when it is at most
        ``max_age`` old and made after ``listed_after``, else a listing made now."""
        with self._lock:
            kept = self._kept.get((key, folder))
        if kept is not None:
            listed_at, entries = kept
            if self.monotonic() - listed_at <= max_age and (listed_after is None or listed_at >= listed_after):
                return entries
        listed_at = self.monotonic()
        entries = share.list(folder)
        # Kept for the other deployments that name the folder: between two of the poller's
        # listings, a folder is listed at most once per max_age however many passes ask.
        with self._lock:
            kept = self._kept.get((key, folder))
            if kept is None or kept[0] < listed_at:
                self._kept[(key, folder)] = (listed_at, entries)
        return entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)
