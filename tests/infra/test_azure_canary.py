"""A restart-strategy rollout proved by its gate and canary on the azure target, on the simulator
with the real serving app: the new version runs in a revision of its own beside the one users
get (multiple revision mode); its gate is asked at that revision's own address while it takes
no traffic; its canary takes its weight of the app's traffic; promoted, it takes every request
and the revision before is deactivated: two active revisions with the configured weights, then
one."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx

from infra.azure.provider import AzureProvider
from serving.tiny import SECOND_ADAPTER_PATH
from state.resource import DeploymentSpec, DeploymentStatus
from tests.fakes import eventually
from tests.infra.test_azure_rollout import QUICK_REPORTS, create_on_share, provider_target, reconciling, upload_adapter, world
from tests.reconciler.test_gate_and_canary_local import GOLDEN, greedy_text

NAME = "support-bot"


def revisions(provider: AzureProvider, spec: DeploymentSpec) -> dict[str, tuple[bool, int]]:
    """Each revision of the app: (active, traffic weight), as Container Apps lists them."""
    listed = provider.clients(spec.azure.subscription_id).apps.container_apps_revisions.list_revisions("rg-inference", NAME)
    return {r.name: (bool(r.active), int(r.traffic_weight or 0)) for r in listed}


def test_a_restart_canary_runs_in_a_revision_of_its_own_with_its_weight_then_takes_everything(tmp_path: Path):
    with world(tmp_path, QUICK_REPORTS) as (store, sim, provider, reconciler):
        _, spec, folder = create_on_share(store, sim)
        changed = store.get(NAME).spec
        changed["adapter"]["strategy"] = "restart"
        store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(changed))
        with reconciling(reconciler):

            def status() -> DeploymentStatus:
                return DeploymentStatus.model_validate(store.get(NAME).status)

            def serving() -> str | None:
                current = status()
                synced = any(c.type == "AdapterSynced" and c.status == "True" for c in current.conditions)
                return current.adapter.serving_version if synced and current.phase == "Ready" else None

            first = eventually(serving, timeout=180, what="the first adapter")
            good = greedy_text(folder, folder / SECOND_ADAPTER_PATH)
            changed = store.get(NAME).spec
            changed["adapter"]["rollout"] = {
                "gate": {"prompts": [{"name": "greeting", "prompt": GOLDEN, "maxTokens": 8, "contains": good}]},
                "canary": {"weight": 30, "durationSeconds": 3600},
            }
            store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(changed))
            (before,) = eventually(lambda: [n for n, (on, _) in revisions(provider, spec).items() if on] or None, timeout=60, what="one")
            app = provider.clients(spec.azure.subscription_id).apps.container_apps.get("rg-inference", NAME)

            with provider.share(provider_target(store)) as share:
                upload_adapter(share, folder / SECOND_ADAPTER_PATH)
            canary = eventually(lambda: status().adapter.canary, timeout=240, what="the canary to start")
            second = canary.version
            history = {v.version: v for v in store.adapter_versions(store.get(NAME).uid)}
            assert history[second].gate is not None and history[second].gate["passed"] is True
            # Two active revisions: the one users had, and the canary's with its weight.
            split = eventually(
                lambda: (r := revisions(provider, spec)) and sorted(w for on, w in r.values() if on) == [30, 70] and r,
                timeout=120,
                what="two active revisions at 70/30",
            )
            assert split[before] == (True, 70)
            app = provider.clients(spec.azure.subscription_id).apps.container_apps.get("rg-inference", NAME)
            assert app.configuration.active_revisions_mode == "Multiple"
            newest = app.latest_revision_name
            assert newest != before and split[newest] == (True, 30)
            env = {e.name: e.value for e in app.template.containers[0].env}
            assert env["LORAPLANE_ADAPTER_VERSION"] == second

            store.decide_canary(NAME, NAME, "promote", actor="alice")
            eventually(lambda: serving() == second, timeout=180, what="the promotion")
            # Then one: the newest takes every request, the one before is deactivated.
            eventually(
                lambda: {n: v for n, v in revisions(provider, spec).items() if v[0]} == {newest: (True, 100)},
                timeout=120,
                what="one active revision",
            )
            states = {v.version: v.state for v in store.adapter_versions(store.get(NAME).uid)}
            assert states[second] == "Active" and states[first] == "Superseded"
            events = [e.reason for e in store.list_events(NAME, limit=100)]
            assert "AdapterGatePassed" in events and "AdapterCanaryPromoted" in events and "Deactivated" in events


def test_a_hot_reload_canary_on_azure_splits_in_the_serving_app_and_is_judged_from_the_replicas_reports(tmp_path: Path):
    """Under hotReload the app stays in single revision mode: the replicas follow the pointer's
    canary and split themselves; loraplane reads their counts on the share. Aborted, the stable
    version takes every request again."""
    with world(tmp_path, QUICK_REPORTS) as (store, sim, provider, reconciler):
        uid, spec, folder = create_on_share(store, sim)
        changed = store.get(NAME).spec
        changed["adapter"]["rollout"] = {"canary": {"weight": 50, "durationSeconds": 3600}}
        store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(changed))
        with reconciling(reconciler):

            def status() -> DeploymentStatus:
                return DeploymentStatus.model_validate(store.get(NAME).status)

            first = eventually(lambda: status().adapter.serving_version if status().phase == "Ready" else None, timeout=180, what="first")
            with provider.share(provider_target(store)) as share:
                upload_adapter(share, folder / SECOND_ADAPTER_PATH)
            canary = eventually(lambda: status().adapter.canary, timeout=120, what="the canary to start")
            pointer = json.loads((folder / f".loraplane/{NAME}/{uid[:8]}/current.json").read_text())
            assert pointer["version"] == first and pointer["canary"] == {"version": canary.version, "weight": 50}
            endpoint = status().endpoint
            token = provider.admin_token(provider_target(store))
            tls = ssl.create_default_context(cafile=str(sim.ca_bundle))
            with httpx.Client(verify=tls, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
                ask = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
                answers = [client.post(f"{endpoint}/admin/v1/chat/completions", json={**ask, "user": f"u{i}"}) for i in range(40)]
            # Half the users on each side (40 users: all on one side has a chance of 2 in 10^12).
            assert {a.status_code for a in answers} == {200}
            assert {a.headers["x-adapter-version"] for a in answers} == {first, canary.version}
            apps = provider.clients(spec.azure.subscription_id).apps
            assert apps.container_apps.get("rg-inference", NAME).configuration.active_revisions_mode == "Single"
            store.decide_canary(NAME, NAME, "abort", actor="bob")
            failed = eventually(
                lambda: next((v for v in store.adapter_versions(uid) if v.version == canary.version and v.state == "Failed"), None),
                timeout=60,
                what="the canary aborted",
            )
            assert failed.canary_record is not None and failed.canary_record.result == "RolledBack"
            assert status().adapter.last_rollout.result == "Aborted" and status().phase == "Ready"
            pointer = json.loads((folder / f".loraplane/{NAME}/{uid[:8]}/current.json").read_text())
            assert pointer["version"] == first and "canary" not in pointer
