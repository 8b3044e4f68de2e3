"""What the provider last read of each Azure resource, so that reads scale with resource groups
rather than with deployments.

ARM gives a subscription 25 reads a second. Reading each of a deployment's seven resources on
every resync spends 7,000 reads on 1,000 deployments: more than four minutes of the budget for
each 30-second resync. So:

- the container apps of a resource group are read with one paged list (100 a page), shared by
  every deployment in the group for ``max_age`` seconds;
- any other resource read is kept for ``max_age`` seconds, so deployments that share a storage
  account or an environment read it once between them;
- a resource loraplane writes (or whose operation ends) is marked, and its next observation
  reads it afresh, alone: our own changes are never judged on a stale copy.

A change made in Azure by someone else is therefore seen within ``max_age`` (kept below the
resync interval) plus one resync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

Resource = dict[str, Any]


class Inventory:
    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._read: dict[str, tuple[float, Resource | None]] = {}  # lower-case id -> (when, what)
        self._listed: dict[str, float] = {}  # lower-case scope (group id + type) -> when listed
        self._stale: set[str] = set()  # ids loraplane changed since it last read them
        self._lock = threading.Lock()
        self._scope_locks: dict[str, threading.Lock] = {}

    def touched(self, resource_id: str) -> None:
        """loraplane changed it (or an operation on it ended): read it afresh next time."""
        with self._lock:
            self._stale.add(resource_id.lower())

    def read_now(self, resource_id: str, resource: Resource | None) -> None:
        """What Azure answered just now for it (an operation's final result): no read needed."""
        self._keep(resource_id.lower(), resource, self.clock())

    def last(self, resource_id: str) -> Resource | None:
        """The last read of it, however old, without reading (None if never read): for a
        resource whose operation is still running, the operation says how it goes."""
        with self._lock:
            found = self._read.get(resource_id.lower())
        return found[1] if found is not None else None

    def known(self, prefix: str) -> list[Resource]:
        """Every resource whose id starts with ``prefix`` (lower case), as last read, without
        reading: e.g. the container apps of a group from its last list."""
        with self._lock:
            return [resource for key, (_, resource) in self._read.items() if key.startswith(prefix) and resource is not None]

    def _fresh(self, key: str) -> tuple[bool, Resource | None]:
        with self._lock:
            if key in self._stale:
                return False, None
            found = self._read.get(key)
            if found is None or self.clock() - found[0] > self.max_age:
                return False, None
            return True, found[1]

    def _keep(self, key: str, resource: Resource | None, at: float) -> None:
        with self._lock:
            self._read[key] = (at, resource)
            self._stale.discard(key)

    def get(self, resource_id: str, read: Callable[[], Resource | None]) -> Resource | None:
        """The resource (None: it does not exist), from a read at most ``max_age`` old."""
        key = resource_id.lower()
        known, resource = self._fresh(key)
        return resource if known else self._read_alone(key, read)

    def _read_alone(self, key: str, read: Callable[[], Resource | None]) -> Resource | None:
        at = self.clock()
        resource = read()
        self._keep(key, resource, at)
        return resource

    def get_listed(
        self, resource_id: str, scope: str, read: Callable[[], Resource | None], read_all: Callable[[], Iterable[Resource]]
    ) -> Resource | None:
        """Like ``get``, but from a list of everything of its type in ``scope``, one list serving
        every resource there for ``max_age`` (what it did not hold did not exist when it was
        made); a resource loraplane changed is read alone."""
        key, scope = resource_id.lower(), scope.lower()
        known, resource = self._fresh(key)
        if known:
            return resource
        with self._lock:
            stale = key in self._stale
            lock = self._scope_locks.setdefault(scope, threading.Lock())
        if not stale:
            with lock:  # one list at a time per scope: the workers behind it use its answer
                with self._lock:
                    listed = self._listed.get(scope)
                if listed is None or self.clock() - listed > self.max_age:
                    listed = self.clock()
                    found = {str(item["id"]).lower(): item for item in read_all()}
                    with self._lock:
                        self._listed[scope] = listed
                        for item_key, item in found.items():
                            if item_key not in self._stale:
                                self._read[item_key] = (listed, item)
                        # What the scope held before and the list no longer holds is gone.
                        for item_key in [k for k in self._read if _directly_in(k, scope) and k not in found and k not in self._stale]:
                            self._read[item_key] = (listed, None)
                with self._lock:
                    # Listed within max_age, and not read since: it was not in the list.
                    if key not in self._stale and (key not in self._read or self._read[key][0] < listed):
                        self._read[key] = (listed, None)
            known, resource = self._fresh(key)
            if known:
                return resource
        return self._read_alone(key, read)


def _directly_in(key: str, scope: str) -> bool:
    """Whether the resource id ``key`` is a resource of the list ``scope`` (not of a child)."""
    return key.startswith(scope) and key[len(scope) : len(scope) + 1] == "/" and "/" not in key[len(scope) + 1 :]
