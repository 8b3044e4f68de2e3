"""A work queue keyed by deployment name, in the manner of client-go's workqueue.

- a key is handed to one worker at a time; adding it while it is being worked on marks it
  dirty, and it comes back once the worker is done;
- adding a key that is already waiting does nothing: wake-ups collapse;
- ``add_after`` holds a key back until a time, for retries and requeues.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class WorkQueue:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._waiting: set[str] = set()  # in _ready
        self._processing: set[str] = set()
        self._dirty: set[str] = set()  # added while processing
        self._due: dict[str, float] = {}  # held back until
        self._heap: list[tuple[float, str]] = []
        self._shutting_down = False

    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutting_down:
            return
        self._due.pop(key, None)
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._ready.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutting_down or key in self._waiting:
                return
            due = self.clock() + delay
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, key))
            self._cond.notify()

    def has_pending_retry(self, key: str) -> bool:
        with self._cond:
            return key in self._due

    def _promote_due_locked(self) -> float | None:
        """Move keys whose time has come to the ready line; return seconds to the next one."""
        now = self.clock()
        while self._heap:
            due, key = self._heap[0]
            if self._due.get(key) != due:  # superseded by an earlier add or add_after
                heapq.heappop(self._heap)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._due[key]
            self._add_locked(key)
        return None

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to work on, or None on shutdown or when ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                next_due = self._promote_due_locked()
                if self._ready:
                    key = self._ready.popleft()
                    self._waiting.discard(key)
                    self._processing.add(key)
                    return key
                if self._shutting_down:
                    return None
                wait = next_due
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_locked(key)

    def shut_down(self) -> None:
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()

    def depth(self) -> int:
        """Keys waiting to be worked on, now or later."""
        with self._cond:
            return len(self._ready) + len(self._due)

    def busy(self) -> int:
        with self._cond:
            return len(self._processing)


class Backoff:
    """Per-key exponential backoff with jitter: base, doubling, capped; reset on success."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 300.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self.rng = rng or random.Random()
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def next_delay(self, key: str) -> float:
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self.cap, self.base * (2**failures))
        spread = delay * self.jitter
        return max(0.0, min(self.cap, delay + self.rng.uniform(-spread, spread)))

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
