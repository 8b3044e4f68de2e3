"""Watch: deployment changes as server-sent events (``?watch=1``).

A watch looks at every deployment's resourceVersion twice a second and sends what changed:
``ADDED`` for each deployment at the start and for new ones, ``MODIFIED``, ``DELETED``. It
reads the database, not this process's memory, so it sees the changes any replica made (the
HA setup has several). Comments keep idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.concurrency import run_in_threadpool

from state.selectors import Requirement
from state.store import DeploymentStore

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _event(kind: str, document: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'object': document}, default=str)}\n\n"


async def watch_events(
    store: DeploymentStore,
    *,
    name: str | None = None,
    requirements: Sequence[Requirement] = (),
    timeout_seconds: float = 1800.0,
    is_disconnected: Callable[[], object] | None = None,
) -> AsyncIterator[str]:
    deadline = time.monotonic() + timeout_seconds
    seen: dict[str, tuple[str, int]] = {}
    last_sent = time.monotonic()
    while time.monotonic() < deadline:
        if is_disconnected is not None and await is_disconnected():  # type: ignore[misc]
            return
        current = await run_in_threadpool(store.versions, name)
        if requirements:
            rows, _ = await run_in_threadpool(store.list, requirements)
            matching = {row.name for row in rows}
            current = {n: v for n, v in current.items() if n in matching}
        sent = False
        for gone in sorted(set(seen) - set(current)):
            yield _event("DELETED", {"metadata": {"name": gone, "uid": seen[gone][0]}})
            sent = True
            if name is not None:
                return  # the one deployment watched is gone: so is the watch
        changed = sorted(n for n, v in current.items() if seen.get(n) != v)
        for changed_name in changed:
            try:
                row = await run_in_threadpool(store.get, changed_name)
            except Exception:  # gone between the two reads: the next look says DELETED
                continue
            kind = "ADDED" if changed_name not in seen or seen[changed_name][0] != row.uid else "MODIFIED"
            yield _event(kind, row.to_public().model_dump(mode="json", by_alias=True, exclude_none=True))
            sent = True
        seen = current
        if sent:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
