"""The ``loraplane`` command line: a client of the REST API, plus ``serve``.

Errors are one line on stderr and a non-zero exit, never a traceback. Heavy imports (FastAPI,
SQLAlchemy, the reconciler) happen only in ``serve``, so client commands start quickly.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from api.cli import render
from api.cli.client import ApiClient, CliError, json_body
from api.cli.manifests import load_manifests
from api.cli.render import printable
from api.settings import ClientSettings

# -h as well as --help, on every command and group (kubectl's and most CLIs' habit).
HELP = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    context_settings=HELP,
    name="loraplane",
    help="Serve fine-tuned LoRA adapters: declare a deployment, loraplane keeps it running.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (scripts, grep) gets whole lines: rich would otherwise fold tables at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 4096)


class _State:
    url: str | None = None


_state = _State()


@app.callback()
def _global_options(
    url: Annotated[
        str | None,
        typer.Option("--url", help="the loraplane API (default: $LORAPLANE_URL or http://127.0.0.1:8080)"),
    ] = None,
) -> None:
    _state.url = url


def _client() -> ApiClient:
    settings = ClientSettings()
    try:
        url, token = settings.resolved()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return ApiClient(_state.url or url, timeout=settings.timeout_seconds, token=token, retry_seconds=settings.retry_seconds)


# ------------------------------------------------------------------------------- manifests


# -------------------------------------------------------------------------------- commands


@app.command()
def apply(
    file: Annotated[str, typer.Option("-f", "--filename", help="manifest file (YAML or JSON), '-' for stdin")],
) -> None:
    """Create the deployments in FILE, or change them to match it."""
    manifests = load_manifests(file)
    client = _client()
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        current = client.get_deployment(name)
        if current is None:
            client.request("POST", "/v1/deployments", json=manifest, ok=(201,))
            out.print(f"deployment/{name} created")
            continue
        before = current.headers.get("etag")
        body = {**manifest, "metadata": {k: v for k, v in manifest["metadata"].items() if k != "resourceVersion"}}
        response = client.request("PUT", f"/v1/deployments/{name}", json=body, headers={"If-Match": before or "*"})
        changed = response.headers.get("etag") != before
        out.print(f"deployment/{name} {'configured' if changed else 'unchanged'}")


@app.command()
def get(
    name: Annotated[str | None, typer.Argument(help="one deployment; all when left out")] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="json, yaml or wide")] = None,
    selector: Annotated[str | None, typer.Option("-l", "--selector", help="label selector, e.g. team=support")] = None,
    watch: Annotated[bool, typer.Option("-w", "--watch", help="after the list, a line per change, until interrupted")] = False,
    timeout: Annotated[int, typer.Option(help="with --watch: stop after this many seconds", min=1, max=3600)] = 3600,
) -> None:
    """Show deployments."""
    if output not in (None, "json", "yaml", "wide"):
        raise CliError(f"unknown output format {output!r}: use json, yaml or wide")
    client = _client()
    if watch:
        _watch(client, name, selector, output, timeout)
        return
    if name:
        response = client.get_deployment(name)
        if response is None:
            raise CliError(f"deployment {name!r} not found")
        items = [json_body(response)]
    else:
        items = client.list_deployments(selector)
    if output in ("json", "yaml"):
        document: Any = items[0] if name else {"apiVersion": "loraplane/v1", "kind": "InferenceDeploymentList", "items": items}
        print(render.to_json(document) if output == "json" else render.to_yaml(document), end="\n" if output == "json" else "")
        return
    if not items:
        out.print("No deployments found.")
        return
    out.print(render.deployments_table(items, wide=output == "wide"))


def _watch(client: ApiClient, name: str | None, selector: str | None, output: str | None, timeout: int) -> None:
    """kubectl get -w: the deployments as they are, then again each time one changes."""
    path = f"/v1/deployments/{name}" if name else "/v1/deployments"
    params: dict[str, Any] = {"watch": "true", "timeoutSeconds": timeout}
    if selector:
        params["label"] = selector
    header = True
    for kind, document in client.watch(path, params):
        if output == "json":
            print(json.dumps({"type": kind, "object": document}), flush=True)
            continue
        if kind == "DELETED":
            out.print(f"{document['metadata']['name']}  deleted")
            continue
        table = render.deployments_table([document], wide=output == "wide", fixed_widths=True)
        table.show_header = header
        header = False
        out.print(table)


@app.command()
def describe(name: Annotated[str, typer.Argument(help="the deployment")]) -> None:
    """Show a deployment in detail: spec, status, conditions and recent events."""
    client = _client()
    response = client.get_deployment(name)
    if response is None:
        raise CliError(f"deployment {name!r} not found")
    events = json_body(client.request("GET", f"/v1/deployments/{name}/events", params={"limit": 10}))
    render.describe(out, json_body(response), events.get("items", []))


@app.command()
def events(
    name: Annotated[str, typer.Argument(help="the deployment")],
    limit: Annotated[int, typer.Option(help="how many, newest first", min=1, max=500)] = 50,
) -> None:
    """Show what happened to a deployment, newest first."""
    body = json_body(_client().request("GET", f"/v1/deployments/{name}/events", params={"limit": limit}))
    items = body.get("items", [])
    if not items:
        out.print(f"No events for {name}.")
        return
    out.print(render.events_table(items))


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="the deployment")],
    wait: Annotated[bool, typer.Option("--wait", help="return only once it is gone")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait", min=1)] = 300.0,
) -> None:
    """Delete a deployment: loraplane tears down what it created, then forgets it."""
    client = _client()
    client.request("DELETE", f"/v1/deployments/{name}", ok=(202,))
    out.print(f"deployment/{name} deletion requested")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while True:
        response = client.get_deployment(name)
        if response is None:
            out.print(f"deployment/{name} deleted")
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    status = json_body(response).get("status") or {}
    raise CliError(
        f"deployment {name!r} is still being deleted after {timeout:g}s "
        f"(phase {status.get('phase')}: {status.get('message') or 'no message'}); "
        f"see 'loraplane describe {name}'"
    )


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="the deployment")],
    tail: Annotated[int, typer.Option(help="how many lines", min=1, max=10000)] = 100,
) -> None:
    """Show the last lines of the serving app's log."""
    response = _client().request("GET", f"/v1/deployments/{name}/logs", params={"tail": tail})
    if not response.text.strip():
        # Nothing at all would look like a hang or a bug: say why there is nothing.
        print(
            f"no log yet: the serving app of {name} has not written any (it has not started, or not run since it was "
            f"created); 'loraplane describe {name}' says why",
            file=sys.stderr,
        )
        return
    print(response.text, end="")


@app.command()
def plan(
    file: Annotated[str, typer.Option("-f", "--filename", help="manifest file (YAML or JSON), '-' for stdin")],
) -> None:
    """Dry run: what the reconciler would create, change or delete for FILE. Changes nothing."""
    client = _client()
    for manifest in load_manifests(file):
        render.plan(out, json_body(client.request("POST", "/v1/plan", json=manifest)))


AdapterOption = Annotated[str | None, typer.Option("--adapter", "-a", help="one adapter of the deployment, by name (spec.adapters)")]


@app.command()
def adapters(
    name: Annotated[str, typer.Argument(help="the deployment")],
    adapter: AdapterOption = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="json or yaml")] = None,
    follow_latest: Annotated[bool, typer.Option("--follow-latest", help="drop the pin: serve the newest good adapter again")] = False,
) -> None:
    """Show a deployment's adapter versions: staged, serving, superseded, rejected, failed."""
    if output not in (None, "json", "yaml"):
        raise CliError(f"unknown output format {output!r}: use json or yaml")
    client = _client()
    response = client.get_deployment(name)
    if response is None:
        raise CliError(f"deployment {name!r} not found")
    deployment = json_body(response)
    if follow_latest:
        spec = deployment.get("spec") or {}
        entries = spec.get("adapters")
        if entries is None:
            patch: dict = {"spec": {"adapter": {"pin": None}}}
        else:
            chosen = _entry_named(name, entries, adapter)
            # A merge patch replaces a list whole: send every entry, the chosen ones unpinned.
            patch = {"spec": {"adapters": [{**e, "pin": None} if e in chosen else e for e in entries]}}
        client.request(
            "PATCH", f"/v1/deployments/{name}", content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"}
        )
        which = f"adapter {adapter} of deployment/{name}" if adapter else f"deployment/{name}"
        out.print(f"{which} follows the newest adapter version")
        return
    params = {"adapter": adapter} if adapter else None
    versions = json_body(client.request("GET", f"/v1/deployments/{name}/adapters", params=params))["items"]
    if output in ("json", "yaml"):
        document = {"items": versions}
        print(render.to_json(document) if output == "json" else render.to_yaml(document), end="\n" if output == "json" else "")
        return
    if not versions:
        out.print("No adapter versions yet: loraplane stages one once a complete adapter has settled in its folder on the share.")
        return
    out.print(render.adapters_table(versions, deployment))


def _entry_named(name: str, entries: list[dict], adapter: str | None) -> list[dict]:
    """The spec.adapters entries an --adapter option means: that one, or all when left out."""
    if adapter is None:
        return entries
    chosen = [e for e in entries if e.get("name") == adapter]
    if not chosen:
        raise CliError(f"deployment {name!r} has no adapter {adapter!r}: its adapters are {', '.join(e.get('name', '') for e in entries)}")
    return chosen


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="the deployment")],
    version: Annotated[str | None, typer.Argument(help="the version to serve (default: the one before what serves now)")] = None,
    adapter: AdapterOption = None,
) -> None:
    """Serve an earlier adapter version again (this pins it: see adapters --follow-latest)."""
    client = _client()
    response = client.get_deployment(name)
    if response is None:
        raise CliError(f"deployment {name!r} not found")
    deployment = json_body(response)
    status = deployment.get("status") or {}
    adapter = _one_adapter(name, deployment, adapter)
    if adapter is not None:
        serving = next((a.get("servingVersion") for a in status.get("adapters") or [] if a.get("name") == adapter), None)
    else:
        serving = (status.get("adapter") or {}).get("servingVersion")
    if version is None:
        params = {"adapter": adapter} if adapter else None
        versions = json_body(client.request("GET", f"/v1/deployments/{name}/adapters", params=params))["items"]
        names = [v["version"] for v in versions]
        older = versions[names.index(serving) + 1 :] if serving in names else versions
        earlier = next((v for v in older if v["state"] in ("Superseded", "Active", "Staged")), None)
        if earlier is None:
            raise CliError(f"deployment {name!r} has no earlier good adapter version to roll back to")
        version = earlier["version"]
    path = (
        f"/v1/deployments/{name}/adapters/{adapter}/versions/{version}/activate"
        if adapter
        else f"/v1/deployments/{name}/adapters/{version}/activate"
    )
    client.request("POST", path, ok=(202,))
    which = f"adapter {adapter} of deployment/{name} pinned to version" if adapter else f"deployment/{name} pinned to adapter"
    out.print(f"{which} {version}" + (f" (was serving {serving})" if serving else ""))


def _one_adapter(name: str, deployment: dict, adapter: str | None) -> str | None:
    """The adapter an --adapter option names, or the deployment's only one (None: spec.adapter's,
    named after the deployment); several without --adapter is an error that lists them."""
    entries = (deployment.get("spec") or {}).get("adapters")
    if entries is not None and adapter is None:
        if len(entries) > 1:
            listed = ", ".join(e.get("name", "") for e in entries)
            raise CliError(f"deployment {name!r} serves several adapters ({listed}): say which with --adapter")
        return entries[0].get("name")
    if adapter is not None:
        _entry_named(name, entries or [{"name": name}], adapter)
    return adapter


def _end_canary(name: str, adapter: str | None, decision: str) -> None:
    client = _client()
    response = client.get_deployment(name)
    if response is None:
        raise CliError(f"deployment {name!r} not found")
    chosen = _one_adapter(name, json_body(response), adapter)
    path = f"/v1/deployments/{name}/adapters/{chosen}/canary/{decision}" if chosen else f"/v1/deployments/{name}/canary/{decision}"
    version = json_body(client.request("POST", path, ok=(202,)))
    which = f"adapter {chosen} of deployment/{name}" if chosen else f"deployment/{name}"
    done = "is promoted: it serves every request once every replica has it" if decision == "promote" else "is aborted: rolled back"
    out.print(f"the canary of {which}, version {version.get('version')}, {done}")


@app.command()
def promote(name: Annotated[str, typer.Argument(help="the deployment")], adapter: AdapterOption = None) -> None:
    """End a canary early: its version serves every request now (audited)."""
    _end_canary(name, adapter, "promote")


@app.command()
def abort(name: Annotated[str, typer.Argument(help="the deployment")], adapter: AdapterOption = None) -> None:
    """End a canary early: roll its version back, the stable one serves every request (audited)."""
    _end_canary(name, adapter, "abort")


@app.command()
def cost(
    name: Annotated[str | None, typer.Argument(help="one deployment (default: all)")] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="json or yaml")] = None,
) -> None:
    """GPU-hours today and this month, and the estimated cost, of every deployment."""
    if output not in (None, "json", "yaml"):
        raise CliError(f"unknown output format {output!r}: use json or yaml")
    document = json_body(_client().request("GET", "/v1/usage", params={"name": name} if name else None))
    if output in ("json", "yaml"):
        print(render.to_json(document) if output == "json" else render.to_yaml(document), end="\n" if output == "json" else "")
        return
    if not document["items"]:
        out.print("No deployments.")
        return
    out.print(render.usage_table(document["items"]))
    out.print(f"prices: {document['prices']}", markup=False, highlight=False)


token_app = typer.Typer(help="Bearer tokens (admin only): who may use the API, and as what.", no_args_is_help=True, context_settings=HELP)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="who holds it, e.g. alice or ci")],
    role: Annotated[str, typer.Option("--role", help="viewer, deployer or admin")],
) -> None:
    """Make a token; its secret is printed this once and kept nowhere."""
    if role not in ("viewer", "deployer", "admin"):
        raise CliError(f"unknown role {role!r}: use viewer, deployer or admin")
    body = json_body(_client().request("POST", "/v1/tokens", json={"name": name, "role": role}, ok=(201,)))
    print(body["token"])
    print(f"token {name!r} ({role}) created: the line above is its secret, shown this once; give it as LORAPLANE_TOKEN", file=sys.stderr)


@token_app.command("list")
def token_list() -> None:
    """The tokens: holders and roles, never secrets."""
    items = json_body(_client().request("GET", "/v1/tokens"))["items"]
    out.print(render.tokens_table(items))


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token: it stops working at once."""
    _client().request("DELETE", f"/v1/tokens/{name}", ok=(204,))
    out.print(f"token {name!r} revoked")


keys_app = typer.Typer(
    help="Inference keys (deployer): who may call a deployment's model, how much, and what each used.",
    no_args_is_help=True,
    context_settings=HELP,
)
app.add_typer(keys_app, name="keys")
Deployment = Annotated[str, typer.Option("--deployment", "-d", help="the deployment")]


@keys_app.command("create")
def keys_create(
    deployment: Deployment,
    name: Annotated[str, typer.Option("--name", help="who holds it, e.g. support-web or eval-ci")],
    rpm: Annotated[int | None, typer.Option("--rpm", help="requests a minute (default: no limit)")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="tokens a minute, prompt and completion (default: no limit)")] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="refused from this date or time on (ISO 8601, UTC if no zone)")] = None,
) -> None:
    """Make a key; its secret is printed this once (with how a client uses it) and kept nowhere."""
    body: dict[str, Any] = {"name": name, "rpm": rpm, "tpm": tpm}
    if expires is not None:
        body["expiresAt"] = _moment(expires, "--expires")
    made = json_body(_client().request("POST", f"/v1/deployments/{deployment}/keys", json=body, ok=(201,)))
    print(made["key"])
    endpoint = made.get("endpoint") or "<the deployment's endpoint, once it has one: loraplane get " + deployment + ">"
    print(
        f"key {name!r} of deployment/{deployment} created: the line above is its secret, shown this once.\n"
        "An OpenAI client uses it so:\n\n"
        "    from openai import OpenAI\n"
        f'    client = OpenAI(base_url="{endpoint}/v1", api_key="{made["key"]}")\n'
        f'    client.chat.completions.create(model="{deployment}", messages=[{{"role": "user", "content": "Hello"}}])\n',
        file=sys.stderr,
    )


def _moment(text: str, option: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"{option} {text!r} is not a date or time: write it as 2026-12-31 or 2026-12-31T18:00:00+01:00") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


@keys_app.command("list")
def keys_list(deployment: Deployment) -> None:
    """The deployment's keys: limits, and what each used (summed over its replicas); never secrets."""
    listed = json_body(_client().request("GET", f"/v1/deployments/{deployment}/keys"))
    if not listed["items"]:
        print(
            f"deployment/{deployment} has no inference keys (loraplane keys create --deployment {deployment} --name WHO)", file=sys.stderr
        )
        return
    out.print(render.keys_table(listed["items"]))
    if listed.get("usageNote"):
        print(printable(listed["usageNote"]), file=sys.stderr)


@keys_app.command("revoke")
def keys_revoke(deployment: Deployment, name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key: every replica refuses it within seconds, with no restart."""
    _client().request("DELETE", f"/v1/deployments/{deployment}/keys/{name}", ok=(204,))
    out.print(f"key {name!r} of deployment/{deployment} revoked")


@app.command()
def audit(
    actor: Annotated[str | None, typer.Option(help="a token's name")] = None,
    resource: Annotated[str | None, typer.Option(help="e.g. deployment/support-bot")] = None,
    action: Annotated[str | None, typer.Option(help="create, update, delete, activate, token.create, token.revoke")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Who changed what and when, newest first."""
    params = {k: v for k, v in {"actor": actor, "resource": resource, "action": action, "limit": limit}.items() if v is not None}
    items = json_body(_client().request("GET", "/v1/audit", params=params))["items"]
    out.print(render.audit_table(items) if items else "No changes recorded.")


@app.command("import-toolkit")
def import_toolkit(
    project: Annotated[Path, typer.Argument(help="the AI Toolkit project folder (holding infra/inference.config.json)")],
    name: Annotated[str | None, typer.Option(help="the deployment's name (default: the ACA app's)")] = None,
    location: Annotated[str | None, typer.Option(help="the Azure region, when the parameters file has none")] = None,
) -> None:
    """Print a manifest that adopts what an AI Toolkit project provisioned (pipe it to apply -f -)."""
    from api.cli.toolkit import import_toolkit as convert

    print(render.to_yaml(convert(project, name=name, location=location)), end="")


@app.command("export-toolkit")
def export_toolkit(
    name: Annotated[str, typer.Argument(help="the deployment")],
    project: Annotated[Path | None, typer.Option(help="write PROJECT/infra/inference.config.json instead of printing it")] = None,
) -> None:
    """Write the AI Toolkit's inference.config.json for a deployment, ACA_APP_ENDPOINT included."""
    from api.cli.toolkit import CONFIG_FILE
    from api.cli.toolkit import export_toolkit as convert

    response = _client().get_deployment(name)
    if response is None:
        raise CliError(f"deployment {name!r} not found")
    config = convert(json_body(response))
    text = json.dumps(config, indent=2) + "\n"
    if project is None:
        print(text, end="")
        return
    path = project / CONFIG_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot write it ({exc.strerror})") from exc
    out.print(f"wrote {path}" + ("" if config["ACA_APP_ENDPOINT"] else " (no endpoint yet: the deployment is not Ready)"))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on (default 8080)", min=1, max=65535)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="where the database and logs live")] = None,
    stop_children: Annotated[
        bool,
        typer.Option(
            "--stop-children",
            help="on shutdown, stop the serving processes too (by default they keep serving and the next start adopts them)",
        ),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="also build a tiny model in the data dir and apply a local deployment serving it",
        ),
    ] = False,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="all (default): the API and the reconciler; api: the API alone; reconciler: the reconcile loop alone "
            "(with health and metrics). Apart, they share a PostgreSQL database",
        ),
    ] = None,
) -> None:
    """Run the API and the reconciler in this process (or one of them: --role)."""
    from pydantic import ValidationError

    from api.cli.serve import run_service
    from api.settings import ServiceSettings

    overrides: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir, "role": role}
    try:
        settings = ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"LORAPLANE_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid settings: {problems}") from exc
    run_service(settings, stop_children=stop_children, demo=demo)


dev = typer.Typer(help="Tools for trying loraplane out and for its tests.", no_args_is_help=True, context_settings=HELP)
app.add_typer(dev, name="dev")


@dev.command("tiny-model")
def tiny_model(
    directory: Annotated[Path, typer.Argument(help="the folder that stands in for the share")],
) -> None:
    """Write a tiny random Llama and two random LoRA adapters in the AI Toolkit layout."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from serving.tiny import make_tiny_share

    paths = make_tiny_share(directory)
    for what, path in paths.items():
        out.print(f"{what + ':':<16}{path}")


@dev.command("serving-wheel")
def serving_wheel(
    directory: Annotated[Path, typer.Argument(help="where to write the wheel")] = Path("dist"),
) -> None:
    """Build the serving app's wheel, as the reconciler uploads it (for serving/Dockerfile)."""
    from infra.azure.wheel import build_serving_wheel

    wheel = build_serving_wheel()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / wheel.filename).write_bytes(wheel.content)
    except OSError as exc:
        raise CliError(f"{directory}: cannot write the wheel there ({exc.strerror})") from exc
    out.print(str(directory / wheel.filename))
    out.print(
        f"upload it to the share as .loraplane/dist/{wheel.filename}, and provision by hand with:\n"
        f"  az deployment group create -g RESOURCE_GROUP -f infra/provision/inference.bicep "
        f"-p infra/provision/inference.parameters.json -p servingWheel={wheel.filename}"
    )


def main() -> None:
    try:
        app()
    except CliError as exc:
        print(f"error: {render.printable(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the promise is one line, never a traceback
        print(render.printable(f"error: {type(exc).__name__}: {exc}".splitlines()[0]), file=sys.stderr)
        sys.exit(1)
