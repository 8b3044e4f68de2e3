"""detect: from an adapter's files complete on the share to its new version serving, end to end.

A real ``loraplane serve`` (resync at its default, 30 s) runs the local target with the real
serving app on the tiny model, one deployment of two adapters (``settleSeconds`` SETTLE,
``pollSeconds`` POLL). Each round writes new files into one adapter's folder, as a training job
would (each round a fresh adapter, so each is a new version), and measures from the moment the
last file is complete to the first response for that adapter that names the new version in
``x-adapter-version``, while a client asks for both adapters without pause. The other
adapter's answers must not change. Goal: SETTLE + 2 s at p95.

With ``--prove``, what a gate and a canary add to a rollout (``rollout.gate``,
``rollout.canary``): the same rounds, first with neither, then with a gate of GATE golden
prompts, then with that gate and a canary of CANARY seconds at 50%, each timed from the files
complete to the new version serving every request (the status says so), side by side.

    python -m bench.detect [--rounds 10] [--settle 2] [--poll 1] [--prove [--gate 10] [--canary 5]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx

from bench.common import start_service, summary, table, wait_for, write_result

NAME = "detect"


class Load:
    """One client asking each adapter in turn, back to back: (when, adapter, version) answers."""

    def __init__(self, endpoint: str, adapters: tuple[str, ...]) -> None:
        self.endpoint, self.adapters = endpoint, adapters
        self.answers: list[tuple[float, str, str]] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._client, daemon=True)

    def _client(self) -> None:
        turn = 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                adapter = self.adapters[turn % len(self.adapters)]
                turn += 1
                body = {"model": adapter, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
                try:
                    response = client.post(f"{self.endpoint}/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    response = None
                with self._lock:
                    if response is not None and response.status_code == 200:
                        self.answers.append((time.perf_counter(), adapter, response.headers["x-adapter-version"]))
                    else:
                        self.failures += 1

    def first_from(self, adapter: str, version: str, since: float) -> float | None:
        with self._lock:
            return next((at for at, a, v in self.answers if at >= since and a == adapter and v == version), None)

    def newest(self, adapter: str) -> str | None:
        with self._lock:
            return next((v for _, a, v in reversed(self.answers) if a == adapter), None)

    def versions_of(self, adapter: str) -> set[str]:
        with self._lock:
            return {v for _, a, v in self.answers if a == adapter}

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def status_of(client: httpx.Client) -> dict:
    return client.get(f"/v1/deployments/{NAME}").raise_for_status().json().get("status", {})


def serving(client: httpx.Client) -> dict[str, str] | None:
    status = status_of(client)
    if not any(c["type"] == "AdapterSynced" and c["status"] == "True" for c in status.get("conditions", [])):
        return None
    return {a["name"]: a.get("servingVersion") for a in status.get("adapters", [])}


def changed(client: httpx.Client, current: str) -> str | None:
    """The moving adapter's serving version once it is another than ``current``."""
    now = serving(client)
    return now["moving"] if now and now["moving"] != current else None


def rollouts(args: argparse.Namespace) -> list[tuple[str, dict | None]]:
    """The rollout settings measured, each by name: neither (the plain rollout), or with
    ``--prove`` a gate and then a gate and a canary besides."""
    if not args.prove:
        return [("plain", None)]
    # Golden prompts every version passes (their text must not be a word of the tiny model's):
    # what is measured is the asking, not a verdict.
    prompts = [
        {"name": f"golden {i}", "prompt": f"Question {i}:", "maxTokens": 16, "notContains": "refund policy"} for i in range(args.gate)
    ]
    gate = {"prompts": prompts}
    canary = {"weight": 50, "durationSeconds": args.canary, "minRequests": 1_000_000, "maxErrorRate": 1.0, "maxLatencyRatio": 100}
    return [("plain", None), ("gate", {"gate": gate}), ("gate+canary", {"gate": gate, "canary": canary})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--settle", type=int, default=2)
    parser.add_argument("--poll", type=int, default=1)
    parser.add_argument("--prove", action="store_true", help="also measure a gate, and a gate with a canary")
    parser.add_argument("--gate", type=int, default=10, help="golden prompts in the gate (--prove)")
    parser.add_argument("--canary", type=int, default=5, help="the canary's durationSeconds (--prove)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, make_tiny_share, write_random_adapter

    settings = rollouts(args)
    times: list[float] = []
    serving_all: dict[str, list[float]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as folder:
        share = Path(folder) / "share"
        make_tiny_share(share)
        shutil.copytree(share / ADAPTER_PATH, share / "adapters/moving")
        shutil.copytree(share / SECOND_ADAPTER_PATH, share / "adapters/steady")
        fresh = [share / f"fresh/{i}" for i in range(args.rounds * len(settings))]
        for index, path in enumerate(fresh):  # made beforehand: a round only copies files
            write_random_adapter(share / TINY_MODEL_PATH, path, seed=100 + index)
        serving_command = [sys.executable, "-m", "serving"]
        process, url, headers = start_service(
            Path(folder) / "data",
            extra_env={
                "LORAPLANE_SERVING_COMMAND": json.dumps(["env", "LORAPLANE_UI=false", *serving_command]),
                "LORAPLANE_LOCAL_SHARE_ROOTS": str(share),
            },
        )
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                entry = {"settleSeconds": args.settle, "pollSeconds": args.poll}
                client.post(
                    "/v1/deployments",
                    json={
                        "metadata": {"name": NAME},
                        "spec": {
                            "target": "local",
                            "local": {"shareRoot": str(share)},
                            "model": {"path": TINY_MODEL_PATH},
                            "adapters": [
                                {"name": "moving", "path": "adapters/moving", **entry},
                                {"name": "steady", "path": "adapters/steady", **entry},
                            ],
                        },
                    },
                ).raise_for_status()
                first = wait_for(partial(serving, client), 240, "both adapters to serve")
                endpoint = status_of(client)["endpoint"]
                with Load(endpoint, ("moving", "steady")) as load:
                    wait_for(lambda: load.newest("steady"), 60, "answers")
                    failures_before = load.failures
                    current = first["moving"]
                    sources = iter(fresh)
                    for name, rollout in settings:
                        adapters = [
                            {"name": "moving", "path": "adapters/moving", **entry},
                            {"name": "steady", "path": "adapters/steady", **entry},
                        ]
                        if rollout is not None:
                            adapters[0]["rollout"] = rollout
                        client.patch(
                            f"/v1/deployments/{NAME}",
                            content=json.dumps({"spec": {"adapters": adapters}}),
                            headers={"Content-Type": "application/merge-patch+json"},
                        ).raise_for_status()
                        for _ in range(args.rounds):
                            for file in sorted(next(sources).iterdir()):
                                (share / "adapters/moving" / file.name).write_bytes(file.read_bytes())
                            complete = time.perf_counter()
                            timeout = 120 + (args.canary if rollout and "canary" in rollout else 0)
                            new = wait_for(partial(changed, client, current), timeout, "the new version to serve", interval=0.1)
                            serving_all[name].append(time.perf_counter() - complete)
                            arrived = wait_for(partial(load.first_from, "moving", new, complete), 60, "an answer from the new version")
                            if name == "plain":
                                times.append(arrived - complete)
                            current = new
                    failures = load.failures - failures_before
                    steady = load.versions_of("steady")
                client.delete(f"/v1/deployments/{NAME}")
                wait_for(lambda: client.get(f"/v1/deployments/{NAME}").status_code == 404, 60, "the deployment to be deleted")
        finally:
            process.terminate()
            process.wait(timeout=60)

    if args.prove:
        report_proving(args, settings, serving_all, failures)
        return
    figures = summary(times)
    goal = args.settle + 2
    verdict = "met" if figures["p95"] <= goal else f"MISSED (goal {goal} s at p95)"
    print(
        table(
            f"detect: files complete -> new version serving, {args.rounds} rounds, settleSeconds {args.settle}, pollSeconds {args.poll} (s)",
            ["p50", "p95", "max", "goal", "failed requests", "other adapter's versions"],
            [[figures["p50"], figures["p95"], max(times), verdict, failures, len(steady)]],
        )
    )
    path = write_result(
        f"detect-poll{args.poll}",
        {
            "rounds": args.rounds,
            "settle_seconds": args.settle,
            "poll_seconds": args.poll,
            **figures,
            "samples": times,
            "failures": failures,
        },
    )
    print(f"\nwritten to {path}")


def report_proving(
    args: argparse.Namespace, settings: list[tuple[str, dict | None]], serving_all: dict[str, list[float]], failures: int
) -> None:
    """--prove: each rollout's time to serve every request, and what it adds to the plain one
    (less the canary's own durationSeconds, which it adds by design)."""
    plain = summary(serving_all["plain"])
    rows = []
    for name, rollout in settings:
        shown = summary(serving_all[name])
        added = shown["p50"] - plain["p50"]
        canary = args.canary if rollout and "canary" in rollout else 0
        rows.append([name, shown["p50"], shown["p95"], added, added - canary, failures])
    print(
        table(
            f"what proving a version adds: files complete -> serving every request, {args.rounds} rounds each, "
            f"a gate of {args.gate} prompts, a canary of {args.canary} s at 50% (s)",
            ["rollout", "p50", "p95", "added at p50", "beyond the canary's own time", "failed requests (all)"],
            rows,
        )
    )
    path = write_result(
        "detect-prove",
        {
            "rounds": args.rounds,
            "settle_seconds": args.settle,
            "poll_seconds": args.poll,
            "gate_prompts": args.gate,
            "canary_seconds": args.canary,
            "results": {name: {**summary(values), "samples": values} for name, values in serving_all.items()},
            "failures": failures,
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
