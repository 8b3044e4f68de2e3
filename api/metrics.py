"""Prometheus metrics of the API, on a registry of the app's own (two apps in one process,
as in tests, never collide)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from state.resource import DeploymentStatus
from state.store import DeploymentStore

PHASES = DeploymentStatus.model_fields["phase"].annotation.__args__  # type: ignore[union-attr]


class DeploymentPhaseCollector:
    """``loraplane_deployments{phase}``, counted from the database at scrape time."""

    def __init__(self, store: DeploymentStore) -> None:
        self.store = store

    def collect(self):
        family = GaugeMetricFamily("loraplane_deployments", "Deployments by status phase", labels=["phase"])
        counts = self.store.count_by_phase()
        for phase in PHASES:
            family.add_metric([phase], counts.get(phase, 0))
        yield family


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "loraplane_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "loraplane_http_request_duration_seconds",
            "HTTP request handling time",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): counts and times each request by route
    template, so /v1/deployments/{name} is one series, not one per name."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self.app, self.metrics, self.clock = app, metrics, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(self.clock() - start)
