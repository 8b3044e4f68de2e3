"""Tokens and roles on every route, owners and the audit trail, and a team's first start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.auth import Authenticator, Identity
from api.problems import ApiError
from reconciler.core import Reconciler
from state.access import AccessStore, hash_token
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import local_manifest, start_service, stop_service
from tests.fakes import FakeClock

# What each route needs, written out by hand: a route missing here fails the matrix test.
REQUIRED = {
    ("POST", "/v1/deployments"): "deployer",
    ("GET", "/v1/deployments"): "viewer",
    ("GET", "/v1/deployments/{name}"): "viewer",
    ("PUT", "/v1/deployments/{name}"): "deployer",
    ("PATCH", "/v1/deployments/{name}"): "deployer",
    ("DELETE", "/v1/deployments/{name}"): "deployer",
    ("GET", "/v1/deployments/{name}/events"): "viewer",
    ("POST", "/v1/deployments/{name}/plan"): "viewer",
    ("POST", "/v1/plan"): "viewer",
    ("GET", "/v1/deployments/{name}/logs"): "viewer",
    ("GET", "/v1/deployments/{name}/adapters"): "viewer",
    ("POST", "/v1/deployments/{name}/adapters/{version}/activate"): "deployer",
    ("POST", "/v1/deployments/{name}/adapters/{adapter}/versions/{version}/activate"): "deployer",
    ("POST", "/v1/deployments/{name}/canary/{decision}"): "deployer",
    ("GET", "/v1/usage"): "viewer",
    ("POST", "/v1/deployments/{name}/adapters/{adapter}/canary/{decision}"): "deployer",
    ("POST", "/v1/deployments/{name}/keys"): "deployer",
    ("GET", "/v1/deployments/{name}/keys"): "deployer",
    ("DELETE", "/v1/deployments/{name}/keys/{key}"): "deployer",
    ("POST", "/v1/tokens"): "admin",
    ("GET", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{token_name}"): "admin",
    ("GET", "/v1/audit"): "viewer",
}
RANK = {"viewer": 0, "deployer": 1, "admin": 2}


@pytest.fixture
def secured(store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API with authentication on, and a token of each role."""
    access = AccessStore(store.engine)
    tokens = {role: access.create_token(f"{role}-user", role, actor="test")[1] for role in RANK}
    with TestClient(create_app(store, Reconciler(store, {}), authenticate=True)) as client:
        yield client, tokens


def call(client: TestClient, method: str, path: str, token: str | None):
    concrete = path.replace("{name}", "support-bot").replace("{version}", "aaaaaaaaaaaa").replace("{token_name}", "nobody")
    concrete = concrete.replace("{key}", "nobody")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None
    if path in ("/v1/deployments", "/v1/plan") or (method == "PUT"):
        body = local_manifest("support-bot")
    elif method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
        return client.request(method, concrete, headers=headers, content=b'{"metadata": {"labels": {"a": "b"}}}')
    elif path == "/v1/tokens":
        body = {"name": "carol", "role": "viewer"}
    elif path.endswith("/keys"):
        body = {"name": "web"}
    return client.request(method, concrete, headers=headers, json=body)


def test_every_route_asks_for_the_role_it_needs(secured):
    client, tokens = secured
    paths = client.get("/openapi.json").json()["paths"]
    routes = {(method.upper(), path) for path, operations in paths.items() if path.startswith("/v1") for method in operations}
    assert routes == set(REQUIRED)
    for (method, path), needed in REQUIRED.items():
        for token in (None, "lp_not-a-real-token"):
            response = call(client, method, path, token)
            assert response.status_code == 401, (method, path, token)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"].startswith("Bearer")
        for role, token in tokens.items():
            response = call(client, method, path, token)
            if RANK[role] < RANK[needed]:
                assert response.status_code == 403, (method, path, role)
                assert f"needs {needed}" in response.json()["detail"]
            else:
                assert response.status_code not in (401, 403), (method, path, role, response.text)
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(open_path).status_code == 200


def test_owner_and_audit_record_who_changed_what(secured, store):
    client, tokens = secured
    alice = {"Authorization": f"Bearer {tokens['deployer']}"}
    created = client.post("/v1/deployments", json=local_manifest("support-bot"), headers=alice)
    assert created.status_code == 201 and created.json()["metadata"]["owner"] == "deployer-user"
    patched = client.patch(
        "/v1/deployments/support-bot",
        content=b'{"spec": {"scale": {"maxReplicas": 2}}}',
        headers=alice | {"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200
    assert client.delete("/v1/deployments/support-bot", headers=alice).status_code == 202
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    rows = client.get("/v1/audit", params={"actor": "deployer-user"}, headers=viewer).json()["items"]
    assert [(r["action"], r["resource"], r.get("generationBefore"), r.get("generationAfter")) for r in rows] == [
        ("delete", "deployment/support-bot", 2, 2),
        ("update", "deployment/support-bot", 1, 2),
        ("create", "deployment/support-bot", None, 1),
    ]
    assert client.get("/v1/audit", params={"action": "create", "since": "2000-01-01T00:00:00"}, headers=viewer).json()["items"]
    assert client.get("/v1/audit", params={"since": "not a time"}, headers=viewer).status_code == 422
    for field in ("actor", "resource", "action"):  # PostgreSQL's text cannot hold a NUL: a 422 on either backend
        refused = client.get("/v1/audit", params={field: "deployer\x00user"}, headers=viewer)
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
        assert field in refused.text


def test_a_token_is_shown_once_stored_as_a_hash_and_revoked_at_once(secured, store):
    client, tokens = secured
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    made = client.post("/v1/tokens", json={"name": "bob", "role": "deployer"}, headers=admin)
    assert made.status_code == 201
    secret = made.json()["token"]
    assert secret.startswith("lp_") and len(secret) > 40
    listed = client.get("/v1/tokens", headers=admin)
    assert "bob" in listed.text and secret not in listed.text and "token" not in listed.json()["items"][0]
    assert client.post("/v1/tokens", json={"name": "bob", "role": "viewer"}, headers=admin).status_code == 409
    assert client.post("/v1/tokens", json={"name": "Bob!", "role": "viewer"}, headers=admin).status_code == 422
    bob = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/deployments", headers=bob).status_code == 200
    with store.engine.connect() as connection:
        dump = "\n".join(
            str(row) for table in ("api_token", "audit_event", "event") for row in connection.execute(text(f"SELECT * FROM {table}"))
        )
    assert secret not in dump and hash_token(secret) in dump
    assert client.delete("/v1/tokens/bob", headers=admin).status_code == 204
    assert client.get("/v1/deployments", headers=bob).status_code == 401
    assert client.delete("/v1/tokens/bob", headers=admin).status_code == 404
    actions = [r["action"] for r in client.get("/v1/audit", params={"resource": "token/bob"}, headers=admin).json()["items"]]
    assert actions == ["token.revoke", "token.create"]


def test_a_token_revoked_through_another_replica_is_refused_here_within_the_cache_time(store):
    """A token found valid is taken as valid for cache_seconds without a lookup (the replica
    that revokes it forgets it at once, above); one revoked elsewhere stops working here when
    that time is out."""
    clock = FakeClock()
    access = AccessStore(store.engine)
    here = Authenticator(access, cache_seconds=1.0, clock=clock)
    _, secret = access.create_token("carol", "viewer", actor="test")
    header = f"Bearer {secret}"
    assert here.cached(header) is None  # never looked up yet
    assert here.identify(header).name == "carol"
    access.revoke_token("carol", actor="admin")  # through another replica, on the same database
    clock.advance(0.9)
    assert here.cached(header) == Identity("carol", "viewer")
    clock.advance(0.1)
    assert here.cached(header) is None
    with pytest.raises(ApiError) as refused:
        here.identify(header)
    assert refused.value.status == 401
    assert here.cached("Bearer lp_not-a-token") is None and here.cached("Basic abc") is None and here.cached(None) is None


def test_a_first_start_makes_an_admin_token_the_cli_can_use(tmp_path: Path):
    data_dir = tmp_path / "data"
    service = start_service(data_dir, auth=True)
    try:
        token_file = data_dir / "admin-token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        admin_token = token_file.read_text().strip()
        log = service.log.read_text()
        assert str(token_file) in log and admin_token not in log

        assert_one_line_error(run_cli(service, "get"), "needs a token")
        env = {"LORAPLANE_TOKEN": admin_token}
        made = run_cli(service, "token", "create", "--name", "bob", "--role", "viewer", env=env)
        assert made.returncode == 0, made.stderr
        bob = made.stdout.strip()
        assert bob.startswith("lp_") and "shown this once" in made.stderr
        listed = run_cli(service, "token", "list", env=env)
        assert "bob" in listed.stdout and "viewer" in listed.stdout and bob not in listed.stdout

        # bob's token from a config file: he may look, not change.
        config = tmp_path / "config.yaml"
        config.write_text(f"url: {service.url}\ntoken: {bob}\n")
        as_bob = {"LORAPLANE_CONFIG": str(config), "LORAPLANE_URL": ""}
        assert run_cli(None, "get", env=as_bob).returncode == 0
        manifest = tmp_path / "bot.yaml"
        manifest.write_text(
            "metadata: {name: support-bot}\nspec: {target: local, local: {shareRoot: /srv/share}, model: {path: models/base}}\n"
        )
        assert_one_line_error(run_cli(None, "apply", "-f", str(manifest), env=as_bob), "viewer", "deployer")
        assert run_cli(service, "apply", "-f", str(manifest), env=env).returncode == 0
        audit = run_cli(service, "audit", env=env)
        assert "admin" in audit.stdout and "deployment/support-bot" in audit.stdout and "token/bob" in audit.stdout
        assert run_cli(service, "token", "revoke", "bob", env=env).returncode == 0
        assert_one_line_error(run_cli(None, "get", env=as_bob), "revoked")
    finally:
        stop_service(service)
    assert admin_token not in service.log.read_text() and bob not in service.log.read_text()
