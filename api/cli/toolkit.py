"""The AI Toolkit's remote-inference project files, to and from loraplane's manifest.

An AI Toolkit project keeps what it provisioned in ``infra/inference.config.json``
(SUBSCRIPTION_ID, RESOURCE_GROUP_NAME, STORAGE_ACCOUNT_NAME, FILE_SHARE_NAME, ACA_APP_NAME,
ACA_APP_ENDPOINT) and the bicep's inputs in ``infra/provision/inference.parameters.json`` (an
ARM deployment parameters file: location, maximumInstanceCount, storageAccountName,
fileShareName, acaEnvironmentName, acaEnvironmentStorageName, acaAppName,
acaLogAnalyticsName, defaultCommands). Importing makes a deployment that adopts those
resources; exporting writes the config file other AI Toolkit commands read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from api.cli.client import CliError
from state.resource import TOOLKIT_MODEL_PATH, DeploymentSpec, ObjectMetaIn

CONFIG_FILE = Path("infra/inference.config.json")
TOOLKIT_PROFILE_TYPE = "NC24-A100"
PARAMETERS_FILE = Path("infra/provision/inference.parameters.json")
# parameters file name -> spec.azure field
PARAMETER_FIELDS = {
    "storageAccountName": "storageAccount",
    "fileShareName": "fileShare",
    "acaEnvironmentName": "environment",
    "acaEnvironmentStorageName": "environmentStorage",
    "acaAppName": "app",
    "acaLogAnalyticsName": "logAnalytics",
}
CONFIG_FIELDS = {
    "STORAGE_ACCOUNT_NAME": "storageAccount",
    "FILE_SHARE_NAME": "fileShare",
    "ACA_APP_NAME": "app",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise CliError(f"{path}: expected a JSON object")
    return document


def _parameter_values(document: dict[str, Any]) -> dict[str, Any]:
    parameters = document.get("parameters", document)
    if not isinstance(parameters, dict):
        return {}
    return {key: value.get("value") if isinstance(value, dict) else value for key, value in parameters.items() if not key.startswith("$")}


def import_toolkit(project: Path, *, name: str | None = None, location: str | None = None) -> dict[str, Any]:
    """A manifest for the AI Toolkit project in ``project`` (its folder)."""
    config_path = project / CONFIG_FILE
    parameters_path = project / PARAMETERS_FILE
    if not config_path.is_file() and not parameters_path.is_file():
        raise CliError(f"{project} is not an AI Toolkit project: neither {CONFIG_FILE} nor {PARAMETERS_FILE} is there")
    config = _read_json(config_path) if config_path.is_file() else {}
    parameters = _parameter_values(_read_json(parameters_path)) if parameters_path.is_file() else {}
    azure: dict[str, Any] = {}
    for key, field in PARAMETER_FIELDS.items():
        if parameters.get(key):
            azure[field] = parameters[key]
    for key, field in CONFIG_FIELDS.items():  # what was provisioned wins over what was asked
        if config.get(key):
            azure[field] = config[key]
    for key, field in (("SUBSCRIPTION_ID", "subscriptionId"), ("RESOURCE_GROUP_NAME", "resourceGroup")):
        if not config.get(key):
            raise CliError(f"{config_path}: {key} is missing; provision the project with the AI Toolkit first, or fill it in")
        azure[field] = config[key]
    azure["location"] = location or parameters.get("location")
    if not azure["location"]:
        raise CliError(f"{parameters_path}: no location parameter; give one with --location (for example westus3)")
    deployment = name or azure.get("app")
    if not deployment:
        raise CliError("no ACA_APP_NAME or acaAppName to name the deployment after; give one with --name")
    # The Toolkit's inference template (configs/*/infra/provision/inference.bicep) creates a
    # dedicated NC24-A100 profile named "GPU" and asks 24 vCPU and 220Gi for its app: adopted as
    # it is (the profile is found by its type, whatever its name; the size is that profile's).
    azure["workloadProfile"] = {"type": TOOLKIT_PROFILE_TYPE}
    # The Toolkit's Phi-3 projects fine-tune microsoft/Phi-3-mini-4k-instruct, cached on the share
    # under model-cache/: named explicitly (a manifest always names its model).
    spec: dict[str, Any] = {"target": "azure", "model": {"path": TOOLKIT_MODEL_PATH}, "azure": azure}
    if isinstance(parameters.get("maximumInstanceCount"), int):
        spec["scale"] = {"minReplicas": min(1, parameters["maximumInstanceCount"]), "maxReplicas": parameters["maximumInstanceCount"]}
    manifest = {"apiVersion": "loraplane/v1", "kind": "InferenceDeployment", "metadata": {"name": deployment}, "spec": spec}
    try:
        ObjectMetaIn.model_validate(manifest["metadata"])
        DeploymentSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CliError(f"the project does not make a valid deployment: {problems}") from exc
    return manifest


def export_toolkit(deployment: dict[str, Any]) -> dict[str, str]:
    """``infra/inference.config.json`` for a deployment as the API shows it."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    azure = spec.get("azure")
    if spec.get("target") != "azure" or not azure:
        raise CliError(
            f"deployment {deployment['metadata']['name']!r} targets {spec.get('target')!r}; only azure deployments have an AI Toolkit config"
        )
    return {
        "SUBSCRIPTION_ID": azure["subscriptionId"],
        "RESOURCE_GROUP_NAME": azure["resourceGroup"],
        "STORAGE_ACCOUNT_NAME": azure.get("storageAccount", ""),
        "FILE_SHARE_NAME": azure.get("fileShare", ""),
        "ACA_APP_NAME": azure.get("app", ""),
        "ACA_APP_ENDPOINT": status.get("endpoint") or "",
    }
