"""Fakes at our own boundary: a clock the test moves by hand, and a wait for real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

T = TypeVar("T")


class FakeClock:
    """Monotonic seconds, wall-clock seconds and datetimes that move only when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)


def eventually(
    check: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05, what: str = "", describe: Callable[[], object] | None = None
) -> T:
    """Poll ``check`` until it returns something truthy: for waiting on real processes.
    ``describe`` says what things look like when it times out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}{seen}")
        time.sleep(interval)
