"""Who may do what, and who did what: API tokens (only their hashes) and the audit trail."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from state.db import Sessions
from state.errors import AlreadyExists, NotFound
from state.models import ApiToken, AuditEvent, utcnow

TOKEN_PREFIX = "lp_"


def hash_token(token: str) -> str:
    """Tokens are 256 random bits: a plain SHA-256 is enough to make a stolen table useless."""
    return hashlib.sha256(token.encode()).hexdigest()


def add_audit(
    session: Session,
    *,
    at: datetime,
    actor: str | None,
    action: str,
    resource: str,
    before: int | None = None,
    after: int | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        AuditEvent(
            at=at,
            actor=actor or "unknown",
            action=action,
            resource=resource,
            generation_before=before,
            generation_after=after,
            detail=detail,
        )
    )


class AccessStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        sessions = Sessions(engine)
        self._read, self._write = sessions.read, sessions.write
        self.clock = clock

    # --------------------------------------------------------------------------- tokens

    def create_token(self, name: str, role: str, *, actor: str | None) -> tuple[ApiToken, str]:
        """A new token: the row, and the secret, which is returned this once and kept nowhere."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(name=name, role=role, token_hash=hash_token(secret), created_at=self.clock(), created_by=actor)
        try:
            with self._write() as session:
                if session.get(ApiToken, name) is not None:
                    raise AlreadyExists(f"a token named {name!r} exists; revoke it first or choose another name")
                session.add(row)
                add_audit(session, at=row.created_at, actor=actor, action="token.create", resource=f"token/{name}", detail=f"role {role}")
        except IntegrityError as exc:
            raise AlreadyExists(f"a token named {name!r} exists; revoke it first or choose another name") from exc
        return row, secret

    def revoke_token(self, name: str, *, actor: str | None) -> None:
        with self._write() as session:
            if session.get(ApiToken, name) is None:
                raise NotFound(f"no token named {name!r}; list them with loraplane token list")
            session.exec(delete(ApiToken).where(col(ApiToken.name) == name))
            add_audit(session, at=self.clock(), actor=actor, action="token.revoke", resource=f"token/{name}")

    def tokens(self) -> list[ApiToken]:
        with self._read() as session:
            return list(session.exec(select(ApiToken).order_by(col(ApiToken.name))))

    def find_token(self, secret: str) -> ApiToken | None:
        with self._read() as session:
            return session.exec(select(ApiToken).where(col(ApiToken.token_hash) == hash_token(secret))).first()

    def token_names(self) -> set[str]:
        """The names of the tokens that are valid now."""
        with self._read() as session:
            return set(session.exec(select(ApiToken.name)))

    def has_tokens(self) -> bool:
        with self._read() as session:
            return session.exec(select(ApiToken.name).limit(1)).first() is not None

    # ---------------------------------------------------------------------------- audit

    def audit(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        query = select(AuditEvent)
        if actor:
            query = query.where(col(AuditEvent.actor) == actor)
        if resource:
            query = query.where(col(AuditEvent.resource) == resource)
        if action:
            query = query.where(col(AuditEvent.action) == action)
        if since:
            query = query.where(col(AuditEvent.at) >= since)
        with self._read() as session:
            return list(session.exec(query.order_by(col(AuditEvent.id).desc()).limit(limit)))
