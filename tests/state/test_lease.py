"""The leader lease on PostgreSQL: one holder, an epoch per holder, fenced writes."""

from __future__ import annotations

import pytest

from reconciler.writer import PassWriter
from state.errors import Fenced
from state.lease import Lease
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import local_manifest
from tests.fakes import eventually


def expire_soon(postgres_engine, holder: str) -> None:
    """The holder's last renewal, a short one: then it stops renewing, and the lease expires by
    the database's clock (which no fake clock reaches)."""
    assert Lease(postgres_engine, holder, duration_seconds=0.2).try_acquire() is not None


def test_one_holder_at_a_time_and_a_new_epoch_for_each(postgres_engine):
    # Long leases, so that no stall of a busy machine lets one expire between two lines.
    a, b = Lease(postgres_engine, "replica-a", duration_seconds=60), Lease(postgres_engine, "replica-b", duration_seconds=60)
    assert a.try_acquire() == 1
    assert b.try_acquire() is None
    assert a.try_acquire() == 1  # a renewal keeps the epoch
    expire_soon(postgres_engine, "replica-a")
    assert eventually(b.try_acquire, timeout=15, what="the lease to expire") == 2
    assert a.try_acquire() is None
    b.release()
    assert a.try_acquire() == 3  # released: taken at once, not after the expiry
    assert a.current().holder == "replica-a"


def test_a_deposed_leader_cannot_write(postgres_engine):
    store = DeploymentStore(postgres_engine)
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest()))
    a, b = Lease(postgres_engine, "replica-a", duration_seconds=60), Lease(postgres_engine, "replica-b", duration_seconds=60)
    epoch = a.try_acquire()
    as_leader = PassWriter(store)
    as_leader.lead(a.fence(epoch))
    assert as_leader.commit(row, DeploymentStatus(phase="Provisioning")) is not None
    as_leader.assert_leader()
    expire_soon(postgres_engine, "replica-a")
    assert eventually(b.try_acquire, timeout=15, what="the lease to expire") == epoch + 1
    with pytest.raises(Fenced, match="no longer leads"):
        as_leader.commit(row, DeploymentStatus(phase="Ready"))
    with pytest.raises(Fenced):
        as_leader.assert_leader()
    with pytest.raises(Fenced):
        as_leader.save_cloud_resource(
            row.uid, "/subscriptions/x", kind="ResourceGroup", created=True, operation=None, continuation_token=None
        )
    assert store.get(row.name).status["phase"] == "Provisioning"  # the refused write left no trace
    store.update_status(row.name, DeploymentStatus(phase="Degraded"), uid=row.uid)  # the API's store is not fenced
