"""watch: what open watch streams cost everyone else.

A real ``loraplane serve`` (tokens on) with 100 deployments, one of them changed twice a
second (so every watch has events to carry). GET one deployment and /healthz are measured at a
fixed rate (open loop: latency from when each request was due), first with no watch open, then
with WATCHES streams open and read by another process (two viewer tokens: at most 100 watches
per token by default). Goal with 200 watches: GET p99 < 50 ms, /healthz p99 < 20 ms. Before
the shared poller, each watch polled the database twice a second: 200 watches took a GET from
8 ms to 350-560 ms at p50.

    python -m bench.watch [--watches 200] [--seconds 10] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.api import seed
from bench.common import start_service, summary, table, write_result

GOALS_MS = {"get": 50.0, "healthz": 20.0}
PER_TOKEN = 100
DEPLOYMENTS = 100


async def measure(url: str, headers: dict[str, str], path: str, seconds: float, rate: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    total = int(seconds * rate)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        await client.get(path)  # the connection is open before the clock starts

        async def one(due: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                ok = (await client.get(path)).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(start + i / rate) for i in range(total)))
    return latencies, errors


async def hold(url: str, tokens: list[str], count: int) -> None:
    """Open ``count`` watches (spread over the tokens); say "open" on stdout once each has had
    an ADDED per deployment, and "caught up" once each has had one event more (the change the
    bench makes then); read them until killed."""

    async def watch(client: httpx.AsyncClient, token: str, opened: asyncio.Event, caught_up: asyncio.Event) -> None:
        received = 0
        async with client.stream(
            "GET", "/v1/deployments", params={"watch": "true"}, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if response.status_code != 200:
                raise SystemExit(f"a watch was refused: {response.status_code} {(await response.aread())[:200]!r}")
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    received += 1
                    if received >= DEPLOYMENTS:
                        opened.set()
                    if received > DEPLOYMENTS:
                        caught_up.set()

    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=None), limits=limits) as client:
        flags = [(asyncio.Event(), asyncio.Event()) for _ in range(count)]
        tasks = [asyncio.create_task(watch(client, tokens[i % len(tokens)], *flags[i])) for i in range(count)]
        await asyncio.wait_for(asyncio.gather(*(opened.wait() for opened, _ in flags)), timeout=120)
        print("open", flush=True)
        await asyncio.wait_for(asyncio.gather(*(caught_up.wait() for _, caught_up in flags)), timeout=120)
        print("caught up", flush=True)
        await asyncio.gather(*tasks)


def changer(url: str, headers: dict[str, str], stop: asyncio.Event) -> asyncio.Task:
    async def change() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            index = 0
            while not stop.is_set():
                index += 1
                await client.patch(
                    "/v1/deployments/bench-0",
                    content=json.dumps({"metadata": {"labels": {"n": str(index)}}}),
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                await asyncio.sleep(0.5)

    return asyncio.get_running_loop().create_task(change())


async def phase(url: str, headers: dict[str, str], seconds: float, rate: float) -> dict[str, dict]:
    stop = asyncio.Event()
    task = changer(url, headers, stop)
    try:
        results = {}
        for name, path in (("get", "/v1/deployments/bench-1"), ("healthz", "/healthz")):
            latencies, errors = await measure(url, headers, path, seconds, rate)
            results[name] = {**summary(latencies), "errors": errors}
        return results
    finally:
        stop.set()
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s")
    parser.add_argument("--hold", nargs=3, metavar=("URL", "TOKENS", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        url, tokens, count = args.hold
        asyncio.run(hold(url, tokens.split(","), int(count)))
        return
    with tempfile.TemporaryDirectory() as folder:
        share = Path(folder) / "share"
        share.mkdir()
        process, url, headers = start_service(
            Path(folder) / "data", extra_env={"LORAPLANE_RESYNC_SECONDS": "30", "LORAPLANE_LOCAL_SHARE_ROOTS": str(share)}
        )
        holder: subprocess.Popen | None = None
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                seed(client, str(share), DEPLOYMENTS)
                viewers = [
                    client.post("/v1/tokens", json={"name": f"watcher-{i}", "role": "viewer"}).json()["token"]
                    for i in range(max(1, -(-args.watches // PER_TOKEN)))
                ]
            without = asyncio.run(phase(url, headers, args.seconds, args.rate))
            holder = subprocess.Popen(
                [sys.executable, "-m", "bench.watch", "--hold", url, ",".join(viewers), str(args.watches)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "open":
                raise SystemExit("the watches did not open")
            # One change that every watch must carry: once each has it, what opening 200 watches
            # cost (an ADDED per deployment per watch) is behind, and the steady state is measured.
            httpx.patch(
                f"{url}/v1/deployments/bench-0",
                content=json.dumps({"metadata": {"labels": {"n": "opened"}}}),
                headers={**headers, "Content-Type": "application/merge-patch+json"},
            ).raise_for_status()
            if holder.stdout.readline().strip() != "caught up":
                raise SystemExit("the watches did not all get the change")
            opened = httpx.get(f"{url}/metrics").text
            gauge = next(line for line in opened.splitlines() if line.startswith("loraplane_watches_open "))
            with_watches = asyncio.run(phase(url, headers, args.seconds, args.rate))
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()
            process.terminate()
            process.wait(timeout=30)
    rows = []
    for label, results in (("0 watches", without), (f"{args.watches} watches", with_watches)):
        for name, figures in results.items():
            goal = GOALS_MS[name] if label != "0 watches" else None
            verdict = "-" if goal is None else ("met" if figures["p99"] <= goal else f"MISSED (goal {goal:.0f} ms)")
            rows.append([label, name, figures["count"], figures["p50"], figures["p99"], figures["errors"], verdict])
    print(
        table(
            f"watch: {args.rate:.0f} req/s for {args.seconds:.0f} s each, one deployment changed twice a second "
            f"(latency in ms, from when each request was due; {gauge})",
            ["open", "request", "answered", "p50", "p99", "errors", "goal"],
            rows,
        )
    )
    path = write_result(
        "watch", {"watches": args.watches, "rate": args.rate, "seconds": args.seconds, "without": without, "with": with_watches}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
