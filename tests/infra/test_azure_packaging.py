"""What the azure target ships besides API calls: the serving wheel it uploads, the bicep for
teams who provision by hand, and the AI Toolkit's project files in and out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from api.cli.client import CliError
from api.cli.toolkit import export_toolkit, import_toolkit
from infra.azure.kinds import desired_resources
from infra.azure.wheel import build_serving_wheel
from infra.provider import Target
from state.resource import DeploymentSpec
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import azure_manifest

PROVISION = Path(__file__).resolve().parents[2] / "infra" / "provision"
TOOLKIT_PARAMETERS = {
    "defaultCommands",
    "maximumInstanceCount",
    "location",
    "storageAccountName",
    "fileShareName",
    "acaEnvironmentName",
    "acaEnvironmentStorageName",
    "acaAppName",
    "acaLogAnalyticsName",
}


def test_the_serving_wheel_is_reproducible_and_pip_installs_it(tmp_path: Path):
    first, second = build_serving_wheel(), build_serving_wheel()
    assert (first.filename, first.content) == (second.filename, second.content)
    assert re.fullmatch(r"loraplane_serving-\d+\.\d+\.\d+\+g[0-9a-f]{12}-py3-none-any\.whl", first.filename)
    names = zipfile.ZipFile(BytesIO(first.content)).namelist()
    assert "serving/__main__.py" in names and "serving/engine.py" in names
    assert not any(name.startswith(("api/", "reconciler/", "state/", "infra/")) for name in names)
    metadata = zipfile.ZipFile(BytesIO(first.content)).read(f"loraplane_serving-{first.version}.dist-info/METADATA").decode()
    assert "Requires-Dist: peft>=" in metadata and "Requires-Dist: transformers>=" in metadata
    wheel = tmp_path / first.filename
    wheel.write_bytes(first.content)
    # pip checks the RECORD's hashes as it installs: a malformed wheel fails here.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (tmp_path / "site" / "serving" / "__main__.py").is_file()


def test_a_change_to_the_serving_sources_is_a_new_wheel_name(tmp_path: Path):
    from infra.azure.wheel import serving_sources

    copy = tmp_path / "serving"
    for source in serving_sources().glob("*.py"):
        (copy / source.name).parent.mkdir(parents=True, exist_ok=True)
        (copy / source.name).write_bytes(source.read_bytes())
    before = build_serving_wheel(copy).filename
    (copy / "engine.py").write_text((copy / "engine.py").read_text() + "\n# a change\n")
    assert build_serving_wheel(copy).filename != before


def bicep_parameters() -> set[str]:
    return set(re.findall(r"^param (\w+) ", (PROVISION / "inference.bicep").read_text(), flags=re.M))


def test_the_bicep_takes_the_ai_toolkits_parameters_and_creates_what_the_provider_manages():
    assert bicep_parameters() >= TOOLKIT_PARAMETERS
    parameters = json.loads((PROVISION / "inference.parameters.json").read_text())["parameters"]
    assert set(parameters) == TOOLKIT_PARAMETERS
    assert set(parameters) <= bicep_parameters()
    bicep = (PROVISION / "inference.bicep").read_text()
    types = {t.lower() for t in re.findall(r"^resource \w+ '([^@']+)@", bicep, flags=re.M)}
    spec = DeploymentSpec.model_validate(azure_manifest()["spec"]).with_defaults("support-bot")
    managed = set()
    for resource in desired_resources(Target("support-bot", "uid", 1, spec), wheel="w.whl"):
        segments = resource.id.split("/providers/")[-1].split("/") if "/providers/" in resource.id else ["resourceGroups"]
        managed.add("/".join([segments[0], *segments[1::2]]).lower())
    # The bicep deploys into a group it is given, and declares the file service the share is in.
    assert types - {"microsoft.storage/storageaccounts/fileservices"} == managed - {"resourcegroups"}
    for output in ("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "STORAGE_ACCOUNT_NAME", "FILE_SHARE_NAME", "ACA_APP_NAME", "ACA_APP_ENDPOINT"):
        assert re.search(rf"^output {output} ", bicep, flags=re.M)


def test_the_bicep_names_the_exact_wheel_and_what_azure_accepts():
    bicep = (PROVISION / "inference.bicep").read_text()
    parameters = (PROVISION / "inference.parameters.json").read_text()
    # No glob: after an upgrade two wheels are on the share, and a glob installs both or fails.
    assert "*.whl" not in bicep and "*.whl" not in parameters
    assert "/mount/.loraplane/dist/${servingWheel}" in bicep
    assert "allowSharedKeyAccess: true" in bicep
    assert "resources: { cpu: json(cpu), memory: memory }" in bicep
    for threshold in re.findall(r"failureThreshold: (\d+)", bicep):
        assert 1 <= int(threshold) <= 10
    for delay in re.findall(r"initialDelaySeconds: (\d+)", bicep):
        assert 1 <= int(delay) <= 60
    # The defaults agree with loraplane's own: the profile named after its type, its whole size.
    spec = DeploymentSpec.model_validate(azure_manifest()["spec"])
    assert "param workloadProfileName string = 'gpu-nc24-a100'" in bicep
    assert f"param workloadProfileType string = '{spec.azure.workload_profile.type}'" in bicep
    cpu, memory = spec.azure.container_resources()
    assert f"param cpu string = '{cpu:g}'" in bicep and f"param memory string = '{memory}'" in bicep


def toolkit_project(root: Path, *, config: dict | None = None, parameters: dict | None = None) -> Path:
    (root / "infra" / "provision").mkdir(parents=True)
    (root / "infra" / "inference.config.json").write_text(
        json.dumps(
            config
            if config is not None
            else {
                "SUBSCRIPTION_ID": "11111111-2222-3333-4444-555555555555",
                "RESOURCE_GROUP_NAME": "ai-toolkit-rg",
                "STORAGE_ACCOUNT_NAME": "wasistorageab12c",
                "FILE_SHARE_NAME": "wasifileshareab12c",
                "ACA_APP_NAME": "wasiinference",
                "ACA_APP_ENDPOINT": "",
            }
        )
    )
    values = (
        parameters
        if parameters is not None
        else {
            "defaultCommands": ["cd /mount", "python ./scripts/inference.py"],
            "maximumInstanceCount": 2,
            "location": "westus3",
            "storageAccountName": None,
            "fileShareName": None,
            "acaEnvironmentName": "wasienvab12c",
            "acaEnvironmentStorageName": "wasienvstorageab12c",
            "acaAppName": None,
            "acaLogAnalyticsName": "wasilogab12c",
        }
    )
    (root / "infra" / "provision" / "inference.parameters.json").write_text(
        json.dumps(
            {
                "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
                "contentVersion": "1.0.0.0",
                "parameters": {k: {"value": v} for k, v in values.items()},
            }
        )
    )
    return root


def test_import_toolkit_adopts_what_the_project_provisioned(tmp_path: Path):
    manifest = import_toolkit(toolkit_project(tmp_path))
    assert manifest["metadata"] == {"name": "wasiinference"}
    # The model is named, never left to a default: where the Toolkit's Phi-3 project caches it.
    assert manifest["spec"]["model"] == {"path": "model-cache/microsoft/Phi-3-mini-4k-instruct"}
    assert manifest["spec"]["scale"] == {"minReplicas": 1, "maxReplicas": 2}
    assert manifest["spec"]["azure"] == {
        "subscriptionId": "11111111-2222-3333-4444-555555555555",
        "resourceGroup": "ai-toolkit-rg",
        "location": "westus3",
        "storageAccount": "wasistorageab12c",
        "fileShare": "wasifileshareab12c",
        "environment": "wasienvab12c",
        "environmentStorage": "wasienvstorageab12c",
        "app": "wasiinference",
        "logAnalytics": "wasilogab12c",
        # What the Toolkit's inference template made, as it made it: a dedicated A100 profile
        # (named "GPU" there, found by its type) and 24 vCPU / 220Gi for the app.
        "workloadProfile": {"type": "NC24-A100"},
    }


def test_import_toolkit_says_what_is_missing(tmp_path: Path):
    with pytest.raises(CliError, match="not an AI Toolkit project"):
        import_toolkit(tmp_path)
    project = toolkit_project(tmp_path / "p", parameters={"maximumInstanceCount": 1})
    with pytest.raises(CliError, match="--location"):
        import_toolkit(project)
    assert import_toolkit(project, location="northeurope")["spec"]["azure"]["location"] == "northeurope"
    with pytest.raises(CliError, match=r"metadata.name|name"):
        import_toolkit(project, location="northeurope", name="Not A Name")
    # The Toolkit's environment has a dedicated A100 profile: only where those are offered.
    with pytest.raises(CliError, match="NC24-A100 is not offered in eastus"):
        import_toolkit(project, location="eastus")


def test_import_toolkit_from_the_command_line(tmp_path: Path):
    project = toolkit_project(tmp_path / "project")
    result = run_cli(None, "import-toolkit", str(project), "--name", "support-bot")
    assert result.returncode == 0, result.stderr
    assert "name: support-bot" in result.stdout and "environment: wasienvab12c" in result.stdout
    assert_one_line_error(run_cli(None, "import-toolkit", str(tmp_path / "nowhere")), "not an AI Toolkit project")


def test_export_toolkit_writes_the_endpoint_from_status():
    deployment = {
        "metadata": {"name": "support-bot"},
        "spec": DeploymentSpec.model_validate(azure_manifest()["spec"]).with_defaults("support-bot").wire(),
        "status": {"phase": "Ready", "endpoint": "https://support-bot.abc.westus3.azurecontainerapps.io"},
    }
    assert export_toolkit(deployment) == {
        "SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "RESOURCE_GROUP_NAME": "rg-inference",
        "STORAGE_ACCOUNT_NAME": deployment["spec"]["azure"]["storageAccount"],
        "FILE_SHARE_NAME": "support-bot-share",
        "ACA_APP_NAME": "support-bot",
        "ACA_APP_ENDPOINT": "https://support-bot.abc.westus3.azurecontainerapps.io",
    }
    local = {"metadata": {"name": "x"}, "spec": {"target": "local"}, "status": {}}
    with pytest.raises(CliError, match="only azure deployments"):
        export_toolkit(local)
