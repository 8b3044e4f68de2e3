"""Every Microsoft.App body the provider sends (create, update, adoption), replayed against the
Microsoft.App REST specification in ../shared/azure-specs: required properties present, enum
values known, types right, read-only properties not sent, create-only properties not changed,
and no property the specification does not have."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from azuresim.server import AzureSimulator
from infra.azure.provider import AzureProvider
from reconciler.core import Reconciler
from state.resource import DeploymentSpec
from state.store import DeploymentStore
from tests.infra.azure_world import NAME, RG, arm, create, drive, ready, status_of

SPECS = Path(__file__).resolve().parents[3] / "shared" / "azure-specs"
OPENAPI = SPECS / "app/resource-manager/Microsoft.App/ContainerApps/stable/2026-07-01/openapi.json"
# Which definition a body is, by the resource type its path names.
DEFINITIONS = {
    "containerApps": "ContainerApp",
    "managedEnvironments": "ManagedEnvironment",
    "storages": "ManagedEnvironmentStorage",
}


@cache
def _document(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _resolve(schema: dict[str, Any], file: Path) -> tuple[dict[str, Any], Path]:
    while "$ref" in schema:
        reference = schema["$ref"]
        location, _, pointer = reference.partition("#")
        file = (file.parent / location).resolve() if location else file
        node: Any = _document(file)
        for part in pointer.strip("/").split("/"):
            node = node[part]
        schema = node
    return schema, file


def _flatten(schema: dict[str, Any], file: Path) -> dict[str, Any]:
    """One schema from its allOf chain: properties (each with the file it is read in), required."""
    schema, file = _resolve(schema, file)
    merged: dict[str, Any] = {"properties": {}, "required": set(), "schema": schema}
    for part in schema.get("allOf") or []:
        inner = _flatten(part, file)
        merged["properties"].update(inner["properties"])
        merged["required"] |= inner["required"]
    for name, prop in (schema.get("properties") or {}).items():
        merged["properties"][name] = (prop, file)
    merged["required"] |= set(schema.get("required") or [])
    merged["additional"] = schema.get("additionalProperties")
    merged["file"] = file
    return merged


TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def problems(value: Any, schema: dict[str, Any], file: Path, where: str, *, partial: bool) -> list[str]:
    """What in ``value`` the schema refuses (``partial``: a PATCH, where required is not asked)."""
    found: list[str] = []
    schema, file = _resolve(schema, file)
    if schema.get("allOf") or schema.get("properties") or schema.get("type") == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        shape = _flatten(schema, file)
        if not partial:
            found += [f"{where}.{name}: required, not sent" for name in sorted(shape["required"]) if name not in value]
        for name, item in value.items():
            if name in shape["properties"]:
                prop, prop_file = shape["properties"][name]
                resolved, resolved_file = _resolve(prop, prop_file)
                if prop.get("readOnly") or resolved.get("readOnly"):
                    found.append(f"{where}.{name}: read-only, sent")
                    continue
                found += problems(item, prop, prop_file, f"{where}.{name}", partial=partial)
            elif isinstance(shape["additional"], dict):
                found += problems(item, shape["additional"], shape["file"], f"{where}.{name}", partial=partial)
            elif shape["additional"] is not True:
                found.append(f"{where}.{name}: not in the specification")
        return found
    kind = schema.get("type")
    if kind is not None and not isinstance(value, TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{where}: expected {kind}, got {type(value).__name__} {value!r}"]
    if kind == "array":
        for index, item in enumerate(value):
            found += problems(item, schema.get("items") or {}, file, f"{where}[{index}]", partial=partial)
    if "enum" in schema and str(value).lower() not in {str(e).lower() for e in schema["enum"]}:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    return found


def create_only_paths(schema: dict[str, Any], file: Path, prefix: tuple[str, ...] = (), depth: int = 0) -> list[tuple[str, ...]]:
    """Paths whose x-ms-mutability has create but not update."""
    if depth > 6:
        return []
    shape = _flatten(schema, file)
    found = []
    for name, (prop, prop_file) in shape["properties"].items():
        mutability = prop.get("x-ms-mutability")
        if mutability is not None and "create" in mutability and "update" not in mutability:
            found.append((*prefix, name))
        resolved, resolved_file = _resolve(prop, prop_file)
        if resolved.get("properties") or resolved.get("allOf"):
            found += create_only_paths(prop, prop_file, (*prefix, name), depth + 1)
    return found


def at(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        document = document.get(part) if isinstance(document, dict) else None
    return document


def sent_bodies(sim: AzureSimulator) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, resource id, definition, body) of every Microsoft.App write."""
    found = []
    for method, path, body in sim.state.written:
        if "/providers/microsoft.app/" not in path.lower():
            continue
        resource_type = re.split(r"/", path.rstrip("/"))[-2]
        found.append((method, path.lower(), DEFINITIONS[resource_type], body))
    return found


def check(sim: AzureSimulator) -> list[str]:
    found = []
    first: dict[str, dict[str, Any]] = {}
    for method, path, definition, body in sent_bodies(sim):
        schema = {"$ref": f"#/definitions/{definition}"}
        found += [f"{method} {path}: {problem}" for problem in problems(body, schema, OPENAPI, definition, partial=method == "PATCH")]
        if path in first:
            for create_only in create_only_paths(schema, OPENAPI):
                before, after = at(first[path], create_only), at(body, create_only)
                if after is not None and before is not None and str(before).lower() != str(after).lower():
                    found.append(f"{method} {path}: create-only {'.'.join(create_only)} changed from {before!r} to {after!r}")
        else:
            first[path] = body
    return found


def test_the_checker_catches_what_the_specification_forbids():
    app = {
        "location": "westus3",
        "properties": {"provisioningState": "Succeeded", "configuration": {"activeRevisionsMode": "Sometimes"}, "bogus": 1},
    }
    said = problems(app, {"$ref": "#/definitions/ContainerApp"}, OPENAPI, "ContainerApp", partial=False)
    assert "ContainerApp.properties.provisioningState: read-only, sent" in said
    assert any("activeRevisionsMode: 'Sometimes' is not one of" in s for s in said)
    assert "ContainerApp.properties.bogus: not in the specification" in said
    assert problems({"properties": {}}, {"$ref": "#/definitions/ContainerApp"}, OPENAPI, "ContainerApp", partial=False) == [
        "ContainerApp.location: required, not sent"
    ]
    profile = {"location": "x", "properties": {"workloadProfiles": [{"name": "gpu", "minimumCount": "zero"}]}}
    said = problems(profile, {"$ref": "#/definitions/ManagedEnvironment"}, OPENAPI, "ManagedEnvironment", partial=False)
    assert "ManagedEnvironment.properties.workloadProfiles[0].workloadProfileType: required, not sent" in said
    assert "ManagedEnvironment.properties.workloadProfiles[0].minimumCount: expected integer, got str 'zero'" in said
    assert ("properties", "managedEnvironmentId") in create_only_paths({"$ref": "#/definitions/ContainerApp"}, OPENAPI)


def test_every_body_sent_to_create_and_update_fits_the_specification(store: DeploymentStore, sim: AzureSimulator, provider: AzureProvider):
    create(store, sim)
    reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
    drive(reconciler, ready(store))
    row = store.get(NAME)
    spec = row.spec | {"scale": {"minReplicas": 0, "maxReplicas": 3}}
    store.replace(NAME, labels={}, spec=DeploymentSpec.model_validate(spec))
    drive(reconciler, lambda: status_of(store).phase == "Ready" and status_of(store).observed_generation == store.get(NAME).generation)
    methods = {(method, definition) for method, _, definition, _ in sent_bodies(sim)}
    assert {
        ("PUT", "ContainerApp"),
        ("PATCH", "ContainerApp"),
        ("PUT", "ManagedEnvironment"),
        ("PUT", "ManagedEnvironmentStorage"),
    } <= methods
    assert check(sim) == []


def test_every_body_sent_to_adopt_fits_the_specification(store: DeploymentStore, sim: AzureSimulator, provider: AzureProvider):
    groups, _, apps = arm(sim)
    groups.resource_groups.create_or_update(RG, {"location": "westus3"})
    apps.managed_environments.begin_create_or_update(
        RG,
        "team-env",
        {"location": "westus3", "properties": {"workloadProfiles": [{"name": "Consumption", "workloadProfileType": "Consumption"}]}},
    ).result()
    create(store, sim, environment="team-env")
    drive(Reconciler(store, {"azure": provider}, poll_seconds=0.1), ready(store))
    assert ("PATCH", "ManagedEnvironment") in {
        (method, definition) for method, _, definition, _ in sent_bodies(sim)
    }  # the profile it gained
    assert check(sim) == []


@pytest.mark.parametrize("definition", sorted(set(DEFINITIONS.values())))
def test_the_specification_has_what_the_checker_reads(definition: str):
    assert _flatten({"$ref": f"#/definitions/{definition}"}, OPENAPI)["properties"]
