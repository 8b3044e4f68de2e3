"""shards: reconcile capacity of one and of two replicas sharing a PostgreSQL database, on the
same fleet of Ready azure deployments (the simulator with stand-in replicas; ARM's throttling
off and a wide limiter, to build the fleet quickly), and what happens to a killed replica's
shards.

1. One replica holds all 16 shards; with a resync interval shorter than it can keep (a capacity
   test: LORAPLANE_RESYNC_SECONDS=--resync; ARM is read as often as at the default resync, every
   10 s), its passes per second are counted over a window.
2. A second replica starts; once each holds 8 shards, and ``--settle`` seconds later (a new
   holder's first pass of each deployment reads what the old one knew), the two replicas'
   passes per second are counted over the same window. Goal: >= 1.6x.
3. Every deployment's spec is changed (scale.maxReplicas 1 -> 2: one write to its app), half
   before the second replica is killed with -9 and half after, on a thread of its own while the
   handover is timed. Counted: how long until the first holds every
   shard (goal: within the lease, 15 s, plus a renewal), and the ARM writes to the apps until
   every deployment is Ready at its new generation (goal: one per app, no double action).

    python -m bench.shards [--deployments 600] [--resync 0.25] [--window 20] [--settle 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx

from bench.common import fresh_postgres, table, wait_for, write_result
from bench.fleet import BASE, Fleet, arm_only

SHARDS = 16
LEASE_SECONDS = 15.0
RATIO_GOAL = 1.6


def passes_per_second(fleet: Fleet, window: float) -> dict[str, Any]:
    """Passes per second of each live replica and in all, with their CPU, over ``window``."""
    alive = fleet.alive()
    before = {at: sum(fleet.passes(at).values()) for at in alive}
    cpu_before = {at: fleet.cpu_seconds(at) for at in alive}
    time.sleep(window)
    made = {at: sum(fleet.passes(at).values()) - before[at] for at in alive}
    cpu = {at: fleet.cpu_seconds(at) - cpu_before[at] for at in alive}
    return {
        "replicas": len(alive),
        "passes_per_second": sum(made.values()) / window,
        "per_replica": [made[at] / window for at in alive],
        "cpu_ms_per_pass": 1000 * sum(cpu.values()) / max(1.0, sum(made.values())),
        "cpu_cores_per_replica": [cpu[at] / window for at in alive],
        "cpu_cores": sum(cpu.values()) / window,
    }


def shards_held(url: str) -> str:
    return httpx.get(f"{url}/healthz", timeout=30).json().get("detail", "")


def holds_all(url: str) -> bool:
    detail = shards_held(url)
    return "reconciling shard(s)" in detail and len(detail.split("shard(s) ")[1].split(" of ")[0].split(", ")) == SHARDS


def holds_half(url: str) -> bool:
    detail = shards_held(url)
    return "reconciling shard(s)" in detail and len(detail.split("shard(s) ")[1].split(" of ")[0].split(", ")) == SHARDS // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=600)
    parser.add_argument("--resync", type=float, default=0.25, help="LORAPLANE_RESYNC_SECONDS: shorter than one replica can keep")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds after a handover before a window: the new holder's first passes"
    )
    args = parser.parse_args()
    # Built quickly (ARM's throttling off, a wide limiter: see bench.steady); the windows
    # measure the steady state, which makes no ARM writes.
    fast_build = {
        "LORAPLANE_AZURE_WRITES_PER_SECOND": "50",
        "LORAPLANE_AZURE_WRITE_BURST": "1000",
        "LORAPLANE_AZURE_READS_PER_SECOND": "125",
        "LORAPLANE_AZURE_READ_BURST": "1000",
    }
    env = {
        "LORAPLANE_SHARDS": str(SHARDS),
        "LORAPLANE_SHARD_LEASE_SECONDS": str(LEASE_SECONDS),
        # ARM reads as often as at the default resync: the short resync makes passes due, not
        # reads (left to the resync, every pass of a 1 s resync would read ARM afresh).
        "LORAPLANE_AZURE_OBSERVE_MAX_AGE_SECONDS": "10",
    }
    with ExitStack() as stack:
        database = fresh_postgres(stack)
        if database is None:
            sys.exit("bench.shards needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth)")
        fleet = stack.enter_context(
            Fleet(
                resync_seconds=args.resync,
                polling_seconds=1.0,
                arm_limits=False,
                limiter=fast_build,
                database_url=database,
                extra_env=env,
            )
        )
        wait_for(lambda: holds_all(fleet.urls[0]), 4 * LEASE_SECONDS, "the first replica to hold every shard", interval=0.5)
        fleet.make_base()
        names = [f"fleet-{index:05d}" for index in range(args.deployments)]
        started = time.monotonic()
        fleet.create(names)
        fleet.wait_ready([BASE, *names], timeout=3600)
        print(f"{len(names)} deployments Ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        time.sleep(2 * args.resync)
        one = passes_per_second(fleet, args.window)

        fleet.start_replica()
        wait_for(
            lambda: holds_half(fleet.urls[0]) and holds_half(fleet.urls[1]),
            8 * LEASE_SECONDS,
            "each replica to hold half the shards",
            interval=0.5,
        )
        time.sleep(max(2 * args.resync, args.settle))
        two = passes_per_second(fleet, args.window)

        # Every app changes once; the second replica dies with half the changes made.
        fleet.reset_calls()
        generations: dict[str, int] = {}

        def change(batch: list[str]) -> None:
            for name in batch:
                patched = fleet.api.patch(
                    f"/v1/deployments/{name}",
                    json={"spec": {"scale": {"minReplicas": 1, "maxReplicas": 2}}},
                    headers={"Content-Type": "application/merge-patch+json"},
                ).raise_for_status()
                generations[name] = patched.json()["metadata"]["generation"]

        every = [BASE, *names]
        change(every[: len(every) // 2])
        killed_at = time.monotonic()
        fleet.kill(1)
        # The other half is changed meanwhile, on a thread of its own: 300 PATCHes to a survivor
        # at a full core take longer than the handover, which is timed from here.
        with ThreadPoolExecutor(1) as pool:
            second_half = pool.submit(change, every[len(every) // 2 :])
            wait_for(lambda: holds_all(fleet.urls[0]), 4 * LEASE_SECONDS, "the survivor to hold every shard", interval=0.25)
            moved_seconds = time.monotonic() - killed_at
            second_half.result()

        def caught_up() -> bool:
            return all(
                status.get("phase") == "Ready" and status.get("observedGeneration") == generations[name]
                for name, status in fleet.statuses().items()
            )

        wait_for(caught_up, 900, "every deployment Ready at its new generation", interval=2.0)
        caught_up_seconds = time.monotonic() - killed_at
        calls = arm_only(fleet.calls())
    app_writes = sum(
        n
        for method, kinds in calls.items()
        if method in ("PUT", "PATCH")
        for kind, n in kinds.items()
        if kind == "Microsoft.App/containerApps"
    )
    other_writes = sum(
        n
        for method, kinds in calls.items()
        if method in ("PUT", "PATCH", "POST", "DELETE")
        for kind, n in kinds.items()
        if kind != "Microsoft.App/containerApps"
    )
    apps = len(generations)
    ratio = two["passes_per_second"] / one["passes_per_second"]
    result = {
        "deployments": apps,
        "shards": SHARDS,
        "lease_seconds": LEASE_SECONDS,
        "resync_seconds": args.resync,
        "window_seconds": args.window,
        "one": one,
        "two": two,
        "ratio": ratio,
        "kill": {
            "shards_moved_seconds": moved_seconds,
            "caught_up_seconds": caught_up_seconds,
            "apps_changed": apps,
            "app_writes": app_writes,
            "other_writes": other_writes,
            "calls": calls,
        },
        "goal": "met" if ratio >= RATIO_GOAL and moved_seconds <= LEASE_SECONDS + 5 and app_writes == apps else "MISSED",
    }
    print(
        table(
            f"shards: {apps} Ready deployments, {SHARDS} shards on PostgreSQL, resync every {args.resync:g} s (a capacity test)",
            ["replicas", "passes/s", "per replica", "CPU ms/pass", "cores"],
            [
                [
                    r["replicas"],
                    r["passes_per_second"],
                    " / ".join(f"{p:.0f}" for p in r["per_replica"]),
                    r["cpu_ms_per_pass"],
                    r["cpu_cores"],
                ]
                for r in (one, two)
            ],
        )
    )
    print(f"two against one: {ratio:.2f}x (goal >= {RATIO_GOAL}x)")
    print(
        f"kill -9 of the second replica: its shards held by the first after {moved_seconds:.1f} s (lease {LEASE_SECONDS:g} s);"
        f" {apps} apps changed, {app_writes} app writes, {other_writes} other ARM writes; all caught up after {caught_up_seconds:.0f} s"
    )
    path = write_result("shards", result)
    print(f"goal: {result['goal']}; written to {path}")


if __name__ == "__main__":
    main()
