"""api: the REST API under a team's load, under overload, and scaled out on PostgreSQL.

Against real ``loraplane serve`` processes as they run by default (tokens checked, admission
control at its defaults, the reconciler at work on 100 deployments that resync every
RESYNC_SECONDS), driven by ``bench.loadgen``: open loop, latency counted from when each request
was due. The mix is a team's: 70% GET one deployment, 20% list (a page of 50), 10% writes
(PATCH of labels and POST of new deployments, half each). The deployments have
``scale.maxReplicas: 0``: each pass observes, plans and writes status like any other, and no
serving process is started, which is not what is measured.

1. **Mix** on SQLite, one process (``--role all``): RATE req/s for SECONDS. Goal: p99 <= 25 ms.
2. **Overload** on SQLite: the process's capacity is what it serves a second when offered
   OVERLOAD_PROBE req/s for PROBE_SECONDS (the rest are refused); then twice that capacity for
   SECONDS. Goals: every request answered within 1 s, served or refused with 429 (none failed);
   p99 of those served <= 100 ms.
3. **Reconciler pace**: reconcile passes a second (``loraplane_reconciles_total``) while the API
   idles, and while it is offered twice its capacity of reads (reads only, so that every pass
   counted is one a resync timer asked for). Goal: at least 90% of the idle pace.
4. **Scale-out** on PostgreSQL: the highest rate, in steps of SCALE_STEP req/s of the mix for
   --step-seconds each, served whole with p99 <= SCALE_P99_MS, by one ``--role all`` process and by two
   ``--role api`` processes beside one ``--role reconciler`` (the generator spreads its
   connections over both, as a load balancer would). Goal: the second at least 1.5 times the
   first.

The generator is this process, apart from the servers; it writes requests made ahead of time,
so it takes about a tenth of a core (printed with the results) and the servers the rest of the
machine. The writes a second per token are raised for the benchmark
(LORAPLANE_WRITES_PER_SECOND): it measures what a process can serve, not the per-token policy,
which refuses one runaway token long before. A LORAPLANE_ setting in the environment reaches the
servers (to try other admission limits).

    python -m bench.api [--seconds 20] [--rate 200] [--step-seconds 6] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import httpx

from bench.common import fresh_postgres, percentile, start_service, table, write_result
from bench.loadgen import Request, Run, run_load

T = TypeVar("T")
SEEDED = 100
RESYNC_SECONDS = 30  # the default
OVERLOAD_PROBE = 1000.0
PROBE_SECONDS = 5.0
SCALE_STEP = 50.0
SCALE_LIMIT = 2000.0
SCALE_P99_MS = 25.0
GOALS = {"mix_p99_ms": 25.0, "overload_answered_ms": 1000.0, "overload_served_p99_ms": 100.0, "pace_ratio": 0.9, "scale_ratio": 1.5}


def manifest(name: str, share_root: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "spec": {
            "target": "local",
            "local": {"shareRoot": share_root},
            "model": {"path": "models/base"},
            "scale": {"minReplicas": 0, "maxReplicas": 0},
        },
    }


def seed(client: httpx.Client, share_root: str, count: int) -> None:
    """Deployments bench-0 .. bench-(count-1), each settled (Stopped) before anything is
    measured: the API, not the reconciler's first pass over them."""
    for index in range(count):
        client.post("/v1/deployments", json=manifest(f"bench-{index}", share_root)).raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        items = client.get("/v1/deployments", params={"limit": 1000}).json()["items"]
        if len(items) >= count and all(item.get("status", {}).get("phase") == "Stopped" for item in items):
            return
        time.sleep(0.5)
    raise SystemExit(f"the {count} seeded deployments did not settle within 120 s")


def team_mix(share_root: str, posts: int) -> list[tuple[float, list[Request]]]:
    run = uuid.uuid4().hex[:6]
    gets = [Request("get", "GET", f"/v1/deployments/bench-{i}") for i in range(SEEDED)]
    lists = [Request("list", "GET", "/v1/deployments?limit=50")]
    patches = [
        Request(
            "patch",
            "PATCH",
            f"/v1/deployments/bench-{i % SEEDED}",
            json.dumps({"metadata": {"labels": {"n": str(i)}}}).encode(),
            "application/merge-patch+json",
        )
        for i in range(1000)
    ]
    creates = [Request("post", "POST", "/v1/deployments", json.dumps(manifest(f"p{run}-{i}", share_root)).encode()) for i in range(posts)]
    return [(0.70, gets), (0.20, lists), (0.05, patches), (0.05, creates)]


def reconciles(url: str) -> float:
    """Reconcile passes this process has made, by /metrics."""
    body = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(value) for value in re.findall(r"^loraplane_reconciles_total\{[^}]*\} (\S+)$", body, re.MULTILINE))


def pace(url: str, measure: Callable[[], T]) -> tuple[float, T]:
    """Passes a second at ``url`` while ``measure`` runs, and what it gave."""
    before, started = reconciles(url), time.monotonic()
    result = measure()
    return (reconciles(url) - before) / (time.monotonic() - started), result


def figures(run: Run) -> dict:
    served = [o.latency_ms for o in run.outcomes if 200 <= o.status < 300]
    refused = [o.latency_ms for o in run.outcomes if o.status == 429]
    other = [o for o in run.outcomes if not (200 <= o.status < 300 or o.status == 429)]
    answered = [o.latency_ms for o in run.outcomes if o.status]
    return {
        "offered": len(run.outcomes),
        "served": len(served),
        "refused_429": len(refused),
        "failed": len(other),
        "failed_statuses": sorted({o.status for o in other}),
        "failures": sorted({o.error or str(o.status) for o in other})[:10],
        "served_per_second": len(served) / run.seconds,
        "p50_ms": percentile(served, 50),
        "p99_ms": percentile(served, 99),
        "max_answered_ms": max(answered, default=float("nan")),
        "refused_p99_ms": percentile(refused, 99),
        "by_kind_p99_ms": {
            kind: percentile([o.latency_ms for o in run.outcomes if o.kind == kind and 200 <= o.status < 300], 99)
            for kind in ("get", "list", "patch", "post")
        },
        "generator_cpu_share": run.cpu_seconds / run.seconds,
        "connections": run.connections,
    }


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


class Cluster:
    """``loraplane serve`` processes over one database, with the deployments seeded."""

    def __init__(self, stack: ExitStack, database_url: str | None, roles: Sequence[str], share_root: str) -> None:
        env = {
            "LORAPLANE_RESYNC_SECONDS": str(RESYNC_SECONDS),
            "LORAPLANE_LOCAL_SHARE_ROOTS": share_root,
            "LORAPLANE_WRITES_PER_SECOND": "100000",
            "LORAPLANE_WRITE_BURST": "100000",
            **{k: v for k, v in os.environ.items() if k.startswith("LORAPLANE_")},
        }
        self.share_root = share_root
        self.processes: list[tuple[str, str]] = []
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        self.headers: dict[str, str] = {}
        for index, role in enumerate(roles):
            data = folder / f"data-{index}"
            if index and database_url is None:
                raise SystemExit("more than one process needs PostgreSQL")
            extra = {"LORAPLANE_ROLE": role, **env}
            if self.headers:  # the replicas share the first one's tokens, through the database
                data.mkdir(mode=0o700)
                (data / "admin-token").write_text(self.headers["Authorization"].split()[1])
            process, url, headers = start_service(data, database_url, extra_env=extra)
            stack.callback(stop, process)
            self.headers = self.headers or headers
            self.processes.append((role, url))

    def urls(self, role: str) -> list[str]:
        return [url for r, url in self.processes if r == role]

    def addresses(self, role: str) -> list[tuple[str, int]]:
        return [(httpx.URL(url).host, httpx.URL(url).port or 80) for url in self.urls(role)]

    def seed(self) -> None:
        api = self.urls("api")[0] if self.urls("api") else self.urls("all")[0]
        with httpx.Client(base_url=api, headers=self.headers, timeout=30) as client:
            seed(client, self.share_root, SEEDED)

    def load(self, role: str, rate: float, seconds: float, *, warmup: float = 1.0, reads_only: bool = False) -> Run:
        posts = int((seconds + warmup) * rate * 0.06) + 10
        mix = team_mix(self.share_root, posts)
        if reads_only:
            mix = [(weight, requests) for weight, requests in mix if requests[0].method == "GET"]
        return run_load(self.addresses(role), self.headers, mix, rate=rate, seconds=seconds, warmup_seconds=warmup)


def capacity(cluster: Cluster, role: str) -> float:
    """What the processes of ``role`` serve a second when offered far more than they can."""
    return figures(cluster.load(role, OVERLOAD_PROBE, PROBE_SECONDS))["served_per_second"]


def sqlite_part(seconds: float, rate: float) -> dict:
    with ExitStack() as stack:
        share = stack.enter_context(tempfile.TemporaryDirectory())
        cluster = Cluster(stack, None, ["all"], share)
        cluster.seed()
        url = cluster.urls("all")[0]
        mix = figures(cluster.load("all", rate, seconds))
        most = capacity(cluster, "all")
        overload = figures(cluster.load("all", 2 * most, seconds))
        # The POSTs made more deployments: both paces are taken over the same ones, the load's
        # reads only, so that every pass counted is one a resync timer asked for (a write asks
        # for a pass of its own).
        time.sleep(5)
        idle_pace, _ = pace(url, lambda: time.sleep(seconds))
        loaded_pace, reads = pace(url, lambda: cluster.load("all", 2 * most, seconds, reads_only=True))
        return {
            "mix": {"rate": rate, **mix},
            "capacity_per_second": most,
            "overload": {"rate": 2 * most, **overload},
            "pace": {
                "idle_per_second": idle_pace,
                "loaded_per_second": loaded_pace,
                "ratio": loaded_pace / idle_pace,
                "load": {"rate": 2 * most, **figures(reads)},
            },
        }


def sustained(cluster: Cluster, role: str, seconds: float) -> tuple[float, list[dict]]:
    """The highest rate of the ladder (SCALE_STEP, 2 * SCALE_STEP, ...) served whole with p99 <=
    SCALE_P99_MS, and each step's figures."""
    steps: list[dict] = []
    best = 0.0
    rate = SCALE_STEP
    while rate <= SCALE_LIMIT:
        step = {"rate": rate, **figures(cluster.load(role, rate, seconds))}
        steps.append(step)
        if step["served"] == step["offered"] and step["p99_ms"] <= SCALE_P99_MS:
            best = rate
        elif len(steps) > 1 and steps[-2]["rate"] > best:
            break  # two steps in a row missed: past what it sustains (one alone may be noise)
        rate += SCALE_STEP
    return best, steps


def postgres_part(seconds: float) -> dict | None:
    results: dict = {}
    for label, roles, role in (("one", ["all"], "all"), ("scaled", ["reconciler", "api", "api"], "api")):
        with ExitStack() as stack:
            url = fresh_postgres(stack)
            if url is None:
                return None
            share = stack.enter_context(tempfile.TemporaryDirectory())
            cluster = Cluster(stack, url, roles, share)
            cluster.seed()
            best, steps = sustained(cluster, role, seconds)
            results[label] = {"processes": roles, "sustained_per_second": best, "steps": steps}
    results["ratio"] = results["scaled"]["sustained_per_second"] / max(results["one"]["sustained_per_second"], 1.0)
    return results


def verdict(value: float, goal: float, at_most: bool = True) -> str:
    met = value <= goal if at_most else value >= goal
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each measured run")
    parser.add_argument("--rate", type=float, default=200.0, help="the team mix's rate")
    parser.add_argument("--step-seconds", type=float, default=6.0, help="each step of the scale-out ladder")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    sqlite = sqlite_part(args.seconds, args.rate)
    postgres = None if args.no_postgres else postgres_part(args.step_seconds)
    mix, overload, pace_of = sqlite["mix"], sqlite["overload"], sqlite["pace"]
    rows = [
        ["mix p99 (SQLite)", f"{args.rate:.0f} req/s", f"{mix['p99_ms']:.1f} ms", "<= 25 ms", verdict(mix["p99_ms"], GOALS["mix_p99_ms"])],
        ["capacity (SQLite)", f"{OVERLOAD_PROBE:.0f} req/s", f"{sqlite['capacity_per_second']:.0f} req/s served", "-", "-"],
        [
            "overload: slowest answer",
            f"{overload['rate']:.0f} req/s",
            f"{overload['max_answered_ms']:.0f} ms ({overload['refused_429']} refused, {overload['failed']} failed)",
            "<= 1000 ms, none failed",
            "met" if overload["max_answered_ms"] <= GOALS["overload_answered_ms"] and not overload["failed"] else "MISSED",
        ],
        [
            "overload: p99 served",
            f"{overload['rate']:.0f} req/s",
            f"{overload['p99_ms']:.1f} ms ({overload['served_per_second']:.0f}/s)",
            "<= 100 ms",
            verdict(overload["p99_ms"], GOALS["overload_served_p99_ms"]),
        ],
        [
            "reconciler pace",
            f"idle / {pace_of['load']['rate']:.0f} req/s",
            f"{pace_of['idle_per_second']:.1f} / {pace_of['loaded_per_second']:.1f} passes/s",
            ">= 90% of idle",
            verdict(pace_of["ratio"], GOALS["pace_ratio"], at_most=False),
        ],
    ]
    if postgres is not None:
        one, scaled = postgres["one"], postgres["scaled"]
        rows.append(
            [
                "PostgreSQL: sustained at p99 <= 25 ms",
                "1 all / 2 api + 1 reconciler",
                f"{one['sustained_per_second']:.0f} / {scaled['sustained_per_second']:.0f} req/s ({postgres['ratio']:.2f}x)",
                ">= 1.5x",
                verdict(postgres["ratio"], GOALS["scale_ratio"], at_most=False),
            ]
        )
    print(table("api (bench.api): latency from when each request was due", ["measure", "offered", "result", "goal", "verdict"], rows))
    generator = [mix["generator_cpu_share"], overload["generator_cpu_share"]]
    print(f"\nthe generator's own CPU: {min(generator):.0%} to {max(generator):.0%} of one core")
    path = write_result("api", {"args": vars(args), "goals": GOALS, "sqlite": sqlite, "postgresql": postgres})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
