"""One client-side rate limiter for every ARM call loraplane makes, shared by all workers.

Token buckets by kind of call, sized to stay inside ARM's own throttling limits (reads 25/s
after a burst of 250, writes and deletes 10/s after 200): the same rates, and bursts a tenth
smaller (225, 180, 180). With equal buckets on both sides, a call arriving a few milliseconds
early found ARM's bucket empty (one 429 in a thousand creates); the margin absorbs that jitter.
Each attempt, retries included, takes a token; a 429 is then waited out by the SDK's retry
policy, which honours Retry-After.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy


@dataclass(frozen=True)
class BucketSpec:
    rate_per_second: float
    burst: int


DEFAULT_LIMITS = {
    "read": BucketSpec(25.0, 225),
    "write": BucketSpec(10.0, 180),
    "delete": BucketSpec(10.0, 180),
}


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

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.spec.burst, self._tokens + (now - self._updated) * self.spec.rate_per_second)
        self._updated = now

    def acquire(self) -> float:
        """Take one token, waiting for it if need be; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                # At least a millisecond: a coarse clock must not turn this into a busy spin.
                wait = max(0.001, (1 - self._tokens) / self.spec.rate_per_second)
            self.sleep(wait)
            waited += wait


def kind_of(method: str) -> str:
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "read"
    if method == "DELETE":
        return "delete"
    return "write"


class ArmLimiter:
    def __init__(
        self,
        limits: dict[str, BucketSpec] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        chosen = {**DEFAULT_LIMITS, **(limits or {})}
        self.buckets = {kind: TokenBucket(spec, clock=clock, sleep=sleep) for kind, spec in chosen.items()}

    def acquire(self, method: str) -> float:
        return self.buckets[kind_of(method)].acquire()

    def policy(self) -> LimiterPolicy:
        return LimiterPolicy(self)


class LimiterPolicy(HTTPPolicy):
    """An azure-core pipeline policy: every attempt waits for a token of its kind. Install it
    with ``per_retry_policies`` so that retries are limited too."""

    def __init__(self, limiter: ArmLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def send(self, request: PipelineRequest) -> PipelineResponse:
        self.limiter.acquire(request.http_request.method)
        return self.next.send(request)
