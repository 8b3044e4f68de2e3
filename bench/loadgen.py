"""A lean open-loop HTTP/1.1 load generator, for benchmarks that load a server on this same
machine: whatever CPU the generator takes, the server does not get.

httpx spends about half a millisecond of CPU on a request; at a thousand requests a second
that is half a core taken from the server it measures, on a 2-core machine. This client writes
requests made ahead of time as bytes over keep-alive connections and reads back only the status
line and Content-Length: tens of microseconds a request. What it spends is reported
(``cpu_seconds``), so a result can say how much of the machine the generator took.

Open loop: each request goes out when it is due, whether or not earlier ones have answered
(taking a free connection, or opening a new one up to ``max_connections``), and its latency is
counted from when it was due, so a slow answer cannot hide the requests queued behind it.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One kind of request, its bytes made once."""

    kind: str
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"

    def encode(self, host: str, headers: dict[str, str]) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines += [f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Outcome:
    kind: str
    status: int  # 0: no answer (the connection failed or the request timed out)
    latency_ms: float
    error: str = ""  # with status 0: what went wrong


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    connections: int = 0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, payload: bytes) -> int:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """Keep-alive connections spread over the servers' addresses in turn."""

    def __init__(self, addresses: Sequence[tuple[str, int]], max_connections: int) -> None:
        self.addresses, self.max_connections = list(addresses), max_connections
        self.idle: dict[int, list[_Connection]] = {index: [] for index in range(len(self.addresses))}
        self.opened = 0
        self.slots = asyncio.Semaphore(max_connections)

    async def take(self, server: int, *, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection to ``server``, and whether it was used before."""
        if self.idle[server] and not fresh:
            return self.idle[server].pop(), True
        return await self.open(server), False

    async def open(self, server: int) -> _Connection:
        host, port = self.addresses[server]
        reader, writer = await asyncio.open_connection(host, port)
        self.opened += 1
        return _Connection(reader, writer)

    def give_back(self, server: int, connection: _Connection) -> None:
        self.idle[server].append(connection)

    def close(self) -> None:
        for connections in self.idle.values():
            for connection in connections:
                connection.close()


async def _run(
    addresses: Sequence[tuple[str, int]],
    headers: dict[str, str],
    mix: Sequence[tuple[float, Sequence[Request]]],
    rate: float,
    seconds: float,
    warmup_seconds: float,
    timeout: float,
    max_connections: int,
    seed: int,
) -> Run:
    encoded = [
        (weight, [(request.kind, [request.encode(f"{host}:{port}", headers) for host, port in addresses]) for request in requests])
        for weight, requests in mix
    ]
    weights = [weight for weight, _ in encoded]
    choices = random.Random(seed)
    pool = _Pool(addresses, max_connections)
    run = Run()
    warmup = int(warmup_seconds * rate)
    total = warmup + int(seconds * rate)
    pending: set[asyncio.Task[None]] = set()

    async def one(index: int, due: float, kind: str, payloads: list[bytes]) -> None:
        server = index % len(addresses)
        status, error = 0, ""
        connection: _Connection | None = None
        async with pool.slots:
            try:
                async with asyncio.timeout(timeout - (time.perf_counter() - due)):
                    connection, reused = await pool.take(server)
                    try:
                        status = await connection.exchange(payloads[server])
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        # The server closed a keep-alive connection that sat idle (uvicorn
                        # does after 5 s): sent again on a new one, as HTTP clients do. A
                        # partial answer, or a new connection failing, is a failure.
                        partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                        if not reused or partial:
                            raise
                        connection.close()
                        connection, _ = await pool.take(server, fresh=True)
                        status = await connection.exchange(payloads[server])
                pool.give_back(server, connection)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
                if connection is not None:
                    connection.close()
        if index >= warmup:
            run.outcomes.append(Outcome(kind, status, (time.perf_counter() - due) * 1000, error))

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    turns = [0] * len(encoded)
    start = time.perf_counter() + 0.1
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        group = choices.choices(range(len(encoded)), weights)[0]
        (_, requests), turn = encoded[group], turns[group]
        turns[group] += 1
        kind, payloads = requests[turn % len(requests)]
        task = asyncio.ensure_future(one(index, due, kind, payloads))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    run.seconds = seconds
    run.cpu_seconds = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    run.connections = pool.opened
    pool.close()
    return run


def run_load(
    addresses: Sequence[tuple[str, int]],
    headers: dict[str, str],
    mix: Sequence[tuple[float, Sequence[Request]]],
    *,
    rate: float,
    seconds: float,
    warmup_seconds: float = 1.0,
    timeout: float = 10.0,
    max_connections: int = 512,
    seed: int = 1,
) -> Run:
    """``rate`` requests a second for ``warmup_seconds`` (not counted: connections open) and
    then ``seconds``, spread over ``addresses`` in turn. ``mix`` is (weight, requests): a
    request's group is drawn by weight, and within a group the requests take turns."""
    import uvloop  # the generator's own event loop: the cheaper, the less it takes

    return uvloop.run(_run(addresses, headers, mix, rate, seconds, warmup_seconds, timeout, max_connections, seed))


def served_within(run: Run, kinds: set[str] | None = None) -> list[float]:
    return [o.latency_ms for o in run.outcomes if 200 <= o.status < 400 and (kinds is None or o.kind in kinds)]
