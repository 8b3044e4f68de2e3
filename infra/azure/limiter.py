"""The client-side limiter for every ARM call loraplane makes: token buckets as ARM keeps them.

ARM throttles with token buckets per region, per subscription, per service principal and per
kind of operation: reads 250 then 25/s, writes and deletes 200 then 10/s
(https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling,
"Regional throttling and token bucket algorithm"; one loraplane calls one region's ARM). So
there is one set of buckets per subscription and principal, each told from the request
itself: the subscription from its URL (a request without one is tenant-level, and tenant
limits are the same numbers), the principal from the ``oid`` of its bearer token. A team
spread over ten subscriptions gets ten budgets, and a subscription that is spent holds back
only its own deployments.

The rates are ARM's, the bursts a tenth smaller (225, 180, 180): with equal buckets on both
sides a call arriving a few milliseconds early found ARM's bucket empty (one 429 in a thousand
creates); the margin absorbs that jitter. Each attempt, retries included, takes a token.

A reconcile worker never waits for a token (``infra.ratelimit.fail_fast``): its pass ends with
``Throttled`` and the delay of a ticket for the next free one, and the loop requeues it. Other
threads (an operation's poller) wait. A 429 from ARM anyway (another client spends the same
budget) empties the bucket for its Retry-After.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

from infra.ratelimit import BucketSpec, Throttled, TokenBucket, failing_fast

__all__ = ["DEFAULT_LIMITS", "TENANT", "ArmLimiter", "BucketSpec", "LimiterPolicy", "TokenBucket", "kind_of", "scope_of"]


DEFAULT_LIMITS = {
    "read": BucketSpec(25.0, 225),
    "write": BucketSpec(10.0, 180),
    "delete": BucketSpec(10.0, 180),
}
TENANT = "tenant"  # the scope of a request that names no subscription
_SUBSCRIPTION = re.compile(r"/subscriptions/([^/?#]+)", re.IGNORECASE)
_DEFAULT_RETRY_AFTER = 5.0


def kind_of(method: str) -> str:
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "read"
    if method == "DELETE":
        return "delete"
    return "write"


def principal_of(authorization: str | None) -> str:
    """The principal a bearer token stands for (its ``oid`` claim; ARM keys its buckets by it),
    read without verifying (only to pick a bucket); "" when it is not a JWT that says."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return ""
    parts = authorization[7:].split(".")
    if len(parts) != 3:
        return ""
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return ""
    return str(claims.get("oid") or claims.get("appid") or "") if isinstance(claims, dict) else ""


def scope_of(url: str) -> str:
    """The subscription a request is counted against (lower case), or ``TENANT``."""
    match = _SUBSCRIPTION.search(url)
    return match.group(1).lower() if match else TENANT


class ArmLimiter:
    def __init__(
        self,
        limits: dict[str, BucketSpec] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.specs = {**DEFAULT_LIMITS, **(limits or {})}
        self.clock, self.sleep = clock, sleep
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}  # (subscription, principal, kind)
        self._principals: dict[str, str] = {}  # bearer token -> principal (tokens last an hour)
        self._lock = threading.Lock()

    def bucket(self, subscription: str, principal: str, kind: str) -> TokenBucket:
        key = (subscription.lower(), principal, kind)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.specs[kind], clock=self.clock, sleep=self.sleep)
            return bucket

    def principal(self, authorization: str | None) -> str:
        if not authorization:
            return ""
        with self._lock:
            known = self._principals.get(authorization)
        if known is None:
            known = principal_of(authorization)
            with self._lock:
                if len(self._principals) >= 64:  # tokens are renewed: keep the recent ones
                    self._principals.clear()
                self._principals[authorization] = known
        return known

    def acquire(self, method: str, subscription: str = TENANT, principal: str = "") -> float:
        """A token for one call: waited for, or, on a thread that must not wait, ``Throttled``
        with the time of a ticket for the next one. Returns the seconds waited."""
        kind = kind_of(method)
        bucket = self.bucket(subscription, principal, kind)
        holder = failing_fast()
        if holder is None:
            return bucket.acquire()
        delay = bucket.reserve(holder)
        if delay > 0:
            where = "the tenant" if subscription == TENANT else f"subscription {subscription}"
            raise Throttled(
                f"waiting for ARM's {kind} budget of {where} ({bucket.spec.rate_per_second:g}/s): "
                "this deployment's next call goes when a token is there",
                delay=delay,
            )
        return 0.0

    def told_throttled(self, method: str, subscription: str, principal: str, retry_after: float) -> None:
        """ARM answered 429: its budget is spent for ``retry_after`` seconds, for every caller."""
        self.bucket(subscription, principal, kind_of(method)).drain(retry_after)

    def policy(self) -> LimiterPolicy:
        return LimiterPolicy(self)


class LimiterPolicy(HTTPPolicy):
    """An azure-core pipeline policy: every attempt takes a token of its kind, from the buckets
    of the subscription and principal it is for. Install it with ``per_retry_policies`` (after
    authentication, so the token is there; retries are limited too)."""

    def __init__(self, limiter: ArmLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def send(self, request: PipelineRequest) -> PipelineResponse:
        http = request.http_request
        subscription = scope_of(http.url)
        principal = self.limiter.principal(http.headers.get("Authorization"))
        self.limiter.acquire(http.method, subscription, principal)
        response = self.next.send(request)
        if response.http_response.status_code == 429:
            retry_after = _seconds(response.http_response.headers.get("Retry-After"))
            self.limiter.told_throttled(http.method, subscription, principal, retry_after)
            if failing_fast() is not None:
                # The SDK's retry would sleep on this worker: the pass is requeued instead.
                raise Throttled(f"ARM answered 429 for subscription {subscription}: retrying after {retry_after:g}s", delay=retry_after)
        return response


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else _DEFAULT_RETRY_AFTER
    except ValueError:
        return _DEFAULT_RETRY_AFTER
