"""The traffic weights that prove a restart rollout's version in a revision of its own, and which
revisions have done their part: pure, on revisions as Container Apps lists them."""

from __future__ import annotations

import json
from typing import Any

from infra.azure.revisions import as_kept, desired_traffic, done, serving_revision, versions_run
from infra.provider import RevisionSplit, Target
from state.resource import DeploymentSpec
from tests.conftest import azure_manifest

NAME = "support-bot"
EVERYTHING = [{"latestRevision": True, "weight": 100}]


def template(version: str) -> dict[str, Any]:
    return {"containers": [{"name": "serving", "env": [{"name": "LORAPLANE_ADAPTER_VERSION", "value": version}]}]}


def revision(name: str, version: str, *, weight: int = 0, active: bool = True, created: str = "2026-12-07T10:00:00Z") -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            "active": active,
            "trafficWeight": weight,
            "template": template(version),
            "createdTime": created,
            "fqdn": f"{name}.x",
        },
    }


def app(latest: str, version: str, *, ready: bool = True, traffic: list | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "latestRevisionName": latest,
        "template": template(version),
        "configuration": {"ingress": {"traffic": traffic or EVERYTHING}},
    }
    if ready:
        properties["latestReadyRevisionName"] = latest
    return {"properties": properties}


def target(runs: str, stable: dict[str, str], weight: int | None) -> Target:
    spec = DeploymentSpec.model_validate(azure_manifest(NAME)["spec"])
    return Target(NAME, "uid", 1, spec, adapter_version=runs, revisions=RevisionSplit(stable=stable, weight=weight))


def test_the_versions_a_revision_runs_come_from_its_environment():
    assert versions_run(template("v1"), NAME) == {NAME: "v1"}
    many = {"containers": [{"env": [{"name": "LORAPLANE_ADAPTER_VERSIONS", "value": json.dumps({"billing": "b2", "legal": "l1"})}]}]}
    assert versions_run(many, NAME) == {"billing": "b2", "legal": "l1"}
    assert versions_run({"containers": [{"env": []}]}, NAME) == {}


def test_a_first_version_has_nothing_beside_it_and_takes_every_request():
    assert desired_traffic(target("v1", {}, 0), [revision("app--r1", "v1", weight=100)], app("app--r1", "v1")) == EVERYTHING


def test_a_gated_version_gets_no_users_and_a_canary_gets_its_weight_once_its_revision_is_ready():
    serving = revision("app--r1", "v1", weight=100)
    # The pass that makes the candidate's revision: the serving one keeps every request.
    gated = target("v2", {NAME: "v1"}, 0)
    assert desired_traffic(gated, [serving], app("app--r1", "v1")) == [
        {"revisionName": "app--r1", "weight": 100},
        {"latestRevision": True, "weight": 0},
    ]
    candidate = revision("app--r2", "v2")
    canary = target("v2", {NAME: "v1"}, 25)
    assert desired_traffic(canary, [serving, candidate], app("app--r2", "v2", ready=False))[1] == {"latestRevision": True, "weight": 0}
    assert desired_traffic(canary, [serving, candidate], app("app--r2", "v2")) == [
        {"revisionName": "app--r1", "weight": 75},
        {"latestRevision": True, "weight": 25},
    ]
    assert serving_revision(canary, [serving, candidate]) == "app--r1"


def test_a_promoted_version_takes_everything_and_a_rolled_back_one_nothing():
    serving, candidate = revision("app--r1", "v1", weight=75), revision("app--r2", "v2", weight=25)
    promoted = target("v2", {NAME: "v1"}, None)
    assert desired_traffic(promoted, [serving, candidate], app("app--r2", "v2")) == EVERYTHING
    # Rolled back: the template names v1 again; the serving revision takes every request until
    # the new revision of v1 is ready.
    rolled_back = target("v1", {NAME: "v1"}, None)
    assert desired_traffic(rolled_back, [serving, candidate], app("app--r2", "v2")) == [
        {"revisionName": "app--r1", "weight": 100},
        {"latestRevision": True, "weight": 0},
    ]
    again = revision("app--r3", "v1", created="2026-12-07T11:00:00Z")
    assert desired_traffic(rolled_back, [serving, candidate, again], app("app--r3", "v1")) == EVERYTHING


def test_a_revision_that_takes_no_traffic_and_is_not_the_newest_has_done_its_part():
    listed = [revision("app--r1", "v1"), revision("app--r2", "v2", weight=100), revision("app--r0", "v0", active=False)]
    assert done(listed, app("app--r2", "v2")) == ["app--r1"]
    held = app("app--r2", "v2", traffic=[{"revisionName": "app--r1", "weight": 100}, {"latestRevision": True, "weight": 0}])
    assert done([revision("app--r1", "v1", weight=100), revision("app--r2", "v2")], held) == []


def test_what_is_kept_of_a_listed_revision_answers_as_the_whole_one():
    whole = [revision("app--r1", "v1", weight=100, created="2026-12-07T09:00:00Z"), revision("app--r2", "v2"), revision("app--r3", "v1")]
    for listed in whole:
        listed["properties"]["template"]["containers"][0]["image"] = "ghcr.io/x/serving:1"
        listed["properties"]["template"]["containers"][0]["env"].append({"name": "HF_HUB_OFFLINE", "value": "1"})
        listed["properties"].update(replicas=1, runningState="Running", provisioningState="Provisioned")
    kept = [as_kept(r) for r in whole]
    assert kept[0] == {
        "name": "app--r1",
        "properties": {
            "active": True,
            "trafficWeight": 100,
            "createdTime": "2026-12-07T09:00:00Z",
            "replicas": 1,
            "fqdn": "app--r1.x",
            "template": {"containers": [{"env": [{"name": "LORAPLANE_ADAPTER_VERSION", "value": "v1"}]}]},
        },
    }
    proving = target("v2", {NAME: "v1"}, 10)
    latest = app("app--r2", "v2", traffic=[{"revisionName": "app--r1", "weight": 90}, {"latestRevision": True, "weight": 10}])
    assert serving_revision(proving, kept) == serving_revision(proving, whole) == "app--r1"
    assert desired_traffic(proving, kept, latest) == desired_traffic(proving, whole, latest)
    assert done(kept, latest) == done(whole, latest) == ["app--r3"]
