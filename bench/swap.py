"""swap: how long an adapter change takes to reach clients, hotReload against restart.

A real ``loraplane serve`` runs the local target with the real serving app on the tiny model.
Each deployment first serves two adapter versions in turn (written to its adapter folder as a
training job would, so both are validated and staged); then each round activates the other one
through the API (``POST .../adapters/{version}/activate``) while 4 clients send streamed chat
completions without pause. A round's time runs from the activation request to the first
response a client got from the new version (the ``x-adapter-version`` header that comes with
its first chunk). What this measures is the swap itself: detection and the settle window come
before either strategy's swap and cost both the same, so they are left out (``settleSeconds``
is 0 here).

A failed request is any answer but 200, or a connection that broke; while a restart has no
process up, requests are refused, and those count as failed too (the local target has one
replica). Goal: restart / hotReload >= 100x at p50, and 0 failed requests under hotReload.

    python -m bench.swap [--rounds 20]
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

NAME = {"hotReload": "swap-hot", "restart": "swap-restart"}
CLIENTS = 4
# Streamed, as chat clients ask: a response has begun (and names its adapter) when its headers
# arrive with the first chunk, not when the last token has been generated.
REQUEST = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}


class Load:
    """CLIENTS threads sending chat completions back to back; each answer is kept as
    (time it arrived, adapter version), each failure counted."""

    def __init__(self, endpoint_of) -> None:
        self.endpoint_of = endpoint_of
        self.answers: list[tuple[float, str]] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        endpoint = self.endpoint_of()
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                answered: tuple[float, str] | None = None
                try:
                    with client.stream("POST", f"{endpoint}/v1/chat/completions", json=REQUEST) as response:
                        if response.status_code == 200:
                            answered = (time.perf_counter(), response.headers["x-adapter-version"])
                        response.read()  # the whole answer, as a client would
                except httpx.HTTPError:
                    answered = None  # cut off mid-answer: a failure
                with self._lock:
                    if answered is not None:
                        self.answers.append(answered)
                    else:
                        self.failures += 1
                if answered is None:
                    time.sleep(0.05)
                    endpoint = self.endpoint_of()  # a restart serves from a new port

    def first_from(self, version: str, since: float) -> float | None:
        with self._lock:
            return next((at for at, served in self.answers if at >= since and served == version), None)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def synced_other_than(client: httpx.Client, name: str, old: str) -> str | None:
    """The version served once a rollout away from ``old`` is over, else None."""
    version = synced_version(client, name)
    return version if version != old else None


def status_of(client: httpx.Client, name: str) -> dict:
    return client.get(f"/v1/deployments/{name}").raise_for_status().json().get("status", {})


def synced_version(client: httpx.Client, name: str) -> str | None:
    """The version served once a rollout is over (AdapterSynced), else None."""
    status = status_of(client, name)
    synced = any(c["type"] == "AdapterSynced" and c["status"] == "True" for c in status.get("conditions", []))
    return status.get("adapter", {}).get("servingVersion") if synced else None


def write_adapter(share: Path, source: str, folder: str) -> None:
    for file in (share / source).iterdir():
        (share / folder / file.name).write_bytes(file.read_bytes())


def prepare(client: httpx.Client, share: Path, strategies: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """A deployment per strategy (made side by side), each serving, one after the other, the
    share's two adapters: strategy -> their versions."""
    from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH

    for strategy in strategies:
        name = NAME[strategy]
        shutil.copytree(share / ADAPTER_PATH, share / f"adapters/{name}")
        client.post(
            "/v1/deployments",
            json={
                "metadata": {"name": name},
                "spec": {
                    "target": "local",
                    "local": {"shareRoot": str(share)},
                    "model": {"path": TINY_MODEL_PATH},
                    "adapter": {"path": f"adapters/{name}", "strategy": strategy, "settleSeconds": 0},
                },
            },
        ).raise_for_status()
    first = {s: wait_for(partial(synced_version, client, NAME[s]), 180, f"{NAME[s]} to serve its first adapter") for s in strategies}
    for strategy in strategies:
        write_adapter(share, SECOND_ADAPTER_PATH, f"adapters/{NAME[strategy]}")
    second = {
        s: wait_for(partial(synced_other_than, client, NAME[s], first[s]), 180, f"{NAME[s]} to serve its second adapter")
        for s in strategies
    }
    return {s: (first[s], second[s]) for s in strategies}


def run_strategy(client: httpx.Client, strategy: str, versions: tuple[str, str], rounds: int) -> dict:
    name = NAME[strategy]
    first, second = versions
    times: list[float] = []
    with Load(lambda: status_of(client, name).get("endpoint", "")) as load:
        wait_for(lambda: load.first_from(second, 0.0), 60, "the load to get answers")
        failures_before = load.failures
        current = second
        for _ in range(rounds):
            wanted = first if current == second else second
            started = time.perf_counter()
            client.post(f"/v1/deployments/{name}/adapters/{wanted}/activate").raise_for_status()
            arrived = wait_for(partial(load.first_from, wanted, started), 120, f"a response from {wanted}")
            times.append(arrived - started)
            # The next round starts once this rollout is over (verified, status written).
            wait_for(partial(synced_other_than, client, name, current), 120, f"{name}'s rollout to {wanted} to finish")
            current = wanted
        failed = load.failures - failures_before
        answered = len(load.answers)
    return {**summary(times), "samples": times, "failed_requests": failed, "answered_requests": answered}


def delete_all(client: httpx.Client) -> None:
    """Their serving processes stop with them (``serve`` leaves them running otherwise)."""
    for name in NAME.values():
        client.delete(f"/v1/deployments/{name}")
    wait_for(lambda: all(client.get(f"/v1/deployments/{n}").status_code == 404 for n in NAME.values()), 60, "the deployments to be deleted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from serving.tiny import make_tiny_share

    with tempfile.TemporaryDirectory() as folder:
        share = Path(folder) / "share"
        make_tiny_share(share)
        serving = [sys.executable, "-m", "serving"]
        process, url, headers = start_service(
            Path(folder) / "data",
            extra_env={
                "LORAPLANE_SERVING_COMMAND": json.dumps(["env", "LORAPLANE_UI=false", *serving]),
                "LORAPLANE_LOCAL_SHARE_ROOTS": str(share),
            },
        )
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                try:
                    versions = prepare(client, share, ("hotReload", "restart"))
                    # One at a time: the other deployment's app sits idle meanwhile.
                    results = {
                        strategy: run_strategy(client, strategy, versions[strategy], args.rounds) for strategy in ("hotReload", "restart")
                    }
                finally:
                    delete_all(client)
        finally:
            process.terminate()
            process.wait(timeout=60)

    hot, restart = results["hotReload"], results["restart"]
    ratio_p50 = restart["p50"] / hot["p50"]
    ratio_p95 = restart["p95"] / hot["p95"]
    rows = [
        [strategy, figures["count"], figures["p50"] * 1000, figures["p95"] * 1000, figures["failed_requests"]]
        for strategy, figures in results.items()
    ]
    verdict = "met" if ratio_p50 >= 100 and hot["failed_requests"] == 0 else "MISSED"
    print(
        table(
            f"swap: activation -> first response from the new adapter, {args.rounds} rounds, {CLIENTS} clients (ms)",
            ["strategy", "rounds", "p50", "p95", "failed requests"],
            rows,
        )
    )
    print(f"\nrestart / hotReload: {ratio_p50:.0f}x at p50, {ratio_p95:.0f}x at p95 (goal >= 100x, 0 failed under hotReload: {verdict})")
    path = write_result(
        "swap",
        {"rounds": args.rounds, "clients": CLIENTS, "results": results, "ratio": {"p50": ratio_p50, "p95": ratio_p95}, "goal": verdict},
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
