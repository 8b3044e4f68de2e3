"""HTTP only: OpenAI-compatible routes, health, the adapter and its reload endpoint."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from serving.adapters import Loaded
from serving.engine import Engine, Job
from serving.keys import Key, KeyLimits
from serving.protocol import (
    AdapterInfo,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Delta,
    ErrorBody,
    ErrorDetail,
    FinishReason,
    ModelCard,
    ModelList,
    Usage,
    new_id,
    now,
)
from serving.settings import ServingSettings
from serving.watcher import AdapterWatcher

router = APIRouter()


class OpenAIError(Exception):
    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, ErrorBody(error=ErrorDetail(message=message, type=type_, param=param, code=code))


def error_response(exc: OpenAIError, version: str) -> JSONResponse:
    return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers={"x-adapter-version": version})


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def settings_of(request: Request) -> ServingSettings:
    return request.app.state.settings


def base_model_id(settings: ServingSettings) -> str:
    return "/".join(settings.model_path.strip("/").split("/")[-2:])


def adapter_model_id(settings: ServingSettings) -> str:
    return settings.deployment or "adapter"


def readiness(engine: Engine) -> tuple[bool, str]:
    if engine.load_error:
        return False, engine.load_error
    if engine.base is None:
        return False, f"loading the model from {engine.settings.model_dir}"
    if engine.registry.active is None:
        return False, engine.registry.last_error or f"waiting for an adapter at {engine.settings.adapter_dir}"
    return True, f"serving adapter {engine.registry.active.version}"


def fingerprint(version: str) -> str:
    return f"lp-{version}"


# ------------------------------------------------------------------------------ health


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    ready, detail = readiness(engine_of(request))
    return JSONResponse({"status": "ready" if ready else "not ready", "detail": detail}, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(engine_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------ models, adapter


@router.get("/v1/models", response_model=ModelList)
def list_models(request: Request) -> ModelList:
    settings, active = settings_of(request), engine_of(request).registry.active
    base = base_model_id(settings)
    cards = [ModelCard(id=base, created=now(), root=str(settings.model_dir))]
    if active is not None and active.peft_name is not None:
        cards.append(
            ModelCard(
                id=adapter_model_id(settings),
                created=int(active.loaded_at.timestamp()),
                root=str(active.path),
                parent=base,
                adapter_version=active.version,
            )
        )
    return ModelList(data=cards)


@router.get("/v1/adapter", response_model=AdapterInfo)
def adapter_info(request: Request) -> AdapterInfo:
    return _adapter_info(request)


@router.get("/admin/adapter", response_model=AdapterInfo)
def admin_adapter_info(request: Request) -> AdapterInfo:
    """/v1/adapter for loraplane, with the admin token: with inference keys on, /v1/adapter
    asks for a key, and the admin token is never one."""
    _check_admin(request)
    return _adapter_info(request)


def _adapter_info(request: Request) -> AdapterInfo:
    return adapter_info_of(engine_of(request))


def adapter_info_of(engine: Engine) -> AdapterInfo:
    registry = engine.registry
    active = registry.active
    return AdapterInfo(
        version=active.version if active else None,
        fingerprint=active.fingerprint if active else None,
        path=str(active.path) if active else None,
        loaded_at=active.loaded_at.isoformat() if active else None,
        base_only=active is not None and active.peft_name is None,
        last_error=registry.last_error,
        draining=sorted(registry.draining),
    )


def _check_admin(request: Request) -> None:
    settings = settings_of(request)
    if not settings.admin_token:
        raise OpenAIError(404, "the admin endpoints are off: set LORAPLANE_ADMIN_TOKEN to turn them on", type_="not_found_error")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {settings.admin_token}".encode()):
        raise OpenAIError(
            401, "a valid bearer token is required (Authorization: Bearer <LORAPLANE_ADMIN_TOKEN>)", type_="authentication_error"
        )


@router.post("/admin/adapter/reload")
async def reload_adapter(request: Request) -> JSONResponse:
    _check_admin(request)
    watcher: AdapterWatcher = request.app.state.watcher
    result = await run_in_threadpool(watcher.poll, force=True)
    body = {"status": result.status, "version": result.version, "message": result.message}
    return JSONResponse(body, status_code=422 if result.status == "refused" else 200)


# -------------------------------------------------------------------------- generation


class _Bridge:
    """Carries a job's events from the engine's thread to this request's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(self, kind: str, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))


def _admit(request: Request, body: ChatCompletionRequest | CompletionRequest, prompt_ids: list[int]) -> tuple[Job, _Bridge, str]:
    engine, settings = engine_of(request), settings_of(request)
    budget = min(body.token_budget(settings.max_tokens_default), settings.max_tokens_limit)
    if len(prompt_ids) + budget > engine.context_length:
        raise OpenAIError(
            400,
            f"the prompt is {len(prompt_ids)} tokens and max_tokens is {budget}: together they exceed "
            f"the model's context of {engine.context_length} tokens; shorten the prompt or lower max_tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    adapter: Loaded | None
    if body.model in (None, adapter_model_id(settings)):
        adapter = engine.registry.acquire()
    else:
        adapter = None  # the base model, asked for by name
    version = adapter.version if adapter is not None else "base"
    bridge = _Bridge()
    job = Job(
        prompt_ids=prompt_ids,
        max_new_tokens=budget,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences,
        seed=body.seed,
        adapter=adapter,
        emit=bridge.emit,
        min_tokens=min(body.min_tokens, budget),
    )
    request.state.adapter_version = version
    engine.submit(job)
    return job, bridge, version


def _check_prompt_size(request: Request, size: int, param: str) -> None:
    limit = settings_of(request).max_prompt_bytes
    if size > limit:
        raise OpenAIError(
            400, f"the prompt is {size} bytes, more than the {limit} this server takes (LORAPLANE_MAX_PROMPT_BYTES)", param=param
        )


def _check_ready_and_model(request: Request, model: str | None) -> None:
    ready, detail = readiness(engine_of(request))
    if not ready:
        raise OpenAIError(503, f"not ready: {detail}", type_="server_error", code="not_ready")
    settings = settings_of(request)
    served = {adapter_model_id(settings), base_model_id(settings)}
    if model is not None and model not in served:
        raise OpenAIError(
            404, f"the model {model!r} is not served here; use one of: {', '.join(sorted(served))}", param="model", code="model_not_found"
        )


def _charger(request: Request) -> Callable[[dict[str, int]], None]:
    """What to do with a generation's usage: count it against the request's inference key, if
    it came with one (api keys on)."""
    key: Key | None = getattr(request.state, "inference_key", None)
    limits: KeyLimits | None = getattr(request.app.state, "key_limits", None)
    if key is None or limits is None:
        return lambda usage: None
    return lambda usage: limits.charge(key, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


async def _collect(bridge: _Bridge, job: Job, charge: Callable[[dict[str, int]], None]) -> tuple[str, FinishReason, dict[str, int]]:
    parts: list[str] = []
    try:
        while True:
            kind, payload = await bridge.queue.get()
            if kind == "delta":
                parts.append(payload)
            elif kind == "done":
                reason, usage = payload
                charge(usage)
                return "".join(parts), reason, usage
            else:
                raise OpenAIError(500, payload, type_="server_error")
    finally:
        job.cancelled.set()  # harmless when done; stops generating when the client has gone


async def _sse(
    bridge: _Bridge, job: Job, settings: ServingSettings, make_chunk, include_usage: bool, charge: Callable[[dict[str, int]], None]
) -> AsyncIterator[str]:
    try:
        first = make_chunk(role=True)
        if first is not None:
            yield f"data: {first}\n\n"
        while True:
            try:
                kind, payload = await asyncio.wait_for(bridge.queue.get(), settings.keepalive_seconds)
            except TimeoutError:
                # A comment line keeps proxies (ACA's ingress closes idle ones at 240 s) open.
                yield ": keep-alive\n\n"
                continue
            if kind == "delta":
                yield f"data: {make_chunk(content=payload)}\n\n"
            elif kind == "done":
                reason, usage = payload
                charge(usage)
                yield f"data: {make_chunk(finish_reason=reason)}\n\n"
                if include_usage:
                    yield f"data: {make_chunk(usage=usage)}\n\n"
                yield "data: [DONE]\n\n"
                return
            else:
                error = ErrorBody(error=ErrorDetail(message=payload, type="server_error"))
                yield f"data: {error.model_dump_json()}\n\n"
                yield "data: [DONE]\n\n"
                return
    finally:
        job.cancelled.set()


async def _respond(request: Request, body: ChatCompletionRequest | CompletionRequest, prompt_ids: list[int]):
    """Admit the job, then answer as one JSON document or as an SSE stream, in the chat or the
    text-completion shape depending on the request."""
    settings = settings_of(request)
    job, bridge, version = _admit(request, body, prompt_ids)
    chat = isinstance(body, ChatCompletionRequest)
    ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
    model_name, system_fingerprint = body.model or adapter_model_id(settings), fingerprint(version)
    headers = {"x-adapter-version": version}
    if body.stream:

        def chunk(
            role: bool = False, content: str | None = None, finish_reason: FinishReason | None = None, usage: dict | None = None
        ) -> str | None:
            usage_model = Usage(**usage) if usage else None
            document: ChatCompletionChunk | Completion
            if chat:
                delta = Delta(role="assistant", content="") if role else Delta(content=content)
                document = ChatCompletionChunk(
                    id=ident,
                    created=created,
                    model=model_name,
                    system_fingerprint=system_fingerprint,
                    choices=[] if usage else [ChunkChoice(delta=delta, finish_reason=finish_reason)],
                    usage=usage_model,
                )
            elif role:
                return None  # text completions have no role chunk
            else:
                document = Completion(
                    id=ident,
                    created=created,
                    model=model_name,
                    system_fingerprint=system_fingerprint,
                    choices=[] if usage else [CompletionChoice(text=content or "", finish_reason=finish_reason)],
                    usage=usage_model,
                )
            return document.model_dump_json(exclude_none=usage is None)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _sse(bridge, job, settings, chunk, include_usage, _charger(request))
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    text, reason, usage = await _collect(bridge, job, _charger(request))
    answer: ChatCompletion | Completion
    if chat:
        answer = ChatCompletion(
            id=ident,
            created=created,
            model=model_name,
            system_fingerprint=system_fingerprint,
            choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=reason)],
            usage=Usage(**usage),
        )
    else:
        answer = Completion(
            id=ident,
            created=created,
            model=model_name,
            system_fingerprint=system_fingerprint,
            choices=[CompletionChoice(text=text, finish_reason=reason)],
            usage=Usage(**usage),
        )
    return JSONResponse(answer.model_dump(), headers=headers)


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    _check_ready_and_model(request, body.model)
    try:
        messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in body.messages]
    except ValueError as exc:
        raise OpenAIError(400, str(exc), param="messages") from exc
    _check_prompt_size(request, sum(len(m["content"].encode()) for m in messages), "messages")
    prompt_ids = await run_in_threadpool(engine_of(request).chat_prompt, messages)
    return await _respond(request, body, prompt_ids)


@router.post("/v1/completions", response_model=Completion)
async def completions(body: CompletionRequest, request: Request):
    _check_ready_and_model(request, body.model)
    _check_prompt_size(request, len(body.prompt_text().encode()), "prompt")
    prompt_ids = await run_in_threadpool(engine_of(request).encode, body.prompt_text())
    if not prompt_ids:
        raise OpenAIError(400, "the prompt is empty", param="prompt")
    return await _respond(request, body, prompt_ids)
