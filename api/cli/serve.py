"""``loraplane serve``: where settings become an engine, a store, the API and the reconciler."""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from api.app import create_app
from api.cli.client import CliError
from api.settings import ServiceSettings
from infra.local.provider import LocalProvider
from reconciler.controller import Controller
from reconciler.core import Reconciler
from state.db import make_engine, upgrade_database
from state.store import DeploymentStore

log = logging.getLogger("loraplane")


def run_service(settings: ServiceSettings, *, stop_children: bool = False) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database()
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        engine = make_engine(url)
        upgrade_database(engine)
    except Exception as exc:
        raise CliError(f"cannot open the database {shown}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    store = DeploymentStore(engine)
    registry = CollectorRegistry()
    local = LocalProvider(settings.data_dir / "local", serving_command=settings.serving_command)
    reconciler = Reconciler(store, {"local": local})
    controller = Controller(
        reconciler,
        resync_seconds=settings.resync_seconds,
        workers=settings.workers,
        registry=registry,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        stop_children=stop_children,
    )
    local.on_change = controller.wake  # a serving process died: reconcile it now
    app = create_app(store, reconciler, controller=controller, registry=registry)
    log.info("database %s is at the newest schema", shown)
    log.info("API on http://%s:%d (docs at /docs)", settings.host, settings.port)
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown: the app's lifespan stops the
    # reconciler, letting running passes finish; serving processes are left for the next start
    # unless --stop-children.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
    engine.dispose()
