"""steady: what a resync costs once N deployments are Ready, against the Azure simulator: ARM
calls per reconcile pass by method and resource type (goal: no writes, and at most one read per
managed resource, 7 a deployment), the daemon's CPU per pass (goal: <= 2 ms), whether the
resync keeps its interval (passes made / passes due >= 0.95) and the daemon's resident memory
(goal: <= 50 MB per 1,000 deployments).

The fleet grows in place (10, 100, 1,000, 3,000; built with wide limits, see main), so the
figures at each size form the growth curve. At each size, once every deployment is Ready and a
resync interval has passed, calls, passes and CPU are counted over two resync intervals
(the default 30 s: observations may be 10 s old) and divided by the passes made in them; the
passes due are N x window / interval (the resync's jitter averages out).

    python -m bench.steady [--sizes 10,100,1000,3000] [--resync 30]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import table, write_result
from bench.fleet import BASE, WRITES, Fleet, arm_only

RESOURCES_PER_DEPLOYMENT = 7  # group, storage account, share, workspace, environment, its storage, app
CPU_MS_GOAL = 2.0
KEPT_PACE_GOAL = 0.95
MB_PER_THOUSAND_GOAL = 50.0


def measure(fleet: Fleet, size: int, window: float) -> dict:
    fleet.reset_calls()
    cpu_before, passes_before = fleet.cpu_seconds(), fleet.passes()
    time.sleep(window)
    calls = fleet.calls()
    cpu = fleet.cpu_seconds() - cpu_before
    passes_after = fleet.passes()
    passes = sum(passes_after.values()) - sum(passes_before.values())
    arm = arm_only(calls)
    per_pass = {method: {kind: n / passes for kind, n in kinds.items()} for method, kinds in arm.items()} if passes else {}
    writes = sum(n for method, kinds in arm.items() if method in WRITES for n in kinds.values())
    reads = sum(arm.get("GET", {}).values())
    data_plane = sum(n for kinds in calls.values() for kind, n in kinds.items() if kind.startswith("Microsoft.Storage/fileShares/"))
    due = size * window / fleet.resync_seconds
    return {
        "deployments": size,
        "window_seconds": window,
        "passes": passes,
        "passes_due": due,
        "kept_pace": passes / due,
        "rss_mb": fleet.rss_bytes() / 1e6,
        "arm_calls": arm,
        "arm_calls_per_pass": per_pass,
        "writes_per_pass": writes / passes if passes else float("nan"),
        "reads_per_pass": reads / passes if passes else float("nan"),
        "share_data_plane_calls_per_pass": data_plane / passes if passes else float("nan"),
        "cpu_seconds": cpu,
        "cpu_ms_per_pass": 1000 * cpu / passes if passes else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,3000")
    parser.add_argument("--resync", type=float, default=30.0, help="LORAPLANE_RESYNC_SECONDS")
    args = parser.parse_args()
    window = 2 * args.resync
    sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    # Built quickly, to fit the budget: operations polled every second rather than 5 (the base's
    # resources wait on each other), ARM's throttling off and a limiter five times wider (1,000
    # creates in well under a minute). What is measured is the steady state, which writes
    # nothing and polls nothing; its calls are counted, whatever the limits.
    fast_build = {
        "LORAPLANE_AZURE_WRITES_PER_SECOND": "50",
        "LORAPLANE_AZURE_WRITE_BURST": "1000",
        "LORAPLANE_AZURE_READS_PER_SECOND": "125",
        "LORAPLANE_AZURE_READ_BURST": "1000",
    }
    with Fleet(resync_seconds=args.resync, polling_seconds=1.0, arm_limits=False, limiter=fast_build) as fleet:
        fleet.make_base()
        names = [BASE]
        for size in sizes:
            new = [f"fleet-{index:05d}" for index in range(len(names) - 1, size - 1)]
            started = time.monotonic()
            fleet.create(new)
            fleet.wait_ready(names + new, timeout=3600)
            built = time.monotonic() - started
            names += new
            # The passes that made them Ready are followed by a resync each before counting.
            time.sleep(args.resync)
            results.append({**measure(fleet, size, window), "build_seconds": built})
            last = results[-1]
            print(
                f"N={size}: built in {built:.0f} s; {last['passes']:.0f} passes ({last['kept_pace']:.2f} of due),"
                f" {last['cpu_ms_per_pass']:.2f} ms CPU a pass, RSS {last['rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    previous: dict | None = None
    for result in results:
        # Memory per 1,000 deployments: what the daemon grew by since the size before.
        grown = (
            1000 * (result["rss_mb"] - previous["rss_mb"]) / (result["deployments"] - previous["deployments"]) if previous else float("nan")
        )
        result["rss_mb_per_1000_added"] = grown
        met = (
            result["writes_per_pass"] == 0
            and result["reads_per_pass"] <= RESOURCES_PER_DEPLOYMENT
            and result["cpu_ms_per_pass"] <= CPU_MS_GOAL
            and result["kept_pace"] >= KEPT_PACE_GOAL
            and (previous is None or grown <= MB_PER_THOUSAND_GOAL)
        )
        result["goal"] = "met" if met else "MISSED"
        rows.append(
            [
                result["deployments"],
                result["passes"],
                result["kept_pace"],
                result["writes_per_pass"],
                result["reads_per_pass"],
                result["share_data_plane_calls_per_pass"],
                result["cpu_ms_per_pass"],
                result["rss_mb"],
                grown,
                result["goal"],
            ]
        )
        previous = result
    print(
        table(
            f"steady: {window:.0f} s of resyncs every {args.resync:.0f} s once all are Ready (per reconcile pass)",
            ["deployments", "passes", "made/due", "ARM writes", "ARM reads", "share calls", "CPU ms", "RSS MB", "MB/1000 added", "goal"],
            rows,
        )
    )
    for result in results:
        by_type = ", ".join(
            f"{method} {kind.rsplit('/', 1)[-1]} {n:.3f}"
            for method, kinds in result["arm_calls_per_pass"].items()
            for kind, n in sorted(kinds.items())
        )
        print(f"  N={result['deployments']}: {by_type or 'no ARM calls'}")
    print(
        f"(goal per pass: 0 writes, at most {RESOURCES_PER_DEPLOYMENT} reads (one per managed resource) and {CPU_MS_GOAL:g} ms of"
        f" daemon CPU; passes made / due >= {KEPT_PACE_GOAL}; at most {MB_PER_THOUSAND_GOAL:g} MB more per 1,000 deployments)"
    )
    path = write_result("steady", {"resync_seconds": args.resync, "window_seconds": window, "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
