"""The done-when of the azure target, with the real serving app: from nothing to Ready through
the official SDKs and the simulator, and the endpoint in status answers a chat completion.
The simulator runs the container's command as ACA would run the revision: ``python -m
serving`` with the revision's environment, the share's folder at /mount, and the admin token
from the app's secret."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from azure.mgmt.appcontainers import ContainerAppsAPIClient

from api.app import create_app
from azuresim.server import AzureSimulator
from infra.azure.credentials import StaticTokenCredential
from infra.azure.provider import AzureConfig, AzureProvider
from reconciler.core import Reconciler, target_of
from reconciler.journal import DatabaseJournal
from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH, make_tiny_share
from state.db import make_engine, sqlite_url, upgrade_database
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.api.test_cli import run_cli
from tests.conftest import azure_manifest, free_port
from tests.fakes import eventually
from tests.infra.azure_world import NAME, RG, SUB, drive


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
        # Inference keys are on by default on the azure target: no key, no completion.
        hello = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        refused = httpx.post(f"{endpoint}/v1/chat/completions", verify=tls, timeout=60, json=hello)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        apps = ContainerAppsAPIClient(StaticTokenCredential(), SUB, base_url=sim.url, connection_verify=str(sim.ca_bundle))
        revision = apps.container_apps.get(RG, NAME).latest_revision_name
        app_id = apps.container_apps.get(RG, NAME).id

        # Made as a team makes them: `loraplane keys create` against the API over this database.
        with api_over(store, reconciler) as url:
            made = run_cli(None, "keys", "create", "--deployment", NAME, "--name", "web", url=url)
            assert made.returncode == 0, made.stderr
            web = made.stdout.strip()
            assert f'base_url="{endpoint}/v1"' in made.stderr
            evaluator = run_cli(None, "keys", "create", "-d", NAME, "--name", "eval", "--rpm", "2", url=url).stdout.strip()

        def sdk(key: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=f"{endpoint}/v1", api_key=key, max_retries=0, http_client=httpx.Client(verify=tls, timeout=60))

        def answers(key: str) -> bool:
            reconciler.reconcile(NAME)  # the controller's wake-up: the keys file onto the share
            try:
                sdk(key).models.list()
            except openai.AuthenticationError:
                return False
            return True

        eventually(lambda: answers(web), timeout=30, what="the new key to be taken by the replica")
        completion = sdk(web).chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
        assert completion.choices[0].message.role == "assistant" and completion.usage.completion_tokens >= 1
        # Past its requests a minute a key is refused (429, Retry-After) while another is served.
        for _ in range(2):
            sdk(evaluator).chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        with pytest.raises(openai.RateLimitError) as limited:
            sdk(evaluator).chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert sdk(web).models.list().data
        with api_over(store, reconciler) as url:
            # What each key used, as the replica reported it on the Azure share, summed.
            def eval_row() -> list[str] | None:
                rows = [line.split() for line in run_cli(None, "keys", "list", "-d", NAME, url=url).stdout.splitlines()[1:]]
                row = next((r for r in rows if r[0] == "eval"), None)
                return row if row is not None and row[4:7:2] == ["2", "1"] else None

            # NAME RPM TPM EXPIRES REQUESTS TOKENS REFUSED: as the replica reported on the Azure share.
            row = eventually(eval_row, timeout=30, what="eval's two requests and one refusal in keys list")
            assert row[1] == "2" and int(row[5]) > 0
            # Revoked: refused within 10 s, by the same revision (no restart, no new revision).
            assert run_cli(None, "keys", "revoke", "-d", NAME, "web", url=url).returncode == 0
        eventually(lambda: not answers(web), timeout=10, what="the revoked key to be refused")
        assert apps.container_apps.get(RG, NAME).latest_revision_name == revision

        # An allow list without this machine's address: its ingress turns us away (the app is
        # unchanged: same revision), and loraplane, which cannot ask it any more, reads the
        # replica's report on the share and still finds it Ready.
        changed = store.get(NAME).spec
        changed["azure"]["ipAllowList"] = ["10.0.0.0/8"]
        store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(changed))
        drive(reconciler, lambda: sim.runner.refused(app_id) > 0 or not _reachable(endpoint, tls), timeout=60)
        assert not _reachable(endpoint, tls) and sim.runner.refused(app_id) > 0
        drive(reconciler, lambda: "as they report on the share" in _ready_message(store), timeout=60)
        assert DeploymentStatus.model_validate(store.get(NAME).status).phase == "Ready"
        assert apps.container_apps.get(RG, NAME).latest_revision_name == revision
        changed["azure"]["ipAllowList"] = ["127.0.0.0/8"]
        store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(changed))
        drive(reconciler, lambda: _reachable(endpoint, tls), timeout=60)

        # The replica got the admin token from the app's secret, and nothing else opens reload.
        token = provider.admin_token(target_of(store.get(NAME)))
        assert httpx.post(f"{endpoint}/admin/adapter/reload", verify=tls).status_code == 401
        reload = httpx.post(f"{endpoint}/admin/adapter/reload", verify=tls, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert reload.status_code == 200, reload.text
    finally:
        provider.close()
        sim.stop()
        engine.dispose()


def _reachable(endpoint: str, tls: ssl.SSLContext) -> bool:
    try:
        return httpx.get(f"{endpoint}/healthz", verify=tls, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _ready_message(store: DeploymentStore) -> str:
    status = DeploymentStatus.model_validate(store.get(NAME).status)
    return next((c.message for c in status.conditions if c.type == "Ready"), "")


@contextmanager
def api_over(store: DeploymentStore, reconciler: Reconciler) -> Iterator[str]:
    """loraplane's API over ``store`` and ``reconciler``'s targets (no authentication, no
    reconcile loop), on a free port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, reconciler), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=30, what="the API to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
