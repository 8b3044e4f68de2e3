"""RFC 9457 problem details: the one place where errors become HTTP answers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from state.errors import (
    AlreadyExists,
    Conflict,
    InvalidChange,
    NotFound,
    PreconditionFailed,
    StateError,
)
from state.resource import DNS_LABEL

log = logging.getLogger("loraplane.api")

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """An error raised by a route, already knowing its status and words."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors, self.headers = errors, headers


class NotImplementedYet(ApiError):
    def __init__(self, feature: str, detail: str) -> None:
        super().__init__(501, f"{feature} is not available yet", detail)


_STATE_ERRORS: dict[type[StateError], tuple[int, str]] = {
    NotFound: (404, "Not found"),
    AlreadyExists: (409, "Already exists"),
    Conflict: (409, "Conflict"),
    PreconditionFailed: (412, "Precondition failed"),
    InvalidChange: (422, "Invalid change"),
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    412: "Precondition failed",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid resource",
    429: "Too many requests",
    500: "Internal server error",
    501: "Not implemented",
    503: "Service unavailable",
}


def problem_type(title: str) -> str:
    return "urn:loraplane:problem:" + title.lower().replace(" ", "-").replace("'", "")


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return problem_json(request.url.path, status, title, detail, errors=errors, headers=headers)


def problem_json(
    path: str,
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=problem_type(title),
        title=title,
        status=status,
        detail=detail,
        instance=path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def field_path(loc: tuple[Any, ...]) -> str:
    """('body', 'spec', 'azure', 'app') -> 'spec.azure.app', ('path', 'name') -> 'name': the
    field as the user wrote it, not where FastAPI found it; list indexes as [i]."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


# What to give, for the required fields a first manifest most often leaves out.
MISSING_HINTS = {
    "spec.model": "is required: the base model's folder under the share root, as {path: model-cache/microsoft/Phi-3-mini-4k-instruct}",
    "spec.model.path": "is required: the base model's folder under the share root, such as model-cache/microsoft/Phi-3-mini-4k-instruct",
}


# The rules of what a URL names, said in words rather than as the regular expression.
URL_RULES = {
    "name": "is not a deployment name: " + DNS_LABEL[1],
    "version": "is not an adapter version id: list them with 'loraplane adapters NAME'",
    "token_name": "is not a token name: lowercase letters, digits and '-', starting with a letter",
}


def _message(error: Mapping[str, Any], where: str = "") -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "is not a known field: check the spelling (fields are camelCase, e.g. settleSeconds)"
    if kind == "missing":
        return MISSING_HINTS.get(where, "is required")
    location = tuple(error.get("loc", ()))[:1]
    if kind == "string_pattern_mismatch" and location == ("path",) and where in URL_RULES:
        return f"{error.get('input')!r} {URL_RULES[where]}"
    message = str(error.get("msg", "is invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


def field_errors(errors: Sequence[Mapping[str, Any]], prefix: tuple[Any, ...] = ()) -> list[FieldError]:
    found = []
    for error in errors:
        where = field_path(prefix + tuple(error.get("loc", ())))
        found.append(FieldError(field=where, message=_message(error, where)))
    return found


def validation_problem(errors: list[FieldError]) -> ApiError:
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s), listed in 'errors')" if len(errors) > 1 else ""
    return ApiError(422, "Invalid resource", f"{first.field}: {first.message}{more}", errors=errors)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers)

    @app.exception_handler(StateError)
    async def _state_error(request: Request, exc: StateError) -> JSONResponse:
        status, title = next((v for k, v in _STATE_ERRORS.items() if isinstance(exc, k)), (409, "Conflict"))
        errors = None
        if isinstance(exc, InvalidChange):
            errors = [FieldError(field=f, message=m) for f, m in zip(exc.fields, exc.messages, strict=True)]
        return problem_response(request, status, title, exc.detail, errors=errors)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        bad_json = [e for e in raw if e.get("type") == "json_invalid"]
        if bad_json:
            ctx = bad_json[0].get("ctx") or {}
            return problem_response(
                request,
                400,
                "Bad request",
                f"the request body is not valid JSON ({ctx.get('error', 'parse error')}); "
                "send a JSON document (or use 'loraplane apply -f FILE' for YAML)",
            )
        problem = validation_problem(field_errors(raw))
        return problem_response(request, 422, problem.title, problem.detail, errors=problem.errors)

    @app.exception_handler(ValidationError)
    async def _model_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        problem = validation_problem(field_errors(exc.errors()))
        return problem_response(request, 422, problem.title, problem.detail, errors=problem.errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such path: {request.url.path}; see /docs for the API"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return problem_response(request, exc.status_code, title, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "Internal server error",
            "the server failed to handle this request; the error is in the server's log",
        )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problem+json answers a route can give."""
    return {
        status: {
            "model": Problem,
            "description": _TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
