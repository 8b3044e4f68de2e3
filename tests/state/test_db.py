"""SQLite's writers in one process queue on a lock rather than on SQLite's busy handler."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from state.db import WRITE, make_engine, sqlite_url, upgrade_database
from state.models import InferenceDeploymentCreate
from state.store import DeploymentStore
from tests.conftest import local_manifest


@pytest.fixture
def store(sqlite_store):
    return sqlite_store


def test_writers_from_many_threads_all_land(store):
    failures: list[BaseException] = []

    def create_many(thread: int) -> None:
        try:
            for index in range(25):
                store.create(InferenceDeploymentCreate.model_validate(local_manifest(name=f"t{thread}-{index}")))
        except BaseException as exc:  # reported below with the thread's number
            failures.append(exc)

    threads = [threading.Thread(target=create_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(store.names()) == 200


def test_a_write_transaction_that_fails_lets_the_next_writer_in_at_once(tmp_path):
    # A minute's busy timeout: a writer lock left held would make the next write wait all of it,
    # far beyond what any stall of a busy machine adds to a healthy write.
    engine = make_engine(sqlite_url(tmp_path), busy_timeout_ms=60_000)
    upgrade_database(engine)
    store = DeploymentStore(engine)
    writer = store.engine.execution_options(**{WRITE: True})
    with pytest.raises(RuntimeError), writer.begin() as connection:
        connection.execute(text("SELECT 1"))
        raise RuntimeError("the caller's own failure, mid-transaction")
    started = time.monotonic()
    store.create(InferenceDeploymentCreate.model_validate(local_manifest(name="after-a-failure")))
    assert time.monotonic() - started < 30
    assert store.names() == ["after-a-failure"]
    engine.dispose()


def test_a_writer_left_open_on_another_connection_holds_the_next_one_back(store):
    writer = store.engine.execution_options(**{WRITE: True})
    entered = threading.Event()
    release = threading.Event()

    def hold_the_write_lock() -> None:
        with writer.begin() as connection:
            connection.execute(text("SELECT 1"))
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert entered.wait(5)
    finished = threading.Event()
    waiting = threading.Thread(
        target=lambda: (store.create(InferenceDeploymentCreate.model_validate(local_manifest(name="queued"))), finished.set())
    )
    waiting.start()
    assert not finished.wait(0.3)  # one writer at a time
    release.set()
    assert finished.wait(5)
    holder.join()
    waiting.join()
    assert store.names() == ["queued"]
