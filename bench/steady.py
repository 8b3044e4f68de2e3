"""steady: what a resync costs once N = 10, 100 and 1,000 deployments are Ready, against the
Azure simulator: ARM calls per reconcile pass by method and resource type (goal: no writes, and
at most one read per managed resource, 7 a deployment), and the daemon's CPU seconds per pass.

The fleet grows in place (10, then 100, then 1,000; built with wide limits, see main); at each
size, once every deployment is
Ready and a second has passed, calls, passes and CPU are counted over 8 s, most of a resync
interval (LORAPLANE_RESYNC_SECONDS=10 here, so observations may be at most 5 s old: stricter than
the default 30 s, which allows 10), and divided by the passes made in it.

    python -m bench.steady [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import time

from bench.common import table, write_result
from bench.fleet import BASE, WRITES, Fleet, arm_only

RESYNC_SECONDS = 10.0
RESOURCES_PER_DEPLOYMENT = 7  # group, storage account, share, workspace, environment, its storage, app


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
    return {
        "deployments": size,
        "window_seconds": window,
        "passes": passes,
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
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--window", type=float, default=0.8 * RESYNC_SECONDS)
    args = parser.parse_args()
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
    with Fleet(resync_seconds=RESYNC_SECONDS, polling_seconds=1.0, arm_limits=False, limiter=fast_build) as fleet:
        fleet.make_base()
        names = [BASE]
        for size in sizes:
            new = [f"fleet-{index:04d}" for index in range(len(names) - 1, size - 1)]
            fleet.create(new)
            names += new
            fleet.wait_ready(names, timeout=600)
            time.sleep(1)  # the passes that made them Ready are followed by one more each
            results.append(measure(fleet, size, args.window))
    rows = []
    for result in results:
        verdict = "met" if result["writes_per_pass"] == 0 and result["reads_per_pass"] <= RESOURCES_PER_DEPLOYMENT else "MISSED"
        rows.append(
            [
                result["deployments"],
                result["passes"],
                result["writes_per_pass"],
                result["reads_per_pass"],
                result["share_data_plane_calls_per_pass"],
                result["cpu_ms_per_pass"],
                verdict,
            ]
        )
    print(
        table(
            f"steady: {args.window:.0f} s of resyncs every {RESYNC_SECONDS:.0f} s once all are Ready (per reconcile pass)",
            ["deployments", "passes", "ARM writes", "ARM reads", "share calls", "daemon CPU ms", "goal"],
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
    print(f"(goal: 0 writes and at most {RESOURCES_PER_DEPLOYMENT} reads, one per managed resource, per pass)")
    path = write_result("steady", {"resync_seconds": RESYNC_SECONDS, "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
