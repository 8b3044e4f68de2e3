"""One HTTP client for talking to serving apps (readiness, adapter status, reload), and the
two adapter calls every provider makes through it.

A one-off ``httpx.get`` builds a TLS context and a connection pool each time: 17-30 ms of CPU
on these machines, several times per reconcile pass of every deployment (it was most of a hot
adapter swap's time). This client is made on first use, shared by threads (httpx clients are
thread-safe), keeps connections to the apps alive, and is closed with its provider.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from infra.errors import TemporaryError


@dataclass(frozen=True)
class AppAnswer:
    """The serving app's answer to a request of its OpenAI routes."""

    status: int
    body: dict[str, Any]
    seconds: float  # from sending to the whole answer
    version: str | None = None  # the adapter version that answered (x-adapter-version)


class EndpointClient:
    def __init__(self, *, timeout: float, verify: ssl.SSLContext | bool = True) -> None:
        self.timeout, self.verify = timeout, verify
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, verify=self.verify)
            return self._client

    def get(self, url: str, *, timeout: float | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        return self._http().get(url, timeout=timeout or self.timeout, headers=headers)

    def post(self, url: str, *, headers: dict[str, str], timeout: float | None = None, json: Any = None) -> httpx.Response:
        return self._http().post(url, headers=headers, timeout=timeout or self.timeout, json=json)

    def close(self) -> None:
        """Close the connections; the next call opens a new client."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def adapter_status(self, endpoint: str, admin_token: str | None) -> dict:
        """What the serving app serves: its GET /admin/adapter (/v1/adapter with the admin
        token; /v1/adapter itself asks for an inference key when keys are on)."""
        try:
            response = self.get(f"{endpoint}/admin/adapter", headers={"Authorization": f"Bearer {admin_token}"})
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise TemporaryError(f"asking {endpoint} what it serves failed: {exc}", reason="EndpointUnavailable") from exc

    def ask(self, endpoint: str, admin_token: str | None, route: str, body: dict, timeout: float) -> AppAnswer:
        """A request of the serving app's OpenAI routes as loraplane (``/admin/v1/<route>``,
        with the admin token): the answer, whatever its status, and how long it took. Raises
        TemporaryError when no answer came at all."""
        started = time.perf_counter()
        try:
            response = self.post(
                f"{endpoint}/admin/v1/{route}", headers={"Authorization": f"Bearer {admin_token}"}, timeout=timeout, json=body
            )
        except httpx.HTTPError as exc:
            raise TemporaryError(f"asking {endpoint} failed: {exc}", reason="EndpointUnavailable") from exc
        seconds = time.perf_counter() - started
        try:
            document = response.json()
        except ValueError:
            document = {"error": {"message": response.text[:500]}}
        return AppAnswer(
            response.status_code, document if isinstance(document, dict) else {}, seconds, response.headers.get("x-adapter-version")
        )

    def reload_adapter(self, endpoint: str, admin_token: str | None) -> dict:
        """POST /admin/adapter/reload: the app loads what the pointer names (waits for the load)."""
        try:
            response = self.post(f"{endpoint}/admin/adapter/reload", headers={"Authorization": f"Bearer {admin_token}"}, timeout=120)
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise TemporaryError(f"asking {endpoint} to reload its adapter failed: {exc}", reason="EndpointUnavailable") from exc
