"""api: the REST API at a fixed request rate (open loop: a request goes out on schedule
whether or not the one before has answered, so a slow answer cannot hide the ones behind it).

GET one, list, POST and PATCH at RATE requests/s, each for 20 s on SQLite (where the goals
are) and 5 s on PostgreSQL, against a real ``loraplane serve`` as it runs by default: tokens
checked (the admin token it writes on first start) and the reconciler at work on what is
created. Latency is measured from when the request was due. Goal on SQLite: p99 <= 10 ms for
GET, <= 25 ms for POST.

    python -m bench.api [--seconds 20] [--postgres-seconds 5] [--rate 200] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import start_service, summary, table, write_result

POSTGRES_ADMIN = os.environ.get("LORAPLANE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GOALS_MS = {"get": 10.0, "list": 10.0, "post": 25.0, "patch": 25.0}


# Allowed (LORAPLANE_LOCAL_SHARE_ROOTS) and absent: the deployments are stored, tried and
# refused (ShareRootNotFound) without any serving process, which is not what is measured.
BENCH_SHARE_ROOT = "/nonexistent/bench-share"


def manifest(name: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "spec": {"target": "local", "local": {"shareRoot": BENCH_SHARE_ROOT}, "model": {"path": "models/base"}},
    }


WARMUP_SECONDS = 1.0


async def run_operation(url: str, headers: dict[str, str], operation: str, seconds: float, rate: float) -> tuple[list[float], int]:
    """Requests at ``rate`` for WARMUP_SECONDS (the client opens its connections: not counted),
    then for ``seconds``: the latencies of those and how many failed."""
    latencies: list[float] = []
    errors = 0
    warmup = int(WARMUP_SECONDS * rate)
    total = warmup + int(seconds * rate)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10, limits=limits) as client:

        async def one(index: int, due: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                if operation == "get":
                    response = await client.get(f"/v1/deployments/bench-{index % 100}")
                elif operation == "list":
                    response = await client.get("/v1/deployments", params={"limit": 50})
                elif operation == "post":
                    response = await client.post("/v1/deployments", json=manifest(f"post-{uuid.uuid4().hex[:12]}"))
                else:
                    response = await client.patch(
                        f"/v1/deployments/bench-{index % 100}",
                        content=json.dumps({"metadata": {"labels": {"n": str(index)}}}),
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
                ok = response.status_code < 400
            except httpx.HTTPError:
                ok = False
            if index < warmup:
                return
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(i, start + i / rate) for i in range(total)))
    return latencies, errors


def wait_until_reconciled(client: httpx.Client, count: int) -> None:
    """Measure the API, not the reconciler's first pass over the seeded deployments."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = client.get("/v1/deployments", params={"limit": 1000}).json()["items"]
        if len(items) >= count and all(item.get("status", {}).get("phase") for item in items):
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise SystemExit("the seeded deployments were not reconciled within 60 s")


def bench_backend(label: str, database_url: str | None, seconds: float, rate: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        process, url, headers = start_service(
            Path(folder) / "data",
            database_url,
            extra_env={"LORAPLANE_RESYNC_SECONDS": "30", "LORAPLANE_LOCAL_SHARE_ROOTS": BENCH_SHARE_ROOT},
        )
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                for index in range(100):
                    client.post("/v1/deployments", json=manifest(f"bench-{index}")).raise_for_status()
                wait_until_reconciled(client, 100)
            results = {}
            for operation in ("get", "list", "post", "patch"):
                latencies, errors = asyncio.run(run_operation(url, headers, operation, seconds, rate))
                results[operation] = {**summary(latencies), "errors": errors}
            return results
        finally:
            process.terminate()
            process.wait(timeout=30)


def fresh_postgres() -> tuple[str, Callable[[], None]] | None:
    admin_url = make_url(POSTGRES_ADMIN)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        print(f"PostgreSQL is not reachable ({type(exc).__name__}): its half is skipped", file=sys.stderr)
        return None
    name = f"loraplane_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per operation on SQLite, where the goals are")
    parser.add_argument(
        "--postgres-seconds",
        type=float,
        default=5.0,
        help="per operation on PostgreSQL (no goal; 20 s of each would overrun the 3-minute budget)",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    backends = {"sqlite": bench_backend("sqlite", None, args.seconds, args.rate)}
    postgres = None if args.no_postgres else fresh_postgres()
    if postgres is not None:
        url, drop = postgres
        try:
            backends["postgresql"] = bench_backend("postgresql", url, args.postgres_seconds, args.rate)
        finally:
            drop()
    rows = []
    for backend, results in backends.items():
        for operation, figures in results.items():
            goal = GOALS_MS[operation] if backend == "sqlite" and operation in ("get", "post") else None
            verdict = "-" if goal is None else ("met" if figures["p99"] <= goal else f"MISSED (goal {goal:.0f} ms)")
            rows.append([backend, operation, figures["count"], figures["p50"], figures["p99"], figures["errors"], verdict])
    print(
        table(
            f"api: {args.rate:.0f} req/s, {args.seconds:.0f} s each on SQLite, {args.postgres_seconds:.0f} s on PostgreSQL "
            "(latency in ms, from when each request was due)",
            ["backend", "operation", "answered", "p50", "p99", "errors", "goal"],
            rows,
        )
    )
    path = write_result(
        "api", {"rate_per_second": args.rate, "seconds": {"sqlite": args.seconds, "postgresql": args.postgres_seconds}, "results": backends}
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
