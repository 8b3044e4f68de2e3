"""adapters: many LoRA adapters on one base model, on the tiny model on this CPU.

1. Memory: one serving process with 8 adapters resident, against 8 processes serving one
   adapter each (the one-adapter-per-deployment way), summed resident set size once every
   process answers. Goal: at least 5x lower.
2. Throughput: 8 concurrent clients, each on a different adapter, against 8 clients on the
   same adapter, every request asking for exactly TOKENS tokens; generated tokens per second.
   Goal: mixed at least 0.8x single.
3. Cold adapter: time to first token for an adapter that is not resident
   (LORAPLANE_MAX_RESIDENT_ADAPTERS=1, asking for two adapters in turn: each request loads its
   adapter again from its staged copy), beside the same for a resident one.

    python -m bench.adapters [--seconds 10] [--tokens 32] [--cold 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench.common import clean_env, free_port, percentile, start_ready, table, write_result

ADAPTERS = 8
POINTER = ".loraplane/bench/current.json"


def build_share(root: Path) -> list[str]:
    """The tiny model and ADAPTERS adapters, each in its own folder, and a pointer naming them."""
    from serving.tiny import TINY_MODEL_PATH, write_random_adapter, write_tiny_model

    write_tiny_model(root / TINY_MODEL_PATH)
    names = [f"adapter-{i}" for i in range(ADAPTERS)]
    for index, name in enumerate(names):
        write_random_adapter(root / TINY_MODEL_PATH, root / "adapters" / name, seed=index + 1)
    return names


def write_pointer(root: Path, names: list[str]) -> None:
    pointer = root / POINTER
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"adapters": {name: {"version": f"v-{name}", "path": f"adapters/{name}"} for name in names}}))


def start_app(share: Path, pointer: str, **settings: str) -> tuple[subprocess.Popen, str]:
    from serving.tiny import TINY_MODEL_PATH

    port = free_port()
    env = clean_env(
        LORAPLANE_SHARE_ROOT=str(share),
        LORAPLANE_MODEL_PATH=TINY_MODEL_PATH,
        LORAPLANE_ADAPTER_POINTER=pointer,
        LORAPLANE_PORT=str(port),
        LORAPLANE_HOST="127.0.0.1",
        LORAPLANE_UI="false",
        LORAPLANE_DEPLOYMENT="bench",
        **{f"LORAPLANE_{k.upper()}": v for k, v in settings.items()},
    )
    url = f"http://127.0.0.1:{port}"
    return start_ready([sys.executable, "-m", "serving"], env, url), url


def rss_bytes(process: subprocess.Popen) -> int:
    return psutil.Process(process.pid).memory_info().rss


def complete(http: httpx.Client, url: str, model: str, tokens: int, *, stream: bool = False) -> tuple[int, float | None]:
    """Tokens generated and, streamed, the seconds to the first one."""
    body = {"model": model, "prompt": "Count with me:", "max_tokens": tokens, "min_tokens": tokens, "temperature": 0}
    if not stream:
        response = http.post(f"{url}/v1/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"], None
    started, first = time.monotonic(), None
    with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"text":""' not in line.replace(" ", ""):
                first = time.monotonic() - started
    return tokens, first


def throughput(url: str, models: list[str], seconds: float, tokens: int) -> tuple[float, int]:
    """Tokens per second with one client per entry of ``models``, back to back; failures."""
    generated, failures = [0] * len(models), [0] * len(models)
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop_at:
                try:
                    generated[index] += complete(http, url, models[index], tokens)[0]
                except httpx.HTTPError:
                    failures[index] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(generated) / (time.monotonic() - started), sum(failures)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--cold", type=int, default=20, help="cold-adapter requests")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as folder:
        share = Path(folder)
        names = build_share(share)
        write_pointer(share, names)
        for index, name in enumerate(names):  # one pointer of one adapter each, for the 8 apps
            single = share / f".loraplane/bench-{index}/current.json"
            single.parent.mkdir(parents=True, exist_ok=True)
            single.write_text(json.dumps({"adapters": {name: {"version": f"v-{name}", "path": f"adapters/{name}"}}}))

        # 1 and 2: one app with all eight resident.
        process, url = start_app(share, POINTER, max_resident_adapters=str(ADAPTERS))
        try:
            with httpx.Client(timeout=120) as http:
                for name in names:  # each adapter answers once before anything is measured
                    complete(http, url, name, 2)
            one_app = rss_bytes(process)
            same, same_failures = throughput(url, [names[0]] * ADAPTERS, args.seconds, args.tokens)
            mixed, mixed_failures = throughput(url, names, args.seconds, args.tokens)
        finally:
            stop(process)

        apps = []
        try:
            for index in range(ADAPTERS):
                apps.append(start_app(share, f".loraplane/bench-{index}/current.json"))
            with httpx.Client(timeout=120) as http:
                for (_, app_url), name in zip(apps, names, strict=True):
                    complete(http, app_url, name, 2)
            eight_apps = sum(rss_bytes(p) for p, _ in apps)
        finally:
            for p, _ in apps:
                stop(p)

        # 3: cold against resident time to first token.
        process, url = start_app(share, POINTER, max_resident_adapters="1")
        cold, warm = [], []
        try:
            with httpx.Client(timeout=120) as http:
                complete(http, url, names[0], 2)
                for turn in range(args.cold):
                    cold.append(complete(http, url, names[1 + turn % 2], 4, stream=True)[1] or float("nan"))
                    warm.append(complete(http, url, names[1 + turn % 2], 4, stream=True)[1] or float("nan"))
            reloads = next(
                float(line.split()[-1])
                for line in httpx.get(f"{url}/metrics").text.splitlines()
                if line.startswith("loraplane_serving_adapter_reloads_total")
            )
        finally:
            stop(process)

    memory_ratio = eight_apps / one_app
    mixed_ratio = mixed / same if same else float("nan")
    print(
        table(
            f"adapters: {ADAPTERS} adapters on the tiny model ({args.tokens} tokens a request, {args.seconds:.0f} s each)",
            ["measure", "value", "against", "ratio", "goal"],
            [
                [
                    "resident memory (MB): one app, 8 adapters | 8 apps",
                    one_app / 1e6,
                    eight_apps / 1e6,
                    memory_ratio,
                    "met" if memory_ratio >= 5 else "MISSED (goal 5x lower)",
                ],
                [
                    "tokens/s, 8 clients: 8 adapters | 1 adapter",
                    mixed,
                    same,
                    mixed_ratio,
                    "met" if mixed_ratio >= 0.8 else "MISSED (goal 0.8x)",
                ],
                ["failures: mixed | same", mixed_failures, same_failures, "", ""],
                [
                    "TTFT p50 (ms): cold adapter | resident",
                    percentile(cold, 50) * 1000,
                    percentile(warm, 50) * 1000,
                    percentile(cold, 50) / percentile(warm, 50),
                    "",
                ],
                ["TTFT p95 (ms): cold adapter | resident", percentile(cold, 95) * 1000, percentile(warm, 95) * 1000, "", ""],
                ["adapter loads on request (cold runs)", reloads, args.cold, "", ""],
            ],
        )
    )
    path = write_result(
        "adapters",
        {
            "adapters": ADAPTERS,
            "tokens_per_request": args.tokens,
            "seconds": args.seconds,
            "memory_bytes": {"one_app": one_app, "eight_apps": eight_apps, "ratio": memory_ratio},
            "tokens_per_second": {"mixed": mixed, "same": same, "ratio": mixed_ratio, "failures": mixed_failures + same_failures},
            "ttft_seconds": {"cold": cold, "resident": warm},
            "reloads": reloads,
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
