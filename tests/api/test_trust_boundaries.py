"""What a deployer, a viewer and a stranger can make the daemon do: each test is the request
an attacker or a careless user sent, and the refusal (or the bounded cost) they must meet."""

from __future__ import annotations

import io
import json
import logging
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from api.cli import render
from api.cli.serve import EscapingFormatter
from infra.local.provider import LocalProvider
from infra.provider import pointer_path
from reconciler.core import Reconciler
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.api.test_cli import assert_one_line_error, run_cli
from tests.conftest import STANDIN_COMMAND, ServiceProcess, local_manifest, start_service, stop_service
from tests.fakes import eventually

SETTING = "LORAPLANE_LOCAL_SHARE_ROOTS"


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    """SQLite only: what is tested here sits above the database."""
    return sqlite_store


# ------------------------------------------------------------------------ share roots (1, 4)


@pytest.mark.parametrize("root", ["/", "/etc", "/root", "/proc/1"])
def test_a_share_root_the_operator_did_not_allow_is_refused_naming_the_setting(client: TestClient, root: str):
    answer = client.post("/v1/deployments", json=local_manifest(share_root=root))
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["errors"][0]["field"] == "spec.local.shareRoot"
    assert SETTING in problem["detail"]
    assert client.get("/v1/deployments/support-bot").status_code == 404  # nothing stored


def test_a_link_inside_an_allowed_root_is_judged_by_where_it_leads(client: TestClient, tmp_path: Path):
    (tmp_path / "innocent").symlink_to("/etc", target_is_directory=True)
    answer = client.post("/v1/deployments", json=local_manifest(share_root=str(tmp_path / "innocent")))
    assert answer.status_code == 422 and SETTING in answer.json()["detail"]


def test_a_deployment_cannot_be_moved_to_a_root_that_is_not_allowed(client: TestClient, share: Path):
    assert client.post("/v1/deployments", json=local_manifest(share_root=str(share))).status_code == 201
    put = client.put("/v1/deployments/support-bot", json=local_manifest(share_root="/etc"))
    patch = client.patch(
        "/v1/deployments/support-bot",
        content=json.dumps({"spec": {"local": {"shareRoot": "/etc"}}}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert (put.status_code, patch.status_code) == (422, 422)
    assert client.get("/v1/deployments/support-bot").json()["spec"]["local"]["shareRoot"] == str(share)


@pytest.mark.parametrize(("root", "model"), [("/root", ".ssh"), ("/root", "nope"), ("/proc/1", "fd")])
def test_a_dry_run_says_what_apply_says_and_nothing_of_the_host(client: TestClient, root: str, model: str):
    """Before: 'create ServingProcess' for a folder that exists, 'ModelNotFound' for one that
    does not, and a PermissionError's text for /proc/1: a viewer's probe of the filesystem."""
    manifest = local_manifest(share_root=root, model={"path": model})
    plan = client.post("/v1/plan", json=manifest)
    applied = client.post("/v1/deployments", json=manifest)
    assert plan.status_code == applied.status_code == 422
    assert plan.json()["detail"] == applied.json()["detail"]
    assert "Permission" not in plan.text and "ServingProcess" not in plan.text


def test_a_stored_spec_the_operator_no_longer_allows_is_not_acted_on(store: DeploymentStore, share: Path, tmp_path: Path):
    """The operator narrowed the allow-list after the deployment was made: the daemon neither
    starts anything nor writes to that share, says why, and can still delete it."""
    row = store.create(InferenceDeploymentCreate.model_validate(local_manifest(share_root=str(share))))
    narrowed = LocalProvider(tmp_path / "run", serving_command=STANDIN_COMMAND, share_roots=[tmp_path / "elsewhere"])
    reconciler = Reconciler(store, {"local": narrowed})
    assert reconciler.reconcile("support-bot").result == "permanent"
    status = DeploymentStatus.model_validate(store.get("support-bot").status)
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.reason == "InvalidSpec" and SETTING in degraded.message
    assert not (share / ".loraplane").exists()
    assert not (tmp_path / "run" / "support-bot").exists()  # no process was started
    (share / ".loraplane/support-bot" / row.uid[:8]).mkdir(parents=True)
    store.request_deletion("support-bot")
    assert reconciler.reconcile("support-bot").result == "deleted"
    assert (share / ".loraplane/support-bot" / row.uid[:8]).is_dir()  # not touched: not allowed


# --------------------------------------------------------- teardown and successors (3)


def test_teardown_removes_the_deployments_folder_and_a_successor_gets_its_own(client: TestClient, reconciler: Reconciler, share: Path):
    """Before: the pointer stayed, and a new deployment of the same name served the old one's
    adapter."""
    first = client.post("/v1/deployments", json=local_manifest(share_root=str(share))).json()["metadata"]["uid"]
    ours = share / pointer_path("support-bot", first)
    ours.parent.mkdir(parents=True)
    ours.write_text('{"version": "old", "path": "x"}')
    neighbour = share / pointer_path("search-bot", "0" * 36)
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text("{}")
    client.delete("/v1/deployments/support-bot")
    assert reconciler.reconcile("support-bot").result == "deleted"
    assert not ours.parent.exists()
    assert neighbour.is_file()
    second = client.post("/v1/deployments", json=local_manifest(share_root=str(share))).json()["metadata"]["uid"]
    assert pointer_path("support-bot", second) != pointer_path("support-bot", first)


# ------------------------------------------------------------ bodies and tokens first (5)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    """``loraplane serve`` with tokens on, small watch limits, and a token of each role."""
    data_dir = tmp_path / "data"
    service = start_service(
        data_dir,
        auth=True,
        env_overrides={"LORAPLANE_MAX_WATCHES_PER_TOKEN": "2", "LORAPLANE_MAX_WATCHES": "3", "AZURE_CLIENT_SECRET": "do-not-pass-on"},
    )
    admin = (data_dir / "admin-token").read_text().strip()
    tokens = {"admin": admin}
    for role in ("viewer", "deployer"):
        made = httpx.post(f"{service.url}/v1/tokens", json={"name": role, "role": role}, headers=bearer(admin))
        tokens[role] = made.json()["token"]
    yield service, tokens
    stop_service(service)
    LocalProvider(data_dir / "local").stop_all()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raw_request(url: str, head: bytes, *, timeout: float = 30.0) -> bytes:
    """Send a request's head (and no body) and read what comes back before any body is sent."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        raw.sendall(head)
        return raw.recv(65536)


def test_a_strangers_body_is_never_read_and_a_big_one_is_refused(secured):
    service, tokens = secured
    before = psutil.Process(service.process.pid).memory_info().rss
    head = b"POST /v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n"
    # No token: 401 at once, though not a byte of the promised 200 MB was sent.
    assert raw_request(service.url, head).startswith(b"HTTP/1.1 401")
    # A token, and a body past the cap: 413, again before reading it.
    with_token = head.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {tokens['deployer']}\r\n\r\n".encode())
    assert raw_request(service.url, with_token).startswith(b"HTTP/1.1 413")

    def chunks():
        for _ in range(32):  # 3.2 MB: just past the cap, so what is left fits in the socket's buffers
            yield b" " * 100_000

    chunked = httpx.post(
        f"{service.url}/v1/deployments", content=chunks(), headers={**bearer(tokens["deployer"]), "content-type": "application/json"}
    )
    assert chunked.status_code == 413 and "3145728 bytes" in chunked.json()["detail"]
    assert psutil.Process(service.process.pid).memory_info().rss - before < 50 * 1024 * 1024


# ---------------------------------------------------------------------------- watches (6)


def open_watch(service: ServiceProcess, token: str, into: list) -> httpx.Response:
    client = httpx.Client(timeout=httpx.Timeout(10, read=60))
    response = client.send(
        client.build_request("GET", f"{service.url}/v1/deployments", params={"watch": "true"}, headers=bearer(token)), stream=True
    )
    into.append((client, response))
    return response


def ends_within(response: httpx.Response, seconds: float) -> None:
    """The server ends the stream (reading it to its end), within ``seconds``."""
    done = threading.Event()

    def read() -> None:
        for _ in response.iter_lines():
            pass
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(seconds), "the watch stream was not ended"


def test_watches_are_capped_per_token_and_in_total_and_end_with_their_token(secured):
    service, tokens = secured
    opened: list = []
    try:
        assert open_watch(service, tokens["viewer"], opened).status_code == 200
        assert open_watch(service, tokens["viewer"], opened).status_code == 200
        third = open_watch(service, tokens["viewer"], opened)
        assert third.status_code == 429 and "viewer" in third.read().decode()
        assert open_watch(service, tokens["deployer"], opened).status_code == 200
        full = open_watch(service, tokens["admin"], opened)
        assert full.status_code == 429 and "limit" in full.read().decode()
        # Revoking the viewer ends its streams (before: a revoked viewer kept getting events).
        assert httpx.delete(f"{service.url}/v1/tokens/viewer", headers=bearer(tokens["admin"])).status_code == 204
        for _, response in opened[:2]:
            ends_within(response, 30)
        assert "loraplane_watches_open 1.0" in httpx.get(f"{service.url}/metrics").text
        # The freed place is the deployer's to take again.
        assert open_watch(service, tokens["deployer"], opened).status_code == 200
    finally:
        for client, response in opened:
            response.close()
            client.close()


def test_one_poller_serves_every_watch(secured, share: Path):
    service, tokens = secured
    opened: list = []

    def polls() -> float:
        page = httpx.get(f"{service.url}/metrics").text
        return float(next(line.split()[1] for line in page.splitlines() if line.startswith("loraplane_watch_polls_total")))

    try:
        streams = [open_watch(service, tokens[role], opened) for role in ("viewer", "deployer", "admin")]
        started, first = time.monotonic(), polls()
        httpx.post(f"{service.url}/v1/deployments", json=local_manifest(share_root=str(share)), headers=bearer(tokens["deployer"]))
        for response in streams:
            added = next(line for line in response.iter_lines() if line.startswith("data:"))
            assert json.loads(added[5:])["object"]["metadata"]["name"] == "support-bot"
        looked, elapsed = polls() - first, time.monotonic() - started
        # Three watches, one look per poll interval (0.5 s): at most what one poller makes in
        # the time, where a poller per watch made three times as many.
        assert 1 <= looked <= elapsed / 0.5 + 2
    finally:
        for client, response in opened:
            response.close()
            client.close()


# -------------------------------------------------------------- what became 500s (7, 11)


def test_hostile_bodies_get_4xx_and_the_connection_stays(client: TestClient, share: Path):
    assert client.post("/v1/deployments", json=local_manifest(share_root=str(share))).status_code == 201
    deep = "{" + '"a":{' * 1000 + "}" * 1000 + "}"
    answer = client.patch("/v1/deployments/support-bot", content=deep, headers={"content-type": "application/merge-patch+json"})
    assert answer.status_code == 400 and "nests deeper" in answer.json()["detail"]
    deep_list = "[" * 5000 + "]" * 5000
    assert client.post("/v1/deployments", content=deep_list, headers={"content-type": "application/json"}).status_code == 400
    since = client.get("/v1/audit", params={"since": "0001-01-01T00:00:00+14:00"})
    assert since.status_code == 422 and since.json()["errors"][0]["field"] == "since"
    twice = '{"metadata": {"name": "other-bot"}, "metadata": {"name": "third-bot"}, "spec": {"target": "local"}}'
    duplicate = client.post("/v1/deployments", content=twice, headers={"content-type": "application/json"})
    assert duplicate.status_code == 400 and "'metadata' is given twice" in duplicate.json()["detail"]
    plain = client.post("/v1/deployments", content=json.dumps(local_manifest(name="text-bot")), headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in plain.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_a_patch_cannot_drop_or_garble_metadata(client: TestClient, share: Path):
    assert client.post("/v1/deployments", json=local_manifest(share_root=str(share))).status_code == 201
    for patch, words in (
        ({"metadata": []}, "must be an object"),
        ({"metadata": None}, "cannot be removed"),
        ({"metadata": {"labels": []}}, ""),
    ):
        answer = client.patch(
            "/v1/deployments/support-bot", content=json.dumps(patch), headers={"content-type": "application/merge-patch+json"}
        )
        assert answer.status_code == 422, (patch, answer.text)
        assert words in answer.text
    assert client.get("/v1/deployments/support-bot").json()["metadata"]["labels"] == {"team": "support"}


# -------------------------------------------------------- control characters and YAML (8)


def test_control_characters_are_refused_in_a_spec(client: TestClient, tmp_path: Path):
    forged = f"{tmp_path}/x\n2026-01-01 INFO loraplane: all is well\x1b[2J"
    answer = client.post("/v1/deployments", json=local_manifest(share_root=forged))
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "spec.local.shareRoot"
    assert "control characters" in answer.json()["errors"][0]["message"]


def test_the_cli_and_the_log_show_control_characters_escaped():
    """What an older server stored, or Azure said, reaches a terminal as text, not as commands."""
    document = {
        "metadata": {"name": "support-bot", "labels": {}, "createdAt": "2026-01-01T00:00:00Z", "generation": 1},
        "spec": {"target": "local"},
        "status": {"phase": "Degraded", "message": "bad\x1b[2J\nFAKE LINE", "endpoint": "http://x\x1b]0;owned\x07"},
    }
    screen = Console(file=io.StringIO(), width=300, force_terminal=True)
    render.describe(screen, document, [{"type": "Warning", "reason": "X", "message": "m\x1b[31m"}])
    screen.print(render.deployments_table([document], wide=True))
    shown = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[2J" not in shown and "\x1b]0;" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "\\x0aFAKE LINE" in shown

    record = logging.LogRecord("loraplane", logging.WARNING, __file__, 1, "root %s", ("/srv/x\n2026 INFO forged\x1b[2J",), None)
    line = EscapingFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and "\x1b" not in line and "\\x0a2026 INFO forged" in line


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["metadata: {name: x}", "spec: *i"]
)


def test_apply_refuses_a_billion_laughs_and_duplicate_keys(tmp_path: Path):
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(BILLION_LAUGHS)
    assert_one_line_error(run_cli(None, "apply", "-f", str(laughs)), "excessive aliasing")
    twice = tmp_path / "twice.yaml"
    twice.write_text("metadata: {name: support-bot}\nspec: {target: local}\nspec: {target: azure}\n")
    assert_one_line_error(run_cli(None, "apply", "-f", str(twice)), "duplicate key 'spec'", "line 3")
    as_json = tmp_path / "twice.json"
    as_json.write_text('{"metadata": {"name": "a", "name": "b"}}')
    assert_one_line_error(run_cli(None, "apply", "-f", str(as_json)), "'name' is given twice")


# ---------------------------------------------------------------------- files, env (10)


def test_the_data_dir_is_the_daemons_alone_and_serving_processes_get_no_secrets(secured, share: Path, tmp_path: Path):
    service, tokens = secured
    data_dir = tmp_path / "data"
    created = httpx.post(f"{service.url}/v1/deployments", json=local_manifest(share_root=str(share)), headers=bearer(tokens["deployer"]))
    uid = created.json()["metadata"]["uid"]

    def serving_process() -> psutil.Process | None:
        for process in psutil.process_iter(["environ"]):
            if (process.info["environ"] or {}).get("LORAPLANE_DEPLOYMENT_UID") == uid:
                return process
        return None

    process = eventually(serving_process, timeout=60, what="the serving process")
    environ = process.environ()
    assert "AZURE_CLIENT_SECRET" not in environ  # the daemon has it; the app must not
    assert environ["LORAPLANE_DEPLOYMENT"] == "support-bot" and "PATH" in environ
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    made = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "loraplane.db" for p in made) and any(p.name.endswith(".log") for p in made)
    loose = [f"{p.relative_to(data_dir)} {oct(stat.S_IMODE(p.stat().st_mode))}" for p in made if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == []
    folders = [p for p in data_dir.rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in folders)
