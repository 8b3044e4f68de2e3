"""A token bucket: ``rate_per_second`` tokens a second, at most ``burst`` held.

Three ways to take a token:
- ``acquire`` waits for it (a thread of its own may wait: an operation's poller);
- ``take`` answers at once with how long to wait (the API's write limit per token);
- ``reserve`` is for reconcile workers, which must not wait: a caller that finds the bucket
  empty is given a ticket for a token at a time to come (the token is counted as taken from
  then), and is told when; coming back at that time it finds its token kept for it. Tickets
  follow one another at the bucket's rate, so a thousand callers turned away are told to come
  back one after the other, not all at the next token (the generic cell rate algorithm).

``fail_fast`` marks the current thread as one that must not wait: the limiters built on these
buckets then raise ``Throttled`` (a TemporaryError carrying the delay) instead of sleeping, and
the reconcile loop requeues the pass with that delay and takes its next key. ``may_wait``
lifts that for work that would be lost if broken off: a list's pages after its first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from infra.errors import TemporaryError

# A ticket not redeemed this long after its time has been abandoned (the deployment went, or
# its pass went another way): its token is given back.
TICKET_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class BucketSpec:
    rate_per_second: float
    burst: int


class Throttled(TemporaryError):
    """A call that would have to wait for a token, from a thread that must not wait: retry the
    whole pass after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message, reason="Throttled", delay=delay)


class TokenBucket:
    def __init__(
        self,
        spec: BucketSpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if spec.rate_per_second <= 0 or spec.burst < 1:
            raise ValueError("a bucket needs a positive rate and a burst of at least 1")
        self.spec, self.clock, self.sleep = spec, clock, sleep
        self._tokens = float(spec.burst)  # below zero: owed to the tickets given out
        self._updated = clock()
        self._tickets: dict[str, float] = {}  # holder -> when its token is there
        self._lock = threading.Lock()

    def _refill_locked(self) -> float:
        now = self.clock()
        self._tokens = min(self.spec.burst, self._tokens + (now - self._updated) * self.spec.rate_per_second)
        self._updated = now
        return now

    def take(self) -> float:
        """Take one token if there is one: 0. Else take nothing and return the seconds until
        there will be one."""
        with self._lock:
            self._refill_locked()
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.spec.rate_per_second

    def acquire(self) -> float:
        """Take one token, waiting for it if need be; returns the seconds waited."""
        waited = 0.0
        while True:
            wait = self.take()
            if wait == 0.0:
                return waited
            # At least a millisecond: a coarse clock must not turn this into a busy spin.
            wait = max(0.001, wait)
            self.sleep(wait)
            waited += wait

    def reserve(self, holder: str) -> float:
        """A token for ``holder`` now (0), or the seconds until the one its ticket keeps for
        it: a ticket given now, or the one it holds."""
        with self._lock:
            now = self._refill_locked()
            due = self._tickets.get(holder)
            if due is not None:
                if due <= now:
                    del self._tickets[holder]
                    return 0.0  # counted as taken when the ticket was given
                return due - now
            self._drop_abandoned_locked(now)
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            # Taken now, on credit: the bucket is back at zero when this token is there.
            self._tokens -= 1
            due = now - self._tokens / self.spec.rate_per_second
            self._tickets[holder] = due
            return due - now

    def _drop_abandoned_locked(self, now: float) -> None:
        if len(self._tickets) < 64 and not any(due + TICKET_GRACE_SECONDS < now for due in self._tickets.values()):
            return
        for holder, due in list(self._tickets.items()):
            if due + TICKET_GRACE_SECONDS < now:
                del self._tickets[holder]
                self._tokens = min(self.spec.burst, self._tokens + 1)  # the token kept for it

    def drain(self, seconds: float) -> None:
        """The service said it is out of budget for ``seconds`` (a 429 with Retry-After): no
        token until then, for anyone."""
        with self._lock:
            self._refill_locked()
            self._tokens = min(self._tokens, -seconds * self.spec.rate_per_second)

    def tickets(self) -> int:
        with self._lock:
            return len(self._tickets)


_local = threading.local()


@contextmanager
def _held_by(holder: str | None) -> Iterator[None]:
    """Within this block, this thread works for ``holder`` (None: it may wait)."""
    previous = getattr(_local, "holder", None)
    _local.holder = holder
    try:
        yield
    finally:
        _local.holder = previous


def fail_fast(holder: str) -> AbstractContextManager[None]:
    """Within this block, this thread does not wait for tokens: ``holder`` (a deployment's
    name) is who a ticket is kept for, and ``Throttled`` says when to come back."""
    return _held_by(holder)


def may_wait() -> AbstractContextManager[None]:
    """Within this block, this thread waits for its tokens even inside ``fail_fast``: for work
    that is lost if broken off halfway (the later pages of a list that every pass shares)."""
    return _held_by(None)


def failing_fast() -> str | None:
    """Who this thread works for when it must not wait (see ``fail_fast``); None: it may wait."""
    return getattr(_local, "holder", None)
