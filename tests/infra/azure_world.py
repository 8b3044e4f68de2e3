"""The world the azure target's tests share: a simulator with every rule on, running each
revision as a stand-in serving process; a provider on it; and how to drive and inspect them."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient

from azuresim.server import AzureSimulator
from infra.azure.credentials import StaticTokenCredential
from infra.azure.provider import AzureConfig, AzureProvider
from reconciler.core import Outcome, Reconciler
from reconciler.journal import DatabaseJournal
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import MODEL_PATH, STANDIN_COMMAND, azure_manifest

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-inference"
NAME = "support-bot"
WRITES = ("PUT", "PATCH", "POST", "DELETE")


def start_sim(tmp_path: Path, *, lro_delay: float = 0.1, command=STANDIN_COMMAND) -> AzureSimulator:
    return AzureSimulator(tmp_path / "sim", lro_delay_seconds=lro_delay, run_containers=True, container_command=command).start()


def make_provider(store: DeploymentStore, sim: AzureSimulator) -> AzureProvider:
    config = AzureConfig(arm_url=sim.url, ca_bundle=sim.ca_bundle, credential="static", polling_seconds=0.05)
    return AzureProvider(config, DatabaseJournal(store))


def tls(sim: AzureSimulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sim.ca_bundle))


def calls(sim: AzureSimulator) -> dict[str, dict[str, int]]:
    return httpx.get(f"{sim.url}/_sim/calls", verify=tls(sim)).json()


def writes(sim: AzureSimulator) -> dict[str, dict[str, int]]:
    """ARM writes only: the data plane of the share (files, directories) is not ARM."""
    found = {
        method: {kind: n for kind, n in kinds.items() if not kind.startswith("Microsoft.Storage/fileShares/")}
        for method, kinds in calls(sim).items()
        if method in WRITES
    }
    # A method with data-plane calls only (the keys file written to the share, say) is none.
    return {method: kinds for method, kinds in found.items() if kinds}


def reset_calls(sim: AzureSimulator) -> None:
    httpx.post(f"{sim.url}/_sim/calls/reset", verify=tls(sim)).raise_for_status()


def create(store: DeploymentStore, sim: AzureSimulator, **azure) -> DeploymentSpec:
    manifest = azure_manifest(NAME, **azure)
    manifest["spec"]["adapter"] = {"settleSeconds": 1}
    row = store.create(InferenceDeploymentCreate.model_validate(manifest))
    spec = DeploymentSpec.model_validate(row.spec)
    # The team's base model is on the share before the app starts (the stand-in checks it).
    (sim.share_folder(spec.azure.storage_account, spec.azure.file_share) / MODEL_PATH).mkdir(parents=True)
    return spec


def status_of(store: DeploymentStore) -> DeploymentStatus:
    return DeploymentStatus.model_validate(store.get(NAME).status)


def drive(
    reconciler: Reconciler, until: Callable[[], bool], *, timeout: float = 60.0, passes: list[Outcome] | None = None, name: str = NAME
) -> int:
    """Reconcile as the controller would (again after requeue_after, or soon on an error)
    until ``until()``; returns how many passes it took."""
    deadline = time.monotonic() + timeout
    count = 0
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"not there after {count} passes and {timeout}s; status: {_status_text(reconciler, name)}")
        outcome = reconciler.reconcile(name)
        count += 1
        if passes is not None:
            passes.append(outcome)
        time.sleep(min(outcome.requeue_after or 0.05, 0.2))
    return count


def _status_text(reconciler: Reconciler, name: str) -> str:
    try:
        return str(reconciler.store.get(name).status)
    except Exception as exc:
        return repr(exc)


def ready(store: DeploymentStore) -> Callable[[], bool]:
    return lambda: status_of(store).phase == "Ready"


def arm(sim: AzureSimulator):
    options = {"base_url": sim.url, "connection_verify": str(sim.ca_bundle), "polling_interval": 0.05}
    credential = StaticTokenCredential()
    return (
        ResourceManagementClient(credential, SUB, **options),
        StorageManagementClient(credential, SUB, **options),
        ContainerAppsAPIClient(credential, SUB, **options),
    )
