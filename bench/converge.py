"""converge: deployments from nothing to Ready against the Azure simulator, with ARM's own
throttling on in the simulator (per subscription) and the daemon's limiter (per subscription
and principal) a tenth below it. The wall time from the first POST to the last Ready is set
against the floor the write budget puts under it: the busiest subscription's ARM writes past
its burst, at its rate. Goal: <= 1.2x the floor, and no 429.

Two fleets, side by side in one run:
- ``--deployments`` (1,000) in one subscription at ARM's own rates (writes 10/s after a burst of
  200): the floor is one subscription's budget;
- ``--spread`` (1,000) over ``--subscriptions`` (10), each subscription's writes scaled down to a
  tenth of ARM's (1/s after a burst of 20) so that the fleet's writes, 10/s in all, stay within
  what one daemon on this machine's 2 cores can make: the floor is then each subscription's own
  budget, and a subscription's throttling that held back the others would show as a wall time
  of several times the floor.

    python -m bench.converge [--deployments 1000] [--spread 1000] [--subscriptions 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from azuresim.state import ArmLimits
from bench.common import table, write_result
from bench.fleet import Fleet, arm_only, writes_in

ARM_WRITE_BURST, ARM_WRITES_PER_SECOND = ArmLimits.BUCKETS["write"]
SCALE = 0.1  # the spread fleet's write budget per subscription, against ARM's


def limiter_for(burst: float, rate: float) -> dict[str, str]:
    """The daemon's write limiter a tenth below ARM's bucket, as its defaults are."""
    return {"LORAPLANE_AZURE_WRITES_PER_SECOND": str(rate), "LORAPLANE_AZURE_WRITE_BURST": str(int(burst * 0.9))}


def converge(deployments: int, subscriptions: int, burst: float, rate: float) -> dict[str, Any]:
    names = [f"fleet-{index:05d}" for index in range(deployments)]
    limits = ArmLimits(buckets={"write": (int(burst), rate)})
    with Fleet(arm_limits=limits, limiter=limiter_for(burst, rate)) as fleet:
        fleet.make_base(subscriptions)  # each subscription's group, storage, share, workspace and environment
        time.sleep(burst / rate)  # the bases' writes given back: every bucket starts full
        fleet.reset_calls()
        cpu_before = fleet.cpu_seconds()
        started = time.monotonic()
        fleet.create(names, subscriptions)
        posted = time.monotonic() - started
        fleet.wait_ready(names, timeout=1800)
        wall = time.monotonic() - started
        cpu = fleet.cpu_seconds() - cpu_before
        calls = arm_only(fleet.calls())
        by_subscription = fleet.calls_by_subscription()
    writes_of = {
        subscription: sum(n for method, n in methods.items() if method in ("PUT", "PATCH", "POST", "DELETE"))
        for subscription, methods in by_subscription.items()
    }
    busiest = max(writes_of.values())
    floor = max(0.0, busiest - burst) / rate
    throttled = sum(calls.get("429", {}).values())
    ratio = wall / floor if floor else float("nan")
    return {
        "deployments": deployments,
        "subscriptions": subscriptions,
        "write_burst": burst,
        "writes_per_second": rate,
        "wall_seconds": wall,
        "posts_seconds": posted,
        "arm_writes": writes_in(calls),
        "busiest_subscription_writes": busiest,
        "floor_seconds": floor,
        "one_budget_floor_seconds": max(0.0, writes_in(calls) - burst) / rate,
        "ratio": ratio,
        "arm_reads": sum(calls.get("GET", {}).values()),
        "throttled_429": throttled,
        "daemon_cpu_seconds": cpu,
        "calls": calls,
        "calls_by_subscription": by_subscription,
        "goal": "met" if ratio <= 1.2 and throttled == 0 else "MISSED",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000, help="the fleet in one subscription (0: skip it)")
    parser.add_argument("--spread", type=int, default=1000, help="the fleet over --subscriptions (0: skip it)")
    parser.add_argument("--subscriptions", type=int, default=10)
    args = parser.parse_args()
    results = []
    runs = []
    if args.spread:
        runs.append((args.spread, args.subscriptions, ARM_WRITE_BURST * SCALE, ARM_WRITES_PER_SECOND * SCALE))
    if args.deployments:
        runs.append((args.deployments, 1, ARM_WRITE_BURST, ARM_WRITES_PER_SECOND))
    for run in runs:
        results.append(converge(*run))
        done = results[-1]
        print(
            f"{done['deployments']} over {done['subscriptions']} subscription(s): {done['wall_seconds']:.0f} s,"
            f" floor {done['floor_seconds']:.0f} s ({done['ratio']:.2f}x), {done['throttled_429']} 429s",
            file=sys.stderr,
            flush=True,
        )
    rows = [
        [
            r["deployments"],
            r["subscriptions"],
            f"{r['writes_per_second']:g}/s ({r['write_burst']:g})",
            r["wall_seconds"],
            r["arm_writes"],
            r["busiest_subscription_writes"],
            r["floor_seconds"],
            r["one_budget_floor_seconds"],
            r["ratio"],
            r["arm_reads"],
            r["throttled_429"],
            r["daemon_cpu_seconds"],
            r["goal"],
        ]
        for r in results
    ]
    print(
        table(
            "converge: deployments from nothing to Ready (simulator with ARM's throttling per subscription)",
            [
                "deployments",
                "subs",
                "writes/sub",
                "wall s",
                "ARM writes",
                "busiest sub",
                "floor s",
                "one-budget floor s",
                "wall/floor",
                "ARM reads",
                "429s",
                "CPU s",
                "goal",
            ],
            rows,
        )
    )
    print("(floor: the busiest subscription's writes past its burst, at its rate; goal: <= 1.2x the floor and no 429)")
    path = write_result("converge", {"results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
