"""Inference keys: who may call a deployment's model. Only a hash of each secret is stored; the
serving app gets the hashes, with each key's limits, through ``document`` (written to the share
by the reconciler). Every change is audited and wakes the reconciler."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from state.access import add_audit, hash_token
from state.errors import AlreadyExists, Conflict, NotFound
from state.models import InferenceDeployment, InferenceKey, InferenceKeyCreate
from state.store import DeploymentStore

KEY_PREFIX = "lpk_"  # not an API token's "lp_": a key pasted in the wrong place says what it is


class KeyStore:
    def __init__(self, store: DeploymentStore) -> None:
        self.store = store
        self._read, self._write = store._read, store._write

    def _deployment(self, name: str) -> InferenceDeployment:
        row = self.store.get(name)
        if row.deletion_timestamp is not None:
            raise Conflict(f"deployment {name!r} is being deleted; its keys can no longer change")
        return row

    def create(self, deployment: str, body: InferenceKeyCreate, *, actor: str | None) -> tuple[InferenceKey, str]:
        """A new key: the row, and the secret, which is returned this once and kept nowhere."""
        row = self._deployment(deployment)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = InferenceKey(
            deployment_uid=row.uid,
            deployment_name=row.name,
            name=body.name,
            key_hash=hash_token(secret),
            rpm=body.rpm,
            tpm=body.tpm,
            expires_at=body.expires_at,
            created_at=self.store.clock(),
            created_by=actor,
        )
        taken = AlreadyExists(f"deployment {deployment!r} has a key named {body.name!r}; revoke it first or choose another name")
        limits = ", ".join(f"{what} {value}" for what, value in (("rpm", body.rpm), ("tpm", body.tpm)) if value) or "no limits"
        try:
            with self._write() as session:
                if session.get(InferenceKey, (row.uid, body.name)) is not None:
                    raise taken
                session.add(key)
                add_audit(
                    session,
                    at=key.created_at,
                    actor=actor,
                    action="key.create",
                    resource=f"deployment/{deployment}/key/{body.name}",
                    detail=limits,
                )
        except IntegrityError as exc:
            raise taken from exc
        self.store.notify(deployment)
        return key, secret

    def list(self, deployment: str) -> list[InferenceKey]:
        return self.store.inference_keys(self.store.get(deployment).uid)

    def revoke(self, deployment: str, name: str, *, actor: str | None) -> None:
        row = self.store.get(deployment)
        with self._write() as session:
            if session.get(InferenceKey, (row.uid, name)) is None:
                raise NotFound(
                    f"deployment {deployment!r} has no key named {name!r}; list them with loraplane keys list --deployment {deployment}"
                )
            session.exec(delete(InferenceKey).where(col(InferenceKey.deployment_uid) == row.uid, col(InferenceKey.name) == name))
            add_audit(session, at=self.store.clock(), actor=actor, action="key.revoke", resource=f"deployment/{deployment}/key/{name}")
        self.store.notify(deployment)


def document(keys: list[InferenceKey]) -> dict[str, Any]:
    """What the serving app reads (``keys.json`` beside the adapter pointer): each key's hash and
    limits, never a secret."""
    return {"keys": [{"name": k.name, "sha256": k.key_hash, "rpm": k.rpm, "tpm": k.tpm, "expiresAt": _iso(k.expires_at)} for k in keys]}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
