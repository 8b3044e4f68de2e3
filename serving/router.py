"""HTTP only: OpenAI-compatible routes, the tokenizer routes, health, the adapter and its reload
endpoint."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from serving.adapters import Loaded
from serving.decode import Job, Piece
from serving.engine import Engine, QueueFull
from serving.keys import Key, KeyLimits
from serving.logprobs import LegacyLogprobs, TokenTexts, chat_logprobs, merge
from serving.protocol import (
    AdapterInfo,
    AdapterState,
    AssistantMessage,
    CanaryState,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Delta,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorBody,
    ErrorDetail,
    FinishReason,
    LoadedVersion,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    TokenLogprob,
    Usage,
    VersionFigures,
    new_id,
    now,
)
from serving.settings import ServingSettings
from serving.watcher import AdapterWatcher

router = APIRouter()
log = logging.getLogger("loraplane.serving")


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, ErrorBody(error=ErrorDetail(message=message, type=type_, param=param, code=code))
        self.headers = headers or {}


def error_response(exc: OpenAIError, version: str) -> JSONResponse:
    return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers={**exc.headers, "x-adapter-version": version})


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def settings_of(request: Request) -> ServingSettings:
    return request.app.state.settings


def base_model_id(settings: ServingSettings) -> str:
    return "/".join(settings.model_path.strip("/").split("/")[-2:])


def readiness(engine: Engine) -> tuple[bool, str]:
    if engine.load_error:
        return False, engine.load_error
    if engine.base is None:
        return False, f"loading the model from {engine.settings.model_dir}"
    slots = engine.registry.slots()
    if not engine.registry.looked:
        return False, "loading the adapters"
    serving = [s for s in slots if s.active is not None]
    if not serving:
        first = slots[0] if slots else None
        return False, (first.last_error if first else None) or f"waiting for an adapter at {engine.settings.adapter_dir}"
    if len(slots) == 1 and slots[0].active is not None:
        return True, f"serving adapter {slots[0].active.version}"
    return True, "serving adapters " + ", ".join(f"{s.name} {s.active.version}" for s in serving if s.active is not None)


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
    settings, registry = settings_of(request), engine_of(request).registry
    base = base_model_id(settings)
    cards = [ModelCard(id=base, created=now(), root=str(settings.model_dir))]
    for slot in registry.slots():
        active = slot.active
        if active is not None and active.peft_name is not None:
            cards.append(
                ModelCard(
                    id=slot.name,
                    created=int(active.loaded_at.timestamp()),
                    root=str(active.path),
                    parent=base,
                    adapter_version=active.version,
                )
            )
    return ModelList(data=cards)


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
def get_model(model_id: str, request: Request) -> ModelCard:
    cards = list_models(request).data
    for card in cards:
        if card.id == model_id:
            return card
    served = ", ".join(card.id for card in cards)
    raise OpenAIError(
        404,
        f"the model {model_id!r} is not served here; use one of: {served}",
        type_="not_found_error",
        param="model",
        code="model_not_found",
    )


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
    states = [
        AdapterState(
            name=slot.name,
            version=slot.active.version if slot.active else None,
            fingerprint=slot.active.fingerprint if slot.active else None,
            path=str(slot.active.path) if slot.active else None,
            loaded_at=slot.active.loaded_at.isoformat() if slot.active else None,
            resident=slot.active is not None and slot.active.resident,
            last_error=slot.last_error,
            draining=sorted(slot.draining),
            loaded=[
                *(LoadedVersion(version=v.version, resident=v.resident) for v in slot.standby.values()),
                *(LoadedVersion(version=version, resident=False, error=error) for version, error in slot.refused.items()),
            ],
            canary=CanaryState(version=slot.canary, weight=slot.canary_weight) if slot.canary is not None else None,
            traffic={
                version: VersionFigures(requests=f.requests, errors=f.errors, seconds=round(f.seconds, 6))
                for version, f in engine.traffic.of(slot.name).items()
            },
        )
        for slot in engine.registry.slots()
    ]
    first = states[0] if states else None
    active = engine.registry.active
    return AdapterInfo(
        version=first.version if first else None,
        fingerprint=first.fingerprint if first else None,
        path=first.path if first else None,
        loaded_at=first.loaded_at if first else None,
        base_only=active is not None and active.peft_name is None,
        last_error=first.last_error if first else None,
        draining=first.draining if first else [],
        adapters=states,
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
    body = {
        "status": result.status,
        "version": result.version,
        "message": result.message,
        "adapters": {name: {"status": r.status, "version": r.version, "message": r.message} for name, r in result.adapters.items()},
    }
    return JSONResponse(body, status_code=422 if result.status == "refused" else 200)


# -------------------------------------------------------------------------- generation


class _Bridge:
    """Carries the events of a request's jobs from the engine's thread to this request's event
    loop, each tagged with its job's choice index."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()

    def emitter(self, index: int) -> Callable[[str, Any], None]:
        def emit(kind: str, payload: Any) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, kind, payload))

        return emit


@dataclass
class _Prompt:
    ids: list[int]
    echo: str | None = None  # returned before the completion (echo: true)


@dataclass
class _Update:
    """What one event adds to one choice: text, its logprobs, or its end."""

    index: int
    text: str = ""
    logprobs: CompletionLogprobs | list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None


class _Shaper:
    """Turns a request's engine events into updates of its choices, in the request's shape:
    legacy logprobs for completions (and the echoed prompt), the chat shape for chat."""

    def __init__(self, engine: Engine, body: ChatCompletionRequest | CompletionRequest, prompts: list[_Prompt]) -> None:
        self.prompts = prompts
        self.texts = TokenTexts(engine.tokenizer)
        self.chat_top: int | None = None
        self.legacy: list[LegacyLogprobs] | None = None
        # How many alternatives the engine scores per generated token (None: no scores), and
        # per prompt token (None: the prompt is not scored).
        self.top: int | None = None
        self.prompt_top: int | None = None
        if isinstance(body, ChatCompletionRequest):
            if body.logprobs:
                self.chat_top = self.top = body.top_logprobs or 0
        elif body.logprobs is not None:
            self.legacy = [LegacyLogprobs(self.texts) for _ in prompts]
            self.top = body.logprobs
            self.prompt_top = body.logprobs if body.echo else None
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def start(self) -> list[_Update]:
        """The echoed prompts that wait for no scores: sent at once."""
        if self.prompt_top is not None:
            return []
        return [_Update(i, text=p.echo) for i, p in enumerate(self.prompts) if p.echo is not None]

    def update(self, index: int, kind: str, payload: Any) -> _Update:
        if kind == "prompt":  # the prompt's scores (echo with logprobs), before any text
            assert self.legacy is not None
            prompt, legacy = self.prompts[index], self.legacy[index]
            logprobs = legacy.prompt(prompt.ids, payload)
            legacy.offset = len(prompt.echo or "")  # the completion's offsets follow the echoed text
            return _Update(index, text=prompt.echo or "", logprobs=logprobs)
        if kind == "delta":
            piece: Piece = payload
            scored: CompletionLogprobs | list[TokenLogprob] | None = None
            if self.legacy is not None:
                scored = self.legacy[index].piece(piece)
            elif self.chat_top is not None:
                scored = chat_logprobs(self.texts, piece, self.chat_top)
            return _Update(index, text=piece.text, logprobs=scored)
        if kind == "done":
            reason, usage = payload
            for name in self.usage:
                self.usage[name] += usage[name]
            return _Update(index, finish_reason=reason)
        raise OpenAIError(500, payload, type_="server_error")


def _budget(body: ChatCompletionRequest | CompletionRequest, settings: ServingSettings, context: int, prompt: int, which: str) -> int:
    """The completion's length: what the request asks for, if the context has room for it;
    else the default, cut to the room the prompt leaves."""
    room = context - prompt
    asked = body.asked_tokens
    if asked is not None and asked > settings.max_tokens_limit:
        raise OpenAIError(
            400,
            f"max_tokens is {asked}, more than the {settings.max_tokens_limit} this server generates in one completion "
            "(LORAPLANE_MAX_TOKENS_LIMIT)",
            param="max_tokens",
        )
    if room < (1 if asked is None else asked):
        wanted = f"max_tokens is {asked}" if asked is not None else "no token is left to generate"
        left = f"; at most {room} tokens are left for the completion" if room > 0 else ""
        raise OpenAIError(
            400,
            f"{which} is {prompt} tokens and {wanted}: the model's context of {context} tokens has no room for that{left}; "
            "shorten the prompt or lower max_tokens",
            param="max_tokens" if asked is not None and room >= 0 else "prompt",
            code="context_length_exceeded",
        )
    return asked if asked is not None else min(settings.max_tokens_default, settings.max_tokens_limit, room)


class _Outcome:
    """How a user's answer ended, counted for its adapter version (``serving.traffic``) once:
    ok, or an error of the generation; an answer the client left is not counted."""

    def __init__(self, engine: Engine, adapter: Loaded | None, counted: bool) -> None:
        self.engine, self.adapter, self.counted = engine, adapter, counted
        self.version = adapter.version if adapter is not None else "base"
        self.started = time.monotonic()

    def __call__(self, *, ok: bool) -> None:
        if self.counted and self.adapter is not None:
            self.counted = False
            self.engine.traffic.record(self.adapter.adapter, self.adapter.version, ok=ok, seconds=time.monotonic() - self.started)


def _admit(
    request: Request, body: ChatCompletionRequest | CompletionRequest, prompts: list[_Prompt]
) -> tuple[list[Job], _Bridge, _Shaper, _Outcome]:
    engine, settings = engine_of(request), settings_of(request)
    budgets = [
        _budget(body, settings, engine.context_length, len(prompt.ids), "the prompt" if len(prompts) == 1 else f"prompt {index}")
        for index, prompt in enumerate(prompts)
    ]
    bias = body.token_bias
    unknown = _unknown_token(engine, list(bias))
    if unknown is not None:
        raise OpenAIError(400, f"logit_bias names token {unknown[1]}, outside {_vocabulary(engine)}", param="logit_bias")
    if body.unknown_fields:
        log.info("ignoring fields this server does not know: %s", ", ".join(body.unknown_fields))
    adapter: Loaded | None = None  # the base model, asked for by name
    name, addressed = addressed_model(body.model)
    if body.model != base_model_id(settings):
        # One version for all the request's prompts; a canary's share of users goes to the
        # canary, the same user (or session) to the same side on every replica.
        split = body.user or request.headers.get("x-session-id")
        adapter = engine.registry.acquire(name, len(prompts), version=addressed, split=split)
        if adapter is None and addressed is not None:
            slot = engine.registry.slot(name or "")
            loaded = sorted({*(slot.standby if slot else {}), *([slot.active.version] if slot and slot.active else [])})
            why = (slot.refused.get(addressed) if slot else None) or (
                f"loaded here: {', '.join(loaded)}" if loaded else "none is loaded here"
            )
            raise OpenAIError(
                404,
                f"version {addressed} of the adapter {name!r} is not loaded here ({why}); ask for {name!r} to get the version it serves",
                type_="not_found_error",
                param="model",
                code="model_not_found",
            )
        if adapter is None:
            slot = engine.registry.slot(name or engine.registry.default or "")
            why = slot.last_error if slot is not None and slot.last_error else "it has no version to serve yet"
            raise OpenAIError(
                503,
                f"the adapter {name or (slot.name if slot else '')!r} cannot serve: {why}",
                type_="server_error",
                code="not_ready",
            )
    version = adapter.version if adapter is not None else "base"
    bridge, shaper = _Bridge(), _Shaper(engine, body, prompts)
    jobs = [
        Job(
            prompt_ids=prompt.ids,
            max_new_tokens=budget,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_sequences,
            seed=body.seed,
            adapter=adapter,
            emit=bridge.emitter(index),
            min_tokens=min(body.min_tokens, budget),
            logprobs=shaper.top,
            prompt_logprobs=shaper.prompt_top,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logit_bias=bias,
            stream=body.stream,
        )
        for index, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True))
    ]
    request.state.adapter_version = version
    try:
        engine.submit(*jobs)
    except QueueFull as exc:
        for job in jobs:
            engine.release(job)
        raise OpenAIError(
            429, f"the server is busy: {exc}; try again shortly", type_="rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
        ) from exc
    counted = adapter is not None and addressed is None  # loraplane's gate prompts are no user's
    return jobs, bridge, shaper, _Outcome(engine, adapter, counted)


def _check_prompt_size(request: Request, size: int, param: str) -> None:
    limit = settings_of(request).max_prompt_bytes
    if size > limit:
        raise OpenAIError(
            400, f"the prompt is {size} bytes, more than the {limit} this server takes (LORAPLANE_MAX_PROMPT_BYTES)", param=param
        )


def addressed_model(model: str | None) -> tuple[str | None, str | None]:
    """A request's ``model`` as (adapter, version): ``NAME@VERSION`` names one loaded version
    of an adapter (loraplane's gate prompts ask so); any other model id names no version."""
    if model is not None and "@" in model:
        name, _, version = model.partition("@")
        return name, version
    return model, None


def _check_ready_and_model(request: Request, model: str | None) -> None:
    engine = engine_of(request)
    name, version = addressed_model(model)
    ready, detail = readiness(engine)
    # A version loaded beside the serving ones answers when named, before any version serves:
    # loraplane gates an adapter's first version that way.
    if not ready and not (version is not None and name is not None and engine.registry.find(name, version) is not None):
        raise OpenAIError(503, f"not ready: {detail}", type_="server_error", code="not_ready")
    settings = settings_of(request)
    served = {*engine.registry.names(), base_model_id(settings)}
    if name is not None and name not in served:
        raise OpenAIError(
            404, f"the model {model!r} is not served here; use one of: {', '.join(sorted(served))}", param="model", code="model_not_found"
        )


def _charger(request: Request) -> Callable[[dict[str, int]], None]:
    """What to do with a request's usage: count it against its inference key, if it came with
    one (api keys on)."""
    key: Key | None = getattr(request.state, "inference_key", None)
    limits: KeyLimits | None = getattr(request.app.state, "key_limits", None)
    if key is None or limits is None:
        return lambda usage: None
    return lambda usage: limits.charge(key, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


async def _updates(bridge: _Bridge, jobs: list[Job], shaper: _Shaper, keepalive: float | None = None) -> AsyncGenerator[_Update | None]:
    """The request's updates until every choice has ended; None when ``keepalive`` seconds
    pass without one. An engine error raises OpenAIError."""
    try:
        for update in shaper.start():
            yield update
        running = len(jobs)
        while running:
            try:
                index, kind, payload = await asyncio.wait_for(bridge.queue.get(), keepalive)
            except TimeoutError:
                yield None
                continue
            if kind == "prompt":  # a whole prompt's token texts: decoded off the event loop
                update = await run_in_threadpool(shaper.update, index, kind, payload)
            else:
                update = shaper.update(index, kind, payload)
            running -= update.finish_reason is not None
            yield update
    finally:
        for job in jobs:
            job.cancelled.set()  # harmless when done; stops generating when the client has gone


class _Choice:
    """One choice, gathered for a whole (not streamed) answer."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.legacy: list[CompletionLogprobs] = []
        self.chat: list[TokenLogprob] = []
        self.reason: FinishReason = "length"

    def add(self, update: _Update) -> None:
        self.text.append(update.text)
        if isinstance(update.logprobs, CompletionLogprobs):
            self.legacy.append(update.logprobs)
        elif update.logprobs is not None:
            self.chat += update.logprobs
        if update.finish_reason is not None:
            self.reason = update.finish_reason


async def _respond(request: Request, body: ChatCompletionRequest | CompletionRequest, prompts: list[_Prompt]):
    """Admit the jobs, then answer as one JSON document or as an SSE stream, in the chat or the
    text-completion shape depending on the request."""
    settings = settings_of(request)
    jobs, bridge, shaper, outcome = _admit(request, body, prompts)
    version = outcome.version
    chat = isinstance(body, ChatCompletionRequest)
    ident, created = new_id("chatcmpl" if chat else "cmpl"), now()
    model_name, system_fingerprint = body.model or engine_of(request).registry.default or base_model_id(settings), fingerprint(version)
    headers = {"x-adapter-version": version}
    charge = _charger(request)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def document(choices: list, usage: Usage | None = None) -> str:
            kind = ChatCompletionChunk if chat else Completion
            chunk = kind(id=ident, created=created, model=model_name, system_fingerprint=system_fingerprint, choices=choices, usage=usage)
            return chunk.model_dump_json(exclude_none=usage is None)

        def chunk_choice(update: _Update) -> ChunkChoice | CompletionChoice:
            if chat:
                scored = ChoiceLogprobs(content=update.logprobs) if isinstance(update.logprobs, list) else None
                content = None if update.finish_reason else update.text
                return ChunkChoice(index=update.index, delta=Delta(content=content), finish_reason=update.finish_reason, logprobs=scored)
            legacy = update.logprobs if isinstance(update.logprobs, CompletionLogprobs) else None
            return CompletionChoice(index=update.index, text=update.text, finish_reason=update.finish_reason, logprobs=legacy)

        async def stream() -> AsyncIterator[str]:
            if chat:
                yield f"data: {document([ChunkChoice(delta=Delta(role='assistant', content=''))])}\n\n"
            try:
                async with aclosing(_updates(bridge, jobs, shaper, settings.keepalive_seconds)) as updates:
                    async for update in updates:
                        if update is None:
                            # A comment line keeps proxies (ACA's ingress closes idle ones at 240 s) open.
                            yield ": keep-alive\n\n"
                        elif update.text or update.logprobs or update.finish_reason:
                            yield f"data: {document([chunk_choice(update)])}\n\n"
            except OpenAIError as exc:
                outcome(ok=False)
                yield f"data: {exc.body.model_dump_json()}\n\n"
                yield "data: [DONE]\n\n"
                return
            outcome(ok=True)
            charge(shaper.usage)
            if include_usage:
                yield f"data: {document([], Usage(**shaper.usage))}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
    choices = [_Choice() for _ in prompts]
    try:
        async with aclosing(_updates(bridge, jobs, shaper)) as updates:
            async for update in updates:
                if update is not None:
                    choices[update.index].add(update)
    except OpenAIError:
        outcome(ok=False)
        raise
    outcome(ok=True)
    charge(shaper.usage)
    answer: ChatCompletion | Completion
    if chat:
        (choice,) = choices
        scored = ChoiceLogprobs(content=choice.chat) if shaper.chat_top is not None else None
        message = AssistantMessage(content="".join(choice.text))
        answer = ChatCompletion(
            id=ident,
            created=created,
            model=model_name,
            system_fingerprint=system_fingerprint,
            choices=[ChatChoice(message=message, finish_reason=choice.reason, logprobs=scored)],
            usage=Usage(**shaper.usage),
        )
    else:
        answer = Completion(
            id=ident,
            created=created,
            model=model_name,
            system_fingerprint=system_fingerprint,
            choices=[
                CompletionChoice(
                    index=index,
                    text="".join(choice.text),
                    finish_reason=choice.reason,
                    logprobs=merge(choice.legacy) if shaper.legacy is not None else None,
                )
                for index, choice in enumerate(choices)
            ],
            usage=Usage(**shaper.usage),
        )
    return JSONResponse(answer.model_dump(), headers=headers)


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    _check_ready_and_model(request, body.model)
    prompt_ids = await _chat_prompt(request, body.messages)
    return await _respond(request, body, [_Prompt(prompt_ids)])


async def _chat_prompt(request: Request, given: list[ChatMessage]) -> list[int]:
    """The messages as the tokenizer's chat template renders them, in token ids."""
    try:
        messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in given]
    except ValueError as exc:
        raise OpenAIError(400, str(exc), param="messages") from exc
    _check_prompt_size(request, sum(len(m["content"].encode()) for m in messages), "messages")
    return await _tokenizing(sum(len(m["content"]) for m in messages), engine_of(request).chat_prompt, messages)


@router.post("/admin/v1/chat/completions", response_model=ChatCompletion)
async def admin_chat_completions(body: ChatCompletionRequest, request: Request):
    """The chat route for loraplane, with the admin token: its gate prompts ask a version
    (``NAME@VERSION``) as a user would, where inference keys guard /v1 and the admin token is
    never one."""
    _check_admin(request)
    return await chat_completions(body, request)


@router.post("/admin/v1/completions", response_model=Completion)
async def admin_completions(body: CompletionRequest, request: Request):
    """The completions route for loraplane, with the admin token (as the chat one above)."""
    _check_admin(request)
    return await completions(body, request)


@router.post("/v1/completions", response_model=Completion)
async def completions(body: CompletionRequest, request: Request):
    _check_ready_and_model(request, body.model)
    engine, settings = engine_of(request), settings_of(request)
    given = body.prompts()
    if len(given) > settings.max_prompts_per_request:
        raise OpenAIError(
            400,
            f"the request holds {len(given)} prompts, more than the {settings.max_prompts_per_request} this server takes "
            "in one request (LORAPLANE_MAX_PROMPTS_PER_REQUEST); send them in several",
            param="prompt",
        )
    _check_prompt_size(request, sum(len(p.encode()) for p in given if isinstance(p, str)), "prompt")
    prompts = await _tokenizing(sum(len(p) for p in given), _prompts_of, engine, given, body.echo)
    return await _respond(request, body, prompts)


INLINE_TOKENIZING = 4096  # characters (or token ids) tokenized on the event loop: quicker than a hop


async def _tokenizing(size: int, fn: Callable[..., Any], *args: Any) -> Any:
    """A short prompt is tokenized here, at once (tens of microseconds): handing it to the
    thread pool costs a thread hop, and the GIL, more than that; a long one goes there so the
    event loop keeps answering."""
    if size <= INLINE_TOKENIZING:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _unknown_token(engine: Engine, ids: list[int]) -> tuple[int, int] | None:
    """The first id the model does not know, with its position: every route that takes token
    ids (prompts, logit_bias, /detokenize) checks them here."""
    return next(((position, token) for position, token in enumerate(ids) if not 0 <= token < engine.vocab_size), None)


def _vocabulary(engine: Engine) -> str:
    return f"the model's vocabulary (ids 0 to {engine.vocab_size - 1})"


def _prompts_of(engine: Engine, given: list[str | list[int]], echo: bool) -> list[_Prompt]:
    """Texts tokenized, token ids checked against the vocabulary; each with its echo."""
    prompts = []
    for index, prompt in enumerate(given):
        which = "the prompt" if len(given) == 1 else f"prompt {index}"
        if isinstance(prompt, str):
            ids = engine.encode(prompt)
            if not ids:
                raise OpenAIError(400, f"{which} is empty", param="prompt")
            prompts.append(_Prompt(ids, prompt if echo else None))
            continue
        unknown = _unknown_token(engine, prompt)
        if unknown is not None:
            position, token = unknown
            raise OpenAIError(400, f"{which} holds token id {token} at position {position}, outside {_vocabulary(engine)}", param="prompt")
        prompts.append(_Prompt(prompt, engine.tokenizer.decode(prompt, skip_special_tokens=False) if echo else None))
    return prompts


# --------------------------------------------------------------------------- tokenizer
# vLLM's tokenizer routes, which evaluation harnesses use to count and cut prompts in the
# model's own tokens (lm-eval's local-completions looks for them first).


def _tokenizer_of(request: Request) -> Any:
    engine = engine_of(request)
    if engine.tokenizer is None:
        raise OpenAIError(503, f"not ready: {readiness(engine)[1]}", type_="server_error", code="not_ready")
    return engine.tokenizer


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    _tokenizer_of(request)
    engine = engine_of(request)
    if (body.prompt is None) == (body.messages is None):
        raise OpenAIError(400, "give either prompt (a text) or messages (a chat), one of them", param="prompt")
    if body.prompt is not None:
        _check_prompt_size(request, len(body.prompt.encode()), "prompt")
        encode = partial(engine.encode, add_special_tokens=body.add_special_tokens)
        ids = await _tokenizing(len(body.prompt), encode, body.prompt)
    else:
        ids = await _chat_prompt(request, body.messages or [])
    strings = TokenTexts(engine.tokenizer).prompt(ids) if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=engine.context_length, tokens=ids, token_strs=strings)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    tokenizer, engine = _tokenizer_of(request), engine_of(request)
    unknown = _unknown_token(engine, body.tokens)
    if unknown is not None:
        raise OpenAIError(400, f"token id {unknown[1]} is outside {_vocabulary(engine)}", param="tokens")
    return DetokenizeResponse(prompt=tokenizer.decode(body.tokens, skip_special_tokens=False))


@router.get("/tokenizer_info", response_model=TokenizerInfo)
def tokenizer_info(request: Request) -> TokenizerInfo:
    tokenizer, engine = _tokenizer_of(request), engine_of(request)
    template = getattr(tokenizer, "chat_template", None)
    return TokenizerInfo(
        tokenizer_class=type(tokenizer).__name__,
        model_max_length=engine.context_length,
        vocab_size=engine.vocab_size,
        eos_token=tokenizer.eos_token,
        bos_token=tokenizer.bos_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
        chat_template=template if isinstance(template, str) else None,
    )
