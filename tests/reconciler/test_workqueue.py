"""The work queue and the backoff, on a fake clock."""

from __future__ import annotations

import random

from reconciler.workqueue import Backoff, WorkQueue
from tests.fakes import FakeClock


def drain(queue: WorkQueue) -> list[str]:
    keys = []
    while (key := queue.get(timeout=0)) is not None:
        keys.append(key)
        queue.done(key)
    return keys


def test_duplicate_wake_ups_collapse():
    queue = WorkQueue()
    for key in ["a", "b", "a", "a", "b"]:
        queue.add(key)
    assert queue.depth() == 2
    assert drain(queue) == ["a", "b"]


def test_a_key_is_never_worked_on_twice_at_once():
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")  # woken while being worked on
    queue.add("b")
    assert queue.get(timeout=0) == "b"
    assert queue.get(timeout=0) is None  # "a" waits for its worker
    queue.done("b")
    queue.done("a")
    assert queue.get(timeout=0) == "a"  # and then comes back once


def test_add_after_holds_a_key_until_its_time():
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after("a", 5)
    assert queue.get(timeout=0) is None
    assert queue.has_pending_retry("a")
    clock.advance(4.9)
    assert queue.get(timeout=0) is None
    clock.advance(0.2)
    assert queue.get(timeout=0) == "a"


def test_the_earlier_of_two_delays_wins_and_add_cancels_a_delay():
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add_after("a", 2)
    queue.add_after("a", 7)
    clock.advance(2)
    assert drain(queue) == ["a"]
    clock.advance(10)
    assert drain(queue) == []  # the superseded delays do not fire again
    queue.add_after("b", 10)
    queue.add("b")
    assert drain(queue) == ["b"]
    assert not queue.has_pending_retry("b")


def test_shutdown_releases_waiting_workers():
    queue = WorkQueue()
    queue.shut_down()
    assert queue.get() is None
    queue.add("a")
    assert queue.get(timeout=0) is None


def test_backoff_doubles_from_one_second_to_five_minutes_with_jitter():
    backoff = Backoff(rng=random.Random(7))
    delays = [backoff.next_delay("a") for _ in range(12)]
    expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    for delay, nominal in zip(delays, expected, strict=True):
        assert nominal * 0.8 <= delay <= min(300, nominal * 1.2)
    assert len(set(delays[:8])) == 8
    assert backoff.next_delay("b") <= 1.2  # per key
    backoff.reset("a")
    assert backoff.next_delay("a") <= 1.2
