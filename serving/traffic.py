"""What each adapter version answered users: requests, errors and their time, counted per
version for as long as this process runs. loraplane compares a canary with the stable version
from these figures (summed over the replicas' reports on the share); a request that names its
version (``NAME@VERSION``: loraplane's own gate prompts) is not a user's and is not counted."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# Versions remembered per adapter: a long-lived replica sees many rollouts, and only the last
# few can be in a comparison.
MAX_VERSIONS_PER_ADAPTER = 16


@dataclass
class VersionTraffic:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0  # the answers' time summed, admission to last token


class TrafficStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, OrderedDict[str, VersionTraffic]] = {}
        self._requests = Counter(
            "loraplane_serving_adapter_requests",
            "Users' requests answered, by adapter, version and outcome (ok, or error: the generation failed)",
            ["adapter", "version", "outcome"],
            registry=registry,
        )
        self._seconds = Histogram(
            "loraplane_serving_adapter_request_seconds",
            "Users' requests, admission to last token, by adapter and version",
            ["adapter", "version"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )

    def record(self, adapter: str, version: str, *, ok: bool, seconds: float) -> None:
        with self._lock:
            versions = self._versions.setdefault(adapter, OrderedDict())
            figures = versions.get(version)
            if figures is None:
                figures = versions[version] = VersionTraffic()
                while len(versions) > MAX_VERSIONS_PER_ADAPTER:
                    versions.popitem(last=False)
            figures.requests += 1
            figures.errors += 0 if ok else 1
            figures.seconds += seconds
        self._requests.labels(adapter, version, "ok" if ok else "error").inc()
        self._seconds.labels(adapter, version).observe(seconds)

    def of(self, adapter: str) -> dict[str, VersionTraffic]:
        """A copy of each version's figures for ``adapter``."""
        with self._lock:
            return {version: VersionTraffic(f.requests, f.errors, f.seconds) for version, f in self._versions.get(adapter, {}).items()}
