"""A small HTTP client for the loraplane API; every failure becomes a one-line CliError."""

from __future__ import annotations

import json
from collections.abc import Iterator
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


class ApiClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

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
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the loraplane API at {self.base_url}: is 'loraplane serve' "
                "running? (set LORAPLANE_URL or --url to point elsewhere)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"the loraplane API at {self.base_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.base_url}{path} failed: {exc}") from exc
        if response.status_code not in ok:
            raise CliError(describe_problem(response))
        return response

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


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise CliError(f"the API answered {response.status_code} with a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise CliError(f"the API answered {response.status_code} with an unexpected body")
    return body
