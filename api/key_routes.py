"""/v1/deployments/{name}/keys: inference keys, who may call a deployment's model. Deployer
role or above for all of it; every change audited. The secret is in the answer to its creation
and nowhere else: the database keeps its hash, the share the hash and the limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from api.problems import problem_responses
from api.routes import Deployer, Name, reconciler_of, store_of
from state.keys import KeyStore
from state.models import KEY_NAME, InferenceKeyCreate, InferenceKeyCreated, InferenceKeyList, KeyUsage

router = APIRouter(prefix="/v1", tags=["inference keys"], responses=problem_responses(400, 401, 403, 413, 415, 429, 503))
KeyName = Annotated[str, Path(pattern=KEY_NAME, description="the key's name")]


def keys_of(request: Request) -> KeyStore:
    return KeyStore(store_of(request))


@router.post(
    "/deployments/{name}/keys",
    status_code=201,
    response_model=InferenceKeyCreated,
    response_model_exclude_none=True,
    responses=problem_responses(404, 409, 422),
    summary="Make an inference key: its secret is in this answer only",
)
async def create_key(name: Name, body: InferenceKeyCreate, request: Request, response: Response, caller: Deployer) -> InferenceKeyCreated:
    key, secret = await run_in_threadpool(keys_of(request).create, name, body, actor=caller.name)
    row = await run_in_threadpool(store_of(request).get, name)
    response.headers["Location"] = f"/v1/deployments/{name}/keys/{key.name}"
    public = key.to_public()
    return InferenceKeyCreated(**public.model_dump(), key=secret, endpoint=(row.status or {}).get("endpoint"))


@router.get(
    "/deployments/{name}/keys",
    response_model=InferenceKeyList,
    response_model_exclude_none=True,
    responses=problem_responses(404, 422),
    summary="List a deployment's inference keys, with what each one used",
)
def list_keys(name: Name, request: Request, caller: Deployer) -> InferenceKeyList:
    row = store_of(request).get(name)
    keys = keys_of(request).list(name)
    usage, note = reconciler_of(request).key_usage(row) if keys else ({}, None)
    items = [key.to_public(None if usage is None else usage.get(key.key_hash[:16], KeyUsage())) for key in keys]
    return InferenceKeyList(items=items, usage_note=note)


@router.delete(
    "/deployments/{name}/keys/{key}",
    status_code=204,
    responses=problem_responses(404, 422),
    summary="Revoke an inference key: refused by every replica within seconds, with no restart",
)
def revoke_key(name: Name, key: KeyName, request: Request, caller: Deployer) -> Response:
    keys_of(request).revoke(name, key, actor=caller.name)
    return Response(status_code=204)
