"""A fleet of azure deployments for the steady and converge benchmarks: the Azure simulator (ARM's
own throttling on, every app answered by a stand-in replica) and a real ``loraplane serve``
pointed at it, with the default ARM limiter.

The fleet shares what a team shares: one resource group, storage account, file share, Log
Analytics workspace and Container Apps environment, made by a first deployment (``fleet-base``);
every other deployment names them and has a container app of its own. So a deployment costs
one write (its app's PUT), and the write budget (10/s) sets converge's floor.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from azuresim.server import AzureSimulator
from bench.common import start_service, wait_for
from state.resource import TOOLKIT_MODEL_PATH

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = "rg-fleet"
SHARED = {
    "storageAccount": "fleetstore",
    "fileShare": "models",
    "environment": "fleet-env",
    "environmentStorage": "models",
    "logAnalytics": "fleet-logs",
}
BASE = "fleet-base"
WRITES = ("PUT", "PATCH", "POST", "DELETE")


def manifest(name: str) -> dict[str, Any]:
    azure = {"subscriptionId": SUBSCRIPTION, "resourceGroup": GROUP, "location": "westus3", **SHARED, "app": name}
    return {
        "metadata": {"name": name, "labels": {"bench": "fleet"}},
        "spec": {"target": "azure", "model": {"path": TOOLKIT_MODEL_PATH}, "azure": azure},
    }


def arm_only(calls: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """ARM's calls by method and type, without the share's data plane (files, directories)."""
    out = {}
    for method, kinds in calls.items():
        kept = {kind: n for kind, n in kinds.items() if not kind.startswith("Microsoft.Storage/fileShares/")}
        if kept:
            out[method] = kept
    return out


class Fleet:
    def __init__(
        self,
        *,
        resync_seconds: float = 30.0,
        workers: int = 4,
        polling_seconds: float = 5.0,
        arm_limits: bool = True,
        limiter: dict[str, str] | None = None,
    ) -> None:
        """``arm_limits``: ARM's throttling in the simulator; ``limiter``: LORAPLANE_AZURE_*
        settings of the daemon's limiter (its defaults when left out)."""
        self.resync_seconds, self.workers = resync_seconds, workers
        self._folder = tempfile.TemporaryDirectory()
        root = Path(self._folder.name)
        self.sim = AzureSimulator(root / "sim", standin_replicas=True, arm_limits=arm_limits).start()
        self.process: subprocess.Popen
        self.process, self.url, headers = start_service(
            root / "data",
            extra_env={
                "LORAPLANE_AZURE_ARM_URL": self.sim.url,
                "LORAPLANE_AZURE_CA_BUNDLE": str(self.sim.ca_bundle),
                "LORAPLANE_AZURE_CREDENTIAL": "static",
                "LORAPLANE_RESYNC_SECONDS": str(resync_seconds),
                "LORAPLANE_WORKERS": str(workers),
                "LORAPLANE_AZURE_POLLING_SECONDS": str(polling_seconds),
                **(limiter or {}),
            },
        )
        self.api = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self._sim_http = httpx.Client(base_url=self.sim.url, verify=str(self.sim.ca_bundle), timeout=30)
        self.daemon = psutil.Process(self.process.pid)

    def close(self) -> None:
        self.api.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._sim_http.close()
        self.sim.stop()
        self._folder.cleanup()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------------------- the fleet

    def create(self, names: list[str]) -> None:
        def post(name: str) -> None:
            self.api.post("/v1/deployments", json=manifest(name)).raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, names))

    def phases(self) -> dict[str, str]:
        """name -> phase, every deployment, a page of 1,000 at a time."""
        phases: dict[str, str] = {}
        token = None
        while True:
            params = {"limit": 1000, **({"continue": token} if token else {})}
            page = self.api.get("/v1/deployments", params=params).raise_for_status().json()
            for item in page["items"]:
                phases[item["metadata"]["name"]] = (item.get("status") or {}).get("phase", "Pending")
            token = page.get("continue")
            if not token:
                return phases

    def wait_ready(self, names: list[str], timeout: float) -> float:
        """Seconds until every one of ``names`` is Ready (checked every 2 s: a list of 1,000
        costs the daemon too)."""
        started = time.monotonic()

        def all_ready() -> bool:
            phases = self.phases()
            return all(phases.get(name) == "Ready" for name in names)

        wait_for(all_ready, timeout, f"{len(names)} deployments to be Ready", interval=2.0)
        return time.monotonic() - started

    def make_base(self) -> None:
        self.create([BASE])
        self.wait_ready([BASE], 120)

    # ----------------------------------------------------------------------- measurements

    def calls(self) -> dict[str, dict[str, int]]:
        return self._sim_http.get("/_sim/calls").raise_for_status().json()

    def reset_calls(self) -> None:
        self._sim_http.post("/_sim/calls/reset").raise_for_status()

    def cpu_seconds(self) -> float:
        times = self.daemon.cpu_times()
        return times.user + times.system

    def passes(self) -> dict[str, float]:
        """The daemon's reconcile passes so far, by result (from its /metrics)."""
        text = self.api.get("/metrics").raise_for_status().text
        found = re.findall(r'^loraplane_reconciles_total\{result="([a-z]+)"\} ([0-9.e+]+)$', text, re.MULTILINE)
        return {result: float(count) for result, count in found}


def writes_in(calls: dict[str, dict[str, int]]) -> int:
    return sum(n for method, kinds in arm_only(calls).items() if method in WRITES for n in kinds.values())
