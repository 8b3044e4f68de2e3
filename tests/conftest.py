"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL), the API app on it,
and a real ``loraplane serve`` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from api.app import create_app
from infra.local.provider import LocalProvider
from reconciler.core import Reconciler
from state.db import make_engine, sqlite_url, upgrade_database
from state.store import DeploymentStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")

POSTGRES_URL = os.environ.get("LORAPLANE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]
STANDIN_COMMAND = [sys.executable, str(Path(__file__).with_name("standin_serving.py"))]
MODEL_PATH = "model-cache/microsoft/Phi-3-mini-4k-instruct"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test run's own on the PostgreSQL server, dropped at the end."""
    admin_url = make_url(POSTGRES_URL)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {admin_url.render_as_string(hide_password=True)} "
            f"({type(exc).__name__}); set LORAPLANE_TEST_POSTGRES_URL to run these tests"
        )
    name = f"loraplane_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade_database(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_engine(postgres_database: str) -> Iterator[Engine]:
    """An engine on this run's PostgreSQL database, emptied first."""
    truncate(postgres_database)
    made = make_engine(postgres_database)
    yield made
    made.dispose()


def truncate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE inference_deployment, deployment_label, event, cloud_resource, adapter_version, api_token, audit_event, leader_lease RESTART IDENTITY CASCADE"
            )
        )
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url = request.getfixturevalue("postgres_database")
    truncate(url)
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[DeploymentStore]:
    engine = make_engine(database_url)
    upgrade_database(engine)
    yield DeploymentStore(engine)
    engine.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[DeploymentStore]:
    """A store on SQLite alone, for modules about what sits above the database (they override
    ``store`` with it; the store itself is tested on both backends)."""
    engine = make_engine(sqlite_url(tmp_path))
    upgrade_database(engine)
    yield DeploymentStore(engine)
    engine.dispose()


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """A folder standing in for the Azure Files share, with the base model's folder in it."""
    root = tmp_path / "share"
    (root / MODEL_PATH).mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
def tiny_share_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model and its adapters in the AI Toolkit layout: built once per run."""
    from serving.tiny import TINY_MODEL_PATH, make_tiny_share, write_random_adapter

    root = tmp_path_factory.mktemp("tiny-share")
    make_tiny_share(root)
    # A third adapter, for tests that need one more version.
    write_random_adapter(root / TINY_MODEL_PATH, root / "models/extra/third-adapter", seed=3)
    return root


@pytest.fixture
def tiny_share(tiny_share_template: Path, tmp_path: Path) -> Path:
    """This test's own copy of the share, free to change."""
    root = tmp_path / "share"
    shutil.copytree(tiny_share_template, root)
    return root


# The share roots the tests' daemons allow: the test's own folder, the manifests' default share
# root and the example's (neither exists here: those tests are about something else).
DEFAULT_SHARE_ROOT = "/srv/share"
EXAMPLE_SHARE_ROOT = "/tmp/loraplane-share"


def allowed_share_roots(tmp_path: Path) -> list[Path]:
    return [tmp_path, Path(DEFAULT_SHARE_ROOT), Path(EXAMPLE_SHARE_ROOT)]


@pytest.fixture
def local_provider(tmp_path: Path) -> Iterator[LocalProvider]:
    provider = LocalProvider(tmp_path / "run", serving_command=STANDIN_COMMAND, share_roots=allowed_share_roots(tmp_path))
    yield provider
    provider.stop()
    provider.stop_all()  # no test leaves a serving process behind


@pytest.fixture
def reconciler(store: DeploymentStore, local_provider: LocalProvider) -> Reconciler:
    return Reconciler(store, {"local": local_provider}, poll_seconds=0.2)


@pytest.fixture
def client(store: DeploymentStore, reconciler: Reconciler) -> Iterator[TestClient]:
    with TestClient(create_app(store, reconciler)) as test_client:
        yield test_client


def local_manifest(name: str = "support-bot", share_root: str = DEFAULT_SHARE_ROOT, **spec) -> dict:
    return {
        "apiVersion": "loraplane/v1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "labels": {"team": "support"}},
        "spec": {"target": "local", "local": {"shareRoot": share_root}, "model": {"path": MODEL_PATH}, **spec},
    }


def azure_manifest(name: str = "support-bot", **azure) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "target": "azure",
            "model": {"path": MODEL_PATH},
            "azure": {
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                "resourceGroup": "rg-inference",
                "location": "westus3",
                **azure,
            },
        },
    }


def reconcile_passes(metrics: str) -> float:
    """Reconcile passes finished so far, as a /metrics page counts them: a test that checks
    nothing happened waits for passes, not for time."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("loraplane_reconciles_total{"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class ServiceProcess:
    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url, self.process, self.log = url, process, log


def start_service(
    data_dir: Path,
    *extra_args: str,
    port: int | None = None,
    resync_seconds: float = 2.0,
    standin: bool = True,
    env_overrides: dict[str, str] | None = None,
    auth: bool = False,
) -> ServiceProcess:
    """Start ``loraplane serve`` and wait until it is ready; the local target runs the stand-in
    app unless ``standin`` is False (then it runs the real serving module)."""
    port = port or free_port()
    log = data_dir.parent / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
    if standin:
        env["LORAPLANE_SERVING_COMMAND"] = json.dumps(STANDIN_COMMAND)
    if not auth:  # most tests are about something else; tests/api/test_auth.py turns it on
        env["LORAPLANE_AUTH"] = "off"
    env["LORAPLANE_LOCAL_SHARE_ROOTS"] = os.pathsep.join(str(p) for p in allowed_share_roots(data_dir.parent))
    env.update(env_overrides or {})
    env["LORAPLANE_RESYNC_SECONDS"] = str(resync_seconds)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [bin_path("loraplane"), "serve", "--port", str(port), "--data-dir", str(data_dir), *extra_args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"loraplane serve did not become ready:\n{log.read_text()}")
        time.sleep(0.1)
    return ServiceProcess(url, process, log)


def stop_service(service: ServiceProcess) -> None:
    if service.process.poll() is None:
        service.process.terminate()
        try:
            service.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """``loraplane serve`` as a real process on a free port, with its own data dir; serving
    processes it started are stopped afterwards."""
    data_dir = tmp_path / "data"
    running = start_service(data_dir)
    yield running
    stop_service(running)
    LocalProvider(data_dir / "local").stop_all()
