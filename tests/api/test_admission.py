"""Admission control: past what the process can serve, a request is refused at once with 429
and Retry-After instead of waiting behind the others; writes are limited per token; the CLI
retries a busy API for a while and says when it gives up."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.admission import AdmissionLimits, TokenBuckets
from api.app import create_app
from infra.local.provider import LocalProvider
from reconciler.core import Reconciler
from state.access import AccessStore
from state.store import DeploymentStore
from tests.api.test_cli import assert_one_line_error, examples_folder, run_cli
from tests.conftest import ServiceProcess, local_manifest, start_service, stop_service
from tests.fakes import FakeClock, eventually


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    """SQLite only: what is tested here sits above the database."""
    return sqlite_store


def test_token_buckets_refill_at_their_rate_up_to_their_burst():
    clock = FakeClock()
    buckets = TokenBuckets(rate=2.0, burst=2, clock=clock)
    assert [buckets.take("ci"), buckets.take("ci")] == [0.0, 0.0]
    assert buckets.take("ci") == pytest.approx(0.5)
    assert buckets.take("alice") == 0.0  # a bucket per holder
    clock.advance(0.25)
    assert buckets.take("ci") == pytest.approx(0.25)
    clock.advance(0.25)
    assert buckets.take("ci") == 0.0
    clock.advance(60)
    assert [buckets.take("ci") for _ in range(3)][:2] == [0.0, 0.0]  # never more than the burst


def test_writes_past_a_tokens_rate_are_429_and_other_tokens_and_reads_go_on(store: DeploymentStore, tmp_path: Path):
    access = AccessStore(store.engine)
    script, alice = (access.create_token(name, "deployer", actor="test")[1] for name in ("script", "alice"))
    app = create_app(store, Reconciler(store, {}), authenticate=True, admission=AdmissionLimits(writes_per_second=0.001, write_burst=2))
    with TestClient(app) as client:
        runaway = {"Authorization": f"Bearer {script}"}
        for index in range(2):
            assert client.post("/v1/deployments", json=local_manifest(f"bot-{index}"), headers=runaway).status_code == 201
        refused = client.post("/v1/deployments", json=local_manifest("bot-2"), headers=runaway)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) >= 1
        assert "'script'" in refused.json()["detail"] and "LORAPLANE_WRITES_PER_SECOND" in refused.json()["detail"]
        assert client.get("/v1/deployments", headers=runaway).status_code == 200  # reads are not writes
        assert client.post("/v1/plan", json=local_manifest("bot-9"), headers=runaway).status_code == 200  # nor dry runs
        assert client.post("/v1/deployments", json=local_manifest("bot-3"), headers={"Authorization": f"Bearer {alice}"}).status_code == 201


@pytest.fixture
def narrow(tmp_path: Path) -> Iterator[ServiceProcess]:
    data_dir = tmp_path / "data"
    service = start_service(data_dir, env_overrides={"LORAPLANE_MAX_REQUESTS_IN_FLIGHT": "2"})
    yield service
    stop_service(service)
    LocalProvider(data_dir / "local").stop_all()


def test_past_the_requests_in_flight_a_request_is_refused_at_once(narrow: ServiceProcess):
    host, port = narrow.url.removeprefix("http://").split(":")
    held = []
    for _ in range(2):  # two requests in flight: their bodies promised, not sent
        raw = socket.create_connection((host, int(port)), timeout=30)
        raw.sendall(b"POST /v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        held.append(raw)
    try:
        refused = eventually(lambda: (r := httpx.get(f"{narrow.url}/v1/deployments", timeout=5)).status_code == 429 and r, what="a 429")
        assert refused.headers["retry-after"] == "1"
        assert "LORAPLANE_MAX_REQUESTS_IN_FLIGHT" in refused.json()["detail"]
        assert httpx.get(f"{narrow.url}/healthz").status_code == 200  # probes are never refused
    finally:
        for raw in held:
            raw.close()
    eventually(lambda: httpx.get(f"{narrow.url}/v1/deployments", timeout=5).status_code == 200, what="room again")


def test_the_cli_waits_out_a_busy_api_and_says_when_it_gives_up(tmp_path: Path, share: Path):
    data_dir = tmp_path / "data"
    # A write every 10 s: the second create waits for its token; the delete right after it finds
    # none (a CLI starts in a second or two, even beside a busy process) and, told not to wait,
    # gives up.
    service = start_service(data_dir, env_overrides={"LORAPLANE_WRITES_PER_SECOND": "0.1", "LORAPLANE_WRITE_BURST": "1"})
    try:
        folder = examples_folder(tmp_path / "manifests", share, "alpha-bot", "beta-bot")
        applied = run_cli(service, "apply", "-f", str(folder))  # the second waits for its token
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines() == ["deployment/alpha-bot created", "deployment/beta-bot created"]
        impatient = run_cli(service, "delete", "beta-bot", env={"LORAPLANE_RETRY_SECONDS": "0"})
        assert_one_line_error(impatient, "429", "gave up after retrying for 0s")
    finally:
        stop_service(service)
        LocalProvider(data_dir / "local").stop_all()


def test_watch_streams_take_no_place_in_flight(narrow: ServiceProcess):
    """A watch lasts as long as it is open; counted in flight, a few would hold every place.
    Any spelling the API reads as true is a watch."""
    opened = []
    try:
        for value in ("true", "on", "%74rue"):
            client = httpx.Client(timeout=httpx.Timeout(10, read=60))
            response = client.send(client.build_request("GET", f"{narrow.url}/v1/deployments?watch={value}"), stream=True)
            opened.append((client, response))
            assert response.status_code == 200
        assert httpx.get(f"{narrow.url}/v1/deployments", timeout=5).status_code == 200
    finally:
        for client, response in opened:
            response.close()
            client.close()


def test_a_process_told_to_stop_drains_new_requests_away_with_503_and_finishes_what_it_admitted(tmp_path: Path):
    """With LORAPLANE_SHUTDOWN_DRAIN_SECONDS, SIGTERM first turns new requests and readiness
    away (503, Retry-After: a load balancer sends them to another replica) while a request
    already admitted is served; a second signal stops the process at once."""
    data_dir = tmp_path / "data"
    service = start_service(data_dir, env_overrides={"LORAPLANE_SHUTDOWN_DRAIN_SECONDS": "120"})
    try:
        host, port = service.url.removeprefix("http://").split(":")
        body = json.dumps(local_manifest(share_root=str(tmp_path))).encode()
        admitted = socket.create_connection((host, int(port)), timeout=30)
        admitted.sendall(
            b"POST /v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        eventually(lambda: "loraplane_http_requests" in httpx.get(f"{service.url}/metrics").text, what="the server to be up")
        service.process.send_signal(signal.SIGTERM)
        refused = eventually(lambda: (r := httpx.get(f"{service.url}/v1/deployments", timeout=5)).status_code == 503 and r, what="a 503")
        assert refused.headers["retry-after"] == "5" and refused.headers["content-type"].startswith("application/problem+json")
        assert "shutting down" in refused.json()["detail"]
        assert httpx.get(f"{service.url}/readyz").status_code == 503
        assert httpx.get(f"{service.url}/healthz").status_code == 200  # alive: not to be killed
        admitted.sendall(body)  # the request admitted before the signal is served
        assert admitted.recv(4096).startswith(b"HTTP/1.1 201")
        admitted.close()
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(timeout=30)
    finally:
        stop_service(service)
    assert "new requests are answered 503" in service.log.read_text()
