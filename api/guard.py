"""The door: who is asking, and how much they send, settled before any route reads a body.

FastAPI reads and parses a request's body before it runs a route's dependencies, so a token
checked there is checked after a stranger's 200 MB were read into memory. This middleware
(pure ASGI, in front of everything) answers 401 for an API call without a valid token before
reading a byte of its body, then reads the body itself up to a cap (413 past it, counting what
arrives, so a chunked body cannot lie its way past a Content-Length check) and hands the route
the body it read. The identity it found goes to the route in ``request.state.identity``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Authenticator
from api.problems import ApiError, problem_json
from api.strictjson import DuplicateKey, no_duplicate_keys

# The Kubernetes API server's limit on a request body: a manifest is a few kilobytes.
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024
# How deep a JSON body may nest: a manifest is five levels deep; a thousand levels is an
# attack on the parser's recursion, not a deployment.
MAX_JSON_DEPTH = 64
# Paths that need a token (the API); health, metrics, the docs and the dashboard's static pages
# need none (the dashboard calls the API with the user's token).
PROTECTED_PREFIX = "/v1/"


class RequestGuard:
    def __init__(self, app: ASGIApp, *, authenticator: Authenticator | None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if self.authenticator is not None and path.startswith(PROTECTED_PREFIX):
                identity = await self.authenticator.find(headers.get("authorization"))
                scope.setdefault("state", {})["identity"] = identity
            declared = headers.get("content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
                raise self._too_large()
            body = await self._read_body(receive)
            if body and path.startswith(PROTECTED_PREFIX):
                check_json_body(headers.get("content-type"), body)
        except ApiError as error:
            await problem_json(path, error.status, error.title, error.detail, headers=error.headers)(scope, receive, send)
            return
        if body is None:
            return  # the client left before its body was whole: nothing to answer
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body (at most the cap); None when the client left first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            "Request too large",
            f"the request body is larger than {self.max_body_bytes} bytes, the most this API accepts; "
            "a deployment's manifest is a few kilobytes",
        )


def is_json(content_type: str | None) -> bool:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def check_json_body(content_type: str | None, body: bytes) -> None:
    """The API takes JSON (a request without a Content-Type is read as JSON): anything else is
    415; JSON with a key given twice (which value was meant?) or nested past MAX_JSON_DEPTH is
    400, as the Kubernetes API server answers."""
    if not is_json(content_type):
        raise ApiError(
            415,
            "Unsupported media type",
            f"this API reads JSON, not {content_type}: send Content-Type application/json "
            "(application/merge-patch+json for PATCH), or use 'loraplane apply -f FILE' for YAML",
        )
    try:
        document = json.loads(body, object_pairs_hook=no_duplicate_keys)
    except RecursionError as exc:
        raise _too_deep() from exc
    except DuplicateKey as exc:
        raise ApiError(400, "Bad request", f"the JSON body is ambiguous: {exc}") from exc
    except ValueError:
        return  # not JSON at all: the route says so, with where it broke
    if _depth(document) > MAX_JSON_DEPTH:
        raise _too_deep()


def _depth(document: Any) -> int:
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def _too_deep() -> ApiError:
    return ApiError(400, "Bad request", f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; a manifest needs a handful")


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read, once; then whatever the client sends next (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
