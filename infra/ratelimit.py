"""A token bucket: ``rate_per_second`` tokens a second, at most ``burst`` held. The ARM limiter
waits for its tokens (``acquire``); the API's write limit per token answers at once with how
long to wait (``take``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketSpec:
    rate_per_second: float
    burst: int


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
        self._tokens = float(spec.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token if there is one: 0. Else take nothing and return the seconds until
        there will be one."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.spec.burst, self._tokens + (now - self._updated) * self.spec.rate_per_second)
            self._updated = now
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
