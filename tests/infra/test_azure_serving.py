"""The done-when of the azure target, with the real serving app: from nothing to Ready through
the official SDKs and the simulator, and the endpoint in status answers a chat completion.
The simulator runs the container's command as ACA would run the revision: ``python -m
serving`` with the revision's environment, the share's folder at /mount, and the admin token
from the app's secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from azuresim.server import AzureSimulator
from infra.azure.provider import AzureConfig, AzureProvider
from reconciler.core import Reconciler, target_of
from reconciler.journal import DatabaseJournal
from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH, make_tiny_share
from state.db import make_engine, sqlite_url, upgrade_database
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import azure_manifest
from tests.infra.azure_world import NAME, drive


def test_an_azure_deployment_serves_a_chat_completion_at_its_endpoint(tmp_path: Path):
    engine = make_engine(sqlite_url(tmp_path))
    upgrade_database(engine)
    store = DeploymentStore(engine)
    sim = AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.1, run_containers=True).start()
    provider = AzureProvider(
        AzureConfig(arm_url=sim.url, ca_bundle=sim.ca_bundle, credential="static", polling_seconds=0.05),
        DatabaseJournal(store),
    )
    try:
        manifest = azure_manifest(NAME)
        manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
        manifest["spec"]["adapter"] = {"path": ADAPTER_PATH}
        spec = DeploymentSpec.model_validate(store.create(InferenceDeploymentCreate.model_validate(manifest)).spec)
        make_tiny_share(sim.share_folder(spec.azure.storage_account, spec.azure.file_share))

        reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.2)
        drive(reconciler, lambda: DeploymentStatus.model_validate(store.get(NAME).status).phase == "Ready", timeout=240)

        endpoint = DeploymentStatus.model_validate(store.get(NAME).status).endpoint
        tls = ssl.create_default_context(cafile=str(sim.ca_bundle))
        response = httpx.post(
            f"{endpoint}/v1/chat/completions",
            verify=tls,
            timeout=60,
            json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] >= 1
        assert response.headers["x-adapter-version"]
        # The replica got the admin token from the app's secret, and nothing else opens reload.
        token = provider.admin_token(target_of(store.get(NAME)))
        assert httpx.post(f"{endpoint}/admin/adapter/reload", verify=tls).status_code == 401
        reload = httpx.post(f"{endpoint}/admin/adapter/reload", verify=tls, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert reload.status_code == 200, reload.text
    finally:
        provider.close()
        sim.stop()
        engine.dispose()
