"""Watch: deployment changes as server-sent events (``?watch=1``), from one shared poller.

One ``WatchHub`` per app looks at every deployment's resourceVersion (one query, twice a
second, while anyone watches), reads each changed deployment once, and hands the change to
every watch it concerns: 200 watches cost what one does. It reads the database, not this
process's memory, so it sees the changes any replica made (the HA setup has several).

Each watch starts with ``ADDED`` for what exists (its own read), then gets ``ADDED``,
``MODIFIED`` and ``DELETED`` as they happen; comments keep idle connections open through
proxies. Watches are capped in total and per token (429 past either), a watch that cannot keep
up is closed (the client lists again and resumes), and a token's watches close when it is
revoked, here at once and within a poll when another replica revoked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.concurrency import run_in_threadpool

from api.problems import ApiError
from api.views import PublicViews
from state.access import AccessStore
from state.errors import NotFound
from state.models import InferenceDeployment
from state.selectors import Requirement, matches
from state.store import DeploymentStore

log = logging.getLogger("loraplane.api.watch")

# Event texts kept for reuse: the deployments' newest versions, as PublicViews keeps their forms.
TEXTS_KEPT = 4096
FANOUT_BATCH = 16


@dataclass(frozen=True)
class WatchLimits:
    total: int = 1000
    per_token: int = 100
    poll_seconds: float = 0.5
    keepalive_seconds: float = 15.0
    # Events waiting for a slow client before its watch is closed.
    backlog: int = 1000


def _event(kind: str, document: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'object': document}, default=str)}\n\n"


@dataclass(eq=False)
class Watch:
    holder: str  # the token's name ("anonymous" without authentication)
    name: str | None
    requirements: Sequence[Requirement]
    queue: asyncio.Queue[str | None]
    seen: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (uid, resourceVersion)
    closed: bool = False
    # What the hub handed over while the watch's first read was running (in the thread pool):
    # applied once that read is in ``seen``, so that nothing is sent twice or out of order.
    pending: list[Callable[[], None]] | None = field(default_factory=list)

    def wants(self, row: InferenceDeployment) -> bool:
        return (self.name is None or row.name == self.name) and matches(self.requirements, row.labels)

    def put(self, item: str | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.close()  # too far behind: better a closed stream than an unbounded backlog
        if item is None:
            self.closed = True

    def close(self) -> None:
        if self.closed:
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        self.closed = True


class WatchHub:
    def __init__(
        self,
        store: DeploymentStore,
        views: PublicViews,
        *,
        access: AccessStore | None = None,
        limits: WatchLimits | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store, self.views, self.access = store, views, access
        self.limits = limits or WatchLimits()
        self._watches: set[Watch] = set()
        self._texts: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._texts_lock = threading.Lock()  # the initial reads run in the thread pool
        # Only the poller writes the looks, one after another: a look that began before another
        # but ended after it would make the newer look's deployments seem gone (DELETED).
        self._versions: dict[str, tuple[str, int]] | None = None
        self._first_look = asyncio.Event()
        self._task: asyncio.Task | None = None
        registry = registry or CollectorRegistry()
        self.open_gauge = Gauge("loraplane_watches_open", "Watch streams open on this replica", registry=registry)
        self.polls = Counter("loraplane_watch_polls_total", "Looks at the deployments' versions made for the watches", registry=registry)

    # ---------------------------------------------------------------------------- watches

    def open(self, holder: str, *, name: str | None = None, requirements: Sequence[Requirement] = ()) -> Watch:
        if len(self._watches) >= self.limits.total:
            raise ApiError(
                429,
                "Too many requests",
                f"this server has {self.limits.total} watches open, its limit; retry later, or list instead of watching",
                headers={"Retry-After": "10"},
            )
        mine = sum(1 for w in self._watches if w.holder == holder)
        if mine >= self.limits.per_token:
            raise ApiError(
                429,
                "Too many requests",
                f"token {holder!r} has {mine} watches open, the most one token may; close one first "
                "(one watch with a label selector can follow many deployments)",
                headers={"Retry-After": "10"},
            )
        watch = Watch(holder, name, tuple(requirements), asyncio.Queue(maxsize=self.limits.backlog))
        self._watches.add(watch)
        self.open_gauge.set(len(self._watches))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="watch-hub")
        return watch

    def close(self, watch: Watch) -> None:
        watch.close()
        self._watches.discard(watch)
        self.open_gauge.set(len(self._watches))

    def close_holder(self, holder: str) -> None:
        """The token was revoked: its watches end now."""
        for watch in [w for w in self._watches if w.holder == holder]:
            self.close(watch)

    async def shutdown(self) -> None:
        for watch in list(self._watches):
            self.close(watch)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stream(self, watch: Watch, timeout_seconds: float) -> AsyncGenerator[str, None]:
        """The events of one watch: what exists first, then the changes the hub hands it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        try:
            # The hub's first look comes before the watch's own read: a change after that read
            # is then in the hub's next comparison, and one before it is in the read.
            try:
                await asyncio.wait_for(self._first_look.wait(), timeout=timeout_seconds)
            except TimeoutError:
                return  # the database gave the hub no look in all that time
            initial = await run_in_threadpool(self._initial, watch)
            # On the loop from here to the first yield: nothing the hub hands over interleaves.
            for row, _ in initial:
                watch.seen[row.name] = (row.uid, row.resource_version)
            pending, watch.pending = watch.pending or [], None
            for hand_over in pending:
                hand_over()
            for _, event in initial:
                yield event
            while not watch.closed or not watch.queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    item = await asyncio.wait_for(watch.queue.get(), timeout=min(self.limits.keepalive_seconds, remaining))
                except TimeoutError:
                    if loop.time() < deadline:
                        yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.close(watch)

    def _initial(self, watch: Watch) -> list[tuple[InferenceDeployment, str]]:
        """What exists now, as the watch sees it, with its ADDED events (in the thread pool)."""
        if watch.name is not None:
            try:
                rows = [self.store.get(watch.name)]
            except NotFound:
                rows = []
        else:
            rows, _ = self.store.list(watch.requirements)
        return [(row, self._text("ADDED", row)) for row in rows]

    def _text(self, kind: str, row: InferenceDeployment) -> str:
        """An event as sent, written once per deployment version however many watches get it
        (200 watches opening at once would otherwise write each deployment 200 times)."""
        key = (kind, row.uid, row.resource_version)
        with self._texts_lock:
            text = self._texts.get(key)
            if text is not None:
                self._texts.move_to_end(key)
                return text
        # The object's JSON as GET and list answer it, made once per version (api.views).
        text = f'event: {kind}\ndata: {{"type":"{kind}","object":{self.views.json_of(row).decode()}}}\n\n'
        with self._texts_lock:
            self._texts[key] = text
            while len(self._texts) > TEXTS_KEPT:
                self._texts.popitem(last=False)
        return text

    # ------------------------------------------------------------------------- the poller

    async def _run(self) -> None:
        while self._watches:
            try:
                await self._tick()
            except Exception:  # the poller must outlive one failed look (the database blinked)
                log.exception("a watch poll failed; trying again")
            await asyncio.sleep(self.limits.poll_seconds)
        # Nobody watches: the next watch starts from a fresh look (no await from the loop's
        # test to here, so no watch can open in between).
        self._versions = None
        self._first_look.clear()

    async def _tick(self) -> None:
        self.polls.inc()
        current = await run_in_threadpool(self.store.versions, None)
        if self.access is not None:
            valid = await run_in_threadpool(self.access.token_names)
            for holder in {w.holder for w in self._watches} - valid:
                self.close_holder(holder)  # revoked (perhaps on another replica)
        previous, self._versions = self._versions, current
        if previous is None:
            self._first_look.set()  # the watches waiting may read: their reads are newer than this look
            return
        changed = sorted(n for n, v in current.items() if previous.get(n) != v)
        gone = sorted(set(previous) - set(current))
        rows = await run_in_threadpool(self._rows, changed) if changed else []
        if not rows and not gone:
            return
        for index, watch in enumerate(list(self._watches)):
            if watch.pending is not None:  # its first read is still running: kept for after it
                watch.pending.extend(partial(self._deleted, watch, name) for name in gone)
                watch.pending.extend(partial(self._changed, watch, row) for row in rows)
                continue
            for name in gone:
                self._deleted(watch, name)
            for row in rows:
                self._changed(watch, row)
            if index % FANOUT_BATCH == FANOUT_BATCH - 1:
                # Each event wakes its stream: let other requests in between batches, rather
                # than after every watch has written (200 watches: tens of milliseconds).
                await asyncio.sleep(0)

    def _rows(self, names: list[str]) -> list[InferenceDeployment]:
        """Each changed deployment, read once, its MODIFIED event written once for every watch
        (an ADDED one, which few watches need, when one does; both are kept for reuse)."""
        found = []
        for name in names:
            try:
                row = self.store.get(name)
            except NotFound:  # gone between the two reads: the next look says DELETED
                continue
            self._text("MODIFIED", row)
            found.append(row)
        return found

    def _deleted(self, watch: Watch, name: str) -> None:
        seen = watch.seen.pop(name, None)
        if seen is None:
            return
        watch.put(_event("DELETED", {"metadata": {"name": name, "uid": seen[0]}}))
        if watch.name is not None:
            watch.put(None)  # the one deployment watched is gone: so is the watch

    def _changed(self, watch: Watch, row: InferenceDeployment) -> None:
        seen = watch.seen.get(row.name)
        if not watch.wants(row):
            if seen is not None and watch.name is None:  # no longer matches the selector
                self._deleted(watch, row.name)
            return
        if seen is not None and seen[0] == row.uid and seen[1] >= row.resource_version:
            return  # the watch's own first read was as new
        kind = "ADDED" if seen is None or seen[0] != row.uid else "MODIFIED"
        watch.seen[row.name] = (row.uid, row.resource_version)
        watch.put(self._text(kind, row))
