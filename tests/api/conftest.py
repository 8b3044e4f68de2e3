"""The API as a real HTTP server in a thread, for CLI tests that need no reconciler."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from reconciler.core import Reconciler
from state.store import DeploymentStore
from tests.conftest import ServiceProcess, free_port


@pytest.fixture
def api(store: DeploymentStore) -> Iterator[ServiceProcess]:
    """No reconciler runs: what the store holds is exactly what the test wrote."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, Reconciler(store, {})), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield ServiceProcess(url, None, None)  # type: ignore[arg-type]
    server.should_exit = True
    thread.join(timeout=10)
