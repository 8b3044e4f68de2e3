"""Every call of the API (docs/design.md), its success and its error paths, on SQLite and PostgreSQL."""

from __future__ import annotations

from state.resource import DeploymentStatus
from tests.conftest import azure_manifest, local_manifest

PROBLEM = "application/problem+json"
MERGE = {"content-type": "application/merge-patch+json"}


def assert_problem(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:loraplane:problem:")
    assert body["title"] and body["detail"]
    for word in words:
        assert word in body["detail"], body
    return body


def create(client, manifest=None):
    response = client.post("/v1/deployments", json=manifest or local_manifest())
    assert response.status_code == 201, response.text
    return response


# ------------------------------------------------------------------------------------ POST


def test_create_answers_201_with_the_resource_etag_and_location(client):
    response = create(client)
    body = response.json()
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == "/v1/deployments/support-bot"
    assert body["apiVersion"] == "loraplane/v1" and body["kind"] == "InferenceDeployment"
    meta = body["metadata"]
    assert (meta["name"], meta["generation"], meta["resourceVersion"]) == ("support-bot", 1, "1")
    assert meta["uid"] and meta["createdAt"].endswith("Z")
    assert body["spec"]["adapter"]["settleSeconds"] == 10
    assert body["status"]["phase"] == "Pending"


def test_create_fills_in_azure_names(client):
    body = create(client, azure_manifest()).json()
    azure = body["spec"]["azure"]
    assert azure["app"] == "support-bot"
    assert azure["environment"] == "support-bot-env"
    # The profile's name is left to loraplane: it reuses the environment's profile of that type.
    assert azure["workloadProfile"] == {"type": "Consumption-GPU-NC24-A100"}


def azure_with(**azure):
    manifest = azure_manifest()
    manifest["spec"]["azure"] |= azure
    return manifest


def field_errors(response) -> dict[str, str]:
    body = assert_problem(response, 422)
    return {e["field"]: e["message"] for e in body["errors"]}


def test_the_azure_target_refuses_what_container_apps_would(client):
    """maxReplicas below 1, a size the profile does not offer, a GPU type where the region has
    none, a registry without its image: each a 422 naming the field and what would do."""
    manifest = azure_manifest()
    manifest["spec"]["scale"] = {"minReplicas": 0, "maxReplicas": 0}
    assert "must be 1 to 300 on the azure target" in field_errors(client.post("/v1/deployments", json=manifest))["spec.scale.maxReplicas"]
    wrong_size = field_errors(client.post("/v1/deployments", json=azure_with(resources={"cpu": 2, "memory": "4Gi"})))
    assert "ask for exactly 24 vCPU and 220Gi" in wrong_size["spec.azure.resources"]
    consumption = azure_with(workloadProfile={"type": "Consumption"}, resources={"cpu": 1.5, "memory": "2Gi"})
    assert "2Gi per vCPU" in field_errors(client.post("/v1/deployments", json=consumption))["spec.azure.resources"]
    no_gpus_there = field_errors(client.post("/v1/deployments", json=azure_with(location="eastus")))
    assert "not offered in eastus" in no_gpus_there["spec.azure.workloadProfile.type"]
    assert "westus3" in no_gpus_there["spec.azure.workloadProfile.type"]
    unknown = field_errors(client.post("/v1/deployments", json=azure_with(workloadProfile={"type": "H100-Turbo"})))
    assert "not a workload profile type" in unknown["spec.azure.workloadProfile.type"]
    gpu_named_consumption = azure_with(workloadProfile={"type": "NC24-A100", "name": "Consumption"})
    assert (
        "'Consumption' names the Consumption profile only"
        in field_errors(client.post("/v1/deployments", json=gpu_named_consumption))["spec.azure.workloadProfile.name"]
    )
    consumption_named_gpu = azure_with(workloadProfile={"type": "Consumption", "name": "gpu"})
    assert (
        "named 'Consumption'" in field_errors(client.post("/v1/deployments", json=consumption_named_gpu))["spec.azure.workloadProfile.name"]
    )
    registry = field_errors(client.post("/v1/deployments", json=azure_with(registry={"server": "myteam.azurecr.io"})))
    assert "is required with spec.azure.registry" in registry["spec.azure.image"]
    elsewhere = azure_with(registry={"server": "myteam.azurecr.io"}, image="docker.io/someone/serving:1")
    assert "is not in the registry myteam.azurecr.io" in field_errors(client.post("/v1/deployments", json=elsewhere))["spec.azure.image"]
    assert client.get("/v1/deployments").json()["items"] == []  # nothing of it was stored


def test_the_azure_target_takes_a_size_the_profile_offers_and_a_registry(client):
    dedicated = azure_with(
        workloadProfile={"type": "NC24-A100"},
        resources={"cpu": 12, "memory": "110Gi"},
        image="myteam.azurecr.io/loraplane-serving:1.0",
        registry={"server": "myteam.azurecr.io", "identity": "system"},
    )
    azure = create(client, dedicated).json()["spec"]["azure"]
    assert azure["resources"] == {"cpu": 12.0, "memory": "110Gi"}
    assert azure["registry"] == {"server": "myteam.azurecr.io", "identity": "system"}


def test_a_workload_profile_change_azure_cannot_make_in_place_is_422(client):
    create(client, azure_manifest())
    to_dedicated = azure_with(workloadProfile={"type": "NC24-A100"})
    errors = field_errors(client.put("/v1/deployments/support-bot", json=to_dedicated))
    assert "only when it creates it" in errors["spec.azure.workloadProfile.type"]
    assert "name a new spec.azure.environment" in errors["spec.azure.workloadProfile.type"]
    # With a new environment (and app) it can be made: the environment is created with it.
    moved = azure_with(workloadProfile={"type": "NC24-A100"}, environment="support-bot-a100", app="support-bot-a100")
    assert client.put("/v1/deployments/support-bot", json=moved).status_code == 200
    # An app's environment is set when the app is created.
    errors = field_errors(
        client.put("/v1/deployments/support-bot", json=azure_with(workloadProfile={"type": "NC24-A100"}, app="support-bot-a100"))
    )
    assert "managedEnvironmentId is create-only" in errors["spec.azure.environment"]


def test_a_name_clash_is_409(client):
    create(client)
    assert_problem(client.post("/v1/deployments", json=local_manifest()), 409, "already exists")


def test_invalid_fields_are_422_naming_each_field(client):
    manifest = azure_manifest(name="Bad_Name", storageAccount="Bad-Store")
    manifest["spec"]["scale"] = {"minReplicas": 5, "maxReplicas": 2}
    body = assert_problem(client.post("/v1/deployments", json=manifest), 422)
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert set(fields) == {"metadata.name", "spec.azure.storageAccount", "spec.scale"}
    assert "3-24 characters" in fields["spec.azure.storageAccount"]
    assert "must not exceed maxReplicas" in fields["spec.scale"]


def test_unknown_fields_are_422(client):
    manifest = local_manifest()
    manifest["spec"]["replicas"] = 3
    body = assert_problem(client.post("/v1/deployments", json=manifest), 422)
    assert body["errors"][0]["field"] == "spec.replicas"
    assert "not a known field" in body["errors"][0]["message"]


def test_a_missing_target_section_is_422(client):
    body = assert_problem(
        client.post("/v1/deployments", json={"metadata": {"name": "x1"}, "spec": {"target": "azure", "model": {"path": "models/base"}}}),
        422,
    )
    assert "spec.azure is required" in body["detail"]


def test_a_manifest_without_its_model_is_422_saying_what_to_give(client):
    body = assert_problem(client.post("/v1/deployments", json={"metadata": {"name": "x1"}, "spec": {"target": "azure"}}), 422)
    assert body["errors"][0]["field"] == "spec.model"
    assert "model-cache/microsoft/Phi-3-mini-4k-instruct" in body["errors"][0]["message"]


def test_malformed_json_is_400(client):
    response = client.post("/v1/deployments", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(response, 400, "not valid JSON")


def test_a_body_that_is_not_an_object_is_422(client):
    assert_problem(client.post("/v1/deployments", json=["a"]), 422)
    assert_problem(client.post("/v1/deployments", json=None), 422)


def test_wrong_api_version_or_kind_is_422(client):
    manifest = {**local_manifest(), "apiVersion": "loraplane/v2"}
    body = assert_problem(client.post("/v1/deployments", json=manifest), 422)
    assert body["errors"][0]["field"] == "apiVersion"


# ------------------------------------------------------------------------------------- GET


def test_get_answers_the_resource_with_its_etag(client):
    create(client)
    response = client.get("/v1/deployments/support-bot")
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    assert response.json()["metadata"]["labels"] == {"team": "support"}


def test_get_and_list_answer_each_write_at_once_though_their_json_is_kept_per_version(client, store):
    """GET and list answer from text kept per (uid, resourceVersion): the same document the
    response model gives, and a write (the API's or the reconciler's) is seen on the next read."""
    create(client)
    for _ in range(2):  # the second read is answered from what the first one kept
        one = client.get("/v1/deployments/support-bot")
        listed = client.get("/v1/deployments").json()
        expected = store.get("support-bot").to_public().model_dump(mode="json", by_alias=True, exclude_none=True)
        assert one.json() == expected and listed["items"] == [expected]
        assert listed["apiVersion"] == "loraplane/v1" and listed["kind"] == "InferenceDeploymentList"
    patched = client.patch("/v1/deployments/support-bot", content='{"metadata": {"labels": {"tier": "gold"}}}', headers=MERGE)
    assert patched.headers["etag"] == '"2"'
    assert client.get("/v1/deployments/support-bot").json()["metadata"]["labels"]["tier"] == "gold"
    assert client.get("/v1/deployments").json()["items"][0]["metadata"]["resourceVersion"] == "2"
    row = store.get("support-bot")  # a status write, as the reconciler makes it
    status = DeploymentStatus.model_validate(row.status)
    status.phase, status.message = "Stopped", "scaled to zero"
    store.update_status("support-bot", status, uid=row.uid)
    one = client.get("/v1/deployments/support-bot")
    assert one.headers["etag"] == '"3"' and one.json()["status"]["phase"] == "Stopped"
    assert client.get("/v1/deployments").json()["items"][0]["status"]["message"] == "scaled to zero"
    store.request_deletion("support-bot")
    store.remove("support-bot", uid=row.uid)
    assert_problem(client.get("/v1/deployments/support-bot"), 404)
    assert client.get("/v1/deployments").json()["items"] == []


def test_get_of_a_missing_deployment_is_404(client):
    assert_problem(client.get("/v1/deployments/nobody"), 404, "'nobody' not found")


def test_get_of_an_impossible_name_is_422(client):
    body = assert_problem(client.get("/v1/deployments/Not_A_Name"), 422)
    # Named as the user wrote it, with the rule in words (before: 'path.name: String should
    # match pattern ...').
    assert body["errors"][0]["field"] == "name"
    assert body["detail"].startswith("name: 'Not_A_Name' is not a deployment name: must be 2-32 characters")
    assert "pattern" not in body["detail"]


def test_list_filters_by_label_and_pages(client):
    for name, team in [("a-bot", "support"), ("b-bot", "search"), ("c-bot", "support")]:
        manifest = local_manifest(name=name)
        manifest["metadata"]["labels"] = {"team": team}
        create(client, manifest)
    everything = client.get("/v1/deployments").json()
    assert [i["metadata"]["name"] for i in everything["items"]] == ["a-bot", "b-bot", "c-bot"]
    assert "continue" not in everything
    support = client.get("/v1/deployments", params={"label": "team=support"}).json()
    assert [i["metadata"]["name"] for i in support["items"]] == ["a-bot", "c-bot"]
    first = client.get("/v1/deployments", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["continue"]
    second = client.get("/v1/deployments", params={"limit": 2, "continue": first["continue"]}).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["c-bot"]
    assert "continue" not in second


def test_list_errors(client):
    assert_problem(client.get("/v1/deployments", params={"label": "te am=x"}), 400, "label selector")
    assert_problem(client.get("/v1/deployments", params={"continue": "garbage"}), 400, "continue token")
    assert_problem(client.get("/v1/deployments", params={"limit": 0}), 422)
    assert_problem(client.get("/v1/deployments", params={"limit": "many"}), 422)


# ------------------------------------------------------------------------------------- PUT


def test_put_changes_the_spec_and_bumps_generation(client):
    create(client)
    manifest = local_manifest(scale={"minReplicas": 1, "maxReplicas": 3})
    response = client.put("/v1/deployments/support-bot", json=manifest, headers={"If-Match": '"1"'})
    assert response.status_code == 200, response.text
    meta = response.json()["metadata"]
    assert (meta["generation"], meta["resourceVersion"]) == (2, "2")
    assert response.headers["etag"] == '"2"'


def test_put_of_the_same_content_writes_nothing(client):
    create(client)
    response = client.put("/v1/deployments/support-bot", json=local_manifest())
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'


def test_put_of_labels_only_keeps_generation(client):
    create(client)
    manifest = local_manifest()
    manifest["metadata"]["labels"] = {"team": "search"}
    meta = client.put("/v1/deployments/support-bot", json=manifest).json()["metadata"]
    assert (meta["generation"], meta["resourceVersion"], meta["labels"]) == (1, "2", {"team": "search"})


def test_put_with_a_stale_if_match_is_412_and_changes_nothing(client):
    create(client)
    client.put("/v1/deployments/support-bot", json=local_manifest(scale={"maxReplicas": 2}))
    stale = client.put(
        "/v1/deployments/support-bot",
        json=local_manifest(scale={"maxReplicas": 5}),
        headers={"If-Match": '"1"'},
    )
    assert_problem(stale, 412, "changed since you read it")
    assert client.get("/v1/deployments/support-bot").json()["spec"]["scale"]["maxReplicas"] == 2


def test_put_with_a_stale_resource_version_in_the_body_is_412(client):
    create(client)
    client.put("/v1/deployments/support-bot", json=local_manifest(scale={"maxReplicas": 2}))
    manifest = local_manifest(scale={"maxReplicas": 5})
    manifest["metadata"]["resourceVersion"] = "1"
    assert_problem(client.put("/v1/deployments/support-bot", json=manifest), 412)


def test_put_accepts_what_get_returned(client):
    create(client)
    current = client.get("/v1/deployments/support-bot").json()
    current["spec"]["scale"]["maxReplicas"] = 4
    response = client.put("/v1/deployments/support-bot", json=current)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["generation"] == 2


def test_put_errors(client):
    assert_problem(client.put("/v1/deployments/support-bot", json=local_manifest()), 404)
    create(client)
    assert_problem(
        client.put("/v1/deployments/support-bot", json=local_manifest(name="other-bot")),
        422,
        "does not match the name in the URL",
    )
    assert_problem(
        client.put("/v1/deployments/support-bot", json=local_manifest(), headers={"If-Match": "abc"}),
        412,
    )
    bad = local_manifest(scale={"maxReplicas": -1})
    assert_problem(client.put("/v1/deployments/support-bot", json=bad), 422)


def test_put_cannot_change_the_target(client):
    create(client)
    body = assert_problem(client.put("/v1/deployments/support-bot", json=azure_manifest()), 422)
    assert body["errors"] == [{"field": "spec.target", "message": "is immutable"}]


# ----------------------------------------------------------------------------------- PATCH


def test_patch_merges_into_the_spec(client):
    create(client)
    response = client.patch(
        "/v1/deployments/support-bot",
        json={"spec": {"adapter": {"strategy": "restart"}}, "metadata": {"labels": {"tier": "prod"}}},
        headers=MERGE,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spec"]["adapter"] == {
        "path": "models/qlora/qlora/gpu_model/adapter",
        "settleSeconds": 10,
        "pollSeconds": 5,
        "strategy": "restart",
    }
    assert body["metadata"]["labels"] == {"team": "support", "tier": "prod"}
    assert body["metadata"]["generation"] == 2


def test_patch_null_removes_a_label_and_resets_a_field_to_its_default(client):
    create(client, local_manifest(adapter={"settleSeconds": 30}))
    body = client.patch(
        "/v1/deployments/support-bot",
        json={"metadata": {"labels": {"team": None}}, "spec": {"adapter": {"settleSeconds": None}}},
        headers=MERGE,
    ).json()
    assert body["metadata"]["labels"] == {}
    assert body["spec"]["adapter"]["settleSeconds"] == 10


def test_patch_accepts_plain_json_and_if_match(client):
    create(client)
    response = client.patch(
        "/v1/deployments/support-bot",
        json={"spec": {"scale": {"maxReplicas": 2}}},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200
    stale = client.patch(
        "/v1/deployments/support-bot",
        json={"spec": {"scale": {"maxReplicas": 3}}},
        headers={**MERGE, "If-Match": '"1"'},
    )
    assert_problem(stale, 412)


def test_patch_errors(client):
    assert_problem(client.patch("/v1/deployments/nobody", json={"spec": {}}, headers=MERGE), 404)
    create(client)
    body = assert_problem(
        client.patch(
            "/v1/deployments/support-bot",
            json={"spec": {"scale": {"minReplicas": 9}}},
            headers=MERGE,
        ),
        422,
    )
    assert body["errors"][0]["field"] == "spec.scale"
    body = assert_problem(
        client.patch("/v1/deployments/support-bot", json={"status": {"phase": "Ready"}}, headers=MERGE),
        422,
    )
    assert body["errors"][0]["field"] == "status"
    assert_problem(
        client.patch("/v1/deployments/support-bot", json={"metadata": {"name": "renamed"}}, headers=MERGE),
        422,
        "cannot be renamed",
    )
    assert_problem(
        client.patch("/v1/deployments/support-bot", json={"metadata": {"labels": {"bad key": "x"}}}, headers=MERGE),
        422,
    )
    assert_problem(
        client.patch(
            "/v1/deployments/support-bot",
            content=b'{"spec": {}}',
            headers={"content-type": "text/plain"},
        ),
        415,
        "merge-patch",
    )
    assert_problem(
        client.patch("/v1/deployments/support-bot", json={"spec": {"target": "azure"}}, headers=MERGE),
        422,
    )
    assert client.get("/v1/deployments/support-bot").json()["metadata"]["resourceVersion"] == "1"


# ---------------------------------------------------------------------------------- DELETE


def test_delete_answers_202_and_marks_the_deployment(client):
    create(client)
    response = client.delete("/v1/deployments/support-bot")
    assert response.status_code == 202
    body = response.json()
    assert body["status"]["phase"] == "Deleting"
    assert body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["finalizers"] == ["loraplane.io/teardown"]
    # Still visible until the reconciler's teardown removes it; no more spec changes.
    assert client.get("/v1/deployments/support-bot").status_code == 200
    assert_problem(
        client.patch("/v1/deployments/support-bot", json={"spec": {"scale": {"maxReplicas": 2}}}),
        409,
        "being deleted",
    )
    assert_problem(client.post("/v1/deployments", json=local_manifest()), 409, "being deleted")
    assert client.delete("/v1/deployments/support-bot").status_code == 202


def test_delete_errors(client):
    assert_problem(client.delete("/v1/deployments/nobody"), 404)
    create(client)
    assert_problem(client.delete("/v1/deployments/support-bot", headers={"If-Match": '"7"'}), 412)


# ---------------------------------------------------------------------------------- events


def test_events_are_newest_first(client):
    create(client)
    client.patch("/v1/deployments/support-bot", json={"spec": {"scale": {"maxReplicas": 2}}})
    client.delete("/v1/deployments/support-bot")
    items = client.get("/v1/deployments/support-bot/events").json()["items"]
    assert [e["reason"] for e in items] == ["DeletionRequested", "SpecChanged", "Created"]
    assert items[1]["message"] == "spec changed (generation 2)"
    limited = client.get("/v1/deployments/support-bot/events", params={"limit": 1}).json()["items"]
    assert [e["reason"] for e in limited] == ["DeletionRequested"]


def test_events_errors(client):
    assert_problem(client.get("/v1/deployments/nobody/events"), 404)
    create(client)
    assert_problem(client.get("/v1/deployments/support-bot/events", params={"limit": 0}), 422)


# ------------------------------------------------------------------------------ dry runs


def test_plan_of_a_deployment_lists_actions_and_changes_nothing(client, share, local_provider):
    create(client, local_manifest(share_root=str(share)))
    plan = client.post("/v1/deployments/support-bot/plan").json()
    assert plan["deployment"] == "support-bot" and plan["target"] == "local"
    assert plan["actions"] == [{"verb": "create", "kind": "ServingProcess", "name": "support-bot", "reason": "not running"}]
    assert plan["summary"] == {"create": 1}
    assert "blocked" not in plan
    # A dry run: nothing was started, nothing was written.
    assert not local_provider.folder("support-bot").path.exists()
    assert client.get("/v1/deployments/support-bot").headers["etag"] == '"1"'


def test_plan_says_why_it_is_blocked(client, share):
    create(client, local_manifest(share_root=str(share), model={"path": "models/missing"}))
    plan = client.post("/v1/deployments/support-bot/plan").json()
    assert plan["actions"] == []
    assert plan["blocked"]["reason"] == "ModelNotFound"
    assert str(share / "models/missing") in plan["blocked"]["message"]
    assert plan["blocked"]["permanent"] is True


def test_plan_of_a_manifest_needs_no_stored_deployment(client, share):
    plan = client.post("/v1/plan", json=local_manifest(name="new-bot", share_root=str(share))).json()
    assert [a["verb"] for a in plan["actions"]] == ["create"]
    assert client.get("/v1/deployments/new-bot").status_code == 404
    assert_problem(client.post("/v1/plan", json={"metadata": {"name": "x"}}), 422)


def test_plan_of_a_manifest_lists_the_adapters_that_would_load_unload_or_roll_out(client, share):
    adapters = [{"name": "billing", "path": "models/billing"}, {"name": "legal", "path": "models/legal", "strategy": "restart"}]
    create(client, local_manifest(share_root=str(share), adapters=adapters))
    changed = [
        {"name": "legal", "path": "models/legal-v2", "strategy": "restart"},
        {"name": "travel", "path": "models/travel"},
    ]
    plan = client.post("/v1/plan", json=local_manifest(share_root=str(share), adapters=changed)).json()
    assert plan["adapters"] == [
        {"verb": "load", "adapter": "travel", "reason": "a new adapter: its first version from models/travel once it has settled"},
        {"verb": "unload", "adapter": "billing", "reason": "no longer in the spec"},
        {
            "verb": "rollOut",
            "adapter": "legal",
            "reason": "its folder is now models/legal-v2 (restart strategy: the app restarts, and every adapter of the deployment with it)",
        },
    ]
    assert client.post("/v1/deployments/support-bot/plan").json()["adapters"] == []  # the stored spec against itself


def test_plan_errors(client):
    assert_problem(client.post("/v1/deployments/nobody/plan"), 404)


def test_plan_for_a_target_not_available_says_so(client):
    create(client, azure_manifest())
    plan = client.post("/v1/deployments/support-bot/plan").json()
    assert plan["blocked"]["reason"] == "TargetUnavailable"


def test_logs_of_a_deployment_never_started_are_empty(client):
    assert_problem(client.get("/v1/deployments/nobody/logs"), 404)
    create(client)
    response = client.get("/v1/deployments/support-bot/logs", params={"tail": 5})
    assert response.status_code == 200 and response.text == ""
    assert_problem(client.get("/v1/deployments/support-bot/logs", params={"tail": 0}), 422)


# --------------------------------------------------------------------------------- adapters


def test_adapter_history_and_activation_name_what_is_missing(client):
    assert_problem(client.get("/v1/deployments/support-bot/adapters"), 404)
    create(client)
    assert client.get("/v1/deployments/support-bot/adapters").json() == {"items": []}
    body = assert_problem(client.post("/v1/deployments/support-bot/adapters/v1/activate"), 404)
    assert "no adapter version 'v1'" in body["detail"] and "/adapters" in body["detail"]
    assert_problem(client.post("/v1/deployments/support-bot/adapters/bad!version/activate"), 422)


# --------------------------------------------------------------------- health and metrics


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok", "detail": ""}
    assert client.get("/readyz").json()["status"] == "ready"
    create(client)
    client.get("/v1/deployments/support-bot")
    text = client.get("/metrics").text
    assert 'loraplane_deployments{phase="Pending"} 1.0' in text
    assert 'loraplane_http_requests_total{method="GET",route="/v1/deployments/{name}",status="200"} 1.0' in text


def test_unknown_paths_and_methods_are_problems(client):
    assert_problem(client.get("/v2/nothing"), 404, "no such path")
    assert_problem(client.put("/v1/deployments"), 405)


def test_openapi_is_served(client):
    spec = client.get("/openapi.json").json()
    assert "/v1/deployments/{name}" in spec["paths"]
    assert client.get("/docs").status_code == 200
