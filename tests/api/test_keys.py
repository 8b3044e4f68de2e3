"""Inference keys through the real CLI and a real local deployment: made, used through the
unchanged OpenAI SDK, limited, counted, revoked; and their secrets nowhere but in the answer
that made them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from sqlalchemy import create_engine, text

from infra.local.provider import LocalProvider
from serving.tiny import TINY_MODEL_PATH
from state.access import hash_token
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import ServiceProcess, local_manifest, start_service, stop_service
from tests.fakes import eventually


@pytest.fixture
def real_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    data_dir = tmp_path / "data"
    service = start_service(data_dir, standin=False, env_overrides={"LORAPLANE_RESYNC_SECONDS": "30"})
    yield service
    stop_service(service)
    LocalProvider(data_dir / "local").stop_all()


def test_keys_made_used_limited_counted_and_revoked_through_the_cli(real_service: ServiceProcess, tiny_share: Path, tmp_path: Path):
    manifest = local_manifest(share_root=str(tiny_share), model={"path": TINY_MODEL_PATH}, access={"apiKeys": True})
    assert run_cli(real_service, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)).returncode == 0

    def ready() -> dict | None:
        shown = json.loads(run_cli(real_service, "get", "support-bot", "-o", "json").stdout)
        return shown if shown["status"].get("phase") == "Ready" else None

    endpoint = eventually(ready, timeout=180, what="the deployment to be Ready")["status"]["endpoint"]
    hello = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
    assert httpx.post(f"{endpoint}/v1/chat/completions", json=hello, timeout=60).status_code == 401

    made = run_cli(real_service, "keys", "create", "--deployment", "support-bot", "--name", "web")
    assert made.returncode == 0, made.stderr
    web = made.stdout.strip()
    assert web.startswith("lpk_") and f'base_url="{endpoint}/v1"' in made.stderr and web in made.stderr
    limited = run_cli(real_service, "keys", "create", "-d", "support-bot", "--name", "eval", "--rpm", "1", "--expires", "2099-01-01")
    evaluator = limited.stdout.strip()

    def sdk(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{endpoint}/v1", api_key=key, max_retries=0, timeout=60)

    def answers(key: str) -> bool:
        try:
            sdk(key).models.list()
        except openai.AuthenticationError:
            return False
        return True

    eventually(lambda: answers(web), timeout=10, what="the new key to reach the serving app")
    reply = sdk(web).chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "Hello"}], max_tokens=2)
    assert reply.usage is not None and reply.usage.completion_tokens >= 1
    eventually(lambda: answers(evaluator), timeout=10, what="the second key")  # its one request a minute
    with pytest.raises(openai.RateLimitError):
        sdk(evaluator).models.list()

    def listed() -> list[list[str]]:
        shown = run_cli(real_service, "keys", "list", "--deployment", "support-bot")
        assert shown.returncode == 0, shown.stderr
        return [re.split(r"\s{2,}", line.strip()) for line in shown.stdout.splitlines()[1:]]

    # NAME RPM TPM EXPIRES REQUESTS TOKENS REFUSED CREATED BY: counted by the app, summed by loraplane.
    # Both keys' counts: a replica's report may be written between web's requests and eval's.
    rows = eventually(
        lambda: (rows := listed()) and rows[1][4] == "2" and rows[0][4:7] == ["1", "0", "1"] and rows,
        timeout=20,
        what="web's and eval's usage in keys list",
    )
    assert rows[0][:2] == ["eval", "1"] and rows[0][3].startswith("2099-01-01") and rows[0][4:7] == ["1", "0", "1"]
    assert int(rows[1][5]) > 0

    revoked = run_cli(real_service, "keys", "revoke", "-d", "support-bot", "web")
    assert revoked.returncode == 0, revoked.stderr
    eventually(lambda: not answers(web), timeout=10, what="the revoked key to be refused")
    assert_one_line_error(run_cli(real_service, "keys", "revoke", "-d", "support-bot", "web"), "has no key named 'web'")
    # Made again under the same name, it is another key: it starts from nothing.
    assert run_cli(real_service, "keys", "create", "-d", "support-bot", "--name", "web").returncode == 0
    assert listed()[1][:1] + listed()[1][4:7] == ["web", "0", "0", "0"]
    assert_one_line_error(run_cli(real_service, "keys", "create", "-d", "support-bot", "--name", "eval"), "has a key named 'eval'")
    assert_one_line_error(run_cli(real_service, "keys", "create", "-d", "support-bot", "--name", "x2", "--expires", "soon"), "--expires")

    # The secrets: in no row of the database (their hashes are), no log, no later answer.
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'loraplane.db'}")
    with engine.connect() as connection:
        dump = "\n".join(
            str(row)
            for table in ("inference_key", "audit_event", "event", "inference_deployment")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )
    engine.dispose()
    assert hash_token(evaluator) in dump and evaluator not in dump and web not in dump
    answers_text = httpx.get(f"{real_service.url}/v1/deployments/support-bot/keys").text + httpx.get(f"{real_service.url}/v1/audit").text
    assert "eval" in answers_text and evaluator not in answers_text and web not in answers_text
    logs = real_service.log.read_text() + run_cli(real_service, "logs", "support-bot", "--tail", "500").stdout
    assert evaluator not in logs and web not in logs
    actions = [item["action"] for item in httpx.get(f"{real_service.url}/v1/audit").json()["items"] if "/key/" in item["resource"]]
    assert actions == ["key.create", "key.revoke", "key.create", "key.create"]
    share_text = "".join(p.read_text() for p in tiny_share.glob(".loraplane/support-bot/*/keys.json"))
    assert hash_token(evaluator) in share_text and evaluator not in share_text


def test_a_keys_name_limits_and_expiry_are_checked_and_a_zoneless_expiry_is_utc(client):
    assert client.post("/v1/deployments", json=local_manifest()).status_code == 201
    made = client.post("/v1/deployments/support-bot/keys", json={"name": "ci", "rpm": 60, "expiresAt": "2099-01-01T00:00:00"})
    assert made.status_code == 201 and made.headers["location"] == "/v1/deployments/support-bot/keys/ci"
    assert made.json()["expiresAt"].startswith("2099-01-01T00:00:00") and made.json()["expiresAt"].endswith(("Z", "+00:00"))
    assert made.json()["key"].startswith("lpk_") and "key" not in client.get("/v1/deployments/support-bot/keys").json()["items"][0]
    for wrong, field in (
        ({"name": "ci2", "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
        ({"name": "Not A Name"}, "name"),
        ({"name": "ci3", "rpm": 0}, "rpm"),
    ):
        refused = client.post("/v1/deployments/support-bot/keys", json=wrong)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field, refused.text
    assert client.post("/v1/deployments/support-bot/keys", json={"name": "ci"}).status_code == 409
    assert client.post("/v1/deployments/nobody/keys", json={"name": "ci"}).status_code == 404
    assert client.delete("/v1/deployments/support-bot/keys/nobody").status_code == 404
