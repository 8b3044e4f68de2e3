"""serving: generated tokens per second with 1, 4 and 8 concurrent clients, batched
(LORAPLANE_MAX_BATCH_SIZE=8) against one request at a time (=1), on the tiny model on this
CPU. Every request asks for exactly TOKENS tokens (min_tokens = max_tokens), so the work per
request is the same. Goal: batched >= 3x one-at-a-time at 8 clients.

    python -m bench.serving [--seconds 10] [--tokens 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import clean_env, free_port, start_ready, table, write_result

CONCURRENCY = (1, 4, 8)


def start_app(share: Path, batch: int) -> tuple[subprocess.Popen, str]:
    from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH

    port = free_port()
    env = clean_env(
        LORAPLANE_SHARE_ROOT=str(share),
        LORAPLANE_MODEL_PATH=TINY_MODEL_PATH,
        LORAPLANE_ADAPTER_PATH=ADAPTER_PATH,
        LORAPLANE_PORT=str(port),
        LORAPLANE_HOST="127.0.0.1",
        LORAPLANE_UI="false",
        LORAPLANE_MAX_BATCH_SIZE=str(batch),
    )
    url = f"http://127.0.0.1:{port}"
    return start_ready([sys.executable, "-m", "serving"], env, url), url


def throughput(url: str, clients: int, seconds: float, tokens: int) -> tuple[float, int]:
    """Generated tokens per second with ``clients`` sending back to back, and failures."""
    generated = [0] * clients
    failures = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop_at:
                response = http.post(
                    f"{url}/v1/completions",
                    json={
                        "prompt": f"Count with me, client {index}:",
                        "max_tokens": tokens,
                        "min_tokens": tokens,
                        "temperature": 0,
                    },
                )
                if response.status_code == 200:
                    generated[index] += response.json()["usage"]["completion_tokens"]
                else:
                    failures[index] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(generated) / (time.monotonic() - started), sum(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from serving.tiny import make_tiny_share

    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        share = Path(folder) / "share"
        make_tiny_share(share)
        for mode, batch in (("one-at-a-time", 1), ("batched", 8)):
            process, url = start_app(share, batch)
            try:
                throughput(url, 1, 2.0, args.tokens)  # warm up
                results[mode] = {}
                for clients in CONCURRENCY:
                    rate, failures = throughput(url, clients, args.seconds, args.tokens)
                    results[mode][clients] = {"tokens_per_second": rate, "failures": failures}
            finally:
                process.terminate()
                process.wait(timeout=30)
    rows = []
    for clients in CONCURRENCY:
        single, batched = results["one-at-a-time"][clients], results["batched"][clients]
        ratio = batched["tokens_per_second"] / single["tokens_per_second"] if single["tokens_per_second"] else float("nan")
        goal = "" if clients != 8 else ("met" if ratio >= 3 else "MISSED (goal 3x)")
        rows.append(
            [clients, single["tokens_per_second"], batched["tokens_per_second"], ratio, single["failures"] + batched["failures"], goal]
        )
    print(
        table(
            f"serving: tokens/s on the tiny model ({args.tokens} tokens a request, {args.seconds:.0f} s each)",
            ["clients", "one-at-a-time", "batched", "ratio", "failures", "goal"],
            rows,
        )
    )
    path = write_result(
        "serving",
        {
            "tokens_per_request": args.tokens,
            "seconds": args.seconds,
            "results": {m: {str(c): v for c, v in r.items()} for m, r in results.items()},
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
