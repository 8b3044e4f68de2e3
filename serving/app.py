"""The serving app: engine and watcher for the app's lifetime, routes, errors, the chat UI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.engine import Engine
from serving.keys import KeyLimits, KeyRing, Refused
from serving.protocol import ErrorBody, ErrorDetail
from serving.reports import ShareReport
from serving.router import OpenAIError, adapter_info_of, error_response, fingerprint, readiness, router
from serving.settings import ServingSettings
from serving.watcher import AdapterWatcher

log = logging.getLogger("loraplane.serving")


class AdapterVersionHeaders:
    """Every response names the adapter version: the one its request was admitted with, or
    (for everything else) the one new requests get now."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app, self.engine = app, engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-adapter-version" for name, _ in headers):
                    active = self.engine.registry.active
                    version = active.version if active else "none"
                    headers.append((b"x-adapter-version", version.encode()))
                    headers.append((b"x-system-fingerprint", fingerprint(version).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_version)


class BodyLimit:
    """Bodies past ``limit`` bytes get 413 before they are read whole: the declared length is
    checked first, then what arrives is counted (a chunked body declares none)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was whole
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = ErrorBody(
            error=ErrorDetail(
                message=f"the request body is larger than {self.limit} bytes (LORAPLANE_MAX_REQUEST_BYTES)", type="invalid_request_error"
            )
        )
        await JSONResponse(body.model_dump(), status_code=413)(scope, receive, send)


# What an inference key guards: the OpenAI routes, the tokenizer routes beside them, the metrics
# and the API's documentation. The probes answer anyone (the platform's health checks carry no
# key); /admin/* has its own token; the chat UI asks for a key at its own login.
KEY_GUARDED_PREFIXES = ("/v1/",)
KEY_GUARDED_PATHS = frozenset(
    {"/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/tokenize", "/detokenize", "/tokenizer_info"}
)


class InferenceKeys:
    """The request's inference key checked and its limits applied before anything else reads
    it (serving.keys); the answer carries the key's x-ratelimit-* headers."""

    def __init__(self, app: ASGIApp, ring: KeyRing, limits: KeyLimits) -> None:
        self.app, self.ring, self.limits = app, ring, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith(KEY_GUARDED_PREFIXES) or path in KEY_GUARDED_PATHS):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        try:
            key = self.ring.check(authorization)
            headers = self.limits.admit(key)
        except Refused as refused:
            body = ErrorBody(error=ErrorDetail(message=refused.message, type=refused.type, code=refused.code))
            await JSONResponse(body.model_dump(), status_code=refused.status, headers=refused.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["inference_key"] = key
        extra = [(name.encode(), value.encode()) for name, value in headers.items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_limits)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    return (f"{param}: {message}" if param else message), param


def create_app(settings: ServingSettings) -> FastAPI:
    engine = Engine(settings)
    watcher = AdapterWatcher(settings, engine)
    keys_file = settings.keys_file
    ring = KeyRing(keys_file, refresh_seconds=settings.keys_refresh_seconds) if keys_file is not None else None
    limits = KeyLimits(engine.metrics.registry) if ring is not None else None
    reports: list[ShareReport] = []
    if limits is not None and keys_file is not None:  # what each key used, kept across restarts
        reports.append(
            ShareReport(
                keys_file.parent / "usage", lambda: {"keys": limits.usage()}, interval=settings.report_interval_seconds, only_on_change=True
            )
        )
    pointer = settings.pointer_file
    if pointer is not None:  # how this replica is doing, for loraplane where it cannot ask over HTTP

        def status() -> dict:
            ready, detail = readiness(engine)
            return {"ready": ready, "detail": detail, "adapter": adapter_info_of(engine).model_dump()}

        reports.append(ShareReport(pointer.parent / "replicas", status, interval=settings.report_interval_seconds, remove_on_stop=True))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        watcher.start()
        for report in reports:
            report.start()
        try:
            yield
        finally:
            for report in reports:
                report.stop()
            watcher.stop()
            engine.stop()

    app = FastAPI(title="loraplane serving", lifespan=lifespan, docs_url="/docs")
    app.state.settings, app.state.engine, app.state.watcher = settings, engine, watcher
    app.state.key_limits = limits
    app.add_middleware(AdapterVersionHeaders, engine=engine)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    if ring is not None and limits is not None:  # outermost: a caller without a key gets no further
        app.add_middleware(InferenceKeys, ring=ring, limits=limits)

    def version_of(request: Request) -> str:
        return getattr(request.state, "adapter_version", None) or (engine.registry.active.version if engine.registry.active else "none")

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return error_response(exc, version_of(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(OpenAIError(400, message, param=param), version_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(OpenAIError(exc.status_code, str(exc.detail), type_=kind), version_of(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = ErrorBody(error=ErrorDetail(message="internal error; see the server log", type="server_error"))
        return JSONResponse(body.model_dump(), status_code=500)

    app.include_router(router)
    if settings.ui:
        import gradio as gr

        from serving.ui import build_ui

        # With keys on, the chat asks for one once, at Gradio's login (any user name).
        auth = (lambda _user, key: _accepts(ring, key)) if ring is not None else None
        app = gr.mount_gradio_app(
            app, build_ui(engine, settings), path="/", auth=auth, auth_message="Sign in with an inference key (any user name)"
        )
    return app


def _accepts(ring: KeyRing, key: str) -> bool:
    try:
        ring.check(f"Bearer {key}")
    except Refused:
        return False
    return True
