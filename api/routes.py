"""The /v1 routes. Thin: parse, call the store, answer with a response model.

The deployment routes are coroutines that hand their database work to the thread pool in one
call: a plain ``def`` route costs a second hop to the pool just to check its answer, and under
load every hop is a wait for the GIL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Identity, require
from api.problems import (
    ApiError,
    FieldError,
    NotImplementedYet,
    field_errors,
    problem_responses,
    validation_problem,
)
from api.views import PublicViews
from api.watch import WatchHub
from infra.errors import PermanentError
from infra.provider import Target
from reconciler.core import Reconciler, target_of
from reconciler.planning import Plan, dry_run
from state.access import AccessStore
from state.errors import Conflict, InvalidChange, NotFound, PreconditionFailed
from state.models import (
    AdapterVersionList,
    AdapterVersionPublic,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenList,
    AuditEventList,
    EventList,
    InferenceDeployment,
    InferenceDeploymentCreate,
    InferenceDeploymentList,
    InferenceDeploymentPublic,
    InferenceDeploymentUpdate,
    UsageLine,
    UsageList,
)
from state.resource import AS_STORED, DNS_LABEL, DeploymentSpec, DeploymentStatus
from state.selectors import parse_selector
from state.store import DeploymentStore, check_change

# What the middleware in front of every route may answer instead of it (api.guard and
# api.admission): a body too large, not JSON, ambiguous or too deep; too many requests; a
# process shutting down.
router = APIRouter(prefix="/v1", tags=["deployments"], responses=problem_responses(400, 413, 415, 429, 503))

NAME_PATTERN = f"^{DNS_LABEL[0]}$"
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="metadata.name: " + DNS_LABEL[1])]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="the ETag (resourceVersion) you read; the write fails with 412 if stale",
    ),
]
MERGE_PATCH = "application/merge-patch+json"


Viewer = Annotated[Identity, Depends(require("viewer"))]
Deployer = Annotated[Identity, Depends(require("deployer"))]
Admin = Annotated[Identity, Depends(require("admin"))]


def store_of(request: Request) -> DeploymentStore:
    return request.app.state.store


def etag(row: InferenceDeployment) -> str:
    return f'"{row.resource_version}"'


def expected_version(if_match: str | None) -> int | None:
    """If-Match as a resourceVersion; '*' means any."""
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit() or len(value) > 18:
        raise PreconditionFailed(f"If-Match {if_match!r} is not a version this server issued; send the ETag from a GET of the deployment")
    return int(value)


def views_of(request: Request) -> PublicViews:
    return request.app.state.views


def _answer(request: Request, response: Response, row: InferenceDeployment) -> InferenceDeploymentPublic:
    response.headers["ETag"] = etag(row)
    return row.to_public()  # a write's answer: made once, for its one reader


def admitted(request: Request, spec: DeploymentSpec) -> DeploymentSpec:
    """The spec, if its target's policy allows it (the operator's allowed share roots); else a
    422 naming the field, before anything is stored or looked at on its behalf."""
    refused = reconciler_of(request).admit(spec)
    if refused:
        raise validation_problem([FieldError(field=field, message=why) for field, why in refused])
    return spec


def _check_name(path_name: str, body_name: str) -> None:
    if path_name != body_name:
        raise ApiError(
            422,
            "Invalid resource",
            f"metadata.name ({body_name!r}) does not match the name in the URL ({path_name!r}); a deployment cannot be renamed",
        )


@router.post(
    "/deployments",
    status_code=201,
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses=problem_responses(400, 409, 422),
    summary="Create a deployment",
)
async def create_deployment(
    body: InferenceDeploymentCreate, request: Request, response: Response, caller: Deployer
) -> InferenceDeploymentPublic:
    admitted(request, body.spec)
    row = await run_in_threadpool(store_of(request).create, body, owner=caller.name, actor=caller.name)
    response.headers["Location"] = f"/v1/deployments/{row.name}"
    return _answer(request, response, row)


# Free text a client filters by: no control characters (PostgreSQL's text refuses NUL outright).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
WATCH_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "with watch: ADDED, MODIFIED and DELETED events as they happen",
    }
}
Watch = Annotated[bool, Query(description="stream changes as server-sent events instead of answering once")]
TimeoutSeconds = Annotated[int, Query(alias="timeoutSeconds", ge=1, le=3600, description="with watch: end the stream after this long")]


@router.get(
    "/deployments",
    response_model=InferenceDeploymentList,
    response_model_exclude_none=True,
    responses={**WATCH_RESPONSE, **problem_responses(400, 422, 429)},
    summary="List deployments (or watch them change)",
)
async def list_deployments(
    request: Request,
    caller: Viewer,
    watch: Watch = False,
    timeout_seconds: TimeoutSeconds = 1800,
    label: Annotated[
        list[str] | None,
        Query(
            max_length=20,
            description="label selector such as team=support, tier!=dev, canary or !legacy; "
            "comma-separated or repeated terms must all hold",
        ),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="page size")] = None,
    continue_: Annotated[
        str | None,
        Query(alias="continue", max_length=512, description="token from the previous page"),
    ] = None,
) -> InferenceDeploymentList | Response:
    try:
        requirements = [req for text in label or [] for req in parse_selector(text)]
        if watch:
            hub = watches_of(request)
            return _stream(hub.stream(hub.open(caller.name, requirements=requirements), timeout_seconds))
        return await run_in_threadpool(_list_page, request, requirements, limit, continue_)
    except ValueError as exc:
        raise ApiError(400, "Bad request", str(exc)) from exc


LIST_HEAD = b'{"apiVersion":"loraplane/v1","kind":"InferenceDeploymentList","items":['


def _list_page(request: Request, requirements: list, limit: int | None, continue_: str | None) -> Response:
    """The page as JSON, each item's text as this replica made it for that resourceVersion
    (api.views): only the deployments it has not seen at their version are read whole. The
    same document as the response model would give; answered as bytes, so FastAPI neither
    validates nor serializes it again."""
    store, views = store_of(request), views_of(request)
    found, token = store.list_versions(requirements, limit=limit, continue_token=continue_)
    texts = {name: views.cached_json(uid, version) for name, uid, version in found}
    missing = store.rows([name for name, text in texts.items() if text is None])
    # A deployment gone between the two reads is left out, as if listed a moment later.
    items = [text or views.json_of(missing[name]) for name, text in texts.items() if text is not None or name in missing]
    tail = b"]}" if token is None else b'],"continue":' + json.dumps(token).encode() + b"}"
    return Response(LIST_HEAD + b",".join(items) + tail, media_type="application/json")


def watches_of(request: Request) -> WatchHub:
    return request.app.state.watches


def _stream(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get(
    "/deployments/{name}",
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses={**WATCH_RESPONSE, **problem_responses(404, 422, 429)},
    summary="Read a deployment (or watch it change)",
)
async def get_deployment(
    name: Name, request: Request, caller: Viewer, watch: Watch = False, timeout_seconds: TimeoutSeconds = 1800
) -> InferenceDeploymentPublic | Response:
    if watch:
        await run_in_threadpool(store_of(request).get, name)  # a 404 for no such deployment
        hub = watches_of(request)
        return _stream(hub.stream(hub.open(caller.name, name=name), timeout_seconds))
    return await run_in_threadpool(_one, request, name)


def _one(request: Request, name: str) -> Response:
    """As ``_list_page``: the text this replica made for the deployment's resourceVersion, the
    row read whole only when it has none."""
    store, views = store_of(request), views_of(request)
    uid, version = store.version_of(name)
    text = views.cached_json(uid, version)
    if text is None:
        row = store.get(name)
        text, version = views.json_of(row), row.resource_version
    return Response(text, media_type="application/json", headers={"ETag": f'"{version}"'})


@router.put(
    "/deployments/{name}",
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses=problem_responses(400, 404, 409, 412, 422),
    summary="Replace a deployment's labels and spec",
)
async def replace_deployment(
    name: Name,
    body: InferenceDeploymentCreate,
    request: Request,
    response: Response,
    caller: Deployer,
    if_match: IfMatch = None,
) -> InferenceDeploymentPublic:
    _check_name(name, body.metadata.name)
    admitted(request, body.spec)
    expected = expected_version(if_match)
    if expected is None and body.metadata.resource_version is not None:
        expected = expected_version(body.metadata.resource_version)
    row, _ = await run_in_threadpool(
        store_of(request).replace,
        name,
        labels=body.metadata.labels,
        spec=body.spec,
        expected_version=expected,
        actor=caller.name,
    )
    return _answer(request, response, row)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _patched(row: InferenceDeployment, patch: dict[str, Any]) -> tuple[dict[str, str], DeploymentSpec]:
    current = {
        "apiVersion": "loraplane/v1",
        "kind": "InferenceDeployment",
        "metadata": {"name": row.name, "labels": dict(row.labels)},
        "spec": row.spec,
    }
    merged = merge_patch(current, patch)
    unknown = sorted(set(merged) - {"apiVersion", "kind", "metadata", "spec"})
    if unknown:
        raise validation_problem(field_errors([{"loc": (k,), "type": "extra_forbidden"} for k in unknown]))
    if "metadata" not in merged:  # {"metadata": null} removes it: a deployment has metadata
        raise validation_problem([FieldError(field="metadata", message="cannot be removed: patch metadata.labels instead")])
    metadata = merged["metadata"]
    if not isinstance(metadata, dict):
        raise validation_problem([FieldError(field="metadata", message='must be an object, such as {"labels": {"team": "support"}}')])
    if metadata.get("name", row.name) != row.name:
        _check_name(row.name, str(metadata.get("name")))
    extra_meta = sorted(set(metadata) - {"name", "labels"})
    if extra_meta:
        raise validation_problem([*field_errors([{"loc": ("metadata", k), "type": "extra_forbidden"} for k in extra_meta])])
    try:
        body = InferenceDeploymentCreate.model_validate({**merged, "metadata": {"name": row.name, "labels": metadata.get("labels", {})}})
    except ValidationError as exc:
        raise validation_problem(field_errors(exc.errors())) from exc
    return body.metadata.labels, body.spec


async def merge_patch_document(request: Request) -> dict[str, Any]:
    """The PATCH body: a JSON object sent as a merge patch (plain JSON is accepted too)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (MERGE_PATCH, "application/json"):
        raise ApiError(
            415,
            "Unsupported media type",
            f"PATCH takes a JSON merge patch: send Content-Type {MERGE_PATCH}",
        )
    try:
        document = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Bad request", f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ApiError(422, "Invalid resource", "a merge patch must be a JSON object")
    return document


@router.patch(
    "/deployments/{name}",
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses=problem_responses(400, 404, 409, 412, 415, 422),
    summary="Change a deployment with a JSON merge patch (RFC 7396)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                MERGE_PATCH: {"schema": InferenceDeploymentUpdate.model_json_schema(by_alias=True)},
                "application/json": {"schema": InferenceDeploymentUpdate.model_json_schema(by_alias=True)},
            },
        }
    },
)
async def patch_deployment(
    name: Name,
    request: Request,
    response: Response,
    document: Annotated[dict[str, Any], Depends(merge_patch_document)],
    caller: Deployer,
    if_match: IfMatch = None,
) -> InferenceDeploymentPublic:
    row = await run_in_threadpool(_apply_patch, request, name, document, expected_version(if_match), caller)
    return _answer(request, response, row)


def _apply_patch(request: Request, name: str, document: dict[str, Any], expected: int | None, caller: Identity) -> InferenceDeployment:
    # Without If-Match the patch applies to whatever is current: re-read and re-merge if
    # another writer got in between, rather than failing a client that asked for no check.
    store = store_of(request)
    for _attempt in range(5):
        row = store.get(name)
        labels, spec = _patched(row, document)
        admitted(request, spec)
        try:
            row, _ = store.replace(
                name,
                labels=labels,
                spec=spec,
                expected_version=expected if expected is not None else row.resource_version,
                actor=caller.name,
            )
        except PreconditionFailed:
            if expected is not None:
                raise
            continue
        return row
    raise ApiError(409, "Conflict", f"deployment {name!r} kept changing; try the patch again")


@router.delete(
    "/deployments/{name}",
    status_code=202,
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses=problem_responses(404, 412, 422),
    summary="Delete a deployment: its resources are torn down, then it is gone",
)
async def delete_deployment(
    name: Name, request: Request, response: Response, caller: Deployer, if_match: IfMatch = None
) -> InferenceDeploymentPublic:
    row = await run_in_threadpool(store_of(request).request_deletion, name, expected_version=expected_version(if_match), actor=caller.name)
    return _answer(request, response, row)


@router.get(
    "/deployments/{name}/events",
    response_model=EventList,
    responses=problem_responses(404, 422),
    summary="What happened to a deployment, newest first",
)
def list_events(
    name: Name,
    request: Request,
    caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> EventList:
    events = store_of(request).list_events(name, limit=limit)
    return EventList(items=[event.to_public() for event in events])


# ------------------------------------------------------------------------------ dry runs


def reconciler_of(request: Request) -> Reconciler:
    return request.app.state.reconciler


@router.post(
    "/deployments/{name}/plan",
    response_model=Plan,
    response_model_exclude_none=True,
    responses=problem_responses(404, 422),
    summary="Dry run: what the reconciler would do for this deployment now; changes nothing",
)
def plan_deployment(name: Name, request: Request, caller: Viewer) -> Plan:
    row = store_of(request).get(name)
    return dry_run(reconciler_of(request), target_of(row), deleting=row.deletion_timestamp is not None)


@router.post(
    "/plan",
    response_model=Plan,
    response_model_exclude_none=True,
    responses=problem_responses(400, 422),
    summary="Dry run: what the reconciler would do if this manifest were applied; changes nothing",
)
def plan_manifest(body: InferenceDeploymentCreate, request: Request, caller: Viewer) -> Plan:
    name = body.metadata.name
    spec = admitted(request, body.spec).with_defaults(name)
    try:
        current = store_of(request).get(name)
        uid, generation = current.uid, current.generation
    except NotFound:
        uid, generation = "", 0
    else:
        check_change(current.spec, spec.wire())  # the 422 apply would give: plan says the same
    target = Target(name=name, uid=uid, generation=generation, spec=spec)
    return dry_run(reconciler_of(request), target)


# ------------------------------------------------------------------------------------ logs


@router.get(
    "/deployments/{name}/logs",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problem_responses(404, 422, 501),
    },
    summary="The last lines of the serving app's log",
)
def deployment_logs(
    name: Name,
    request: Request,
    caller: Viewer,
    tail: Annotated[int, Query(ge=1, le=10000, description="how many lines")] = 100,
) -> PlainTextResponse:
    try:
        text = reconciler_of(request).logs(name, tail)
    except PermanentError as exc:
        raise NotImplementedYet("Logs", exc.message) from exc
    return PlainTextResponse(text + ("\n" if text and not text.endswith("\n") else ""))


# -------------------------------------------------------------------------------- adapters

VersionPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="an adapter version id")]
AdapterPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="an adapter's name (the model id)")]


def _adapter_named(row_name: str, spec: DeploymentSpec, adapter: str) -> None:
    names = [entry.name for entry in spec.adapter_entries(row_name)]
    if adapter not in names:
        raise NotFound(f"deployment {row_name!r} has no adapter {adapter!r}; its adapters are: {', '.join(names)}")


@router.get(
    "/deployments/{name}/adapters",
    response_model=AdapterVersionList,
    response_model_exclude_none=True,
    responses=problem_responses(404, 422),
    summary="Adapter version history, newest first, of every adapter or of one: staged, active, superseded, rejected, failed",
)
def list_adapters(
    name: Name,
    request: Request,
    caller: Viewer,
    adapter: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="only this adapter's versions")] = None,
) -> AdapterVersionList:
    store = store_of(request)
    row = store.get(name)
    if adapter is not None:
        _adapter_named(row.name, DeploymentSpec.model_validate(row.spec, context=AS_STORED), adapter)
    return AdapterVersionList(items=[v.to_public() for v in store.adapter_versions(row.uid, adapter)])


@router.post(
    "/deployments/{name}/adapters/{version}/activate",
    status_code=202,
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 422),
    summary="Pin an adapter version (its adapter's pin): roll forward or back to it",
)
def activate_adapter(name: Name, version: VersionPath, request: Request, response: Response, caller: Deployer) -> InferenceDeploymentPublic:
    return _pin(request, response, caller, name, None, version)


@router.post(
    "/deployments/{name}/adapters/{adapter}/versions/{version}/activate",
    status_code=202,
    response_model=InferenceDeploymentPublic,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 422),
    summary="Pin a version of one adapter (spec.adapters[].pin): roll that adapter forward or back to it",
)
def activate_adapter_version(
    name: Name, adapter: AdapterPath, version: VersionPath, request: Request, response: Response, caller: Deployer
) -> InferenceDeploymentPublic:
    return _pin(request, response, caller, name, adapter, version)


CanaryDecision = Annotated[Literal["promote", "abort"], Path(description="promote (serve it to everyone now) or abort (roll it back)")]


@router.post(
    "/deployments/{name}/canary/{decision}",
    status_code=202,
    response_model=AdapterVersionPublic,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 422),
    summary="End the canary of a deployment's one adapter early: promote it, or abort it (roll it back)",
)
def decide_canary(name: Name, decision: CanaryDecision, request: Request, caller: Deployer) -> AdapterVersionPublic:
    row = store_of(request).get(name)
    entries = DeploymentSpec.model_validate(row.spec, context=AS_STORED).adapter_entries(row.name)
    if len(entries) > 1:
        listed = ", ".join(e.name for e in entries)
        raise InvalidChange(
            f"deployment {name!r} serves several adapters ({listed}): say which, POST /v1/deployments/{name}/adapters/ADAPTER/canary/{decision}",
            ["adapter"],
            [f"name one of {listed}"],
        )
    return store_of(request).decide_canary(name, entries[0].name, decision, actor=caller.name).to_public()


@router.post(
    "/deployments/{name}/adapters/{adapter}/canary/{decision}",
    status_code=202,
    response_model=AdapterVersionPublic,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 422),
    summary="End one adapter's canary early: promote it, or abort it (roll it back)",
)
def decide_adapter_canary(
    name: Name, adapter: AdapterPath, decision: CanaryDecision, request: Request, caller: Deployer
) -> AdapterVersionPublic:
    row = store_of(request).get(name)
    _adapter_named(row.name, DeploymentSpec.model_validate(row.spec, context=AS_STORED), adapter)
    return store_of(request).decide_canary(name, adapter, decision, actor=caller.name).to_public()


def _pin(request: Request, response: Response, caller: Identity, name: str, adapter: str | None, version: str) -> InferenceDeploymentPublic:
    store = store_of(request)
    for _attempt in range(5):
        row = store.get(name)
        spec = DeploymentSpec.model_validate(row.spec)
        if adapter is not None:
            _adapter_named(row.name, spec, adapter)
        found = store.adapter_version(row.uid, version)
        if found is None or (adapter is not None and found.adapter != adapter):
            whose = f"adapter {adapter!r} of deployment {name!r}" if adapter is not None else f"deployment {name!r}"
            raise NotFound(f"{whose} has no adapter version {version!r}; list them with GET /v1/deployments/{name}/adapters")
        if found.state == "Rejected":
            raise Conflict(f"adapter version {version!r} was rejected and cannot serve: {found.message}")
        if spec.adapters is None:
            spec.adapter.pin = version
        else:
            entry = next((e for e in spec.adapters if e.name == found.adapter), None)
            if entry is None:
                raise Conflict(f"adapter version {version!r} is of adapter {found.adapter!r}, which is no longer in spec.adapters")
            entry.pin = version
        try:
            row, _ = store.replace(
                name, labels=row.labels, spec=spec, expected_version=row.resource_version, actor=caller.name, action="activate"
            )
        except PreconditionFailed:
            continue
        return _answer(request, response, row)
    raise ApiError(409, "Conflict", f"deployment {name!r} kept changing; try again")


# ----------------------------------------------------------------------------- GPU usage


@router.get(
    "/usage",
    response_model=UsageList,
    response_model_exclude_none=True,
    responses=problem_responses(404, 422),
    summary="GPU-hours today and this month, and the estimated cost, of every deployment (or one)",
)
def list_usage(
    request: Request,
    caller: Viewer,
    name: Annotated[str | None, Query(pattern=DNS_LABEL[0], max_length=32, description="only this deployment")] = None,
) -> UsageList:
    store = store_of(request)
    rows = [store.get(name)] if name is not None else store.list()[0]
    lines = []
    for row in rows:
        spec = DeploymentSpec.model_validate(row.spec, context=AS_STORED)
        status = DeploymentStatus.model_validate(row.status)
        cost = status.cost
        budget = cost.budget if cost is not None else None
        lines.append(
            UsageLine(
                name=row.name,
                target=spec.target,
                profile=spec.azure.workload_profile.type if spec.azure is not None else "local",
                replicas=cost.replicas if cost is not None else None,
                gpu_hours_today=cost.gpu_hours_today if cost is not None else 0.0,
                gpu_hours_this_month=cost.gpu_hours_this_month if cost is not None else 0.0,
                estimated_cost_this_month=cost.estimated_cost_this_month if cost is not None else None,
                currency=cost.currency if cost is not None else None,
                budget=f"{budget.used:.4g} of {budget.limit} ({budget.fraction:.0%}): {budget.state}" if budget is not None else None,
            )
        )
    return UsageList(items=lines, prices=reconciler_of(request).metering.prices.source)


# ---------------------------------------------------------------------------- tokens, audit


def access_of(request: Request) -> AccessStore:
    return request.app.state.access


@router.post(
    "/tokens",
    status_code=201,
    response_model=ApiTokenCreated,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 409, 422),
    summary="Make a bearer token: its secret is in this answer and nowhere else, ever",
)
def create_token(body: ApiTokenCreate, request: Request, caller: Admin) -> ApiTokenCreated:
    row, secret = access_of(request).create_token(body.name, body.role, actor=caller.name)
    return ApiTokenCreated(**row.to_public().model_dump(), token=secret)


@router.get(
    "/tokens",
    response_model=ApiTokenList,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403),
    summary="The tokens, by holder and role (never their secrets)",
)
def list_tokens(request: Request, caller: Admin) -> ApiTokenList:
    return ApiTokenList(items=[row.to_public() for row in access_of(request).tokens()])


@router.delete(
    "/tokens/{token_name}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 422),
    summary="Revoke a token: refused at once by this replica, within a second by the others",
)
def revoke_token(token_name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,62}$")], request: Request, caller: Admin) -> Response:
    access_of(request).revoke_token(token_name, actor=caller.name)
    authenticator = request.app.state.authenticator
    if authenticator is not None:  # refused here at once; other replicas within their cache's time
        authenticator.forget(token_name)
    watches_of(request).close_holder(token_name)  # what it is watching stops now
    return Response(status_code=204)


@router.get(
    "/audit",
    response_model=AuditEventList,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422),
    summary="Who changed what and when, newest first",
)
def list_audit(
    request: Request,
    caller: Viewer,
    actor: Annotated[str | None, Query(max_length=63, pattern=NO_CONTROL_CHARACTERS, description="a token's name")] = None,
    resource: Annotated[
        str | None, Query(max_length=128, pattern=NO_CONTROL_CHARACTERS, description="e.g. deployment/support-bot or token/alice")
    ] = None,
    action: Annotated[
        str | None,
        Query(max_length=32, pattern=NO_CONTROL_CHARACTERS, description="create, update, delete, activate, token.create, token.revoke"),
    ] = None,
    since: Annotated[datetime | None, Query(description="only changes at or after this time (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditEventList:
    if since is not None:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
        try:
            since = since.astimezone(UTC)
        except OverflowError as exc:  # 0001-01-01T00:00:00+14:00 is before the first instant there is
            raise validation_problem(
                [FieldError(field="since", message="is out of range: give a time from year 1 to 9999 that is valid in UTC")]
            ) from exc
    rows = access_of(request).audit(actor=actor, resource=resource, action=action, since=since, limit=limit)
    return AuditEventList(items=[row.to_public() for row in rows])
