"""The leader lease: several ``loraplane serve`` processes share one PostgreSQL database and
every one serves the API, but exactly one reconciles, the holder of this lease.

The lease is a row: holder, epoch, expiry. Time is the database's (one clock for every
replica, so skewed hosts cannot both think they hold it). Taking an expired lease bumps the
epoch; every write the reconciler makes checks, in its own transaction, that its epoch still
holds (``Fence``), and the check locks the row against a takeover until that transaction
ends: a deposed leader cannot write after its successor started.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from state.db import Sessions
from state.errors import Fenced
from state.models import LeaderLease

RECONCILER = "reconciler"


def database_now(session: Session) -> datetime:
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(text("SELECT clock_timestamp()")).scalar_one()
    return datetime.now(UTC)


class Lease:
    def __init__(self, engine: Engine, holder: str, *, name: str = RECONCILER, duration_seconds: float = 15.0) -> None:
        self.engine = engine
        self._write = Sessions(engine).write
        self.holder = holder
        self.name = name
        self.duration = timedelta(seconds=duration_seconds)

    def _locked(self, session: Session, *, share: bool = False) -> LeaderLease | None:
        query = select(LeaderLease).where(col(LeaderLease.name) == self.name)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(read=share)
        return session.exec(query).first()

    def try_acquire(self) -> int | None:
        """Take or renew the lease; the epoch held, or None while another replica holds it."""
        with self._write() as session:
            row = self._locked(session)
            now = database_now(session)
            if row is None:
                session.add(LeaderLease(name=self.name, holder=self.holder, epoch=1, acquired_at=now, expires_at=now + self.duration))
                return 1
            if row.holder == self.holder and row.expires_at > now:
                row.expires_at = now + self.duration
                session.add(row)
                return row.epoch
            if row.expires_at <= now:
                row.holder, row.epoch, row.acquired_at, row.expires_at = self.holder, row.epoch + 1, now, now + self.duration
                session.add(row)
                return row.epoch
            return None

    def release(self) -> None:
        """Let a successor take over at once (a graceful stop), if still ours."""
        with self._write() as session:
            row = self._locked(session)
            if row is not None and row.holder == self.holder:
                row.expires_at = database_now(session)
                session.add(row)

    def current(self) -> LeaderLease | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.exec(select(LeaderLease).where(col(LeaderLease.name) == self.name)).first()

    def fence(self, epoch: int) -> Callable[[Session], None]:
        """A check for the reconciler's writes: this holder, this epoch, not expired."""

        def check(session: Session) -> None:
            row = self._locked(session, share=True)
            now = database_now(session)
            if row is None or row.holder != self.holder or row.epoch != epoch or row.expires_at <= now:
                raise Fenced(f"this replica no longer leads (epoch {epoch}): the write was refused")

        return check
