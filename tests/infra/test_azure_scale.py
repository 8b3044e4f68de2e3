"""Scale to zero on the azure target, on the simulator with the real serving app: the app gets
Container Apps' HTTP scale rule; idle past its window, its replica stops (the revision shows no
replica) and loraplane says so; the first request afterwards starts one, waits for it, and is
answered; the cold start is an event. loraplane itself never calls an app that may scale to
zero (its probes would keep a replica up): it reads the replicas' reports on the share."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx

from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH, make_tiny_share
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentSpec, DeploymentStatus
from tests.conftest import azure_manifest
from tests.fakes import eventually
from tests.infra.test_azure_rollout import QUICK_REPORTS, provider_target, reconciling, world

NAME = "support-bot"


def test_an_idle_app_scales_to_zero_and_the_next_request_starts_it_and_is_answered(tmp_path: Path):
    with world(tmp_path, QUICK_REPORTS) as (store, sim, provider, reconciler):
        manifest = azure_manifest(NAME)
        manifest["spec"]["model"] = {"path": TINY_MODEL_PATH}
        manifest["spec"]["adapter"] = {"path": ADAPTER_PATH, "settleSeconds": 1}
        manifest["spec"]["scale"] = {"minReplicas": 0, "maxReplicas": 1, "idleSeconds": 10, "concurrentRequests": 4}
        row = store.create(InferenceDeploymentCreate.model_validate(manifest))
        spec = DeploymentSpec.model_validate(row.spec)
        make_tiny_share(sim.share_folder(spec.azure.storage_account, spec.azure.file_share))
        with reconciling(reconciler):

            def status() -> DeploymentStatus:
                return DeploymentStatus.model_validate(store.get(NAME).status)

            eventually(lambda: status().phase == "Ready" and status().adapter.serving_version, timeout=180, what="Ready, serving")
            app = provider.clients(spec.azure.subscription_id).apps.container_apps.get("rg-inference", NAME)
            scale = app.template.scale
            assert (scale.min_replicas, scale.cooldown_period) == (0, 10)
            assert scale.rules[0].http.metadata == {"concurrentRequests": "4"}

            # Idle: no request for 10 s (loraplane asks the replicas nothing over HTTP).
            idle = eventually(lambda: (s := status()).cost and s.cost.replicas == 0 and s, timeout=90, what="scaled to zero")
            assert idle.phase == "Ready"
            assert "scaled to zero" in next(c for c in idle.conditions if c.type == "Ready").message
            revisions = provider.clients(spec.azure.subscription_id).apps.container_apps_revisions
            assert [r.replicas for r in revisions.list_revisions("rg-inference", NAME) if r.active] == [0]
            assert "ScaledToZero" in [e.reason for e in store.list_events(NAME, limit=50)]

            # The first request starts a replica, waits for it to be ready, and is answered.
            token = provider.admin_token(provider_target(store))
            tls = ssl.create_default_context(cafile=str(sim.ca_bundle))
            started = time.monotonic()
            answer = httpx.post(
                f"{idle.endpoint}/admin/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                headers={"Authorization": f"Bearer {token}"},
                verify=tls,
                timeout=300,
            )
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started > 0.5  # it waited for the model to load
            # loraplane sees the replica (and, idle again, sees it go: the window is short here).
            cold = eventually(
                lambda: next((e for e in store.list_events(NAME, limit=50) if e.reason == "ColdStart"), None), timeout=60, what="ColdStart"
            )
            assert "1 replica(s) started from zero" in cold.message
