"""serving: how the engine uses the model, on the tiny model on this CPU.

1. Throughput: generated tokens per second with 1, 4 and 8 concurrent clients, batched
   (LORAPLANE_MAX_BATCH_SIZE=8) against one request at a time (=1). Every request asks for
   exactly TOKENS tokens (min_tokens = max_tokens), so the work per request is the same.
   Goal: batched >= 3x one-at-a-time at 8 clients.
2. Time to first token for a request that arrives while 7 others decode 256 tokens, in decode
   steps (the median gap between the 7 streams' tokens), iteration-level scheduling against
   static batches (LORAPLANE_BATCHING=static). Goal: at most 3 steps at p50.
3. Poisson arrivals at a rate that keeps about 6 requests in flight under iteration-level
   scheduling (a guess from the decode step, corrected by a trial run's Little's law), each asking for 16 to 256 tokens: the same arrivals against both, tokens/s from
   the first arrival to the last answer (200 arrivals, so that the last ones' tail is small
   beside the whole). Goal: at least 1.5x static batching.

    python -m bench.serving [--seconds 10] [--tokens 32] [--probes 20] [--arrivals 200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import clean_env, free_port, percentile, start_ready, table, write_result

CONCURRENCY = (1, 4, 8)


def start_app(share: Path, batch: int, batching: str = "continuous") -> tuple[subprocess.Popen, str]:
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
        LORAPLANE_BATCHING=batching,
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


class Streams:
    """``count`` clients streaming ``tokens``-token completions back to back, keeping the times
    their chunks arrive: the gaps between them are decode steps."""

    def __init__(self, url: str, count: int, tokens: int) -> None:
        self.url, self.tokens = url, tokens
        self.gaps: list[float] = []
        self.started = threading.Barrier(count + 1)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> Streams:
        for thread in self._threads:
            thread.start()
        self.started.wait(timeout=120)  # every stream has its first token
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _client(self, index: int) -> None:
        first = True
        body = {"prompt": f"Background {index}:", "max_tokens": self.tokens, "min_tokens": self.tokens, "temperature": 0, "stream": True}
        with httpx.Client(timeout=300) as http:
            while not self._stop.is_set():
                last = None
                with http.stream("POST", f"{self.url}/v1/completions", json=body) as response:
                    for line in response.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        now = time.perf_counter()
                        if last is not None:
                            with self._lock:
                                self.gaps.append(now - last)
                        last = now
                        if first:
                            first = False
                            self.started.wait(timeout=120)

    def quiet_step(self, seconds: float = 2.0) -> float:
        """The median gap between tokens over ``seconds`` of these streams alone: a decode step."""
        with self._lock:
            self.gaps.clear()
        time.sleep(seconds)
        with self._lock:
            return statistics.median(self.gaps)


def time_to_first_token(url: str, probes: int) -> dict[str, float]:
    """TTFT of a short request while 7 streams decode 256 tokens each, in seconds and steps."""
    ttfts: list[float] = []
    with Streams(url, 7, 256) as streams, httpx.Client(timeout=300) as http:
        step = streams.quiet_step()
        for index in range(probes):
            body = {"prompt": f"Probe {index}:", "max_tokens": 4, "min_tokens": 4, "temperature": 0, "stream": True}
            sent = time.perf_counter()
            with http.stream("POST", f"{url}/v1/completions", json=body) as response:
                for line in response.iter_lines():  # read to the end, as a client would
                    if line.startswith("data: {") and len(ttfts) == index:
                        ttfts.append(time.perf_counter() - sent)
            time.sleep(random.uniform(0, 0.05))  # arrive at different points of the others' work
    ttft = percentile(ttfts, 50)
    return {"ttft_p50_seconds": ttft, "ttft_p95_seconds": percentile(ttfts, 95), "step_seconds": step, "ttft_p50_steps": ttft / step}


def poisson(url: str, rate: float, arrivals: int, seed: int = 7) -> dict[str, float]:
    """``arrivals`` requests at Poisson times (``rate`` a second), each for 16-256 tokens."""
    chooser = random.Random(seed)
    schedule, at = [], 0.0
    for _ in range(arrivals):
        at += chooser.expovariate(rate)
        schedule.append((at, chooser.choice(LENGTHS)))
    generated, failures = [0], [0]
    latencies: list[float] = []
    lock = threading.Lock()
    started = time.perf_counter()

    def one(offset: float, tokens: int, index: int) -> None:
        time.sleep(max(0.0, started + offset - time.perf_counter()))
        body = {"prompt": f"Arrival {index}:", "max_tokens": tokens, "min_tokens": tokens, "temperature": 0}
        sent = time.perf_counter()
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
        with lock:
            latencies.append(time.perf_counter() - sent)
            if response.status_code == 200:
                generated[0] += response.json()["usage"]["completion_tokens"]
            else:
                failures[0] += 1

    threads = [threading.Thread(target=one, args=(offset, tokens, i)) for i, (offset, tokens) in enumerate(schedule)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    # Little's law: requests in flight on average, queued ones included.
    in_flight = rate * statistics.fmean(latencies)
    return {"tokens_per_second": generated[0] / elapsed, "seconds": elapsed, "failures": failures[0], "in_flight": in_flight}


LENGTHS = (16, 32, 64, 128, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--arrivals", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from serving.tiny import make_tiny_share

    results: dict[str, dict[int, dict[str, float]]] = {}
    scheduling: dict[str, dict[str, dict[str, float]]] = {}
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
        # The arrival rate is set once, from iteration-level scheduling's own step with about 6
        # rows, and both schedulers get the same arrivals.
        arrival_rate = None
        for batching in ("continuous", "static"):
            process, url = start_app(share, 8, batching)
            try:
                throughput(url, 1, 2.0, args.tokens)  # warm up
                ttft = time_to_first_token(url, args.probes)
                if arrival_rate is None:
                    # A first guess from the step with 6 rows, then one trial run to correct it
                    # by the requests it actually kept in flight.
                    with Streams(url, 6, 256) as streams:
                        step = streams.quiet_step()
                    guess = 6 / (statistics.fmean(LENGTHS) * step)
                    trial = poisson(url, guess, args.arrivals // 2, seed=11)
                    arrival_rate = guess * min(2.0, max(0.5, 6 / trial["in_flight"]))
                scheduling[batching] = {"ttft": ttft, "poisson": {"rate": arrival_rate, **poisson(url, arrival_rate, args.arrivals)}}
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
    continuous, static = scheduling["continuous"], scheduling["static"]
    steps = continuous["ttft"]["ttft_p50_steps"]
    speedup = continuous["poisson"]["tokens_per_second"] / static["poisson"]["tokens_per_second"]
    print()
    print(
        table(
            "scheduling: iteration-level against static batches",
            ["measure", "iteration-level", "static", "goal"],
            [
                [
                    "TTFT p50 beside 7 streams (ms)",
                    continuous["ttft"]["ttft_p50_seconds"] * 1000,
                    static["ttft"]["ttft_p50_seconds"] * 1000,
                    "",
                ],
                ["TTFT p50 (decode steps)", steps, static["ttft"]["ttft_p50_steps"], "met" if steps <= 3 else "MISSED (goal <= 3 steps)"],
                ["decode step (ms)", continuous["ttft"]["step_seconds"] * 1000, static["ttft"]["step_seconds"] * 1000, ""],
                [
                    f"Poisson tokens/s ({continuous['poisson']['rate']:.2f} req/s)",
                    continuous["poisson"]["tokens_per_second"],
                    static["poisson"]["tokens_per_second"],
                    "met" if speedup >= 1.5 else f"MISSED ({speedup:.2f}x, goal 1.5x)",
                ],
                ["Poisson: requests in flight", continuous["poisson"]["in_flight"], static["poisson"]["in_flight"], ""],
                ["Poisson failures", continuous["poisson"]["failures"], static["poisson"]["failures"], ""],
            ],
        )
    )
    path = write_result(
        "serving",
        {
            "tokens_per_request": args.tokens,
            "seconds": args.seconds,
            "results": {m: {str(c): v for c, v in r.items()} for m, r in results.items()},
            "scheduling": scheduling,
            "poisson_speedup": speedup,
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
