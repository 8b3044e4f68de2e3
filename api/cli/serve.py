"""``loraplane serve``: where settings become an engine, a store, the API and the reconciler."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from api.admission import AdmissionLimits, AdmissionState
from api.app import create_app
from api.cli.client import CliError
from api.cli.render import printable
from api.settings import ServiceSettings
from api.watch import WatchLimits
from infra.azure.limiter import ArmLimiter, BucketSpec
from infra.azure.provider import AzureConfig, AzureProvider
from infra.local.provider import LocalProvider
from reconciler.controller import Controller, ReconcileLoop
from reconciler.core import Reconciler
from reconciler.journal import DatabaseJournal
from reconciler.metering import GpuMetering, PriceTable
from reconciler.shards import ShardedController, ShardElector
from reconciler.writer import PassWriter
from state.access import AccessStore
from state.db import make_engine, upgrade_database
from state.errors import NotFound
from state.models import InferenceDeploymentCreate, utcnow
from state.resource import DeploymentStatus
from state.store import DeploymentStore

log = logging.getLogger("loraplane")


DEMO_NAME = "demo"
DEMO_SECOND = "second"  # the demo's second adapter


class EscapingFormatter(logging.Formatter):
    """Log lines carry what deployers wrote (names, paths, Azure's and the app's messages):
    their control characters are escaped, so a newline cannot forge a line and an ESC cannot
    drive the terminal that tails the log. A traceback keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def prepare_demo(settings: ServiceSettings, store: DeploymentStore) -> Path:
    """A tiny model and two adapters in the data dir, and a local deployment serving them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, make_tiny_share

    share = settings.demo_share().resolve()
    if not (share / TINY_MODEL_PATH / "config.json").is_file():
        print(f"building a tiny random model and two adapters in {share} ...", flush=True)
        make_tiny_share(share)
    body = InferenceDeploymentCreate.model_validate(
        {
            "metadata": {"name": DEMO_NAME, "labels": {"app": "loraplane-demo"}},
            "spec": {
                "target": "local",
                "local": {"shareRoot": str(share)},
                "model": {"path": TINY_MODEL_PATH},
                # Two adapters on one base model, each asked for by name (the request's model).
                "adapters": [
                    {"name": DEMO_NAME, "path": ADAPTER_PATH, "settleSeconds": 2, "pollSeconds": 1},
                    {"name": DEMO_SECOND, "path": SECOND_ADAPTER_PATH, "settleSeconds": 2, "pollSeconds": 1},
                ],
            },
        }
    )
    try:
        current = store.get(DEMO_NAME)
    except NotFound:
        store.create(body)
    else:
        if current.deletion_timestamp is None:
            store.replace(DEMO_NAME, labels=body.metadata.labels, spec=body.spec)
    return share


def _chat_curl(endpoint: str, model: str) -> str:
    body = f'{{"model":"{model}","messages":[{{"role":"user","content":"Hello"}}],"max_tokens":32}}'
    return f"curl -si {endpoint}/v1/chat/completions -H 'content-type: application/json' -d '{body}'"


def announce_demo(store: DeploymentStore, share: Path, timeout: float = 600.0) -> None:
    """Once the demo is Ready and serves its first adapter version, print how to talk to it
    and how to swap its adapter."""
    from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = DeploymentStatus.model_validate(store.get(DEMO_NAME).status)
        except NotFound:
            return
        synced = any(c.type == "AdapterSynced" and c.status == "True" for c in status.conditions)
        if status.phase == "Ready" and status.endpoint and synced:
            endpoint = status.endpoint
            print(
                f"\nthe demo deployment '{DEMO_NAME}' is Ready at {endpoint}, serving two adapters of one base model\n"
                f"  chat:     {_chat_curl(endpoint, DEMO_NAME)}\n"
                f"  the other adapter, by name: {_chat_curl(endpoint, DEMO_SECOND)}\n"
                f"  web chat: {endpoint}/\n"
                f"  hot reload: the second adapter's files replace the first's, and only {DEMO_NAME}'s x-adapter-version changes:\n"
                f"            cp {share / SECOND_ADAPTER_PATH}/* {share / ADAPTER_PATH}/\n"
                f"  history:  loraplane adapters {DEMO_NAME}    (and loraplane rollback {DEMO_NAME} --adapter {DEMO_NAME})\n",
                flush=True,
            )
            return
        time.sleep(1)


def observe_max_age(settings: ServiceSettings) -> float:
    """How old an ARM read may be: by default the smaller of its setting and half the resync
    interval (a resync then reads afresh); set explicitly, as set (a short resync then costs no
    reads: it re-checks what loraplane knows, and changes made in Azure by others are seen
    within the max age)."""
    if "azure_observe_max_age_seconds" in settings.model_fields_set:
        return settings.azure_observe_max_age_seconds
    return min(settings.azure_observe_max_age_seconds, settings.resync_seconds / 2)


def azure_provider(settings: ServiceSettings, journal: DatabaseJournal) -> AzureProvider:
    limits = {
        "read": BucketSpec(settings.azure_reads_per_second, settings.azure_read_burst),
        "write": BucketSpec(settings.azure_writes_per_second, settings.azure_write_burst),
        "delete": BucketSpec(settings.azure_deletes_per_second, settings.azure_delete_burst),
    }
    config = AzureConfig(
        arm_url=settings.azure_arm_url,
        ca_bundle=settings.azure_ca_bundle,
        credential=settings.azure_credential,
        polling_seconds=settings.azure_polling_seconds,
        observe_max_age_seconds=observe_max_age(settings),
    )
    return AzureProvider(config, journal, limiter=ArmLimiter(limits))


ADMIN_TOKEN_FILE = "admin-token"


def first_admin_token(settings: ServiceSettings, access: AccessStore) -> Path | None:
    """On the first start with no tokens: an admin token, in a file only this user can read.
    Returns the file's path (the token itself is never logged)."""
    if access.has_tokens():
        return None
    path = settings.data_dir / ADMIN_TOKEN_FILE
    _, secret = access.create_token("admin", "admin", actor="loraplane")
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return path


def run_service(settings: ServiceSettings, *, stop_children: bool = False, demo: bool = False) -> None:
    # The demo is a try-out: what it started (its own app, and what was applied meanwhile)
    # stops with it, rather than keeping hundreds of megabytes each after Ctrl-C.
    stop_children = stop_children or demo
    logging.basicConfig(level=settings.log_level.upper())
    for handler in logging.getLogger().handlers:
        handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for chatty in ("apscheduler", "httpx"):  # a line per timer tick or probe drowns the log
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # The API's event loop shares the GIL with the reconciler's workers and the thread pool; a
    # thread busy in Python keeps it for the whole switch interval (5 ms by default), and a
    # request that hops loop -> pool -> loop waits that long at each hop. 1 ms bounds the wait.
    sys.setswitchinterval(0.001)
    # The data dir holds the database (specs, token hashes, the audit trail) and the serving
    # apps' logs and admin tokens: for this user alone. Everything the daemon makes is so
    # (the umask, which the serving processes inherit), SQLite's -wal and -shm files too (they
    # take the database file's mode), and a data dir made wider earlier is narrowed.
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    for made_before in settings.data_dir.glob("loraplane.db*"):
        os.chmod(made_before, 0o600)
    url = settings.database()
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        engine = make_engine(url)
        upgrade_database(engine)
    except Exception as exc:
        raise CliError(f"cannot open the database {shown}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    store = DeploymentStore(engine)
    registry = CollectorRegistry()
    share_roots = settings.share_roots()
    if demo and settings.demo_share() not in share_roots:
        share_roots.append(settings.demo_share())
    local = LocalProvider(settings.data_dir / "local", serving_command=settings.serving_command, share_roots=share_roots)
    # One writer for every write the reconciler makes (its journal's too): the one the shards'
    # leases fence when replicas share a PostgreSQL database.
    replicated = engine.dialect.name == "postgresql"
    writer = PassWriter(store, shards=settings.shards, elected=True) if replicated else PassWriter(store)
    journal = DatabaseJournal(store, writer)
    try:
        prices = PriceTable.load(settings.gpu_prices)
    except ValueError as exc:
        raise CliError(f"LORAPLANE_GPU_PRICES: {exc}") from exc
    metering = GpuMetering(
        store,
        prices,
        clock=utcnow,
        flush_seconds=settings.usage_flush_seconds,
        local_gpus=settings.local_gpus_per_process,
        registry=registry,
    )
    reconciler = Reconciler(
        store, {"local": local, "azure": azure_provider(settings, journal)}, writer=writer, registry=registry, metering=metering
    )
    plain = Controller(
        reconciler,
        resync_seconds=settings.resync_seconds,
        workers=settings.workers,
        registry=registry,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        stop_children=stop_children,
    )
    controller: ReconcileLoop = plain
    if replicated:
        # Replicas may share this database: each serves the API, and reconciles the shards it holds.
        replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        lease = settings.shard_lease_seconds
        elector = ShardElector(engine, replica, writer, lease_seconds=lease, renew_deadline_seconds=lease * 2 / 3)
        controller = ShardedController(plain, elector)
        log.info("replica %s: reconciles the shards it holds, of %d (PostgreSQL)", replica, settings.shards)
    local.on_change = controller.wake  # a serving process died: reconcile it now
    if demo:
        share = prepare_demo(settings, store)
        threading.Thread(target=announce_demo, args=(store, share), daemon=True).start()
    authenticate = settings.auth == "on"
    if authenticate:
        made = first_admin_token(settings, AccessStore(engine))
        if made is not None:
            log.warning(
                "no API tokens yet: made an admin token, readable by this user only, in %s "
                "(export LORAPLANE_TOKEN=$(cat %s); then 'loraplane token create' for the team)",
                made,
                made,
            )
    else:
        log.warning(
            "AUTHENTICATION IS OFF (LORAPLANE_AUTH=off): anyone who can reach %s:%d may do anything; "
            "use this for a single-user local run only",
            settings.host,
            settings.port,
        )
    if settings.role != "all" and engine.dialect.name != "postgresql":
        log.warning(
            "--role %s on SQLite: the API and the reconciler meet only through this database file; "
            "run them apart on PostgreSQL, where replicas share it",
            settings.role,
        )
    if settings.role == "api":
        # Changes reach the reconciler through the database (it looks every few seconds),
        # not through a wake-up in this process.
        log.info("role api: serving the API; the reconciler runs elsewhere")
    app = create_app(
        store,
        reconciler,
        controller=None if settings.role == "api" else controller,
        serve_api=settings.role != "reconciler",
        registry=registry,
        authenticate=authenticate,
        max_body_bytes=settings.max_request_bytes,
        watch_limits=WatchLimits(total=settings.max_watches, per_token=settings.max_watches_per_token),
        admission=AdmissionLimits(
            max_in_flight=settings.max_requests_in_flight, writes_per_second=settings.writes_per_second, write_burst=settings.write_burst
        ),
        api_threads=settings.api_threads,
        token_cache_seconds=settings.token_cache_seconds,
    )
    log.info("database %s is at the newest schema", shown)
    log.info("API on http://%s:%d (docs at /docs)", settings.host, settings.port)
    log.info("local deployments may use share roots under: %s (LORAPLANE_LOCAL_SHARE_ROOTS)", ", ".join(map(str, share_roots)))
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown: the app's lifespan stops the
    # reconciler, letting running passes finish; serving processes are left for the next start
    # unless --stop-children.
    # Everything made so far (modules, the app, the ORM's mappers) lives as long as the process:
    # frozen out of the collector, a full collection no longer walks it. Unfrozen, each full
    # collection walked those ~200,000 objects: 90-120 ms with every thread stopped (13 ms now).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
    DrainingServer(config, app.state.admission, settings.shutdown_drain_seconds).run()
    engine.dispose()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but a shutdown signal first turns new API requests and readiness away
    (503 with Retry-After) for ``drain_seconds`` while what was admitted finishes, then shuts
    down as uvicorn does. A second signal, or none to drain, shuts down at once."""

    def __init__(self, config: uvicorn.Config, admission: AdmissionState, drain_seconds: float) -> None:
        super().__init__(config)
        self.admission, self.drain_seconds = admission, drain_seconds
        self._draining: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.admission.closing = True
        if self.drain_seconds > 0 and self._draining is None:
            log.info("shutting down in %.0fs: new requests are answered 503 meanwhile (a second signal stops now)", self.drain_seconds)
            self._draining = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
            self._draining.daemon = True
            self._draining.start()
            return
        if self._draining is not None:
            self._draining.cancel()
        super().handle_exit(sig, frame)
