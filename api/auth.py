"""Bearer tokens and roles: viewer reads; deployer also creates, changes and deletes
deployments and activates adapters; admin also manages tokens.

Every route states the role it needs with ``Depends(require(ROLE))`` and gets the caller's
``Identity`` (its name becomes ``metadata.owner`` and the audit's actor). Health, readiness,
metrics and the API docs need no token. With authentication off (``LORAPLANE_AUTH=off``, a
single-user local run) every caller is ``anonymous`` with the admin role.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.problems import ApiError
from state.access import AccessStore

Role = Literal["viewer", "deployer", "admin"]
RANK: dict[str, int] = {"viewer": 0, "deployer": 1, "admin": 2}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="loraplane"'}


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


ANONYMOUS = Identity("anonymous", "admin")


class Authenticator:
    def __init__(self, access: AccessStore) -> None:
        self.access = access

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
        return Identity(row.name, row.role)


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
            identity = await run_in_threadpool(authenticator.identify, request.headers.get("authorization"))
        if RANK[identity.role] < RANK[role]:
            raise ApiError(
                403,
                "Forbidden",
                f"token {identity.name!r} has the {identity.role} role; this call needs {role} or more",
            )
        return identity

    dependency.__name__ = f"require_{role}"
    return dependency
