"""The serving app on the tiny random model: built once per run, copied per test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from serving.app import create_app
from serving.settings import ServingSettings
from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH
from tests.conftest import free_port


class RunningApp:
    def __init__(self, url: str, app, settings: ServingSettings) -> None:
        self.url, self.app, self.settings = url, app, settings

    @property
    def engine(self):
        return self.app.state.engine

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def wait_ready(url: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/readyz", timeout=2)
            if last.status_code == 200:
                return last.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the serving app did not become ready: {last.json() if last is not None else 'no answer'}")


@pytest.fixture
def serve_app() -> Iterator[Callable[..., RunningApp]]:
    """Start the serving app (uvicorn in a thread, a real port) with given settings."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(share: Path, *, ready: bool = True, **overrides) -> RunningApp:
        defaults = dict(
            model_path=TINY_MODEL_PATH,
            adapter_path=ADAPTER_PATH,
            ui=False,
            watch_interval_seconds=0.2,
            batch_wait_ms=20,
        )
        settings = ServingSettings(share_root=share, host="127.0.0.1", port=free_port(), **{**defaults, **overrides})
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"http://127.0.0.1:{settings.port}"
        if ready:
            wait_ready(url)
        else:
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
        return RunningApp(url, app, settings)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)
