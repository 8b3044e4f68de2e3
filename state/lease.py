"""Leases: several ``loraplane serve`` processes share one PostgreSQL database and every one
serves the API; the deployments are split into shards, and each shard is reconciled by the
one replica that holds its lease.

A lease is a row: holder, epoch, expiry. Time is the database's (one clock for every
replica, so skewed hosts cannot both think they hold it). Taking an expired lease bumps the
epoch; every write the reconciler makes for a deployment checks, in its own transaction, that
the epoch of its shard's lease still holds (``Fence``), and the check locks the row against a
takeover until that transaction ends: a deposed holder cannot write after its successor
started.

Replicas also keep a membership row each (``Membership``), renewed with their leases, so that
each can tell how many share the work and take its fair part of the shards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from state.db import Sessions
from state.errors import Fenced
from state.models import LeaderLease

RECONCILER = "reconciler"  # the one lease when there is one shard (a single leader)
MEMBER_PREFIX = "member/"
GONE_MEMBERS_KEPT = timedelta(hours=1)  # a member row this long expired is deleted


def shard_lease_name(index: int, count: int) -> str:
    """The lease of shard ``index`` of ``count``: the shard count is in the name, so that a
    replica started with another count never shares a lease with a different meaning."""
    return RECONCILER if count == 1 else f"shard-{index}-of-{count}"


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
        # When try_acquire found another replica's lease: the seconds (by the database's clock)
        # until it expires, when it may be taken unless renewed; None otherwise.
        self.others_expire_in: float | None = None

    def _locked(self, session: Session, *, share: bool = False) -> LeaderLease | None:
        query = select(LeaderLease).where(col(LeaderLease.name) == self.name)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(read=share)
        return session.exec(query).first()

    def try_acquire(self) -> int | None:
        """Take or renew the lease; the epoch held, or None while another replica holds it."""
        self.others_expire_in = None
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
            self.others_expire_in = (row.expires_at - now).total_seconds()
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


class Membership:
    """This replica's membership row, renewed every round, and who else's is alive."""

    def __init__(self, engine: Engine, holder: str, *, duration_seconds: float = 15.0) -> None:
        self.engine = engine
        self._write = Sessions(engine).write
        self.holder = holder
        self.duration = timedelta(seconds=duration_seconds)
        # After a beat: the seconds (by the database's clock) until the first other member's
        # row expires, when it leaves unless it beats again; None when no other is alive.
        self.others_expire_in: float | None = None

    def beat(self) -> list[str]:
        """Renew this replica's row; every live member (this one included), sorted."""
        name = MEMBER_PREFIX + self.holder
        with self._write() as session:
            now = database_now(session)
            row = session.get(LeaderLease, name)
            if row is None:
                session.add(LeaderLease(name=name, holder=self.holder, epoch=1, acquired_at=now, expires_at=now + self.duration))
            else:
                row.expires_at = now + self.duration
                session.add(row)
            rows = session.exec(select(LeaderLease).where(col(LeaderLease.name).startswith(MEMBER_PREFIX))).all()
            for gone in [r for r in rows if r.expires_at < now - GONE_MEMBERS_KEPT]:
                session.delete(gone)
            others = [(r.expires_at - now).total_seconds() for r in rows if r.holder != self.holder and r.expires_at > now]
            self.others_expire_in = min(others, default=None)
            return sorted({r.holder for r in rows if r.expires_at > now} | {self.holder})

    def leave(self) -> None:
        with self._write() as session:
            row = session.get(LeaderLease, MEMBER_PREFIX + self.holder)
            if row is not None:
                row.expires_at = database_now(session)
                session.add(row)
