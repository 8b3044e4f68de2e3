"""The FastAPI application: routes, problem+json handling, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from api import problems
from api.admission import AdmissionLimits, AdmissionState, InFlightLimit, TokenBuckets, WriteRateLimit
from api.auth import Authenticator
from api.dashboard import router as dashboard_router
from api.guard import DEFAULT_MAX_BODY_BYTES, RequestGuard
from api.key_routes import router as key_router
from api.metrics import DeploymentPhaseCollector, HttpMetrics, MetricsMiddleware
from api.problems import problem_response, problem_responses
from api.routes import router
from api.views import PublicViews
from api.watch import WatchHub, WatchLimits
from reconciler.controller import ReconcileLoop
from reconciler.core import Reconciler
from state.access import AccessStore
from state.db import check_database
from state.store import DeploymentStore

DOCS_ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, its files served from the fastapi-offline package's static folder:
    the API's documentation works on a machine with no internet."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )


class HealthStatus(BaseModel):
    status: str
    detail: str = ""


def create_app(
    store: DeploymentStore,
    reconciler: Reconciler,
    *,
    controller: ReconcileLoop | None = None,
    registry: CollectorRegistry | None = None,
    authenticate: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    watch_limits: WatchLimits | None = None,
    admission: AdmissionLimits | None = None,
    serve_api: bool = True,
    api_threads: int | None = None,
    token_cache_seconds: float = 1.0,
) -> FastAPI:
    """The API over ``store``. With a ``controller``, the app runs the reconcile loop for its
    lifetime (started with the app, stopped gracefully on shutdown) and /healthz reports on
    that loop; without one (tests, a read-only replica) answering at all is liveness. With
    ``authenticate``, every call but health, metrics and docs needs a bearer token of a role
    that allows it (``loraplane serve`` turns it on unless LORAPLANE_AUTH=off)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if api_threads is not None:  # this event loop's pool for the routes' database work
            anyio.to_thread.current_default_thread_limiter().total_tokens = api_threads
        if controller is not None:
            controller.start()
        try:
            yield
        finally:
            app.state.admission.closing = True  # what still arrives is told to come back
            await app.state.watches.shutdown()
            if controller is not None:
                controller.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="loraplane",
        version="0.1.0",
        summary="Keeps fine-tuned LoRA inference deployments the way a team asked for them.",
        # FastAPI's own /docs and /redoc load their scripts from a CDN: a blank page offline.
        docs_url=None,
        redoc_url=None,
    )
    if serve_api:
        install_docs(app)
    app.state.store = store
    app.state.reconciler = reconciler
    app.state.access = AccessStore(store.engine, clock=store.clock)
    app.state.authenticator = Authenticator(app.state.access, cache_seconds=token_cache_seconds) if authenticate else None
    app.state.views = PublicViews()
    app.state.registry = registry or CollectorRegistry()
    app.state.registry.register(DeploymentPhaseCollector(store))
    app.state.watches = WatchHub(
        store,
        app.state.views,
        access=app.state.access if authenticate else None,
        limits=watch_limits,
        registry=app.state.registry,
    )
    # Added innermost first. A request meets the metrics, then the in-flight limit (refused at
    # once past it), then the guard (who asks, and what they send, before anything reads it),
    # then the write rate of whoever asks, then the routes.
    limits = admission or AdmissionLimits()
    app.state.admission = AdmissionState()
    app.add_middleware(WriteRateLimit, buckets=TokenBuckets(limits.writes_per_second, limits.write_burst))
    app.add_middleware(RequestGuard, authenticator=app.state.authenticator, max_body_bytes=max_body_bytes)
    app.add_middleware(InFlightLimit, limits=limits, state=app.state.admission)
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(app.state.registry))
    problems.install(app)
    if serve_api:  # else a reconciler alone: health, readiness and metrics
        app.include_router(router)
        app.include_router(key_router)
        app.include_router(dashboard_router)

    @app.get("/healthz", response_model=HealthStatus, responses=problem_responses(503), tags=["health"])
    def healthz(request: Request) -> HealthStatus | JSONResponse:
        alive, reason = controller.liveness() if controller is not None else (True, "")
        if not alive:
            return problem_response(request, 503, "Service unavailable", reason)
        return HealthStatus(status="ok", detail=reason)

    @app.get("/readyz", response_model=HealthStatus, responses=problem_responses(503), tags=["health"])
    def readyz(request: Request) -> HealthStatus | JSONResponse:
        if app.state.admission.closing:  # a load balancer sends the next requests elsewhere
            return problem_response(request, 503, "Service unavailable", "this loraplane process is shutting down")
        try:
            check_database(store.engine)
        except Exception as exc:  # any failure to reach the database means "not ready"
            return problem_response(request, 503, "Service unavailable", f"the database is not reachable: {type(exc).__name__}")
        return HealthStatus(status="ready")

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return app
