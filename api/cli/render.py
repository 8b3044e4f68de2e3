"""How the CLI shows resources: kubectl-like tables, YAML and JSON.

What the server sends is shown as text, never as terminal input: control characters are
escaped (an ESC in a message must not clear the screen, a newline must not forge a line) and
nothing is read as rich markup. YAML and JSON escape them themselves."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` as text a terminal shows as it is: control characters as ``\\xNN``."""
    return CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


class SafeTable(Table):
    """A table whose cells are plain, printable text, whatever the server sent."""

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        super().add_row(*(Text(printable(r)) if isinstance(r, str) else r for r in renderables), **options)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "-"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def condition(resource: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (resource.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _table(*columns: str) -> Table:
    table = SafeTable(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


# Column widths that fit any value (a name has at most 32 characters, a phase 12, a version
# 16): a watch prints each change as a table of one row, and the rows line up with the header
# only if every one has the same widths.
WATCH_WIDTHS = {"NAME": 32, "TARGET": 6, "PHASE": 12, "READY": 5, "ADAPTER": 16, "AGE": 4, "GENERATION": 10, "ENDPOINT": 28}


def deployments_table(items: list[dict[str, Any]], *, wide: bool = False, fixed_widths: bool = False) -> Table:
    columns = ["NAME", "TARGET", "PHASE", "READY", "ADAPTER", "AGE"]
    if wide:
        columns += ["GENERATION", "ENDPOINT", "LABELS"]
    table = _table(*columns)
    if fixed_widths:
        for column in table.columns:
            column.min_width = WATCH_WIDTHS.get(str(column.header))
    for item in items:
        meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
        ready = condition(item, "Ready")
        row = [
            meta["name"],
            spec.get("target", "-"),
            status.get("phase", "-"),
            ready["status"] if ready else "-",
            (status.get("adapter") or {}).get("servingVersion") or "-",
            age(meta.get("createdAt")),
        ]
        if wide:
            row += [
                f"{meta.get('generation')}/{status.get('observedGeneration', 0)}",
                status.get("endpoint") or "-",
                ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or "-",
            ]
        table.add_row(*row)
    return table


def adapters_table(versions: list[dict[str, Any]], deployment: dict[str, Any]) -> Table:
    """Versions newest first, with the adapter each is of; the one serving and the one
    pinned of each adapter are marked."""
    status, spec = deployment.get("status") or {}, deployment.get("spec") or {}
    name = (deployment.get("metadata") or {}).get("name", "")
    serving = {a.get("name"): a.get("servingVersion") for a in status.get("adapters") or []}
    serving.setdefault(name, (status.get("adapter") or {}).get("servingVersion"))
    pins = {e.get("name"): e.get("pin") for e in spec.get("adapters") or []} or {name: (spec.get("adapter") or {}).get("pin")}
    many = spec.get("adapters") is not None  # spec.adapter's one adapter needs no column of its own
    table = _table(*(["ADAPTER"] if many else []), "VERSION", "STATE", "SERVING", "GATE", "DETECTED", "ACTIVATED", "SIZE", "MESSAGE")
    for version in versions:
        adapter = version.get("adapter") or name
        marks = []
        if version["version"] == serving.get(adapter):
            marks.append("serving")
        if version["version"] == pins.get(adapter):
            marks.append("pinned")
        canary = version.get("canary") or {}
        if version["state"] == "Canary":
            marks.append(f"canary {canary.get('weight', '?')}%")
        gate = version.get("gate")
        gated = f"{'passed' if gate.get('passed') else 'failed'} {gate.get('passRate', 0):.0%}" if gate else "-"
        size = sum(f.get("size", 0) for f in version.get("files") or [])
        table.add_row(
            *([adapter] if many else []),
            version["version"],
            version["state"],
            ",".join(marks) or "-",
            gated,
            age(version.get("detectedAt")),
            age(version.get("activatedAt")),
            f"{size / 1e6:.1f} MB",
            version.get("message") or canary.get("message") or "",
        )
    return table


def usage_table(lines: list[dict[str, Any]]) -> Table:
    """Each deployment's GPU use and estimated cost; a cost no price is known for is '?'."""
    table = _table("NAME", "TARGET", "PROFILE", "REPLICAS", "GPU-H TODAY", "GPU-H MONTH", "EST. COST MONTH", "BUDGET")
    for line in lines:
        estimate = line.get("estimatedCostThisMonth")
        table.add_row(
            line["name"],
            line["target"],
            line.get("profile") or "-",
            str(line["replicas"]) if line.get("replicas") is not None else "-",
            f"{line['gpuHoursToday']:.2f}",
            f"{line['gpuHoursThisMonth']:.2f}",
            f"{line.get('currency') or ''} {estimate:.2f}".strip() if estimate is not None else "?",
            line.get("budget") or "-",
        )
    return table


def tokens_table(tokens: list[dict[str, Any]]) -> Table:
    table = _table("NAME", "ROLE", "CREATED", "BY")
    for token in tokens:
        table.add_row(token["name"], token["role"], age(token.get("createdAt")), token.get("createdBy") or "-")
    return table


def keys_table(keys: list[dict[str, Any]]) -> Table:
    table = _table("NAME", "RPM", "TPM", "EXPIRES", "REQUESTS", "TOKENS", "REFUSED", "CREATED", "BY")
    for key in keys:
        usage = key.get("usage")
        used = (
            (str(usage["requests"]), str(usage["promptTokens"] + usage["completionTokens"]), str(usage["refused"]))
            if usage is not None
            else ("?", "?", "?")
        )
        expires = key.get("expiresAt")
        table.add_row(
            key["name"],
            str(key.get("rpm") or "-"),
            str(key.get("tpm") or "-"),
            expires[:19].replace("T", " ") if expires else "never",
            *used,
            age(key.get("createdAt")),
            key.get("createdBy") or "-",
        )
    return table


def audit_table(items: list[dict[str, Any]]) -> Table:
    table = _table("WHEN", "ACTOR", "ACTION", "RESOURCE", "GENERATION", "DETAIL")
    for item in items:
        before, after = item.get("generationBefore"), item.get("generationAfter")
        generation = f"{before}->{after}" if before is not None and before != after else (str(after) if after is not None else "-")
        table.add_row(
            item["at"][:19].replace("T", " "), item["actor"], item["action"], item["resource"], generation, item.get("detail") or ""
        )
    return table


def events_table(events: list[dict[str, Any]]) -> Table:
    table = _table("LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE")
    for event in events:
        table.add_row(
            age(event.get("lastTimestamp")),
            event.get("type", ""),
            event.get("reason", ""),
            str(event.get("count", 1)),
            event.get("message", ""),
        )
    return table


def conditions_table(conditions: list[dict[str, Any]]) -> Table:
    table = _table("TYPE", "STATUS", "REASON", "AGE", "MESSAGE")
    for cond in conditions:
        table.add_row(
            cond.get("type", ""),
            cond.get("status", ""),
            cond.get("reason", ""),
            age(cond.get("lastTransitionTime")),
            cond.get("message", ""),
        )
    return table


def to_yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2)


def describe(console: Console, item: dict[str, Any], events: list[dict[str, Any]]) -> None:
    meta, status = item["metadata"], item.get("status") or {}
    labels = ", ".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))
    adapter = status.get("adapter") or {}
    fields = [
        ("Name", meta["name"]),
        ("Labels", labels or "<none>"),
        ("Created", f"{meta.get('createdAt')} ({age(meta.get('createdAt'))} ago)"),
        ("Generation", f"{meta.get('generation')} (observed {status.get('observedGeneration', 0)})"),
        ("Phase", status.get("phase", "-")),
        ("Endpoint", status.get("endpoint") or "<none>"),
        ("Adapter", f"desired {adapter.get('desiredVersion') or '-'}, serving {adapter.get('servingVersion') or '-'}"),
    ]
    for entry in status.get("adapters") or [{"name": meta["name"], **adapter}]:
        canary = entry.get("canary")
        if canary:
            sides = "; ".join(
                f"{side.get('version')}: {side.get('requests')} requests, {side.get('errors')} errors ({100 * side.get('errorRate', 0):.1f}%)"
                for side in (canary.get("canary") or {}, canary.get("stable") or {})
            )
            fields.append(
                (
                    "Canary",
                    f"{entry.get('name')}: {canary.get('weight')}% to {canary.get('version')} until {canary.get('endsAt')} ({sides})",
                )
            )
    if meta.get("deletionTimestamp"):
        fields.append(("Deleting since", meta["deletionTimestamp"]))
    if status.get("message"):
        fields.append(("Message", status["message"]))
    for key, value in fields:
        console.print(Text.assemble((f"{key + ':':<16}", "bold"), printable(value)), highlight=False)
    console.print("[bold]Spec:[/bold]")
    console.print(_indent(to_yaml(item.get("spec") or {})), highlight=False, markup=False)
    console.print("[bold]Conditions:[/bold]")
    conditions = status.get("conditions") or []
    console.print(conditions_table(conditions) if conditions else "  <none>")
    resources = status.get("resources") or []
    if resources:
        console.print("[bold]Resources:[/bold]")
        table = _table("KIND", "STATE", "MANAGED BY", "ID")
        for res in resources:
            table.add_row(res.get("kind", ""), res.get("state", ""), res.get("managedBy", ""), res.get("id", ""))
        console.print(table)
    console.print("[bold]Events:[/bold]")
    console.print(events_table(events) if events else "  <none>")


def _indent(text: str) -> str:
    return "".join("  " + line for line in text.splitlines(keepends=True))


def plan(console: Console, body: dict[str, Any]) -> None:
    name = body.get("deployment", "?")
    blocked = body.get("blocked")
    actions = body.get("actions") or []
    if blocked:
        kind = "blocked" if blocked.get("permanent") else "waiting"
        console.print(printable(f"deployment/{name}: {kind}: {blocked.get('reason')}: {blocked.get('message')}"), markup=False)
    changes = body.get("adapters") or []
    if not actions and not blocked and not changes:
        console.print(f"deployment/{name}: no changes; the world matches the spec")
        return
    for change in changes:
        sign = {"load": "+", "unload": "-"}.get(change.get("verb"), "~")
        console.print(printable(f"{sign} {change.get('verb')} adapter {change.get('adapter')}: {change.get('reason')}"), markup=False)
    for action in actions:
        sign = {"create": "+", "delete": "-"}.get(action.get("verb"), "~")
        console.print(
            printable(f"{sign} {action.get('verb')} {action.get('kind')} {action.get('name')}: {action.get('reason')}"), markup=False
        )
    if actions:
        summary = ", ".join(f"{count} to {verb}" for verb, count in sorted((body.get("summary") or {}).items()))
        console.print(f"deployment/{name}: {summary}")
