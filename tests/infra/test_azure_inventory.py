"""Reads that scale with resource groups, not deployments: the inventory on a fake clock, then
the provider on the simulator with a fleet of deployments in one group."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from azuresim.server import AzureSimulator
from infra.azure.inventory import Inventory, ListedPages
from infra.azure.provider import AzureConfig, AzureProvider
from reconciler.core import Reconciler
from reconciler.journal import DatabaseJournal
from state.models import InferenceDeploymentCreate
from state.resource import DeploymentStatus
from state.store import DeploymentStore
from tests.conftest import azure_manifest
from tests.fakes import FakeClock
from tests.infra.azure_world import arm, calls, make_provider, reset_calls, writes

APP = "/subscriptions/s/resourceGroups/g/providers/Microsoft.App/containerApps/{}"
SCOPE = "/subscriptions/s/resourceGroups/g/providers/Microsoft.App/containerApps"  # the list's URL


class Azure:
    """Counts the reads the inventory makes, as ARM would see them."""

    def __init__(self, apps: list[str]) -> None:
        self.apps = {APP.format(name): {"id": APP.format(name), "name": name, "v": 1} for name in apps}
        self.gets = self.lists = 0

    def read(self, name: str):
        def get():
            self.gets += 1
            found = self.apps.get(APP.format(name))
            return dict(found) if found else None

        return get

    def read_all(self):
        self.lists += 1
        return [dict(app) for app in self.apps.values()]


def test_an_app_gone_from_the_next_list_is_known_no_more():
    clock, azure = FakeClock(), Azure(["a", "b"])
    inventory = Inventory(max_age=10, clock=clock)
    inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)
    prefix = SCOPE.lower() + "/"
    assert sorted(app["name"] for app in inventory.known(prefix)) == ["a", "b"]
    del azure.apps[APP.format("b")]  # deleted in Azure by someone else
    clock.advance(11)
    inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)
    assert [app["name"] for app in inventory.known(prefix)] == ["a"]
    assert inventory.get_listed(APP.format("b"), SCOPE, azure.read("b"), azure.read_all) is None
    assert azure.gets == 0  # the list said so


def test_what_the_apps_have_in_common_is_held_once():
    clock, azure = FakeClock(), Azure(["a", "b"])
    for app in azure.apps.values():
        app["environment"] = "".join(["/subscriptions/s/resourceGroups/g/providers/Microsoft.App/", "managedEnvironments/team"])
    inventory = Inventory(max_age=10, clock=clock)
    a = inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)
    b = inventory.get_listed(APP.format("b"), SCOPE, azure.read("b"), azure.read_all)
    assert a is not None and b is not None and a["environment"] == b["environment"]
    assert a["environment"] is b["environment"]  # each app's JSON made its own; one is kept


def test_while_a_group_is_listed_the_list_before_serves_other_readers_up_to_twice_its_age():
    clock, azure = FakeClock(), Azure(["a", "b"])
    inventory = Inventory(max_age=10, clock=clock)
    inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)
    azure.apps[APP.format("b")]["v"] = 2  # changed in Azure; the next list says so
    listing, release = threading.Event(), threading.Event()

    def slow_read_all():
        listing.set()
        assert release.wait(30), "the test never let the list finish"
        return azure.read_all()

    clock.advance(11)
    lister = threading.Thread(target=inventory.get_listed, args=(APP.format("a"), SCOPE, azure.read("a"), slow_read_all))
    lister.start()
    try:
        assert listing.wait(30), "the first reader never started the list"
        # Another worker does not wait behind the list: the one before is 11 s old, under 20.
        assert inventory.get_listed(APP.format("b"), SCOPE, azure.read("b"), azure.read_all)["v"] == 1
    finally:
        release.set()
        lister.join(30)
    assert inventory.get_listed(APP.format("b"), SCOPE, azure.read("b"), azure.read_all)["v"] == 2  # the new list
    assert azure.lists == 2 and azure.gets == 0


def test_one_list_serves_every_app_in_the_group_until_it_is_too_old():
    clock, azure = FakeClock(), Azure(["a", "b", "c"])
    inventory = Inventory(max_age=10, clock=clock)
    for name in "abc":
        assert inventory.get_listed(APP.format(name), SCOPE, azure.read(name), azure.read_all)["name"] == name
    assert (azure.lists, azure.gets) == (1, 0)
    assert inventory.get_listed(APP.format("nope"), SCOPE, azure.read("nope"), azure.read_all) is None
    assert (azure.lists, azure.gets) == (1, 0)  # not in a recent list: it does not exist

    azure.apps[APP.format("a")]["v"] = 2  # changed in Azure by someone else
    clock.advance(9)
    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)["v"] == 1
    clock.advance(2)  # older than max_age: listed again
    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)["v"] == 2
    assert azure.lists == 2


def test_a_list_made_before_a_write_does_not_undo_the_writes_answer_and_a_shorter_max_age_lists_sooner():
    clock, azure = FakeClock(), Azure(["a"])
    inventory = Inventory(max_age=10, clock=clock)
    written = threading.Event()

    def read_all_across_a_write():
        listed = azure.read_all()  # what the list saw: the app before the write
        azure.apps[APP.format("a")]["v"] = 2
        clock.advance(0.1)
        inventory.read_now(APP.format("a"), dict(azure.apps[APP.format("a")]))  # the write's answer
        written.set()
        return listed

    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), read_all_across_a_write)["v"] == 2
    assert written.is_set() and azure.gets == 0
    clock.advance(3)
    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)["v"] == 2  # within 10 s
    azure.apps[APP.format("a")]["v"] = 3  # Azure finished writing it
    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all, max_age=2)["v"] == 3
    assert (azure.lists, azure.gets) == (2, 0)


def test_what_loraplane_changed_is_read_afresh_and_alone():
    clock, azure = FakeClock(), Azure(["a", "b"])
    inventory = Inventory(max_age=10, clock=clock)
    inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)
    azure.apps[APP.format("a")]["v"] = 2
    inventory.touched(APP.format("a"))
    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)["v"] == 2
    assert (azure.lists, azure.gets) == (1, 1)
    # Read afresh once; then served from that read like any other.
    assert inventory.get_listed(APP.format("a"), SCOPE, azure.read("a"), azure.read_all)["v"] == 2
    assert (azure.lists, azure.gets) == (1, 1)


def test_other_reads_are_shared_for_max_age():
    clock, azure = FakeClock(), Azure(["a"])
    inventory = Inventory(max_age=10, clock=clock)
    for _ in range(5):
        inventory.get(APP.format("a"), azure.read("a"))
    assert azure.gets == 1
    clock.advance(11)
    inventory.get(APP.format("a"), azure.read("a"))
    assert azure.gets == 2


@pytest.fixture
def store(sqlite_store: DeploymentStore) -> DeploymentStore:
    return sqlite_store


def test_a_page_that_says_what_it_said_last_time_is_not_made_again_and_one_that_changed_is():
    clock, made = FakeClock(), []

    def make(content: bytes) -> list[str]:
        made.append(content)
        return content.decode().split(",")

    pages = ListedPages(clock=clock, retention=100)
    first = pages.made("/apps?page=1", b"a,b", make)
    assert pages.made("/apps?page=1", b"a,b", make) is first  # the same bytes: what was made then
    assert pages.made("/apps?page=2", b"a,b", make) == ["a", "b"]  # another page is its own
    assert pages.made("/apps?page=1", b"a,c", make) == ["a", "c"]  # changed: made again
    assert made == [b"a,b", b"a,b", b"a,c"]
    settled = pages.made("/apps?page=1", b"a,c", make, settle=lambda page: [name.upper() for name in page])
    assert settled == ["A", "C"] and pages.made("/apps?page=1", b"a,c", make) is settled  # what stands for it now, kept
    clock.advance(60)
    pages.made("/apps?page=1", b"a,c", make)
    clock.advance(50)  # the first page was asked for 50 s ago, the second 110 s ago: forgotten
    pages.made("/apps?page=1", b"a,c", make)
    assert len(pages) == 1 and len(made) == 3


def test_a_resync_of_a_fleet_in_one_group_lists_its_apps_instead_of_reading_each(store, tmp_path: Path):
    fleet = [f"bot-{index}" for index in range(12)]
    shared = {
        "storageAccount": "teamstore",
        "fileShare": "models",
        "environment": "team-env",
        "environmentStorage": "models",
        "logAnalytics": "team-logs",
    }
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.05, standin_replicas=True) as sim:
        provider = make_provider(store, sim)
        try:
            reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
            for name in fleet:
                store.create(InferenceDeploymentCreate.model_validate(azure_manifest(name, app=name, **shared)))
            for _ in range(40):
                if all(DeploymentStatus.model_validate(store.get(n).status).phase == "Ready" for n in fleet):
                    break
                for name in fleet:
                    reconciler.reconcile(name)
            assert {DeploymentStatus.model_validate(store.get(n).status).phase for n in fleet} == {"Ready"}

            provider.inventory.max_age = 3600  # one resync, all within one read's lifetime
            reset_calls(sim)
            for name in fleet:
                assert reconciler.reconcile(name).result == "converged"
            # ARM only: listing the adapter folders is the share's data plane.
            seen = {
                method: {kind: n for kind, n in kinds.items() if not kind.startswith("Microsoft.Storage/fileShares/")}
                for method, kinds in calls(sim).items()
            }
            assert {method for method, kinds in seen.items() if kinds} <= {"GET"}  # no writes
            # At most one list of the group's apps and one read of each shared resource: not 7 x 12.
            assert seen.get("GET", {}).get("Microsoft.App/containerApps (list)", 0) <= 1
            assert seen.get("GET", {}).get("Microsoft.App/containerApps", 0) == 0
            assert sum(seen.get("GET", {}).values()) <= 7

            # Pages that say what they said before are not parsed again (ListedPages); an app
            # someone changed in Azure meanwhile changes its page, and is seen and set back.
            provider.inventory.max_age = 0  # every observation lists the group again
            _, _, apps = arm(sim)
            changed = apps.container_apps.get("rg-inference", "bot-3")
            changed.template.scale.max_replicas = 7
            apps.container_apps.begin_create_or_update("rg-inference", "bot-3", changed).result()
            apps.close()
            reset_calls(sim)
            assert [reconciler.reconcile(name).result for name in fleet] == ["converged"] * 3 + ["progressing"] + ["converged"] * 8
            assert writes(sim) == {"PATCH": {"Microsoft.App/containerApps": 1}}
            assert [e.reason for e in store.list_events("bot-3", limit=1)] == ["Updated"]

        finally:
            provider.close()


def test_revisions_are_listed_for_replicas_that_vary_and_not_for_a_fixed_scale_app_that_runs_as_it_did(store, tmp_path: Path):
    """A list of each app's revisions on every resync would be a read per deployment."""
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.05, standin_replicas=True) as sim:
        # Revisions as old as a pass allows: whatever may be listed again is.
        config = AzureConfig(
            arm_url=sim.url, ca_bundle=sim.ca_bundle, credential="static", polling_seconds=0.05, revisions_max_age_seconds=0
        )
        provider = AzureProvider(config, DatabaseJournal(store))
        try:
            reconciler = Reconciler(store, {"azure": provider}, poll_seconds=0.1)
            store.create(InferenceDeploymentCreate.model_validate(azure_manifest("fixed", app="fixed")))
            elastic = azure_manifest("elastic", app="elastic")
            elastic["spec"]["scale"] = {"minReplicas": 1, "maxReplicas": 3}
            store.create(InferenceDeploymentCreate.model_validate(elastic))
            for _ in range(40):
                if all(DeploymentStatus.model_validate(store.get(n).status).phase == "Ready" for n in ("fixed", "elastic")):
                    break
                for name in ("fixed", "elastic"):
                    reconciler.reconcile(name)
            listed: dict[str, int] = {}
            for name in ("fixed", "elastic"):
                reset_calls(sim)
                for _ in range(3):
                    assert reconciler.reconcile(name).result == "converged"
                listed[name] = calls(sim).get("GET", {}).get("Microsoft.App/containerApps/revisions (list)", 0)
            assert listed == {"fixed": 0, "elastic": 3}
            assert DeploymentStatus.model_validate(store.get("fixed").status).cost.replicas == 1  # still counted
        finally:
            provider.close()
