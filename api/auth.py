"""Bearer tokens and roles: viewer reads; deployer also creates, changes and deletes
deployments and activates adapters; admin also manages tokens.

Every route states the role it needs with ``Depends(require(ROLE))`` and gets the caller's
``Identity`` (its name becomes ``metadata.owner`` and the audit's actor). Health, readiness,
metrics and the API docs need no token. With authentication off (``LORAPLANE_AUTH=off``, a
single-user local run) every caller is ``anonymous`` with the admin role.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.problems import ApiError
from state.access import AccessStore, hash_token

Role = Literal["viewer", "deployer", "admin"]
RANK: dict[str, int] = {"viewer": 0, "deployer": 1, "admin": 2}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="loraplane"'}


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


ANONYMOUS = Identity("anonymous", "admin")


class Authenticator:
    """Finds the token's holder in the database, and keeps what it found for ``cache_seconds``
    so that a client's next requests cost no lookup (a lookup was a trip to the thread pool and
    a query, about a tenth of what a GET cost). A token revoked here is forgotten at once; one
    revoked through another replica is refused here within ``cache_seconds``."""

    def __init__(
        self, access: AccessStore, *, cache_seconds: float = 1.0, capacity: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.access = access
        self.cache_seconds, self.capacity, self.clock = cache_seconds, capacity, clock
        self._known: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, authorization: str | None) -> Identity | None:
        """The holder of this token if it was found valid within ``cache_seconds``; else None
        (then ``identify`` looks, and says what is wrong)."""
        secret = _bearer_secret(authorization)
        if secret is None:
            return None
        key = hash_token(secret)
        with self._lock:
            known = self._known.get(key)
            if known is None:
                return None
            identity, found_at = known
            if self.clock() - found_at >= self.cache_seconds:
                del self._known[key]
                return None
            return identity

    async def find(self, authorization: str | None) -> Identity:
        """``identify`` for the event loop: the cached holder at once, else a lookup in the
        thread pool."""
        known = self.cached(authorization)
        return known if known is not None else await run_in_threadpool(self.identify, authorization)

    def forget(self, token_name: str) -> None:
        with self._lock:
            for key in [key for key, (identity, _) in self._known.items() if identity.name == token_name]:
                del self._known[key]

    def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            raise ApiError(
                401,
                "Unauthorized",
                "this call needs a token: send 'Authorization: Bearer <token>' (the CLI reads LORAPLANE_TOKEN); "
                "an admin makes one with 'loraplane token create'",
                headers=CHALLENGE,
            )
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "Unauthorized", "the Authorization header must be 'Bearer <token>'", headers=CHALLENGE)
        row = self.access.find_token(secret.strip())
        if row is None:
            raise ApiError(401, "Unauthorized", "the token is not valid: it was revoked or mistyped", headers=CHALLENGE)
        identity = Identity(row.name, row.role)
        if self.cache_seconds > 0:
            with self._lock:
                self._known[hash_token(secret.strip())] = (identity, self.clock())
                while len(self._known) > self.capacity:
                    self._known.popitem(last=False)
        return identity


def _bearer_secret(authorization: str | None) -> str | None:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip() or None


def require(role: Role) -> Callable[[Request], Awaitable[Identity]]:
    # A coroutine, so that it costs a trip to the thread pool only when there is a token to
    # look up (a plain ``def`` dependency always makes one).
    async def dependency(request: Request) -> Identity:
        authenticator: Authenticator | None = request.app.state.authenticator
        if authenticator is None:
            return ANONYMOUS
        # Found by the guard before the body was read (api.guard); a route outside its
        # prefix looks the token up here.
        identity: Identity | None = getattr(request.state, "identity", None)
        if identity is None:
            identity = await authenticator.find(request.headers.get("authorization"))
        if RANK[identity.role] < RANK[role]:
            raise ApiError(
                403,
                "Forbidden",
                f"token {identity.name!r} has the {identity.role} role; this call needs {role} or more",
            )
        return identity

    dependency.__name__ = f"require_{role}"
    return dependency
