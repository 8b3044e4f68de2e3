"""The pure parts of "what Azure should hold": the serving container every app runs, the tags
that mark what loraplane made, and how a desired body is compared with what Azure shows
(drift) and merged into what someone else made (adoption). No Azure calls here."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from azure.mgmt.appcontainers import models as aca

from infra.provider import Target, keys_path, pointer_path

SHARE_MOUNT = "/mount"  # where the AI Toolkit's inference container sees the share
SERVING_PORT = 7860
ADMIN_TOKEN_SECRET = "loraplane-admin-token"
SHARE_VOLUME = "share"
# A public PyTorch CUDA runtime image, as the AI Toolkit's "Deploy for inference" uses; the
# serving app is installed into it at start from a wheel on the share. A team's prebuilt
# serving image (spec.azure.image, from its registry) installs nothing.
DEFAULT_IMAGE = "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
DIST_FOLDER = ".loraplane/dist"
WHEEL_PREFIX = "loraplane_serving-"

Path = tuple[str, ...]
# Lists compared by the ``name`` of their items, and only for the items loraplane sends: an
# environment may hold other teams' workload profiles besides ours.
NAMED_SUBSET_LISTS = {"workloadProfiles"}


@dataclass(frozen=True)
class DesiredResource:
    kind: str  # the kind's name: ResourceGroup, StorageAccount, … ContainerApp
    name: str
    id: str
    body: dict[str, Any]  # the REST body a PUT sends (camelCase), without secrets
    drift_paths: tuple[Path, ...]  # fields that, when they differ from Azure's, mean drift
    # What an adopted resource (someone else's) is held to: what the deployment needs of it.
    adopted_drift_paths: tuple[Path, ...] | None = None

    def paths(self, *, adopted: bool) -> tuple[Path, ...]:
        return self.adopted_drift_paths if adopted and self.adopted_drift_paths is not None else self.drift_paths


def loraplane_tags(deployment: str) -> dict[str, str]:
    return {"managed-by": "loraplane", "loraplane-deployment": deployment}


def owned_by_tags(observed: dict[str, Any] | None, deployment: str) -> bool:
    tags = (observed or {}).get("tags") or {}
    return all(tags.get(k) == v for k, v in loraplane_tags(deployment).items())


# ------------------------------------------------------------------------ the serving container

# Probe bounds, from the Microsoft.App REST specification's ContainerAppProbe: initialDelaySeconds
# 1-60, periodSeconds 1-240, timeoutSeconds 1-240, failureThreshold 1-10, successThreshold 1 for
# startup and liveness. (The health-probes page shows defaults past these bounds, e.g. a
# failureThreshold of 240; the specification is the stricter reading.)
# A GPU replica pulls a large image and installs the serving app (or starts a prebuilt one):
# /healthz answers once the HTTP server is up, before the model is loaded, so the startup probe
# covers only that: up to 10 + 10 x 60 s. Loading the model is what /readyz waits for, and a
# failing readiness probe takes the replica out of traffic without restarting it.
PROBES = (
    aca.ContainerAppProbe(
        type="Startup",
        http_get=aca.ContainerAppProbeHttpGet(path="/healthz", port=SERVING_PORT),
        initial_delay_seconds=10,
        period_seconds=60,
        failure_threshold=10,
        timeout_seconds=5,
    ),
    aca.ContainerAppProbe(
        type="Readiness",
        http_get=aca.ContainerAppProbeHttpGet(path="/readyz", port=SERVING_PORT),
        initial_delay_seconds=5,
        period_seconds=10,
        failure_threshold=3,
        timeout_seconds=5,
    ),
    aca.ContainerAppProbe(
        type="Liveness",
        http_get=aca.ContainerAppProbeHttpGet(path="/healthz", port=SERVING_PORT),
        initial_delay_seconds=10,
        period_seconds=30,
        failure_threshold=5,
        timeout_seconds=5,
    ),
)


def serving_env(target: Target) -> list[aca.EnvironmentVar]:
    spec = target.spec
    values = {
        "LORAPLANE_SHARE_ROOT": SHARE_MOUNT,
        "LORAPLANE_MODEL_PATH": spec.model.path,
        "LORAPLANE_ADAPTER_PATH": spec.adapter.path,
        "LORAPLANE_ADAPTER_POINTER": pointer_path(target.name, target.uid),
        "LORAPLANE_HOST": "0.0.0.0",
        "LORAPLANE_PORT": str(SERVING_PORT),
        "LORAPLANE_DEPLOYMENT": target.name,
        "HF_HUB_OFFLINE": "1",
    }
    if spec.api_keys:
        values["LORAPLANE_API_KEYS_FILE"] = keys_path(target.name, target.uid)
    values.update(target.restart_env())  # the restart strategy: the versions this revision serves
    env = [aca.EnvironmentVar(name=name, value=value) for name, value in values.items()]
    env.append(aca.EnvironmentVar(name="LORAPLANE_ADMIN_TOKEN", secret_ref=ADMIN_TOKEN_SECRET))
    return env


def wheel_install_command(wheel: str) -> str:
    """The default image's command: install exactly this wheel from the share, then serve."""
    return f"pip install --no-cache-dir '{SHARE_MOUNT}/{DIST_FOLDER}/{wheel}' && exec python -m serving"


def serving_container(target: Target, serving_wheel: str | None) -> aca.Container:
    azure = target.spec.azure
    assert azure is not None
    cpu, memory = azure.container_resources()
    container = aca.Container(
        name="serving",
        image=azure.image or DEFAULT_IMAGE,
        env=serving_env(target),
        resources=aca.ContainerResources(cpu=cpu, memory=memory),
        volume_mounts=[aca.VolumeMount(volume_name=SHARE_VOLUME, mount_path=SHARE_MOUNT)],
        probes=list(PROBES),
    )
    if azure.image is None:
        if serving_wheel is None:
            raise ValueError("the default image installs the serving app from a wheel on the share: name it")
        container.command = ["/bin/sh", "-c"]
        container.args = [wheel_install_command(serving_wheel)]
    return container


def wheels_named(template: Any) -> set[str]:
    """The serving wheels a container app's template installs (from its containers' commands)."""
    found: set[str] = set()
    containers = template.get("containers") if isinstance(template, dict) else None
    for container in containers or []:
        for part in [*(container.get("command") or []), *(container.get("args") or [])]:
            for word in str(part).replace("'", " ").split():
                name = word.rsplit("/", 1)[-1]
                if name.startswith(WHEEL_PREFIX) and name.endswith(".whl"):
                    found.add(name)
    return found


# ------------------------------------------------------------------------------- drift


def value_at(document: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def drifted_fields(desired: DesiredResource, observed: dict[str, Any], *, adopted: bool = False) -> list[str]:
    """The drift paths whose value in Azure no longer holds what loraplane sends, as dotted
    names. Azure echoes a body with server-filled fields added (revision suffixes, defaulted
    resources, fqdn) and its own casing of enum values: those are not drift."""
    return [
        ".".join(path)
        for path in desired.paths(adopted=adopted)
        if not _holds(value_at(observed, path), value_at(desired.body, path), named=path[-1] in NAMED_SUBSET_LISTS)
    ]


def _holds(observed: Any, wanted: Any, named: bool = False) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, dict):
        return isinstance(observed, dict) and all(_holds(observed.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list) and all(isinstance(w, dict) and "name" in w for w in wanted) and named:
        by_name = {str(o.get("name")).lower(): o for o in observed or [] if isinstance(o, dict)} if isinstance(observed, list) else {}
        return all(_holds(by_name.get(str(w["name"]).lower()), w) for w in wanted)
    if isinstance(wanted, list):
        return (
            isinstance(observed, list) and len(observed) == len(wanted) and all(_holds(o, w) for o, w in zip(observed, wanted, strict=True))
        )
    if isinstance(wanted, str) and isinstance(observed, str):
        return observed.lower() == wanted.lower()
    if isinstance(wanted, bool) or isinstance(observed, bool):
        return observed is wanted
    if isinstance(wanted, int | float) and isinstance(observed, int | float):
        return float(observed) == float(wanted)
    return bool(observed == wanted)


def adopted_body(resource: DesiredResource, observed: dict[str, Any], read_only: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The PUT body for a resource someone else made: what it has, read-only fields left out,
    with loraplane's fields (only those it holds an adopted one to) set; its tags stay theirs."""
    body: dict[str, Any] = {k: copy.deepcopy(observed[k]) for k in ("location", "tags", "sku", "kind", "identity") if k in observed}
    body["properties"] = copy.deepcopy(observed.get("properties") or {})
    for path in read_only:
        node = value_at(body, path[:-1])
        if isinstance(node, dict):
            node.pop(path[-1], None)
    for path in resource.paths(adopted=True):
        wanted = value_at(resource.body, path)
        if wanted is None:
            continue
        if path[-1] in NAMED_SUBSET_LISTS:
            have = value_at(body, path) or []
            names = {str(item.get("name")).lower() for item in wanted}
            wanted = [item for item in have if str(item.get("name")).lower() not in names] + copy.deepcopy(wanted)
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = copy.deepcopy(wanted)
    return body
