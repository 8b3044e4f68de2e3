"""One client-side rate limiter for every ARM call loraplane makes, shared by all workers.

Token buckets by kind of call, sized to stay inside ARM's own throttling limits (reads 25/s
after a burst of 250, writes and deletes 10/s after 200): the same rates, and bursts a tenth
smaller (225, 180, 180). With equal buckets on both sides, a call arriving a few milliseconds
early found ARM's bucket empty (one 429 in a thousand creates); the margin absorbs that jitter.
Each attempt, retries included, takes a token; a 429 is then waited out by the SDK's retry
policy, which honours Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

from infra.ratelimit import BucketSpec, TokenBucket

__all__ = ["DEFAULT_LIMITS", "ArmLimiter", "BucketSpec", "LimiterPolicy", "TokenBucket", "kind_of"]


DEFAULT_LIMITS = {
    "read": BucketSpec(25.0, 225),
    "write": BucketSpec(10.0, 180),
    "delete": BucketSpec(10.0, 180),
}


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
