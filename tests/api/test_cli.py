"""The CLI end to end: the real ``loraplane`` command against a real ``loraplane serve``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ServiceProcess, bin_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_cli(
    service: ServiceProcess | None, *args: str, stdin: str | None = None, url: str | None = None, env: dict[str, str] | None = None
):
    overrides = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
    env["LORAPLANE_URL"] = url or (service.url if service else "http://127.0.0.1:1")
    env["LORAPLANE_CONFIG"] = "/nonexistent/loraplane-config.yaml"  # no user's config file
    env.update(overrides)
    return subprocess.run(
        [bin_path("loraplane"), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=60,
    )


def assert_one_line_error(result, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]


def example_with_share(tmp_path: Path, share: Path) -> Path:
    manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    manifest["spec"]["local"]["shareRoot"] = str(share)
    (share / manifest["spec"]["model"]["path"]).mkdir(parents=True, exist_ok=True)  # what the stand-in app looks for
    path = tmp_path / "support-bot.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def examples_folder(folder: Path, share: Path, *names: str) -> Path:
    """The example manifest once per name, in a folder of their own, on ``share``."""
    folder.mkdir()
    for name in names:
        manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
        manifest["metadata"]["name"] = name
        manifest["spec"]["local"]["shareRoot"] = str(share)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def wait_for_phase(service: ServiceProcess, name: str, phase: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = run_cli(service, "get", name, "-o", "json")
        current = json.loads(result.stdout) if result.returncode == 0 else {}
        if current.get("status", {}).get("phase") == phase:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not reach {phase}: {current.get('status')}")
        time.sleep(0.3)


def test_apply_get_describe_events_logs_delete(service, tmp_path, share):
    manifest_file = example_with_share(tmp_path, share)
    created = run_cli(service, "apply", "-f", str(manifest_file))
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "deployment/support-bot created"

    again = run_cli(service, "apply", "-f", str(manifest_file))
    assert again.stdout.strip() == "deployment/support-bot unchanged"

    manifest = yaml.safe_load(manifest_file.read_text())
    manifest["spec"]["scale"]["maxReplicas"] = 2
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(manifest))
    configured = run_cli(service, "apply", "-f", str(changed))
    assert configured.stdout.strip() == "deployment/support-bot configured"

    ready = wait_for_phase(service, "support-bot", "Ready")
    endpoint = ready["status"]["endpoint"]
    assert httpx.get(f"{endpoint}/healthz").status_code == 200

    table = run_cli(service, "get")
    assert table.returncode == 0
    header, row = table.stdout.strip().splitlines()
    assert header.split() == ["NAME", "TARGET", "PHASE", "READY", "ADAPTER", "AGE"]
    assert row.split()[:4] == ["support-bot", "local", "Ready", "True"]

    wide = run_cli(service, "get", "-o", "wide")
    assert "GENERATION" in wide.stdout and "2/2" in wide.stdout and endpoint in wide.stdout
    assert "team=support" in wide.stdout

    as_yaml = yaml.safe_load(run_cli(service, "get", "-o", "yaml").stdout)
    assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["support-bot"]
    assert run_cli(service, "get", "-l", "team=search").stdout.strip() == "No deployments found."

    described = run_cli(service, "describe", "support-bot")
    assert described.returncode == 0, described.stderr
    for words in [
        "Name:",
        "support-bot",
        "Generation:",
        "2 (observed 2)",
        "Phase:",
        "Ready",
        f"Endpoint:       {endpoint}",
        f"shareRoot: {share}",
        "Conditions:",
        "Serving",
        "Events:",
        "SpecChanged",
        "Created",
    ]:
        assert words in described.stdout, words

    history = run_cli(service, "events", "support-bot")
    lines = history.stdout.strip().splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"]
    assert any("Ready" in line and endpoint in line for line in lines)

    logs = run_cli(service, "logs", "support-bot", "--tail", "50")
    assert logs.returncode == 0, logs.stderr
    assert "standin: serving" in logs.stdout

    deleted = run_cli(service, "delete", "support-bot", "--wait")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip().splitlines() == [
        "deployment/support-bot deletion requested",
        "deployment/support-bot deleted",
    ]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/healthz", timeout=2)


def test_a_missing_share_shows_as_degraded_naming_the_path(service, tmp_path):
    manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    manifest["spec"]["local"]["shareRoot"] = str(tmp_path / "no-such-share")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    run_cli(service, "apply", "-f", str(path))
    degraded = wait_for_phase(service, "support-bot", "Degraded")
    assert str(tmp_path / "no-such-share") in degraded["status"]["message"]
    described = run_cli(service, "describe", "support-bot").stdout
    assert "ShareRootNotFound" in described


def test_apply_reads_several_documents_and_stdin(service):
    text = (EXAMPLES / "local.yaml").read_text()
    second = text.replace("name: support-bot", "name: search-bot")
    result = run_cli(service, "apply", "-f", "-", stdin=text + "\n---\n" + second)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "deployment/support-bot created",
        "deployment/search-bot created",
    ]


def test_errors_are_one_line(service, tmp_path):
    assert_one_line_error(run_cli(service, "get", "nobody"), "'nobody' not found")
    assert_one_line_error(run_cli(service, "describe", "nobody"), "not found")
    assert_one_line_error(run_cli(service, "events", "nobody"), "not found")
    assert_one_line_error(run_cli(service, "delete", "nobody"), "not found")
    assert_one_line_error(run_cli(service, "apply", "-f", str(tmp_path / "missing.yaml")), "no such file")
    assert_one_line_error(run_cli(service, "get", "-o", "table"), "unknown output format")

    broken = tmp_path / "broken.yaml"
    broken.write_text("metadata:\n  name: [unclosed\n")
    assert_one_line_error(run_cli(service, "apply", "-f", str(broken)), "not valid YAML", "line")

    bad = yaml.safe_load((EXAMPLES / "azure.yaml").read_text())
    bad["spec"]["azure"]["storageAccount"] = "Not-Valid"
    bad["spec"]["scale"]["minReplicas"] = 5
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(yaml.safe_dump(bad))
    assert_one_line_error(
        run_cli(service, "apply", "-f", str(bad_file)),
        "Invalid resource (422)",
        "spec.azure.storageAccount",
        "spec.scale",
    )

    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("spec: {target: local}\n")
    assert_one_line_error(run_cli(service, "apply", "-f", str(nameless)), "no metadata.name")

    assert_one_line_error(run_cli(service, "logs", "nobody"), "not found")


def test_no_server_is_a_one_line_error():
    assert_one_line_error(run_cli(None, "get"), "cannot reach the loraplane API", "loraplane serve")


@pytest.mark.parametrize("argv", [["serve", "--port", "0"], ["get", "--bogus"]])
def test_usage_errors_exit_non_zero_without_a_traceback(argv):
    result = run_cli(None, *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
