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
resync interval) plus one resync. While a group's list is being made, the list before it
serves other readers if it is at most twice ``max_age`` old, so that a list of thousands of
apps does not stall every worker at once.

A read that says what the last one did keeps the object read before, and its ``version``: a
pass can tell from the versions alone that nothing it judged changed. What has not been read
for ``retention`` seconds (a deleted deployment's resources, a group no one names any more) is
forgotten, so the inventory holds what the living deployments read, not everything ever read.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from state.shared_strings import shared

Resource = dict[str, Any]
Made = TypeVar("Made")


class _Held:
    """Releases a lock already acquired, at the end of a ``with``."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


# Longer than any resync interval (a living deployment reads its resources at least once per
# resync) and than any operation's last read is needed for.
DEFAULT_RETENTION_SECONDS = 900.0


class Inventory:
    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic, retention: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.max_age, self.clock = max_age, clock
        self.retention = max(retention, 2 * max_age)
        self._read: dict[str, tuple[float, Resource | None]] = {}  # lower-case id -> (when, what)
        self._listed: dict[str, float] = {}  # lower-case scope (group id + type) -> when listed
        self._members: dict[str, set[str]] = {}  # lower-case scope -> the ids its last list held
        self._stale: set[str] = set()  # ids loraplane changed since it last read them
        self._versions: dict[str, int] = {}  # lower-case id -> the stamp of its last change
        self._stamp = 0
        self._swept = clock()
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

    def known(self, scope: str) -> list[Resource]:
        """Every resource the last list of ``scope`` held, as last read, without reading: e.g.
        the container apps of a group."""
        with self._lock:
            members = self._members.get(scope.lower().rstrip("/"), set())
            return [found[1] for key in members if (found := self._read.get(key)) is not None and found[1] is not None]

    def version(self, resource_id: str) -> int:
        """A number that changes whenever what was read of the resource did (0: never read)."""
        with self._lock:
            return self._versions.get(resource_id.lower(), 0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._read)

    def _fresh(self, key: str, max_age: float | None = None) -> tuple[bool, Resource | None]:
        with self._lock:
            if key in self._stale:
                return False, None
            found = self._read.get(key)
            if found is None or self.clock() - found[0] > (self.max_age if max_age is None else max_age):
                return False, None
            return True, found[1]

    def _keep(self, key: str, resource: Resource | None, at: float) -> None:
        with self._lock:
            self._keep_locked(key, resource, at)
            self._stale.discard(key)
            self._sweep_locked()

    def _keep_locked(self, key: str, resource: Resource | None, at: float) -> None:
        """A read of ``key``: when it says what the last one did, the object kept is the one
        read before (its identity, and its version, say nothing changed)."""
        before = self._read.get(key)
        if before is not None and before[1] == resource:
            self._read[key] = (at, before[1])
            return
        # Kept for as long as the deployment lives: its strings shared with the other resources'
        # (their keys, the shared resources' ids), not held again for each.
        self._read[key] = (at, shared(resource))
        self._stamp += 1
        self._versions[key] = self._stamp

    def _newer_locked(self, key: str, than: float) -> bool:
        found = self._read.get(key)
        return found is not None and found[0] > than

    def _sweep_locked(self) -> None:
        """Forget what was not read for ``retention`` seconds (at most once a tenth of it)."""
        now = self.clock()
        if now - self._swept < self.retention / 10:
            return
        self._swept = now
        old = now - self.retention
        for key in [k for k, (at, _) in self._read.items() if at < old and k not in self._stale]:
            del self._read[key]
            self._versions.pop(key, None)
        for scope in [s for s, at in self._listed.items() if at < old]:
            del self._listed[scope]
            self._members.pop(scope, None)
            self._scope_locks.pop(scope, None)

    def get(self, resource_id: str, read: Callable[[], Resource | None], *, max_age: float | None = None) -> Resource | None:
        """The resource (None: it does not exist), from a read at most ``max_age`` old (the
        inventory's own unless the caller says)."""
        key = resource_id.lower()
        known, resource = self._fresh(key, max_age)
        return resource if known else self._read_alone(key, read)

    def _read_alone(self, key: str, read: Callable[[], Resource | None], scope: str | None = None) -> Resource | None:
        at = self.clock()
        resource = read()
        self._keep(key, resource, at)
        if scope is not None:
            with self._lock:  # one of the scope's now, until a list says otherwise
                members = self._members.setdefault(scope, set())
                (members.add if resource is not None else members.discard)(key)
        known, kept = self._fresh(key)
        return kept if known else resource

    def get_listed(
        self,
        resource_id: str,
        scope: str,
        read: Callable[[], Resource | None],
        read_all: Callable[[], Iterable[Resource]],
        *,
        max_age: float | None = None,
    ) -> Resource | None:
        """Like ``get``, but from a list of everything of its type in ``scope``, one list serving
        every resource there for ``max_age`` (what it did not hold did not exist when it was
        made); a resource loraplane changed is read alone. A caller's shorter ``max_age`` (for
        a resource Azure is still writing) has the list made again sooner, for everyone."""
        key, scope = resource_id.lower(), scope.lower()
        max_age = self.max_age if max_age is None else min(max_age, self.max_age)
        known, resource = self._fresh(key, max_age)
        if known:
            return resource
        with self._lock:
            stale = key in self._stale
            lock = self._scope_locks.setdefault(scope, threading.Lock())
        if not stale:
            if not lock.acquire(blocking=False):
                # The scope is being listed (10 pages a second for 1,000 apps): its last list
                # serves meanwhile, up to twice max_age old, rather than every worker waiting.
                known, resource = self._fresh(key, max_age=2 * max_age)
                if known:
                    return resource
                lock.acquire()
            with _Held(lock):  # one list at a time per scope: the workers behind it use its answer
                with self._lock:
                    listed = self._listed.get(scope)
                if listed is None or self.clock() - listed > max_age:
                    listed = self.clock()
                    found = {str(item["id"]).lower(): item for item in read_all()}
                    with self._lock:
                        self._listed[scope] = listed
                        # A read newer than the list (a write's answer, a read alone meanwhile)
                        # says more than the list does: the list does not undo it.
                        for item_key, item in found.items():
                            if item_key not in self._stale and not self._newer_locked(item_key, listed):
                                self._keep_locked(item_key, item, listed)
                        # What the scope held before and the list no longer holds is gone.
                        for item_key in self._members.get(scope, set()) - found.keys():
                            if item_key not in self._stale and not self._newer_locked(item_key, listed):
                                self._keep_locked(item_key, None, listed)
                        self._members[scope] = set(found)
                        self._sweep_locked()
                with self._lock:
                    # Listed within max_age, and not read since: it was not in the list.
                    if key not in self._stale and (key not in self._read or self._read[key][0] < listed):
                        self._keep_locked(key, None, listed)
            known, resource = self._fresh(key, max_age)
            if known:
                return resource
        return self._read_alone(key, read, scope)


class ListedPages(Generic[Made]):
    """The pages of the groups' lists as ARM last answered them, each with what was made of
    it. A page that says, byte for byte, what it said the last time is what was made of it
    then: no JSON parsed, no app compared. At steady state that is every page (a list of 1,000
    apps is about 3 MB of JSON, listed every ``max_age``). A page is known by its url and a
    digest of its bytes; a page not asked for in ``retention`` seconds is forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, retention: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.clock, self.retention = clock, retention
        self._pages: dict[str, tuple[bytes, Made, float]] = {}  # url -> (digest, made, when last asked)
        self._swept = clock()
        self._lock = threading.Lock()

    def made(self, url: str, content: bytes, make: Callable[[bytes], Made], settle: Callable[[Made], Made] | None = None) -> Made:
        """What ``make`` made of the page when its bytes were these, else made now. ``settle``
        may replace what was made, when the page is the same again, with what stands for it
        now (the same objects the inventory keeps, rather than equal copies)."""
        digest = hashlib.blake2b(content, digest_size=16).digest()
        now = self.clock()
        with self._lock:
            self._sweep_locked(now)
            kept = self._pages.get(url)
        if kept is not None and kept[0] == digest:
            settled = settle(kept[1]) if settle is not None else kept[1]
            with self._lock:
                self._pages[url] = (digest, settled, now)
            return settled
        made = make(content)
        with self._lock:
            self._pages[url] = (digest, made, now)
        return made

    def _sweep_locked(self, now: float) -> None:
        if now - self._swept >= self.retention / 10:
            self._swept = now
            for old in [url for url, (_, _, at) in self._pages.items() if now - at > self.retention]:
                del self._pages[old]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)
