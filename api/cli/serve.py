"""``loraplane serve``: where settings become an engine, a store, the API and the reconciler."""

from __future__ import annotations

import logging

import uvicorn
from sqlalchemy.engine import make_url

from api.app import create_app
from api.cli.client import CliError
from api.settings import ServiceSettings
from state.db import make_engine, upgrade_database
from state.store import DeploymentStore

log = logging.getLogger("loraplane")


def run_service(settings: ServiceSettings) -> None:
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
    app = create_app(store)
    log.info("database %s is at the newest schema", shown)
    log.info("API on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
