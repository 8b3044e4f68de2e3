"""A small HTTP client for the loraplane API; every failure becomes a one-line CliError."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx


class CliError(Exception):
    """An error the CLI prints as one line on stderr, exiting non-zero."""


def describe_problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        errors = body.get("errors") or []
        if len(errors) > 1:
            listed = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
            return f"{body.get('title', 'error')} ({response.status_code}): {listed}"
        return f"{body.get('title', 'error')} ({response.status_code}): {body['detail']}"
    text = response.text.strip().splitlines()[0] if response.text.strip() else ""
    return f"HTTP {response.status_code} from {response.request.url}: {text}"[:500]


# Answers that say "not now, come back": retried, waiting what Retry-After says.
RETRYABLE = (429, 503)


class ApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        retry_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        # How long a command keeps retrying a busy API before it gives up and says so.
        self.retry_seconds, self.sleep, self.clock = retry_seconds, sleep, clock

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201, 202),
        **kwargs: Any,
    ) -> httpx.Response:
        deadline = self.clock() + self.retry_seconds
        while True:
            response = self._send(method, path, **kwargs)
            if response.status_code not in RETRYABLE:
                break
            wait = _retry_after(response)
            if self.clock() + wait > deadline:
                raise CliError(
                    f"{describe_problem(response)}; gave up after retrying for {self.retry_seconds:g}s (LORAPLANE_RETRY_SECONDS)"
                )
            self.sleep(wait)
        if response.status_code not in ok:
            raise CliError(describe_problem(response))
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the loraplane API at {self.base_url}: is 'loraplane serve' "
                "running? (set LORAPLANE_URL or --url to point elsewhere)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"the loraplane API at {self.base_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.base_url}{path} failed: {exc}") from exc

    def watch(self, path: str, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from a watch stream, as they come."""
        try:
            with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CliError(describe_problem(response))
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = json.loads("".join(data))
                        data = []
                        yield event["type"], event["object"]
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the loraplane API at {self.base_url}: is 'loraplane serve' running?") from exc

    def get_deployment(self, name: str) -> httpx.Response | None:
        response = self.request("GET", f"/v1/deployments/{name}", ok=(200, 404))
        if response.status_code == 404:
            body = json_body(response)
            # A 404 for a missing deployment is an answer; a 404 for a missing route is not.
            if body.get("title") == "Not found" and "not found" in str(body.get("detail", "")):
                return None
            raise CliError(describe_problem(response))
        return response

    def list_deployments(self, selector: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500}
        if selector:
            params["label"] = selector
        while True:
            body = json_body(self.request("GET", "/v1/deployments", params=params))
            items.extend(body.get("items", []))
            token = body.get("continue")
            if not token:
                return items
            params["continue"] = token


def _retry_after(response: httpx.Response) -> float:
    """Retry-After in seconds (1 when it is missing or not a number of seconds), at most 30."""
    try:
        return min(30.0, max(0.0, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise CliError(f"the API answered {response.status_code} with a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise CliError(f"the API answered {response.status_code} with an unexpected body")
    return body
