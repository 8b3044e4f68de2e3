"""Several revisions at once, pure: which revision serves users, the traffic weights that prove a
restart rollout's version in a revision of its own, and which revisions have done their part.

In multiple revision mode a revision-scope change makes a revision beside the active ones, and
"traffic isn't automatically allocated to new revisions" (revisions); the traffic weights, by
revision name or the latest revision, add up to 100 (traffic-splitting). So a version being
proved runs in the newest revision while the revision that served users keeps serving them:
its gate is asked at the newest revision's own URL with no user's traffic, its canary takes
its weight, and once it is promoted the newest takes every request, when it is ready. A
rollback moves every request back to the serving revision at once; the template goes back to
the serving versions (a new revision of them, which takes over once it is ready), and what
no longer takes traffic is deactivated (revisions-manage: its replicas stop).

https://learn.microsoft.com/azure/container-apps/revisions
https://learn.microsoft.com/azure/container-apps/traffic-splitting
https://learn.microsoft.com/azure/container-apps/revisions-manage
"""

from __future__ import annotations

import json
from typing import Any

from infra.provider import Target


def versions_run(template: Any, deployment: str) -> dict[str, str]:
    """The adapter versions a revision's template starts its serving app with (restart strategy)."""
    containers = template.get("containers") if isinstance(template, dict) else None
    env = {str(e.get("name")): e.get("value") for e in (containers or [{}])[0].get("env") or [] if isinstance(e, dict)}
    if env.get("LORAPLANE_ADAPTER_VERSIONS"):
        try:
            found = json.loads(str(env["LORAPLANE_ADAPTER_VERSIONS"]))
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {deployment: str(env["LORAPLANE_ADAPTER_VERSION"])} if env.get("LORAPLANE_ADAPTER_VERSION") else {}


VERSION_VARIABLES = frozenset({"LORAPLANE_ADAPTER_VERSION", "LORAPLANE_ADAPTER_VERSIONS"})


def as_kept(revision: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a listed revision until the next list: what this module and the planner
    read of it (its name; whether it is active, its traffic weight, when it was made, its URL, its
    replicas; the adapter versions its template starts with), in the shape Azure gives. The
    whole revision, its template and the SDK's dicts of it were about 7 KB a deployment, kept
    for as long as the deployment lives. A failed revision's error is read from the revision
    itself (``ContainerApp.health``), not from the list."""
    properties = _props(revision)
    kept: dict[str, Any] = {
        key: properties[key] for key in ("active", "trafficWeight", "createdTime", "replicas", "fqdn") if key in properties
    }
    template = properties.get("template")
    containers = template.get("containers") if isinstance(template, dict) else None
    if containers and isinstance(containers[0], dict):
        env = [e for e in containers[0].get("env") or [] if isinstance(e, dict) and e.get("name") in VERSION_VARIABLES]
        kept["template"] = {"containers": [{"env": env}]}
    return {"name": revision.get("name"), "properties": kept}


def _props(revision: dict[str, Any]) -> dict[str, Any]:
    found = revision.get("properties")
    return found if isinstance(found, dict) else {}


def serving_revision(target: Target, revisions: list[dict[str, Any]]) -> str | None:
    """The active revision that runs what users should get (the stable versions): the one with
    the most traffic now, then the newest."""
    split = target.revisions
    if split is None or not split.stable:
        return None
    running = [r for r in revisions if _props(r).get("active") and versions_run(_props(r).get("template"), target.name) == split.stable]
    running.sort(key=lambda r: (int(_props(r).get("trafficWeight") or 0), str(_props(r).get("createdTime") or "")), reverse=True)
    return str(running[0]["name"]) if running else None


def desired_traffic(target: Target, revisions: list[dict[str, Any]], app: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The app's ingress.traffic for what the target asks."""
    latest_props = (app or {}).get("properties") or {}
    latest = latest_props.get("latestRevisionName")
    ready = latest is not None and latest == latest_props.get("latestReadyRevisionName")
    template = latest_props.get("template")
    # The newest revision after this write runs the target's versions: it is ready for traffic
    # when it is the ready one and runs them already (a template about to change is not).
    newest_ready = ready and versions_run(template, target.name) == target.restart_versions()
    serving = serving_revision(target, revisions)
    split = target.revisions
    everything = [{"latestRevision": True, "weight": 100}]
    if split is None or serving is None:
        return everything  # nothing else serves users (a first version): the newest does
    if target.restart_versions() != split.stable:  # the newest runs a version users do not get yet
        if split.weight is None:  # promoted: every request, once it is ready
            return everything if newest_ready else [{"revisionName": serving, "weight": 100}, {"latestRevision": True, "weight": 0}]
        weight = split.weight if newest_ready else 0
        return [{"revisionName": serving, "weight": 100 - weight}, {"latestRevision": True, "weight": weight}]
    if newest_ready:
        return everything
    return [{"revisionName": serving, "weight": 100}, {"latestRevision": True, "weight": 0}]


def done(revisions: list[dict[str, Any]], app: dict[str, Any] | None) -> list[str]:
    """Active revisions that take no traffic and are not the newest: their part is over."""
    properties = (app or {}).get("properties") or {}
    latest = properties.get("latestRevisionName")
    weighted = {str(t.get("revisionName")) for t in ((properties.get("configuration") or {}).get("ingress") or {}).get("traffic") or []}
    return sorted(
        str(r["name"])
        for r in revisions
        if _props(r).get("active")
        and int(_props(r).get("trafficWeight") or 0) == 0
        and r.get("name") != latest
        and str(r.get("name")) not in weighted
    )
