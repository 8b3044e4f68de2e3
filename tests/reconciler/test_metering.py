"""GPU time, counted from what each pass sees, on a fake clock and a real database: it accrues
while replicas run, stops at zero, splits at midnight (UTC), survives a restart of loraplane,
and prices by the deployment's workload profile; a budget's standing follows it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core import target_of
from reconciler.metering import GpuMetering, PriceTable, budget_status, split_by_day
from state.models import InferenceDeploymentCreate
from state.resource import BudgetSpec, DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import azure_manifest, local_manifest
from tests.fakes import FakeClock

PRICES = PriceTable("USD", {"Consumption-GPU-NC24-A100": 4.0, "NC48-A100": 6.0, "local": 0.0}, "a test's table")


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    return sqlite_store


def at(text: str) -> FakeClock:
    return FakeClock(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


class Passes:
    """A deployment's passes as the reconciler makes them: measure, then commit what is due."""

    def __init__(self, store: DeploymentStore, clock: FakeClock, manifest: dict, metering: GpuMetering | None = None) -> None:
        self.store, self.clock = store, clock
        self.row = (
            store.get(manifest["metadata"]["name"])
            if _exists(store, manifest)
            else store.create(InferenceDeploymentCreate.model_validate(manifest))
        )
        self.metering = metering or GpuMetering(store, PRICES, clock=clock.datetime, flush_seconds=60)

    def look(self, replicas: int | None, after: float = 0.0):
        self.clock.advance(after)
        measured = self.metering.measure(self.row, target_of(self.row), replicas)
        if measured.write is not None:
            status = DeploymentStatus.model_validate(self.store.get(self.row.name).status)
            self.store.update_status(self.row.name, status, uid=self.row.uid, usage=measured.write)
            self.metering.settle(self.row.uid, measured.write)
        return measured.cost


def _exists(store: DeploymentStore, manifest: dict) -> bool:
    return manifest["metadata"]["name"] in store.names()


def test_gpu_hours_accrue_while_replicas_run_and_stop_at_zero(store):
    passes = Passes(store, at("2026-12-07T08:00:00"), azure_manifest("support-bot"))
    assert passes.look(2).gpu_hours_today == 0
    assert passes.look(2, after=1800).gpu_hours_today == 1.0  # two A100 replicas, half an hour
    cost = passes.look(0, after=1800)  # the time since the last look ran at 2: one more hour
    assert cost.gpu_hours_today == 2.0 and cost.replicas == 0
    assert passes.look(0, after=7200).gpu_hours_today == 2.0  # at zero, nothing accrues
    cost = passes.look(1, after=60)
    assert (cost.gpu_hours_this_month, cost.estimated_cost_this_month, cost.currency) == (2.0, 8.0, "USD")
    days = store.gpu_usage(passes.row.uid, since_day="2026-12-01")
    assert [(d.day, d.gpu_seconds, d.profile) for d in days] == [("2026-12-07", 7200.0, "Consumption-GPU-NC24-A100")]


def test_the_time_is_split_at_midnight_and_counted_across_a_restart_of_loraplane(store):
    clock = at("2026-12-07T23:30:00")
    manifest = azure_manifest("support-bot", workloadProfile={"type": "NC48-A100"})  # two GPUs a replica
    first = Passes(store, clock, manifest)
    first.look(1)
    first.look(1, after=600)  # written: the last look at 23:40, one replica
    # loraplane stops; the replica runs on; a new process counts from the last look it finds.
    later = Passes(store, clock, manifest, GpuMetering(store, PRICES, clock=clock.datetime, flush_seconds=60))
    cost = later.look(1, after=3000)  # 00:30 the next day
    assert cost.gpu_hours_today == 1.0  # 30 minutes since midnight, two GPUs
    days = {d.day: d.gpu_seconds for d in store.gpu_usage(later.row.uid, since_day="2026-12-01")}
    assert days == {"2026-12-07": 30 * 60 * 2.0, "2026-12-08": 30 * 60 * 2.0}
    assert cost.gpu_hours_this_month == 2.0 and cost.estimated_cost_this_month == 12.0  # at 6 a GPU-hour


def test_a_steady_deployment_writes_once_a_flush_and_a_change_at_once(store):
    passes = Passes(store, at("2026-12-07T08:00:00"), local_manifest("support-bot"))
    passes.look(1)
    writes = [passes.metering.measure(passes.row, target_of(passes.row), 1).write is not None for _ in range(3)]
    assert writes == [False, False, False]  # no time has passed, nothing changed
    passes.clock.advance(30)
    assert passes.metering.measure(passes.row, target_of(passes.row), 1).write is None
    assert passes.metering.measure(passes.row, target_of(passes.row), 0).write is not None  # a replica stopped


def test_a_profile_without_a_price_has_no_estimate_and_says_so(store):
    passes = Passes(store, at("2026-12-07T08:00:00"), azure_manifest("support-bot"))
    passes.metering = GpuMetering(store, PriceTable.load(None), clock=passes.clock.datetime)
    passes.look(1)
    cost = passes.look(1, after=3600)
    assert cost.gpu_hours_today == 1.0 and cost.estimated_cost_this_month is None and cost.currency is None
    assert "no Azure price set" in PriceTable.load(None).source


def test_a_price_table_is_read_from_a_file_and_a_bad_one_says_what_it_should_be(tmp_path: Path):
    good = tmp_path / "prices.json"
    good.write_text('{"currency": "EUR", "source": "our agreement, 2026-12", "prices": {"NC24-A100": 3.1}}')
    table = PriceTable.load(good)
    assert (table.currency, table.price("NC24-A100"), table.source) == ("EUR", 3.1, "our agreement, 2026-12")
    bad = tmp_path / "bad.json"
    bad.write_text('{"prices": "free"}')
    with pytest.raises(ValueError, match="cannot be read"):
        PriceTable.load(bad)


def test_days_and_budgets():
    assert split_by_day(datetime(2026, 12, 7, 23, 0, tzinfo=UTC), datetime(2026, 12, 8, 1, 0, tzinfo=UTC)) == {
        "2026-12-07": 3600.0,
        "2026-12-08": 3600.0,
    }
    from state.resource import CostStatus

    cost = CostStatus(gpu_hours_today=3.5, gpu_hours_this_month=30.0, estimated_cost_this_month=120.0, currency="USD")
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    daily = budget_status(BudgetSpec(gpuHoursPerDay=4), cost, now)
    assert daily is not None and (daily.state, daily.period, daily.limit) == ("NearlySpent", "2026-12-07", "4 GPU-hours a day")
    monthly = budget_status(BudgetSpec(costPerMonth=100), cost, now)
    assert monthly is not None and (monthly.state, monthly.period, monthly.fraction) == ("Exceeded", "2026-12", 1.2)
    assert budget_status(BudgetSpec(gpuHoursPerMonth=100), cost, now).state == "Within"  # type: ignore[union-attr]
    unknown = CostStatus(gpu_hours_today=1, gpu_hours_this_month=1)
    assert budget_status(BudgetSpec(costPerMonth=100), unknown, now) is None
