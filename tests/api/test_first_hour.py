"""A new user's first hour, through the real CLI: what the README tells them to type works."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
import typer
import yaml

from api.cli import app
from infra.local.provider import LocalProvider
from tests.api.test_cli import EXAMPLES, assert_one_line_error, examples_folder, run_cli
from tests.conftest import ServiceProcess, start_service, stop_service
from tests.fakes import eventually

README = Path(__file__).resolve().parents[2] / "README.md"


def every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_command(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_command_takes_dash_h():
    """Before: 'No such option: -h' and exit 2 everywhere, though the README promised -h."""
    commands = list(every_command(typer.main.get_group(app)))
    assert len(commands) > 15
    for command in commands:
        result = run_cli(None, *command, "-h")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage: loraplane" in result.stdout, command


@pytest.fixture
def real_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """``loraplane serve`` running the real serving app, as ``make run`` does."""
    data_dir = tmp_path / "data"
    service = start_service(data_dir, standin=False)
    yield service
    stop_service(service)
    LocalProvider(data_dir / "local").stop_all()


def test_the_readme_walkthrough_reaches_ready_offline(real_service: ServiceProcess, tmp_path: Path):
    """The commands of 'A first deployment', as written (the share in this test's folder): a
    tiny model, the example applied, Ready, and a chat answered, with no network."""
    block = README.read_text().split("## A first deployment", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].split() for line in block.strip().splitlines()]
    assert commands[0][:3] == ["loraplane", "dev", "tiny-model"] and commands[1][:2] == ["loraplane", "apply"]
    share = tmp_path / "share"
    made = run_cli(real_service, "dev", "tiny-model", str(share))
    assert made.returncode == 0, made.stderr
    manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    assert manifest["spec"]["local"]["shareRoot"] == commands[0][3]  # the folder the README fills
    manifest["spec"]["local"]["shareRoot"] = str(share)
    applied = run_cli(real_service, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert applied.returncode == 0, applied.stderr

    def ready() -> dict | None:
        shown = json.loads(run_cli(real_service, "get", "support-bot", "-o", "json").stdout)
        synced = [c for c in shown["status"].get("conditions", []) if c["type"] == "AdapterSynced" and c["status"] == "True"]
        return shown if shown["status"].get("phase") == "Ready" and synced else None

    shown = eventually(ready, timeout=180, what="the example to be Ready and serving its adapter")
    answer = httpx.post(
        f"{shown['status']['endpoint']}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["x-adapter-version"] == shown["status"]["adapter"]["servingVersion"]
    listed = run_cli(real_service, "get").stdout.splitlines()
    assert re.split(r"\s+", listed[1])[:4] == ["support-bot", "local", "Ready", "True"]


def test_apply_of_a_folder_applies_every_manifest_in_it(service: ServiceProcess, tmp_path: Path, share: Path):
    folder = examples_folder(tmp_path / "manifests", share, "alpha-bot", "beta-bot")
    (folder / "notes.txt").write_text("not a manifest")
    applied = run_cli(service, "apply", "-f", str(folder))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == ["deployment/alpha-bot created", "deployment/beta-bot created"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli(service, "apply", "-f", str(empty)), "no manifest in it")
    assert_one_line_error(run_cli(service, "apply", "-f", str(tmp_path / "nowhere")), "no such file or folder")


def test_a_bad_name_is_named_as_the_user_wrote_it(service: ServiceProcess):
    """Before: 'path.name: String should match pattern ...'."""
    shown = run_cli(service, "get", "Not_A_Name")
    assert_one_line_error(shown, "name: 'Not_A_Name' is not a deployment name", "lowercase letters")
    assert "pattern" not in shown.stderr and "path." not in shown.stderr


def test_plan_says_what_apply_says_of_a_change_that_may_not_be_made(service: ServiceProcess, tmp_path: Path, share: Path):
    """Before: apply gave a clear 422 for a change of spec.target; plan exited 0 with
    'blocked: AuthorizationFailed' and a dump of credential errors."""
    manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    manifest["spec"]["local"]["shareRoot"] = str(share)
    assert run_cli(service, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)).returncode == 0
    moved = dict(manifest, spec={**manifest["spec"], "target": "azure"})
    moved["spec"].pop("local")
    moved["spec"]["azure"] = {"subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "rg", "location": "westus3"}
    planned = run_cli(service, "plan", "-f", "-", stdin=yaml.safe_dump(moved))
    applied = run_cli(service, "apply", "-f", "-", stdin=yaml.safe_dump(moved))
    assert_one_line_error(planned, "spec.target", "cannot change")
    assert planned.stderr == applied.stderr
    assert "Authorization" not in planned.stderr and "credential" not in planned.stderr.lower()


def test_logs_of_an_app_that_never_ran_says_so(service: ServiceProcess, tmp_path: Path):
    manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    manifest["spec"]["local"]["shareRoot"] = str(tmp_path / "no-share-yet")
    assert run_cli(service, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)).returncode == 0
    shown = run_cli(service, "logs", "support-bot")
    assert shown.returncode == 0 and shown.stdout == ""
    assert "no log yet" in shown.stderr and "loraplane describe support-bot" in shown.stderr


def test_get_watch_lines_up_under_its_header(service: ServiceProcess, share: Path):
    for name in ("a1", "a-much-longer-deployment-name"):
        manifest = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
        manifest["metadata"]["name"] = name
        manifest["spec"]["local"]["shareRoot"] = str(share)
        assert run_cli(service, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)).returncode == 0
    watched = run_cli(service, "get", "-w", "--timeout", "2")
    lines = [line for line in watched.stdout.splitlines() if line.strip()]
    assert len(lines) >= 3, watched.stdout
    header = lines[0]
    for column in ("TARGET", "PHASE", "READY", "ADAPTER", "AGE"):
        start = header.index(column)
        for line in lines[1:]:
            assert line[start - 1] == " " and line[start] != " ", f"{column} is not under its header:\n{header}\n{line}"
