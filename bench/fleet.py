"""A fleet of azure deployments for the steady, converge and shards benchmarks: the Azure
simulator (ARM's own throttling on, per subscription; every app answered by a stand-in
replica) and real ``loraplane serve`` processes pointed at it (one on SQLite, or several
sharing a PostgreSQL database), with the default ARM limiter unless told otherwise.

Each subscription's deployments share what a team shares: one resource group, storage account,
file share, Log Analytics workspace and Container Apps environment, made by a first deployment
(``fleet-base``, or ``fleet-base-S`` in subscription S); every other deployment names them and
has a container app of its own. So a deployment costs one write (its app's PUT), and the write
budget (10/s per subscription) sets converge's floor.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from azuresim.server import AzureSimulator
from azuresim.state import ArmLimits
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


def subscription(index: int) -> str:
    """The fleet's subscription number ``index`` (0 is SUBSCRIPTION)."""
    return f"00000000-0000-0000-0000-{index:012d}"


def base_name(index: int) -> str:
    return BASE if index == 0 else f"{BASE}-{index}"


def manifest(name: str, subscription_index: int = 0) -> dict[str, Any]:
    # A storage account's name is unique across Azure: one per subscription.
    account = SHARED["storageAccount"] + (str(subscription_index) if subscription_index else "")
    azure = {
        "subscriptionId": subscription(subscription_index),
        "resourceGroup": GROUP,
        "location": "westus3",
        **SHARED,
        "storageAccount": account,
        "app": name,
    }
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
        arm_limits: bool | ArmLimits = True,
        limiter: dict[str, str] | None = None,
        replicas: int = 1,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """``arm_limits``: ARM's throttling in the simulator (True: ARM's rates; an ArmLimits:
        other rates); ``limiter``: LORAPLANE_AZURE_* settings of the daemon's limiter (its
        defaults when left out); ``replicas`` > 1 needs ``database_url`` (PostgreSQL)."""
        self.resync_seconds, self.workers = resync_seconds, workers
        self._folder = tempfile.TemporaryDirectory()
        root = Path(self._folder.name)
        self.sim = AzureSimulator(root / "sim", standin_replicas=True, arm_limits=arm_limits).start()
        self._env = {
            "LORAPLANE_AZURE_ARM_URL": self.sim.url,
            "LORAPLANE_AZURE_CA_BUNDLE": str(self.sim.ca_bundle),
            "LORAPLANE_AZURE_CREDENTIAL": "static",
            "LORAPLANE_RESYNC_SECONDS": str(resync_seconds),
            "LORAPLANE_WORKERS": str(workers),
            "LORAPLANE_AZURE_POLLING_SECONDS": str(polling_seconds),
            **(limiter or {}),
            **(extra_env or {}),
        }
        self._data_dir, self._database_url = root / "data", database_url
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []
        self.daemons: list[psutil.Process] = []
        headers: dict[str, str] = {}
        for _ in range(replicas):
            headers = self.start_replica()
        self.url = self.urls[0]
        self.api = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self._sim_http = httpx.Client(base_url=self.sim.url, verify=str(self.sim.ca_bundle), timeout=30)

    def start_replica(self) -> dict[str, str]:
        """One more ``loraplane serve`` on the fleet's database; the headers of its admin token."""
        process, url, headers = start_service(self._data_dir, self._database_url, extra_env=self._env)
        self.processes.append(process)
        self.urls.append(url)
        self.daemons.append(psutil.Process(process.pid))
        return headers

    def kill(self, index: int) -> None:
        """kill -9 replica ``index``: no shutdown, its leases left to expire."""
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait(timeout=30)

    def alive(self) -> list[int]:
        return [index for index, process in enumerate(self.processes) if process.poll() is None]

    def close(self) -> None:
        self.api.close()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        self._sim_http.close()
        self.sim.stop()
        self._folder.cleanup()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------------------- the fleet

    def create(self, names: list[str], subscriptions: int = 1) -> None:
        """POST ``names``, spread round-robin over the first ``subscriptions`` subscriptions."""

        def post(indexed: tuple[int, str]) -> None:
            index, name = indexed
            while True:  # as the CLI does: a 429 or 503 is retried after its Retry-After
                response = self.api.post("/v1/deployments", json=manifest(name, index % subscriptions))
                if response.status_code not in (429, 503):
                    response.raise_for_status()
                    return
                time.sleep(float(response.headers.get("Retry-After", "1")))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, enumerate(names)))

    def statuses(self) -> dict[str, dict[str, Any]]:
        """name -> status, every deployment, a page of 1,000 at a time."""
        statuses: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            params = {"limit": 1000, **({"continue": token} if token else {})}
            page = self.api.get("/v1/deployments", params=params).raise_for_status().json()
            for item in page["items"]:
                statuses[item["metadata"]["name"]] = item.get("status") or {}
            token = page.get("continue")
            if not token:
                return statuses

    def phases(self) -> dict[str, str]:
        """name -> phase, every deployment."""
        return {name: status.get("phase", "Pending") for name, status in self.statuses().items()}

    def wait_ready(self, names: list[str], timeout: float) -> float:
        """Seconds until every one of ``names`` is Ready (checked every 2 s: a list of 1,000
        costs the daemon too)."""
        started = time.monotonic()

        def all_ready() -> bool:
            phases = self.phases()
            return all(phases.get(name) == "Ready" for name in names)

        wait_for(all_ready, timeout, f"{len(names)} deployments to be Ready", interval=2.0)
        return time.monotonic() - started

    def make_base(self, subscriptions: int = 1) -> None:
        """Each subscription's shared group, storage, share, workspace and environment."""
        bases = [base_name(index) for index in range(subscriptions)]
        for index, name in enumerate(bases):
            self.api.post("/v1/deployments", json=manifest(name, index)).raise_for_status()
        self.wait_ready(bases, 300)

    # ----------------------------------------------------------------------- measurements

    def calls(self) -> dict[str, dict[str, int]]:
        return self._sim_http.get("/_sim/calls").raise_for_status().json()

    def calls_by_subscription(self) -> dict[str, dict[str, int]]:
        return self._sim_http.get("/_sim/calls/subscriptions").raise_for_status().json()

    def reset_calls(self) -> None:
        self._sim_http.post("/_sim/calls/reset").raise_for_status()

    def cpu_seconds(self, index: int | None = None) -> float:
        """CPU seconds of the live daemons so far (or of replica ``index``)."""
        total = 0.0
        for at in self.alive() if index is None else [index]:
            times = self.daemons[at].cpu_times()
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the live daemons."""
        return sum(self.daemons[at].memory_info().rss for at in self.alive())

    def passes(self, index: int | None = None) -> dict[str, float]:
        """Reconcile passes so far, by result, summed over the live replicas' /metrics (or of
        replica ``index``)."""
        totals: dict[str, float] = {}
        for at in self.alive() if index is None else [index]:
            text = httpx.get(f"{self.urls[at]}/metrics", timeout=60).raise_for_status().text
            found = re.findall(r'^loraplane_reconciles_total\{result="([a-z]+)"\} ([0-9.e+]+)$', text, re.MULTILINE)
            for result, count in found:
                totals[result] = totals.get(result, 0.0) + float(count)
        return totals


def writes_in(calls: dict[str, dict[str, int]]) -> int:
    return sum(n for method, kinds in arm_only(calls).items() if method in WRITES for n in kinds.values())
