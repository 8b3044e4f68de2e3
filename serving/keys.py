"""Inference keys: who may call this app, how much, and how much each one used.

loraplane writes the keys' SHA-256 hashes and limits to a file on the share (``keys.json``,
replaced whole), which this app reads again when it changes, so a key made or revoked takes
effect within ``refresh_seconds`` on every replica, with no restart. With a keys file set, every
route but the probes (and the reload endpoint, which has its own admin token) needs
``Authorization: Bearer KEY``, as the OpenAI SDKs send it; a missing file lets nobody in.

Limits are OpenAI's: requests and tokens a minute per key, each a bucket that refills
continuously; past one, 429 with ``Retry-After`` and the ``x-ratelimit-*`` headers OpenAI
sends. Tokens are charged when a generation ends (prompt and completion), so a key may overdraw
by one request and then waits until the bucket is positive again.

What each key used is counted on /metrics and written, summed since this process started, to
``usage/<replica>-<start>.json`` beside the keys file (serving.reports), where loraplane adds
the replicas up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("loraplane.serving.keys")


@dataclass(frozen=True)
class Key:
    name: str
    sha256: str
    rpm: int | None = None
    tpm: int | None = None
    expires_at: datetime | None = None


class Refused(Exception):
    """Why a request's key is not let in: its HTTP status, the OpenAI error's code and type,
    and the headers to send."""

    def __init__(self, status: int, message: str, code: str, type_: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.headers = status, message, code, type_, headers or {}


def _parse(document: object) -> dict[str, Key]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('expected {"keys": [...]}')
    keys: dict[str, Key] = {}
    for entry in document["keys"]:
        expires = entry.get("expiresAt")
        keys[str(entry["sha256"])] = Key(
            name=str(entry["name"]),
            sha256=str(entry["sha256"]),
            rpm=int(entry["rpm"]) if entry.get("rpm") else None,
            tpm=int(entry["tpm"]) if entry.get("tpm") else None,
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )
    return keys


class KeyRing:
    """The keys in the file, read again when its size or modification time moves (looked at
    no more often than every ``refresh_seconds``). A file that cannot be read keeps the keys
    read before; no file at all lets nobody in."""

    def __init__(
        self,
        path: Path,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path, self.refresh_seconds, self.clock, self.wall = path, refresh_seconds, clock, wall
        self._keys: dict[str, Key] = {}
        self._seen: tuple[int, int] | None = None
        self._looked_at = -math.inf
        self._missing = True
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._looked_at < self.refresh_seconds:
            return
        self._looked_at = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._keys, self._seen, self._missing = {}, None, True
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        try:
            keys = _parse(json.loads(self.path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the keys file %s cannot be read (%s); keeping the %d keys read before", self.path, exc, len(self._keys))
            return
        self._keys, self._seen, self._missing = keys, seen, False
        log.info("inference keys: %d from %s", len(keys), self.path)

    def check(self, authorization: str | None) -> Key:
        """The key this Authorization header carries; else Refused (401)."""
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Refused(
                401,
                "this deployment needs an inference key: send 'Authorization: Bearer <key>' (api_key in the OpenAI SDKs); "
                "make one with 'loraplane keys create --deployment NAME --name WHO'",
                "invalid_api_key",
                "invalid_request_error",
            )
        digest = hashlib.sha256(secret.encode()).hexdigest()
        with self._lock:
            self._refresh()
            key = next((k for h, k in self._keys.items() if hmac.compare_digest(h, digest)), None)
            missing = self._missing
        if key is None:
            why = "no inference keys are set up for this deployment yet" if missing else "the key is not valid: it was revoked or mistyped"
            raise Refused(401, f"{why}; make one with 'loraplane keys create'", "invalid_api_key", "invalid_request_error")
        if key.expires_at is not None and key.expires_at <= self.wall():
            raise Refused(401, f"the key {key.name!r} expired at {key.expires_at.isoformat()}", "invalid_api_key", "invalid_request_error")
        return key


@dataclass
class _Bucket:
    """``per_minute`` a minute, refilled continuously, at most ``per_minute`` held."""

    per_minute: int
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(float(self.per_minute), self.level + (now - self.at) * self.per_minute / 60.0)
        self.at = now

    def seconds_until(self, amount: float) -> float:
        return max(0.0, (amount - self.level) * 60.0 / self.per_minute)


def _duration(seconds: float) -> str:
    """OpenAI's reset form: 1s, 6m0s, 20ms."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


@dataclass
class _Counts:
    name: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refused: int = 0


@dataclass
class KeyLimits:
    """Requests and tokens a minute per key, and what each key used."""

    registry: CollectorRegistry
    clock: Callable[[], float] = time.monotonic
    _requests: dict[str, _Bucket] = field(default_factory=dict)
    _tokens: dict[str, _Bucket] = field(default_factory=dict)
    _counts: dict[str, _Counts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.requests_total = Counter(
            "loraplane_serving_key_requests", "Requests let in, by inference key", ["key"], registry=self.registry
        )
        self.tokens_total = Counter(
            "loraplane_serving_key_tokens", "Tokens served, by inference key and kind", ["key", "kind"], registry=self.registry
        )
        self.refused_total = Counter(
            "loraplane_serving_key_refused", "Requests refused past a key's limits", ["key", "limit"], registry=self.registry
        )

    def _bucket(self, buckets: dict[str, _Bucket], key: str, per_minute: int, now: float) -> _Bucket:
        bucket = buckets.get(key)
        if bucket is None or bucket.per_minute != per_minute:  # new, or its limit changed
            bucket = buckets[key] = _Bucket(per_minute, float(per_minute), now)
        bucket.refill(now)
        return bucket

    def admit(self, key: Key) -> dict[str, str]:
        """Let one request of ``key`` in (the headers to answer with), or Refused (429)."""
        now = self.clock()
        with self._lock:
            counts = self._counts.setdefault(key.sha256, _Counts(key.name))
            headers: dict[str, str] = {}
            requests = self._bucket(self._requests, key.name, key.rpm, now) if key.rpm else None
            tokens = self._bucket(self._tokens, key.name, key.tpm, now) if key.tpm else None
            waits: list[tuple[str, float]] = []
            if requests is not None and requests.level < 1:
                waits.append(("requests", requests.seconds_until(1)))
            if tokens is not None and tokens.level <= 0:
                waits.append(("tokens", tokens.seconds_until(1)))
            if requests is not None and not waits:
                requests.level -= 1
            for kind, bucket in (("requests", requests), ("tokens", tokens)):
                if bucket is not None:
                    headers[f"x-ratelimit-limit-{kind}"] = str(bucket.per_minute)
                    headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
                    headers[f"x-ratelimit-reset-{kind}"] = _duration(bucket.seconds_until(bucket.per_minute))
            if waits:
                counts.refused += 1
                kind, wait = max(waits, key=lambda item: item[1])
                self.refused_total.labels(key.name, kind).inc()
                limit = key.rpm if kind == "requests" else key.tpm
                raise Refused(
                    429,
                    f"rate limit reached for key {key.name!r}: {limit} {kind} a minute; retry in {_duration(wait)}",
                    "rate_limit_exceeded",
                    kind,
                    {**headers, "retry-after": str(max(1, math.ceil(wait)))},
                )
            counts.requests += 1
        self.requests_total.labels(key.name).inc()
        return headers

    def charge(self, key: Key, prompt_tokens: int, completion_tokens: int) -> None:
        """A generation of ``key`` ended: its tokens count against the key's tokens a minute."""
        with self._lock:
            counts = self._counts.setdefault(key.sha256, _Counts(key.name))
            counts.prompt_tokens += prompt_tokens
            counts.completion_tokens += completion_tokens
            if key.tpm:
                self._bucket(self._tokens, key.name, key.tpm, self.clock()).level -= prompt_tokens + completion_tokens
        self.tokens_total.labels(key.name, "prompt").inc(prompt_tokens)
        self.tokens_total.labels(key.name, "completion").inc(completion_tokens)

    def usage(self) -> dict[str, dict[str, int | str]]:
        """What each key used, by the first 16 digits of its hash (a key revoked and made again
        under the same name is another key), with its name."""
        with self._lock:
            return {
                digest[:16]: {
                    "name": c.name,
                    "requests": c.requests,
                    "promptTokens": c.prompt_tokens,
                    "completionTokens": c.completion_tokens,
                    "refused": c.refused,
                }
                for digest, c in self._counts.items()
            }
