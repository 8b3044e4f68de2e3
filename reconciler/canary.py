"""A canary's figures and its verdict, pure.

Each serving replica counts its users' requests per adapter version (``serving.traffic``) and
writes the counts in its report on the share, a file per replica process. A canary keeps the
counts it found when it began (its baseline, by report and version); what each side answered
since is the counts now less the baseline, summed over the reports. A replica that started
since has no baseline (all it counted is since); one that stopped takes its counts with it,
from both the figures and the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from state.models import TrafficFigures
from state.resource import CanaryFigures, CanarySpec

Counts = dict[str, dict[str, TrafficFigures]]  # report -> version -> figures


def counts_of(reports: list[dict[str, Any]], adapter: str) -> Counts:
    """Each replica report's counts for ``adapter``, by version."""
    counts: Counts = {}
    for report in reports:
        key = f"{report.get('replica')}@{report.get('startedAt')}"
        adapters = ((report.get("adapter") or {}).get("adapters")) or []
        state = next((a for a in adapters if isinstance(a, dict) and a.get("name") == adapter), None)
        traffic = (state or {}).get("traffic") or {}
        if isinstance(traffic, dict):
            counts[key] = {
                version: TrafficFigures.model_validate(figures) for version, figures in traffic.items() if isinstance(figures, dict)
            }
    return counts


def since(now: Counts, baseline: Counts, version: str) -> TrafficFigures:
    total = TrafficFigures()
    for key, versions in now.items():
        figures = versions.get(version)
        if figures is not None:
            total = total.plus(figures.minus(baseline.get(key, {}).get(version, TrafficFigures())))
    return total


def shown(version: str, figures: TrafficFigures) -> CanaryFigures:
    mean = figures.mean_seconds
    return CanaryFigures(
        version=version,
        requests=figures.requests,
        errors=figures.errors,
        error_rate=round(figures.error_rate, 4),
        mean_latency_ms=round(mean * 1000, 1) if mean is not None else None,
    )


def describe(figures: CanaryFigures) -> str:
    latency = f", mean {figures.mean_latency_ms:.0f} ms" if figures.mean_latency_ms is not None else ""
    return f"{figures.version}: {figures.errors} errors in {figures.requests} requests ({figures.error_rate:.1%}){latency}"


@dataclass(frozen=True)
class Verdict:
    action: Literal["wait", "promote", "rollback"]
    reason: str = ""


def judge(spec: CanarySpec, canary: CanaryFigures, stable: CanaryFigures, elapsed: float, decision: str | None) -> Verdict:
    """What to do with a canary now. A decision asked through the API (``promote:WHO`` or
    ``abort:WHO``) comes first; then its limits, once it has answered ``minRequests`` (or its
    time is up, on whatever it answered); then its time."""
    figures = f"{describe(canary)}; stable {describe(stable)}"
    if decision is not None:
        action, _, who = decision.partition(":")
        if action == "abort":
            return Verdict("rollback", f"aborted by {who or 'a deployer'} after {elapsed:.0f}s ({figures})")
        if action == "promote":
            return Verdict("promote", f"promoted by {who or 'a deployer'} after {elapsed:.0f}s ({figures})")
    over = elapsed >= spec.duration_seconds
    if canary.requests >= spec.min_requests or (over and canary.requests > 0):
        if canary.error_rate > spec.max_error_rate:
            return Verdict(
                "rollback",
                f"its error rate {canary.error_rate:.1%} is over rollout.canary.maxErrorRate {spec.max_error_rate:.1%} ({figures})",
            )
        if canary.mean_latency_ms is not None and stable.mean_latency_ms and stable.requests > 0:
            ratio = canary.mean_latency_ms / stable.mean_latency_ms
            if ratio > spec.max_latency_ratio:
                return Verdict(
                    "rollback",
                    f"its mean latency is {ratio:.2f}x the stable version's, over rollout.canary.maxLatencyRatio "
                    f"{spec.max_latency_ratio:g} ({figures})",
                )
    if over:
        quiet = " (it answered no user's request: nothing counted against it)" if canary.requests == 0 else ""
        return Verdict("promote", f"within its limits for {spec.duration_seconds}s{quiet} ({figures})")
    return Verdict("wait")
