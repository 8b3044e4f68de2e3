"""Admission control: past what the process can serve, a request is refused at once (429 with
Retry-After, problem+json) rather than queued for seconds behind the others; a process that is
shutting down says so (503). The reconciler shares this process: a queue of requests it cannot
serve would only make every client, and it, wait.

Two limits, as two middlewares:

- ``InFlightLimit``, outermost: at most ``max_in_flight`` requests of the API at once (health,
  readiness and metrics are never refused; watch streams are capped by the watch hub).
- ``WriteRateLimit``, after the guard has found who asks: writes (POST, PUT, PATCH, DELETE
  under /v1, dry runs aside) per token, from a token bucket each, so one runaway script cannot
  take the capacity the team shares.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem_json
from infra.ratelimit import BucketSpec, TokenBucket

EXEMPT = ("/healthz", "/readyz", "/metrics")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class AdmissionLimits:
    max_in_flight: int = 8
    writes_per_second: float = 50.0
    write_burst: int = 100


# What the API reads as watch=true (pydantic's true strings): such a request streams for as
# long as the watch lasts, and the watch hub caps those; counted here, a few watches would
# hold every place in flight.
TRUE_STRINGS = frozenset({"1", "true", "on", "yes", "t", "y"})


def _is_watch(scope: Scope) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return any(key == "watch" and value.strip().lower() in TRUE_STRINGS for key, value in parse_qsl(query, keep_blank_values=True))


class InFlightLimit:
    def __init__(self, app: ASGIApp, *, limits: AdmissionLimits, state: AdmissionState) -> None:
        self.app, self.limits, self.state = app, limits, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT or _is_watch(scope):
            await self.app(scope, receive, send)
            return
        if self.state.closing:
            answer = problem_json(
                scope["path"],
                503,
                "Service unavailable",
                "this loraplane process is shutting down; retry in a moment (another replica, or this one restarted, will answer)",
                headers={"Retry-After": "5"},
            )
            await answer(scope, receive, send)
            return
        if self.state.in_flight >= self.limits.max_in_flight:
            answer = problem_json(
                scope["path"],
                429,
                "Too many requests",
                f"this loraplane process has {self.limits.max_in_flight} requests in flight, its limit "
                "(LORAPLANE_MAX_REQUESTS_IN_FLIGHT); retry after a second",
                headers={"Retry-After": "1"},
            )
            await answer(scope, receive, send)
            return
        self.state.in_flight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1


class AdmissionState:
    def __init__(self) -> None:
        self.in_flight = 0
        self.closing = False


class TokenBuckets:
    """A token bucket per holder (``infra.ratelimit``), made on its first write."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec, self.clock = BucketSpec(rate, burst), clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, holder: str) -> float:
        """0 when a token was taken; else how many seconds until one will be there."""
        with self._lock:
            bucket = self._buckets.get(holder)
            if bucket is None:
                bucket = self._buckets[holder] = TokenBucket(self.spec, clock=self.clock)
        return bucket.take()


class WriteRateLimit:
    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets) -> None:
        self.app, self.buckets = app, buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] in WRITES and path.startswith("/v1/") and not path.endswith("/plan"):
            identity = scope.get("state", {}).get("identity")
            holder = identity.name if identity is not None else "anonymous"
            wait = self.buckets.take(holder)
            if wait > 0:
                answer = problem_json(
                    path,
                    429,
                    "Too many requests",
                    f"token {holder!r} writes faster than {self.buckets.spec.rate_per_second:g} a second (burst {self.buckets.spec.burst}), "
                    f"the limit per token (LORAPLANE_WRITES_PER_SECOND); retry in {wait:.1f}s",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
