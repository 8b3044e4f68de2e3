"""OpenAI-compatible wire models (the subset we serve) and the error body."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


def valid_text(value: str) -> str:
    """Text the tokenizer can take: JSON can carry a lone surrogate ("\\ud800"), which is no
    character and no UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"is not valid Unicode text: it holds a lone surrogate ({value[exc.start]!r}) at position {exc.start}") from exc
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Request(BaseModel):
    # Fields we do not know are accepted (clients send vendor extensions, as vLLM accepts them)
    # and named in one log line (``unknown_fields``); fields we know but cannot honour are a
    # 400 that names them, rather than an answer that quietly ignores them.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    # vLLM's extension: no end-of-sequence before this many tokens.
    min_tokens: int = Field(default=0, ge=0)
    # OpenAI's, with nothing to do here: accepted as they are.
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"is {value}: this server gives one choice per request (n=1); send the request {value} times instead")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"has the key {token!r}: keys are token ids (as strings of digits)")
            if not -100 <= bias <= 100:
                raise ValueError(f"gives token {token} the bias {bias}: biases run from -100 to 100")
        return value

    @property
    def token_bias(self) -> dict[int, float]:
        return {int(token): bias for token, bias in (self.logit_bias or {}).items()}

    @property
    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return [valid_text(s) for s in stops]

    @property
    def stop_sequences(self) -> list[str]:
        """``stop`` as the list the validator made of it (none: an empty list)."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def asked_tokens(self) -> int | None:
        """The completion's length the request asks for, if it asks (0 is an answer: score
        the prompt, generate nothing)."""
        for asked in (self.max_completion_tokens, self.max_tokens):
            if asked is not None:
                return asked
        return None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _valid_content(cls, value: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(value, str):
            valid_text(value)
        elif value is not None:
            for part in value:
                if isinstance(part.get("text"), str):
                    valid_text(part["text"])
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        # Content parts: only text parts exist for a text model.
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


MAX_LOGPROBS = 20  # alternatives per token, as OpenAI allows


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    # Known, and not something a text model behind this server can do: named in a 400.
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("this server does not call tools or functions: leave them out")
        return value

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none", "auto"):
            raise ValueError("this server does not call tools or functions: leave it out")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError(f"{value.get('type')!r} is not supported: this server answers in plain text (type 'text')")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true as well")
        return value


PROMPT_FORMS = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class CompletionRequest(_Request):
    # All four forms OpenAI's completions API takes; a list of them is a batch of prompts.
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=0)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    # Known, and not done here: named in a 400.
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("inserting text before a suffix is not supported: leave suffix out")
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError(f"is {value}: this server generates one completion per prompt (best_of=1)")
        return value

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_forms(cls, value: Any) -> Any:
        """The four forms, with a message that says which part of which prompt is wrong
        (the union's own errors list every form it tried)."""
        if isinstance(value, str):
            return valid_text(value)
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be {PROMPT_FORMS}, and not empty")
        if all(isinstance(item, str) for item in value):
            for index, text in enumerate(value):
                try:
                    valid_text(text)
                except ValueError as exc:
                    raise ValueError(f"prompt {index} {exc}") from None
            return value
        if all(isinstance(item, list) for item in value):
            for index, ids in enumerate(value):
                if not ids:
                    raise ValueError(f"prompt {index} is an empty list of token ids")
                _check_token_ids(ids, f"prompt {index}")
            return value
        if any(isinstance(item, (str, list)) for item in value):
            raise ValueError(f"mixes forms: it must be {PROMPT_FORMS}")
        _check_token_ids(value, "the prompt")
        return value

    def prompts(self) -> list[str | list[int]]:
        """One entry per choice: a text or a list of token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]  # one prompt: a text or a list of ids
        return list(self.prompt)  # type: ignore[arg-type]  # a list of texts or of id lists


def _check_token_ids(ids: list[Any], what: str) -> None:
    for position, token in enumerate(ids):
        if not _is_token_id(token):
            raise ValueError(f"{what} holds {token!r} at position {position}: token ids are integers from 0 up")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """Chat completions' logprobs: one entry per generated token."""

    content: list[TokenLogprob] | None


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: parallel lists, one entry per token (prompt tokens too,
    with echo; the first prompt token has no logprob)."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "loraplane"
    root: str | None = None
    parent: str | None = None
    adapter_version: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadedVersion(BaseModel):
    """A version loaded beside the one serving (a version being gated, the one before it, a
    canary): asked for as ``NAME@VERSION``, or (the canary) by its share of the requests."""

    version: str
    resident: bool
    error: str | None = None  # why it could not be loaded, when it could not


class CanaryState(BaseModel):
    version: str
    weight: int  # percent of the adapter's requests


class VersionFigures(BaseModel):
    """Users' requests a version answered in this process (gate prompts not counted)."""

    requests: int
    errors: int
    seconds: float  # their time summed, admission to last token


class AdapterState(BaseModel):
    """One adapter, by the name clients ask for it by (the ``model`` of a request)."""

    name: str
    version: str | None  # what new requests for it get
    fingerprint: str | None
    path: str | None
    loaded_at: str | None
    resident: bool  # its weights are in the model now (else they load on its next request)
    last_error: str | None
    draining: list[str]
    loaded: list[LoadedVersion] = []
    canary: CanaryState | None = None
    traffic: dict[str, VersionFigures] = {}


class AdapterInfo(BaseModel):
    """The default adapter's fields (the first listed: what a request naming no model gets),
    and every adapter's in ``adapters``."""

    version: str | None
    fingerprint: str | None
    path: str | None
    loaded_at: str | None
    base_only: bool
    last_error: str | None
    draining: list[str]
    adapters: list[AdapterState] = []


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize, which evaluation harnesses use: a text or chat messages."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    # vLLM adds special tokens by default; here the default is what /v1/completions does
    # with a text prompt, so the count is what a completion of that text is charged.
    add_special_tokens: bool = False
    return_token_strs: bool = False

    @field_validator("prompt")
    @classmethod
    def _valid_prompt(cls, value: str | None) -> str | None:
        return valid_text(value) if value is not None else None


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    tokenizer_class: str
    model_max_length: int
    vocab_size: int
    eos_token: str | None
    bos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
