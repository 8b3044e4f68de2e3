"""Fixtures of the azure target's tests: SQLite only (what is tested here sits above the
database), a simulator, and a provider on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from azuresim.server import AzureSimulator
from infra.azure.provider import AzureProvider
from state.store import DeploymentStore
from tests.infra.azure_world import make_provider, start_sim


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    return sqlite_store


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    simulator = start_sim(tmp_path)
    yield simulator
    simulator.stop()


@pytest.fixture
def provider(store: DeploymentStore, sim: AzureSimulator) -> Iterator[AzureProvider]:
    made = make_provider(store, sim)
    yield made
    made.close()
