"""The FastAPI application: routes, problem+json handling, health and metrics."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from api import problems
from api.metrics import DeploymentPhaseCollector, HttpMetrics, MetricsMiddleware
from api.problems import problem_response, problem_responses
from api.routes import router
from state.db import check_database
from state.store import DeploymentStore

# Liveness: returns (alive, reason). The reconciler supplies one that fails when its loop
# stops making progress; without a reconciler, answering at all is liveness.
HealthCheck = Callable[[], tuple[bool, str]]


class HealthStatus(BaseModel):
    status: str
    detail: str = ""


def create_app(
    store: DeploymentStore,
    *,
    registry: CollectorRegistry | None = None,
    liveness: HealthCheck | None = None,
) -> FastAPI:
    app = FastAPI(
        title="loraplane",
        version="0.1.0",
        summary="Keeps fine-tuned LoRA inference deployments the way a team asked for them.",
        docs_url="/docs",
    )
    app.state.store = store
    app.state.registry = registry or CollectorRegistry()
    app.state.registry.register(DeploymentPhaseCollector(store))
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(app.state.registry))
    problems.install(app)
    app.include_router(router)

    @app.get("/healthz", response_model=HealthStatus, responses=problem_responses(503), tags=["health"])
    def healthz(request: Request) -> HealthStatus | JSONResponse:
        alive, reason = liveness() if liveness else (True, "")
        if not alive:
            return problem_response(request, 503, "Service unavailable", reason)
        return HealthStatus(status="ok", detail=reason)

    @app.get("/readyz", response_model=HealthStatus, responses=problem_responses(503), tags=["health"])
    def readyz(request: Request) -> HealthStatus | JSONResponse:
        try:
            check_database(store.engine)
        except Exception as exc:  # any failure to reach the database means "not ready"
            return problem_response(
                request, 503, "Service unavailable", f"the database is not reachable: {type(exc).__name__}"
            )
        return HealthStatus(status="ready")

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return app
