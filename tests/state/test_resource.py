"""The resource's validation rules: what a user sees when a manifest is wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from state.models import InferenceDeploymentCreate
from state.resource import AzureSpec, DeploymentSpec, immutable_field_changes
from tests.conftest import azure_manifest, local_manifest


def errors_of(document: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        InferenceDeploymentCreate.model_validate(document)
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in info.value.errors()}


def test_a_minimal_local_manifest_gets_the_ai_toolkit_defaults():
    body = InferenceDeploymentCreate.model_validate(local_manifest())
    spec = body.spec
    assert spec.model.path == "model-cache/microsoft/Phi-3-mini-4k-instruct"
    assert spec.adapter.path == "models/qlora/qlora/gpu_model/adapter"
    assert (spec.adapter.settle_seconds, spec.adapter.strategy, spec.adapter.pin) == (10, "hotReload", None)
    assert (spec.scale.min_replicas, spec.scale.max_replicas) == (1, 1)


@pytest.mark.parametrize("name", ["ab", "support-bot", "a1", "x" * 32, "team-a-bot-2"])
def test_good_deployment_names_are_accepted(name):
    InferenceDeploymentCreate.model_validate(local_manifest(name=name))


@pytest.mark.parametrize("name", ["a", "x" * 33, "Support", "1bot", "bot-", "bo--t", "bot_1", "bot.1", "bot\x00"])
def test_bad_deployment_names_are_refused_with_the_rule(name):
    errors = errors_of(local_manifest(name=name))
    assert "metadata.name" in errors
    assert "lowercase letters, digits and '-'" in errors["metadata.name"] or "'--'" in errors["metadata.name"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("storageAccount", "ab", "3-24 characters"),
        ("storageAccount", "a" * 25, "3-24 characters"),
        ("storageAccount", "MyStorage", "lowercase letters and digits"),
        ("storageAccount", "my-storage", "lowercase letters and digits"),
        ("app", "a", "2-32 characters"),
        ("app", "a" * 33, "2-32 characters"),
        ("app", "1app", "starting with a letter"),
        ("app", "app-", "not ending with '-'"),
        ("app", "my--app", "'--'"),
        ("app", "My-App", "lowercase"),
        ("fileShare", "ab", "3-63 characters"),
        ("fileShare", "a" * 64, "3-63 characters"),
        ("fileShare", "-share", "starting and ending"),
        ("fileShare", "sh--are", "'--'"),
        ("resourceGroup", "rg.", "not ending with '.'"),
        ("resourceGroup", "r" * 91, "1-90 characters"),
        ("resourceGroup", "rg with space", "1-90 characters"),
        ("location", "West US 3", "'westus3'"),
        ("subscriptionId", "not-a-guid", "subscription GUID"),
        ("environment", "e", "2-60 characters"),
        ("environment", "env_1", "2-60 characters"),
        ("environmentStorage", "s" * 33, "2-32 characters"),
        ("logAnalytics", "abc", "4-63 characters"),
        ("image", "Not An Image", "container image reference"),
        ("policy", "destroy", "manage"),
    ],
)
def test_azure_names_follow_azures_rules(field, value, words):
    errors = errors_of(azure_manifest(**{field: value}))
    key = f"spec.azure.{field}"
    assert key in errors, errors
    assert words in errors[key]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("storageAccount", "abc"),
        ("storageAccount", "a" * 24),
        ("app", "ab"),
        ("app", "a" * 32),
        ("fileShare", "abc"),
        ("resourceGroup", "r"),
        ("resourceGroup", "r" * 90),
        ("resourceGroup", "Rg_(prod).eu-1"),
        ("environment", "e" * 60),
        ("logAnalytics", "Logs-1"),
        ("image", "myregistry.azurecr.io/loraplane-serving:1.0"),
    ],
)
def test_azure_names_at_the_limits_are_accepted(field, value):
    InferenceDeploymentCreate.model_validate(azure_manifest(**{field: value}))


def test_the_section_for_the_chosen_target_is_required():
    model = {"path": "models/base"}
    errors = errors_of({"metadata": {"name": "bot"}, "spec": {"target": "local", "model": model}})
    assert "spec.local is required" in errors["spec"]
    errors = errors_of({"metadata": {"name": "bot"}, "spec": {"target": "azure", "model": model}})
    assert "spec.azure is required" in errors["spec"]
    errors = errors_of({"metadata": {"name": "bot"}, "spec": {"target": "gcp"}})
    assert "spec.target" in errors


@pytest.mark.parametrize(
    ("scale", "where", "words"),
    [
        ({"minReplicas": -1}, "spec.scale.minReplicas", "greater than or equal to 0"),
        ({"maxReplicas": 1001}, "spec.scale.maxReplicas", "less than or equal to 1000"),
        ({"minReplicas": 3, "maxReplicas": 2}, "spec.scale", "must not exceed maxReplicas"),
    ],
)
def test_replica_counts_are_0_to_1000_with_min_at_most_max(scale, where, words):
    errors = errors_of(local_manifest(scale=scale))
    assert words in errors[where]


def test_replica_limits_are_accepted():
    InferenceDeploymentCreate.model_validate(local_manifest(scale={"minReplicas": 0, "maxReplicas": 1000}))


def test_unknown_fields_are_refused_anywhere():
    errors = errors_of(local_manifest(adapter={"settleSecond": 5}))
    assert errors["spec.adapter.settleSecond"] == "Extra inputs are not permitted"
    errors = errors_of({**local_manifest(), "extra": 1})
    assert "extra" in errors


@pytest.mark.parametrize("path", ["/abs/path", "../escape", "models/../../etc", ""])
def test_share_paths_must_stay_inside_the_share(path):
    errors = errors_of(local_manifest(model={"path": path}))
    assert "spec.model.path" in errors


def test_share_root_must_be_absolute():
    errors = errors_of(local_manifest(share_root="relative/share"))
    assert "absolute" in errors["spec.local.shareRoot"]


def test_defaulted_azure_names_are_valid_explicit_and_stable():
    spec = DeploymentSpec.model_validate(azure_manifest(name="x" * 32)["spec"])
    filled = spec.with_defaults("x" * 32)
    azure = filled.azure
    assert azure is not None
    AzureSpec.model_validate(azure.model_dump())  # every filled-in name obeys Azure's rules
    assert azure.app == "x" * 32
    assert len(azure.storage_account) <= 24
    assert filled == spec.with_defaults("x" * 32)
    other_group = DeploymentSpec.model_validate(azure_manifest(name="x" * 32, resourceGroup="rg-other")["spec"]).with_defaults("x" * 32)
    assert other_group.azure.storage_account != azure.storage_account


def test_named_azure_resources_are_kept_as_given():
    spec = DeploymentSpec.model_validate(azure_manifest(storageAccount="teamstore", app="chat")["spec"]).with_defaults("bot")
    assert (spec.azure.storage_account, spec.azure.app) == ("teamstore", "chat")


def test_immutable_fields_are_reported_by_path():
    old = {"target": "azure", "azure": {"subscriptionId": "a", "resourceGroup": "rg", "location": "westus3"}}
    new = {"target": "azure", "azure": {"subscriptionId": "a", "resourceGroup": "rg2", "location": "westus3"}}
    assert immutable_field_changes(old, new) == ["spec.azure.resourceGroup"]
    assert immutable_field_changes(old, old) == []


def test_the_model_is_never_filled_in():
    """Before: a manifest without spec.model was given Phi-3-mini, and applying a partial file
    swapped a working deployment's model for one that was not there."""
    errors = errors_of({"metadata": {"name": "bot"}, "spec": {"target": "local", "local": {"shareRoot": "/srv/share"}}})
    assert "spec.model" in errors
    errors = errors_of({"metadata": {"name": "bot"}, "spec": {"target": "local", "local": {"shareRoot": "/srv/share"}, "model": {}}})
    assert "spec.model.path" in errors


def test_several_adapters_are_listed_by_name_and_the_shorthand_is_one_named_after_the_deployment():
    one = InferenceDeploymentCreate.model_validate(local_manifest(name="support-bot")).spec
    assert [(e.name, e.path, e.poll_seconds) for e in one.adapter_entries("support-bot")] == [
        ("support-bot", "models/qlora/qlora/gpu_model/adapter", 5)
    ]
    adapters = [{"name": "billing", "path": "models/billing", "pollSeconds": 2}, {"name": "legal", "path": "models/legal"}]
    many = InferenceDeploymentCreate.model_validate(local_manifest(adapters=adapters)).spec
    assert [e.name for e in many.adapter_entries("support-bot")] == ["billing", "legal"]
    stored = many.wire()
    assert "adapter" not in stored and [a["name"] for a in stored["adapters"]] == ["billing", "legal"]
    assert DeploymentSpec.model_validate(stored).wire() == stored  # read back as written


def test_adapters_need_names_of_their_own_and_not_the_shorthand_beside_them():
    twice = errors_of(local_manifest(adapters=[{"name": "billing", "path": "a"}, {"name": "billing", "path": "b"}]))
    assert "names two adapters" in twice["spec.adapters.1.name"]
    both = errors_of(local_manifest(adapter={"path": "a"}, adapters=[{"name": "billing", "path": "b"}]))
    assert "not both" in both["spec.adapter"]
    bad = errors_of(local_manifest(adapters=[{"name": "a/b", "path": "b"}]))
    assert "the model id clients ask for" in bad["spec.adapters.0.name"]
    assert "spec.adapters" in errors_of(local_manifest(adapters=[]))
    assert "spec.adapters.0.pollSeconds" in errors_of(local_manifest(adapters=[{"name": "a", "pollSeconds": 0}]))
