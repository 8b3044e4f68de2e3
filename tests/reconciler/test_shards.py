"""Shards of the work across replicas, on PostgreSQL: electors stepped by hand (no threads),
leases short enough to expire by the database's clock within a test."""

from __future__ import annotations

import time

import pytest

from reconciler.shards import ShardElector
from reconciler.writer import PassWriter, shard_of
from state.errors import Fenced
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import local_manifest
from tests.fakes import eventually

SHARDS = 4
LEASE_SECONDS = 3.0


def replica(postgres_engine, name: str, **options: float) -> ShardElector:
    writer = PassWriter(DeploymentStore(postgres_engine), shards=SHARDS, elected=True)
    return ShardElector(postgres_engine, name, writer, lease_seconds=LEASE_SECONDS, renew_deadline_seconds=2.0, **options)


def deployment_in(store: DeploymentStore, shard: int):
    """A deployment whose uid falls in ``shard``."""
    for index in range(200):
        row = store.create(InferenceDeploymentCreate.model_validate(local_manifest(f"bot-{shard}-{index}")))
        if shard_of(row.uid, SHARDS) == shard:
            return row
    raise AssertionError("no uid fell in the shard")


def test_uids_spread_over_the_shards_and_stay_put():
    uids = [f"{index:08x}-0000-4000-8000-000000000000" for index in range(1000)]
    counts = [sum(1 for uid in uids if shard_of(uid, 16) == shard) for shard in range(16)]
    assert min(counts) > 1000 / 16 * 0.7 and max(counts) < 1000 / 16 * 1.3
    assert [shard_of(uid, 16) for uid in uids] == [shard_of(uid, 16) for uid in uids]
    assert {shard_of(uid, 1) for uid in uids} == {0}


def test_a_newcomer_gets_its_fair_part_and_no_shard_is_held_twice(postgres_engine):
    a, b = replica(postgres_engine, "replica-a"), replica(postgres_engine, "replica-b")
    a.step()
    assert a.held() == [0, 1, 2, 3]  # alone: everything
    b.step()
    assert b.held() == []  # two alive now, but every shard is a's
    a.step()  # a sees two replicas: it keeps its fair half and hands the rest back at once
    assert len(a.held()) == 2
    b.step()
    assert len(b.held()) == 2
    assert sorted(a.held() + b.held()) == [0, 1, 2, 3]
    assert sorted(a.writer.held_shards() + b.writer.held_shards()) == [0, 1, 2, 3]


def test_a_shard_is_handed_back_only_once_its_pass_in_flight_ends(postgres_engine):
    store = DeploymentStore(postgres_engine)
    a, b = replica(postgres_engine, "replica-a"), replica(postgres_engine, "replica-b")
    a.step()
    busy = deployment_in(store, 3)  # the highest shards are the ones handed back
    assert a.writer.begin_pass(busy.uid)
    b.step()
    a.step()
    assert a.held() == [0, 1, 3]  # shard 2 went; shard 3 waits for its pass
    assert not a.writer.owns(busy.uid) and not a.writer.begin_pass(busy.uid)  # no new pass starts there
    a.writer.commit(busy, DeploymentStatus(phase="Provisioning"))  # the pass in flight still writes
    a.writer.end_pass(busy.uid)
    a.step()
    assert a.held() == [0, 1]
    b.step()
    assert b.held() == [2, 3]
    assert b.writer.begin_pass(busy.uid)


def test_a_killed_replicas_shards_move_within_the_lease_and_its_writes_are_refused(postgres_engine):
    store = DeploymentStore(postgres_engine)
    a, b = replica(postgres_engine, "replica-a"), replica(postgres_engine, "replica-b")
    a.step()
    b.step()
    a.step()
    b.step()
    moving = next(iter(b.held()))
    row = deployment_in(store, moving)
    b.writer.commit(row, DeploymentStatus(phase="Provisioning"))
    # b is killed: it renews nothing more. a takes its shards once their leases expire.

    def a_holds_everything() -> bool:
        a.step()
        return a.held() == [0, 1, 2, 3]

    eventually(a_holds_everything, timeout=LEASE_SECONDS * 4 + 10, interval=0.3, what="the killed replica's shards to move")
    assert a.members == ["replica-a"]
    with pytest.raises(Fenced):  # had b only paused, nothing it writes lands now
        b.writer.commit(row, DeploymentStatus(phase="Ready"))
    with pytest.raises(Fenced):
        b.writer.assert_leader(row.uid)
    a.writer.commit(row, DeploymentStatus(phase="Degraded"))
    assert store.get(row.name).status["phase"] == "Degraded"


def test_a_write_for_a_shard_not_held_is_refused_without_asking_the_database(postgres_engine):
    store = DeploymentStore(postgres_engine)
    a = replica(postgres_engine, "replica-a")
    row = deployment_in(store, 1)
    assert not a.writer.begin_pass(row.uid)  # nothing held yet
    with pytest.raises(Fenced, match="does not hold shard 1"):
        a.writer.commit(row, DeploymentStatus(phase="Ready"))
    a.step()
    assert a.writer.begin_pass(row.uid)
    assert a.writer.commit(row, DeploymentStatus(phase="Ready")) is not None


def test_one_shard_is_one_leader_and_a_standby(postgres_engine):
    first = ShardElector(
        postgres_engine,
        "replica-a",
        PassWriter(DeploymentStore(postgres_engine), shards=1, elected=True),
        lease_seconds=LEASE_SECONDS,
        renew_deadline_seconds=2.0,
    )
    second = ShardElector(
        postgres_engine,
        "replica-b",
        PassWriter(DeploymentStore(postgres_engine), shards=1, elected=True),
        lease_seconds=LEASE_SECONDS,
        renew_deadline_seconds=2.0,
    )
    first.step()
    second.step()
    first.step()
    assert (first.held(), second.held()) == ([0], [])  # one shard: fair part 1 each, one wins
    first.stop()  # a graceful stop hands it over at once
    second.step()
    assert second.held() == [0]


def test_a_survivors_next_round_comes_when_the_killed_replicas_lease_ends_not_a_retry_later(postgres_engine):
    # Rounds far apart: only the expiries can bring one sooner.
    a, b = (replica(postgres_engine, name, retry_seconds=60) for name in ("replica-a", "replica-b"))
    a.step()
    b.step()
    a.step()
    last_round = time.monotonic()
    b.step()  # b's last round: it is killed now
    last_round = time.monotonic() - last_round  # its leases were renewed up to this long after its row
    assert len(a.held()) == len(b.held()) == 2
    a.step()
    # a holds its fair part; its next round comes just after b's membership expires.
    assert 0 < a.next_round_seconds <= LEASE_SECONDS + 0.1
    rounds, waited = 0, 0.0
    while a.held() != [0, 1, 2, 3]:
        rounds, waited = rounds + 1, waited + a.next_round_seconds
        # The membership's expiry, then its leases' (renewed just after it): a few rounds, and
        # no more waiting than the lease and b's last round (a retry's 60 s would be the old
        # schedule). The waits are what a chose from the database's clock, however slow it ran.
        assert rounds <= 5 and waited <= LEASE_SECONDS + last_round + 0.5, f"the rounds did not follow the expiries (holds {a.held()})"
        time.sleep(a.next_round_seconds)  # as its thread waits
        a.step()
    assert a.members == ["replica-a"]
    assert a.next_round_seconds == 60  # nothing left to wait for: back to the retry


def test_a_survivor_waits_for_the_leases_of_a_replica_gone_from_the_members_not_a_retry(postgres_engine):
    a, b = (replica(postgres_engine, name, retry_seconds=60) for name in ("replica-a", "replica-b"))
    a.step()
    b.step()
    a.step()
    b.step()
    b.membership.leave()  # b is gone from the members, but its two leases run on
    a.step()
    # a wants every shard now; b's leases are not its to take until they end, and the next
    # round comes then, not a whole retry later.
    assert a.members == ["replica-a"] and len(a.held()) == 2
    assert 0 < a.next_round_seconds <= LEASE_SECONDS + 0.1
    for _ in range(len(b.held())):  # a round at each lease's end (b renewed them one by one)
        assert a.next_round_seconds <= LEASE_SECONDS + 0.1, "a waited a whole retry for a lease"
        time.sleep(a.next_round_seconds)  # as its thread waits
        a.step()
        if a.held() == [0, 1, 2, 3]:
            break
    assert a.held() == [0, 1, 2, 3]
