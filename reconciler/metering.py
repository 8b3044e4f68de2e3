"""GPU use per deployment, its estimated cost, and where it stands against its budget.

Each pass tells the meter how many replicas run now (the provider's observation: a running
local process is one; on Azure, the replicas of the app's active revisions). The time since the
last look is counted at the replicas seen then, times the GPUs a replica of the deployment's
workload profile has, split by UTC day: a left sum, as exact as the passes are frequent (a
resync every 30 s). It is written, GPU-seconds per day and the last look, at most every
``flush_seconds`` or when the replica count changes, so a deployment that runs steadily costs
one write a flush, not one a pass; the last look is kept in the database, so the time
loraplane was down is counted at what ran before (replicas run on without it).

The cost is the GPU-hours times the price table's rate for the profile (per GPU-hour). The
table is configured (``LORAPLANE_GPU_PRICES``); where it names no price for a profile the cost
is unknown, and said to be.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from infra.provider import Target
from reconciler.writer import ReadStore
from state import azure_limits
from state.models import InferenceDeployment
from state.resource import BudgetSpec, BudgetStatus, CostStatus
from state.store import UsageWrite

LOCAL_PROFILE = "local"
NEARLY = 0.8  # a budget this far spent is news


@dataclass(frozen=True)
class PriceTable:
    """Price per GPU-hour by workload profile type, in one currency, and where they come from."""

    currency: str
    prices: dict[str, float]
    source: str

    def price(self, profile: str) -> float | None:
        return self.prices.get(profile)

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """The table in ``path`` (JSON: {"currency", "source", "prices": {PROFILE: per GPU-hour}}),
        or the default: the local target at 0 (it is this machine), no Azure price. Azure's prices
        (azure.microsoft.com/pricing/details/container-apps, per GPU-second for serverless GPUs
        and per instance for dedicated profiles) vary by region, currency and agreement, and
        change: a team sets its own."""
        if path is None:
            return cls("USD", {LOCAL_PROFILE: 0.0}, "default: local target 0; no Azure price set (LORAPLANE_GPU_PRICES)")
        try:
            document = json.loads(path.read_text())
            prices = {str(k): float(v) for k, v in document["prices"].items()}
            return cls(str(document.get("currency", "USD")), prices, str(document.get("source") or path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"the GPU price table {path} cannot be read ({exc}): it is JSON, "
                '{"currency": "USD", "source": "where and when", "prices": {"Consumption-GPU-NC24-A100": 3.5}}'
            ) from exc


def profile_of(target: Target, local_gpus: float) -> tuple[str, float]:
    """The deployment's workload profile type (its price) and the GPUs one replica has."""
    azure = target.spec.azure
    if azure is None:
        return LOCAL_PROFILE, local_gpus
    kind = azure_limits.profile_type(azure.workload_profile.type)
    return (kind.name, float(kind.gpus)) if kind is not None else (azure.workload_profile.type, 0.0)


def split_by_day(start: datetime, end: datetime) -> dict[str, float]:
    """The seconds from ``start`` to ``end``, by UTC day (YYYY-MM-DD)."""
    found: dict[str, float] = {}
    moment = start.astimezone(UTC)
    end = end.astimezone(UTC)
    while moment < end:
        midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
        upto = min(end, midnight)
        day = moment.date().isoformat()  # every pass of every deployment comes here: not strftime
        found[day] = found.get(day, 0.0) + (upto - moment).total_seconds()
        moment = upto
    return found


def budget_status(budget: BudgetSpec, cost: CostStatus, now: datetime) -> BudgetStatus | None:
    """How much of the budget is spent in its period (None: a cost budget with no price known)."""
    if budget.gpu_hours_per_day is not None:
        limit, used, what = budget.gpu_hours_per_day, cost.gpu_hours_today, f"{budget.gpu_hours_per_day:g} GPU-hours a day"
    elif budget.gpu_hours_per_month is not None:
        limit, used, what = budget.gpu_hours_per_month, cost.gpu_hours_this_month, f"{budget.gpu_hours_per_month:g} GPU-hours a month"
    else:
        assert budget.cost_per_month is not None
        if cost.estimated_cost_this_month is None:
            return None
        limit, used = budget.cost_per_month, cost.estimated_cost_this_month
        what = f"{cost.currency or ''} {budget.cost_per_month:g} a month".strip()
    fraction = used / limit
    state = "Exceeded" if fraction >= 1 else "NearlySpent" if fraction >= NEARLY else "Within"
    period = now.strftime("%Y-%m-%d") if budget.period == "day" else now.strftime("%Y-%m")
    return BudgetStatus(limit=what, used=round(used, 6), fraction=round(fraction, 4), period=period, state=state)  # type: ignore[arg-type]


@dataclass
class _Open:
    """What the meter knows of one deployment between flushes."""

    replicas: int
    gpus: float
    profile: str
    at: datetime
    flushed_at: datetime
    pending: dict[str, float] = field(default_factory=dict)  # GPU-seconds by day, not written yet
    written: dict[str, tuple[float, str]] = field(default_factory=dict)  # day of this month -> (GPU-seconds, profile)


@dataclass(frozen=True)
class Metered:
    """A pass's look: what to write (None: not yet), and the status's cost part."""

    write: UsageWrite | None
    cost: CostStatus


class GpuMetering:
    def __init__(
        self,
        store: ReadStore,
        prices: PriceTable,
        *,
        clock: Callable[[], datetime],
        flush_seconds: float = 60.0,
        local_gpus: float = 1.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store, self.prices, self.clock = store, prices, clock
        self.flush_seconds, self.local_gpus = flush_seconds, local_gpus
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        registry = registry or CollectorRegistry()
        self._replicas = Gauge(
            "loraplane_deployment_replicas", "Serving replicas running, at the last look", ["deployment"], registry=registry
        )
        self._hours_today = Gauge("loraplane_deployment_gpu_hours_today", "GPU-hours today (UTC)", ["deployment"], registry=registry)
        self._hours_month = Gauge(
            "loraplane_deployment_gpu_hours_this_month", "GPU-hours this month (UTC)", ["deployment"], registry=registry
        )
        self._cost_month = Gauge(
            "loraplane_deployment_estimated_cost_this_month",
            "Estimated cost this month, at the price table's rates (absent: no price known)",
            ["deployment", "currency"],
            registry=registry,
        )

    def forget(self, uid: str, name: str | None = None) -> None:
        with self._lock:
            self._open.pop(uid, None)
        if name is not None:
            for gauge in (self._replicas, self._hours_today, self._hours_month):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
            with contextlib.suppress(KeyError):
                self._cost_month.remove(name, self.prices.currency)

    def _show(self, name: str, cost: CostStatus) -> None:
        self._replicas.labels(name).set(cost.replicas or 0)
        self._hours_today.labels(name).set(cost.gpu_hours_today)
        self._hours_month.labels(name).set(cost.gpu_hours_this_month)
        if cost.estimated_cost_this_month is not None:
            self._cost_month.labels(name, self.prices.currency).set(cost.estimated_cost_this_month)

    def _opened(self, row: InferenceDeployment, replicas: int, gpus: float, profile: str, now: datetime) -> _Open:
        meter = self.store.gpu_meter(row.uid)
        month = now.strftime("%Y-%m")
        written = {u.day: (u.gpu_seconds, u.profile) for u in self.store.gpu_usage(row.uid, since_day=f"{month}-01")}
        if meter is None:
            return _Open(replicas, gpus, profile, now, flushed_at=now - timedelta(seconds=self.flush_seconds), written=written)
        return _Open(meter.replicas, meter.gpus_per_replica, meter.profile, meter.at, flushed_at=meter.at, written=written)

    def measure(self, row: InferenceDeployment, target: Target, replicas: int | None, *, force: bool = False) -> Metered:
        """Count the time since the last look at the replicas seen then; the write due now, if
        any (``settle`` it once committed), and the cost so far."""
        now = self.clock()
        profile, gpus = profile_of(target, self.local_gpus)
        with self._lock:
            meter = self._open.get(row.uid)
            if meter is None:
                meter = self._open[row.uid] = self._opened(row, replicas or 0, gpus, profile, now)
            seen = meter.replicas if replicas is None else replicas
            if now > meter.at:
                for day, seconds in split_by_day(meter.at, now).items():
                    meter.pending[day] = meter.pending.get(day, 0.0) + seconds * meter.replicas * meter.gpus
            changed = (seen, gpus, profile) != (meter.replicas, meter.gpus, meter.profile)
            meter.replicas, meter.gpus, meter.profile, meter.at = seen, gpus, profile, max(now, meter.at)
            due = force or changed or (now - meter.flushed_at).total_seconds() >= self.flush_seconds
            write = UsageWrite(row.name, {d: s for d, s in meter.pending.items() if s > 0}, seen, gpus, profile, meter.at) if due else None
            cost = self._cost(meter, now, seen)
        self._show(row.name, cost)
        return Metered(write, cost)

    def settle(self, uid: str, write: UsageWrite) -> None:
        """``write`` is in the database: what it held is no longer pending."""
        with self._lock:
            meter = self._open.get(uid)
            if meter is None:
                return
            month = write.at.strftime("%Y-%m")
            for day, seconds in write.seconds_by_day.items():
                meter.pending[day] = meter.pending.get(day, 0.0) - seconds
                if meter.pending[day] <= 1e-9:
                    del meter.pending[day]
                if day.startswith(month):
                    before = meter.written.get(day, (0.0, write.profile))[0]
                    meter.written[day] = (before + seconds, write.profile)
            meter.written = {d: v for d, v in meter.written.items() if d.startswith(month)}
            meter.flushed_at = write.at

    def _cost(self, meter: _Open, now: datetime, replicas: int) -> CostStatus:
        today = now.date().isoformat()  # YYYY-MM-DD
        month = today[:7]
        days: dict[str, list[tuple[float, str]]] = {}
        for day, (seconds, profile) in meter.written.items():
            days.setdefault(day, []).append((seconds, profile))
        for day, seconds in meter.pending.items():
            days.setdefault(day, []).append((seconds, meter.profile))
        month_seconds = sum(s for day, parts in days.items() if day.startswith(month) for s, _ in parts)
        today_seconds = sum(s for s, _ in days.get(today, []))
        cost: float | None = 0.0
        for day, parts in days.items():
            if not day.startswith(month):
                continue
            for seconds, profile in parts:
                price = self.prices.price(profile)
                if price is None:
                    cost = None if seconds > 0 else cost
                elif cost is not None:
                    cost += seconds / 3600 * price
        if month_seconds == 0 and self.prices.price(meter.profile) is None:
            cost = None
        return CostStatus(
            gpu_hours_today=round(today_seconds / 3600, 6),
            gpu_hours_this_month=round(month_seconds / 3600, 6),
            estimated_cost_this_month=round(cost, 2) if cost is not None else None,
            currency=self.prices.currency if cost is not None else None,
            replicas=replicas,
        )
