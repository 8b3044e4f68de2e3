"""``loraplane serve`` pointed at the Azure simulator by its settings alone
(LORAPLANE_AZURE_ARM_URL, _CA_BUNDLE, _CREDENTIAL=static), driven by the CLI: apply, get,
export-toolkit, delete. And no secret in its log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import yaml
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient

from api.cli.serve import observe_max_age
from api.settings import ServiceSettings
from azuresim.server import AzureSimulator
from infra.azure.credentials import StaticTokenCredential
from state.resource import DeploymentSpec
from tests.api.test_cli import run_cli
from tests.conftest import MODEL_PATH, STANDIN_COMMAND, start_service, stop_service

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-support-bot"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "azure.yaml"


def test_serve_runs_an_azure_deployment_against_the_simulator(tmp_path: Path):
    sim = AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.2, run_containers=True, container_command=STANDIN_COMMAND).start()
    service = start_service(
        tmp_path / "data",
        env_overrides={
            "LORAPLANE_AZURE_ARM_URL": sim.url,
            "LORAPLANE_AZURE_CA_BUNDLE": str(sim.ca_bundle),
            "LORAPLANE_AZURE_CREDENTIAL": "static",
            "LORAPLANE_AZURE_POLLING_SECONDS": "0.1",
        },
    )
    try:
        # The shipped example, exactly as it is, against a simulator with every rule of Azure's on.
        manifest = yaml.safe_load(EXAMPLE.read_text())
        spec = DeploymentSpec.model_validate(manifest["spec"]).with_defaults("support-bot")
        (sim.share_folder(spec.azure.storage_account, spec.azure.file_share) / MODEL_PATH).mkdir(parents=True)
        applied = run_cli(service, "apply", "-f", str(EXAMPLE))
        assert applied.returncode == 0, applied.stderr

        deadline = time.monotonic() + 90
        while True:
            shown = json.loads(run_cli(service, "get", "support-bot", "-o", "json").stdout)
            if shown["status"]["phase"] == "Ready":
                break
            assert time.monotonic() < deadline, shown["status"]
            time.sleep(0.5)
        endpoint = shown["status"]["endpoint"]
        assert endpoint.startswith("https://127.0.0.1:")

        exported = run_cli(service, "export-toolkit", "support-bot", "--project", str(tmp_path / "project"))
        assert exported.returncode == 0, exported.stderr
        config = json.loads((tmp_path / "project" / "infra" / "inference.config.json").read_text())
        assert config["ACA_APP_ENDPOINT"] == endpoint and config["ACA_APP_NAME"] == "support-bot"

        options = {"base_url": sim.url, "connection_verify": str(sim.ca_bundle)}
        storage = StorageManagementClient(StaticTokenCredential(), SUB, **options)
        apps = ContainerAppsAPIClient(StaticTokenCredential(), SUB, **options)
        key = storage.storage_accounts.list_keys(RG, spec.azure.storage_account)["keys"][0]["value"]
        token = next(s.value for s in apps.container_apps.list_secrets(RG, "support-bot").value)
        # Nor in any answer of the API: the deployment, its events, plan, adapters, audit.
        answers = "".join(
            httpx.get(f"{service.url}{path}").text if method == "GET" else httpx.post(f"{service.url}{path}").text
            for method, path in [
                ("GET", "/v1/deployments"),
                ("GET", "/v1/deployments/support-bot"),
                ("GET", "/v1/deployments/support-bot/events"),
                ("POST", "/v1/deployments/support-bot/plan"),
                ("GET", "/v1/deployments/support-bot/adapters"),
                ("GET", "/v1/audit"),
            ]
        )
        assert "support-bot" in answers and key not in answers and token not in answers

        deleted = run_cli(service, "delete", "support-bot", "--wait")
        assert deleted.returncode == 0, deleted.stderr
        assert not ResourceManagementClient(StaticTokenCredential(), SUB, **options).resource_groups.check_existence(RG)
    finally:
        stop_service(service)
        sim.stop()
    log = service.log.read_text()
    assert "created" in log or "create" in log
    assert key not in log and token not in log


def test_an_observe_max_age_that_is_set_is_kept_and_the_default_is_held_under_half_the_resync():
    # A short resync re-checks what loraplane knows; it reads ARM only as often as asked.
    assert observe_max_age(ServiceSettings(resync_seconds=0.5, azure_observe_max_age_seconds=10)) == 10
    assert observe_max_age(ServiceSettings(resync_seconds=0.5)) == 0.25
    assert observe_max_age(ServiceSettings(resync_seconds=60)) == 10
