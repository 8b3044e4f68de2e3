"""converge: N deployments (1,000 by default) from nothing to Ready against the Azure simulator,
with the default ARM limiter (writes 10/s after a burst of 180) and ARM's own throttling on in
the simulator. The wall time from the first POST to the last Ready is set against the floor the
write budget puts under it: the ARM writes the run made, at 10 a second. Goal: <= 1.2x the
floor, and no 429 (the limiter keeps loraplane inside ARM's budget).

    python -m bench.converge [--deployments 1000]
"""

from __future__ import annotations

import argparse
import time

from bench.common import table, write_result
from bench.fleet import Fleet, arm_only, writes_in

WRITES_PER_SECOND = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    args = parser.parse_args()
    names = [f"fleet-{index:04d}" for index in range(args.deployments)]
    with Fleet() as fleet:
        fleet.make_base()  # the shared group, storage, share, workspace and environment
        fleet.reset_calls()
        cpu_before = fleet.cpu_seconds()
        started = time.monotonic()
        fleet.create(names)
        posted = time.monotonic() - started
        fleet.wait_ready(names, timeout=900)
        wall = time.monotonic() - started
        cpu = fleet.cpu_seconds() - cpu_before
        calls = arm_only(fleet.calls())
    writes = writes_in(calls)
    throttled = sum(calls.get("429", {}).values())
    reads = sum(calls.get("GET", {}).values())
    floor = writes / WRITES_PER_SECOND
    ratio = wall / floor if floor else float("nan")
    verdict = "met" if ratio <= 1.2 and throttled == 0 else "MISSED"
    print(
        table(
            f"converge: {args.deployments} deployments from nothing to Ready (simulator, default limiter)",
            ["deployments", "wall s", "ARM writes", "floor s", "wall / floor", "ARM reads", "429s", "daemon CPU s", "goal"],
            [[args.deployments, wall, writes, floor, ratio, reads, throttled, cpu, verdict]],
        )
    )
    print(f"(the {args.deployments} POSTs took {posted:.1f} s; goal: <= 1.2x the floor and no 429)")
    path = write_result(
        "converge",
        {
            "deployments": args.deployments,
            "wall_seconds": wall,
            "posts_seconds": posted,
            "arm_writes": writes,
            "floor_seconds": floor,
            "ratio": ratio,
            "arm_reads": reads,
            "throttled_429": throttled,
            "daemon_cpu_seconds": cpu,
            "calls": calls,
            "goal": verdict,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
