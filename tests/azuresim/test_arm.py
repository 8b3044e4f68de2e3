"""The Azure simulator through the official SDK clients, over HTTPS with its own CA."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.appcontainers import models as aca
from azure.mgmt.loganalytics import LogAnalyticsManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient

from azuresim.server import AzureSimulator
from azuresim.state import ArmLimits
from infra.azure.credentials import StaticTokenCredential
from tests.fakes import FakeClock, eventually

SUB = "00000000-0000-0000-0000-000000000000"
FAST = {"polling_interval": 0.05}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.1) as running:
        yield running


class Clients:
    def __init__(self, sim: AzureSimulator) -> None:
        options = {"base_url": sim.url, "connection_verify": str(sim.ca_bundle), "retry_backoff_factor": 0.01}
        credential = StaticTokenCredential()
        self.resources = ResourceManagementClient(credential, SUB, **options)
        self.storage = StorageManagementClient(credential, SUB, **options)
        self.logs = LogAnalyticsManagementClient(credential, SUB, **options)
        self.apps = ContainerAppsAPIClient(credential, SUB, **options)

    def close(self) -> None:
        for client in (self.resources, self.storage, self.logs, self.apps):
            client.close()


@pytest.fixture
def clients(sim: AzureSimulator) -> Iterator[Clients]:
    made = Clients(sim)
    yield made
    made.close()


def trusting(sim: AzureSimulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sim.ca_bundle))


def calls(sim: AzureSimulator) -> dict:
    return httpx.get(f"{sim.url}/_sim/calls", verify=trusting(sim)).json()


def make_environment(clients: Clients, profile_type: str = "Consumption-GPU-NC24-A100") -> aca.ManagedEnvironment:
    clients.resources.resource_groups.create_or_update("rg", {"location": "westus3"})
    profiles = [aca.WorkloadProfile(name="gpu", workload_profile_type=profile_type)]
    return clients.apps.managed_environments.begin_create_or_update(
        "rg", "env", aca.ManagedEnvironment(location="westus3", workload_profiles=profiles), **FAST
    ).result()


def app_body(environment_id: str, *, image: str = "python:3.11", max_replicas: int = 1, target_port: int = 7860) -> aca.ContainerApp:
    return aca.ContainerApp(
        location="westus3",
        managed_environment_id=environment_id,
        configuration=aca.Configuration(
            ingress=aca.Ingress(external=True, target_port=target_port),
            secrets=[aca.Secret(name="admin-token", value="s3cret")],
        ),
        template=aca.Template(
            containers=[aca.Container(name="serving", image=image)],
            scale=aca.Scale(min_replicas=1, max_replicas=max_replicas),
        ),
    )


def test_https_is_verified_against_the_simulators_own_ca(sim):
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/_sim/calls")  # the system's CAs do not know it
    assert httpx.get(f"{sim.url}/_sim/calls", verify=trusting(sim)).status_code == 200


def test_long_running_creates_move_to_succeeded(clients):
    clients.resources.resource_groups.create_or_update("rg", {"location": "westus3"})
    account = clients.storage.storage_accounts.begin_create(
        "rg", "store1", {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}, **FAST
    ).result()
    assert str(account.provisioning_state).endswith("SUCCEEDED") or account.provisioning_state == "Succeeded"
    share = clients.storage.file_shares.create("rg", "store1", "finetune", {"share_quota": 100})
    assert share.name == "finetune"
    workspace = clients.logs.workspaces.begin_create_or_update("rg", "logs1", {"location": "westus3"}, **FAST).result()
    assert workspace.provisioning_state == "Succeeded" and workspace.customer_id
    environment = make_environment(clients)
    assert environment.provisioning_state == "Succeeded"
    assert environment.default_domain.endswith(".westus3.azurecontainerapps.io")


def test_a_container_app_being_written_says_in_progress_as_its_rest_specification_has_it(clients):
    environment = make_environment(clients)
    apps = clients.apps.container_apps
    for verb in ("create", "update"):
        answer = apps.begin_create_or_update(
            "rg", "app", app_body(environment.id, max_replicas=2 if verb == "update" else 1), polling=False
        )
        # The PUT's own answer: a read after it could come after the operation ended.
        assert answer.result().properties.provisioning_state == "InProgress", verb  # no "Updating" for apps
        eventually(lambda: apps.get("rg", "app").properties.provisioning_state == "Succeeded", what=f"the {verb} to end")


def test_a_container_app_gets_revisions_as_azure_makes_them(clients):
    environment = make_environment(clients)
    first = clients.apps.container_apps.begin_create_or_update("rg", "app", app_body(environment.id), **FAST).result()
    assert first.provisioning_state == "Succeeded"
    assert first.latest_revision_name.startswith("app--")
    assert first.latest_ready_revision_name == first.latest_revision_name
    assert first.configuration.ingress.fqdn == f"app.{environment.default_domain}"
    # Secret values are never read back; listSecrets has them.
    assert [s.value for s in first.configuration.secrets] == [None]
    assert clients.apps.container_apps.list_secrets("rg", "app").value[0].value == "s3cret"
    # A change outside the template: same revision.
    same = clients.apps.container_apps.begin_create_or_update("rg", "app", app_body(environment.id, target_port=8000), **FAST).result()
    assert same.latest_revision_name == first.latest_revision_name
    # A change under properties.template: a new revision, the old one deactivated (single mode).
    second = clients.apps.container_apps.begin_create_or_update("rg", "app", app_body(environment.id, max_replicas=3), **FAST).result()
    assert second.latest_revision_name != first.latest_revision_name
    revisions = {r.name: r for r in clients.apps.container_apps_revisions.list_revisions("rg", "app")}
    assert set(revisions) == {first.latest_revision_name, second.latest_revision_name}
    assert revisions[second.latest_revision_name].active and not revisions[first.latest_revision_name].active
    assert revisions[second.latest_revision_name].template.scale.max_replicas == 3


def test_missing_things_are_arm_errors(clients):
    with pytest.raises(ResourceNotFoundError) as info:
        clients.apps.container_apps.get("rg", "nope")
    assert info.value.error.code == "ResourceGroupNotFound"
    clients.resources.resource_groups.create_or_update("rg", {"location": "westus3"})
    with pytest.raises(ResourceNotFoundError) as info:
        clients.apps.container_apps.get("rg", "nope")
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(HttpResponseError) as info:
        clients.storage.file_shares.create("rg", "nostore", "share", {})
    assert info.value.status_code == 404


def test_an_unknown_region_or_workload_profile_is_refused(clients):
    clients.resources.resource_groups.create_or_update("rg", {"location": "westus3"})
    with pytest.raises(HttpResponseError) as info:
        clients.logs.workspaces.begin_create_or_update("rg", "logs1", {"location": "atlantis"}, **FAST).result()
    assert info.value.error.code == "LocationNotAvailableForResourceType"
    with pytest.raises(HttpResponseError) as info:
        make_environment(clients, profile_type="NC999-Quantum")
    assert info.value.error.code == "InvalidWorkloadProfileType"


def test_deletes_are_long_running_and_take_children_along(clients):
    environment = make_environment(clients)
    clients.apps.container_apps.begin_create_or_update("rg", "app", app_body(environment.id), **FAST).result()
    clients.apps.container_apps.begin_delete("rg", "app", **FAST).result()
    with pytest.raises(ResourceNotFoundError):
        clients.apps.container_apps.get("rg", "app")
    clients.resources.resource_groups.begin_delete("rg", **FAST).result()
    assert clients.resources.resource_groups.check_existence("rg") is False
    with pytest.raises(ResourceNotFoundError):
        clients.apps.managed_environments.get("rg", "env")


def test_calls_are_counted_by_method_and_type(sim, clients):
    make_environment(clients)
    clients.apps.managed_environments.get("rg", "env")
    counted = calls(sim)
    assert counted["PUT"] == {"resourceGroups": 1, "Microsoft.App/managedEnvironments": 1}
    assert counted["GET"]["Microsoft.App/managedEnvironments"] >= 2  # the LRO's final GET and ours
    list(clients.apps.managed_environments.list_by_resource_group("rg"))
    assert calls(sim)["GET"]["Microsoft.App/managedEnvironments (list)"] == 1  # a list is told from a read
    httpx.post(f"{sim.url}/_sim/calls/reset", verify=trusting(sim))
    assert calls(sim) == {}


def test_throttling_says_retry_after_and_the_sdk_waits_and_retries(sim, clients):
    clients.resources.resource_groups.create_or_update("rg", {"location": "westus3"})
    answer = httpx.post(f"{sim.url}/_sim/faults", json={"rate": 1.0, "kinds": ["throttle"], "retryAfterSeconds": 1}, verify=trusting(sim))
    assert answer.status_code == 200
    raw = httpx.get(f"{sim.url}/subscriptions/{SUB}/resourceGroups/rg?api-version=2025-04-01", verify=trusting(sim))
    assert raw.status_code == 429 and raw.headers["retry-after"] == "1"
    assert raw.json()["error"]["code"] == "TooManyRequests"
    httpx.post(
        f"{sim.url}/_sim/faults",
        json={"rate": 0.5, "kinds": ["throttle", "server_error"], "retryAfterSeconds": 0, "seed": 3},
        verify=trusting(sim),
    )
    for _ in range(5):  # the SDK's retry policy rides over the faults
        assert clients.resources.resource_groups.get("rg").name == "rg"


def test_a_failed_operation_and_a_quota_error(sim, clients):
    make_environment(clients)
    httpx.post(f"{sim.url}/_sim/faults", json={"rate": 1.0, "kinds": ["failed_operation"]}, verify=trusting(sim))
    with pytest.raises(HttpResponseError) as info:
        clients.logs.workspaces.begin_create_or_update("rg", "logs1", {"location": "westus3"}, **FAST).result()
    assert "ProvisioningFailed" in str(info.value)
    httpx.post(f"{sim.url}/_sim/faults", json={"rate": 1.0, "kinds": ["quota"]}, verify=trusting(sim))
    with pytest.raises(HttpResponseError) as info:
        clients.apps.container_apps.begin_create_or_update("rg", "app", app_body("/subscriptions/x"), **FAST).result()
    assert info.value.error.code == "MaxRegionalQuotaExceeded"
    assert "cannot have more than 1 SubscriptionNCA100Gpus" in info.value.error.message


def test_bad_fault_settings_are_refused(sim):
    answer = httpx.post(f"{sim.url}/_sim/faults", json={"rate": 1.0, "kinds": ["meteor"]}, verify=trusting(sim))
    assert answer.status_code == 400 and "unknown fault kinds" in answer.json()["error"]["message"]


# The simulator ships with the source, not the wheel: run from anywhere with the checkout on the path.
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def start_cli(cwd: Path, *args: str) -> tuple[subprocess.Popen, str, str]:
    """``python -m azuresim`` in ``cwd``; its URL and CA bundle, once it says where it is."""
    process = subprocess.Popen(
        [sys.executable, "-m", "azuresim", *args], cwd=cwd, env=CHECKOUT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url_line = process.stdout.readline() if process.stdout else ""
    ca_line = process.stdout.readline() if process.stdout else ""
    if not url_line.startswith("Azure simulator at https://127.0.0.1:"):
        process.kill()
        raise AssertionError(f"the simulator did not start: {url_line!r} {process.stderr.read() if process.stderr else ''}")
    return process, url_line.split()[-1], ca_line.split()[-1]


def ask(url: str, ca: str) -> httpx.Response:
    """A call the simulator answers 404 (no such group); it is listening once it says where."""
    return httpx.get(
        f"{url}/subscriptions/{SUB}/resourceGroups/rg?api-version=2025-04-01", verify=ssl.create_default_context(cafile=ca), timeout=10
    )


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=10)


def test_the_cli_runs_the_simulator_and_says_where(tmp_path):
    process, url, ca = start_cli(tmp_path, "--workdir", str(tmp_path / "w"))
    try:
        answer = ask(url, ca)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "ResourceGroupNotFound"
        assert Path(ca).parent == tmp_path / "w"
    finally:
        stop(process)


def test_two_simulators_started_from_one_folder_keep_their_own_ca(tmp_path):
    """A second simulator must not overwrite the first one's CA: its clients would fail with
    CERTIFICATE_VERIFY_FAILED (a service pointed at the first went Degraded that way)."""
    first, first_url, first_ca = start_cli(tmp_path)
    try:
        second, second_url, second_ca = start_cli(tmp_path)
        try:
            assert first_ca != second_ca and Path(first_ca).parent != Path(second_ca).parent
            assert ask(first_url, first_ca).status_code == 404  # still verifies against its own CA
            assert ask(second_url, second_ca).status_code == 404
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                ask(first_url, second_ca)
            # A folder another running simulator holds is refused, saying which.
            refused = subprocess.run(
                [sys.executable, "-m", "azuresim", "--workdir", str(Path(first_ca).parent)],
                cwd=tmp_path,
                env=CHECKOUT_ENV,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert refused.returncode == 1 and "is the working folder of the simulator with pid" in refused.stderr
            assert "Traceback" not in refused.stderr
        finally:
            stop(second)
    finally:
        stop(first)
    # With --share-root and no --workdir, its files go with the shares.
    shares = tmp_path / "shares"
    process, _, ca = start_cli(tmp_path, "--share-root", str(shares), "--no-run-containers")
    try:
        assert Path(ca).parent == shares / ".azure-sim"
    finally:
        stop(process)


def test_a_groups_apps_are_listed_a_page_at_a_time(clients):
    environment = make_environment(clients)
    for index in range(130):
        clients.apps.container_apps.begin_create_or_update("rg", f"app-{index:03d}", app_body(environment.id), polling=False)
    pages = list(clients.apps.container_apps.list_by_resource_group("rg").by_page())
    assert [len(list(page)) for page in pages] == [100, 30]
    listed = [app.name for app in clients.apps.container_apps.list_by_resource_group("rg")]
    assert sorted(listed) == [f"app-{index:03d}" for index in range(130)]


def test_arm_limits_answer_429_past_the_write_budget_and_the_sdk_waits(tmp_path: Path):
    """A write bucket of 3 on a clock that moves only when told: the fourth write is answered
    429 with Retry-After, whatever the machine's speed; the SDK waits and retries it once the
    bucket has refilled (the clock moved), and nothing is lost."""
    clock = FakeClock()
    limits = ArmLimits(clock=clock, buckets={"write": (3, 1.0)})
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.01, arm_limits=limits) as sim:
        made = Clients(sim)
        try:
            for index in range(3):  # the bucket holds 3
                made.resources.resource_groups.create_or_update(f"rg-{index}", {"location": "westus3"})
            assert calls(sim).get("429", {}) == {}
            fourth = threading.Thread(target=made.resources.resource_groups.create_or_update, args=("rg-3", {"location": "westus3"}))
            fourth.start()
            eventually(lambda: calls(sim).get("429", {}).get("resourceGroups") == 1, what="the fourth write to be answered 429")
            clock.advance(1.0)  # a token is back
            fourth.join(timeout=30)
            assert not fourth.is_alive(), "the SDK did not retry the throttled write"
            assert made.resources.resource_groups.get("rg-3").name == "rg-3"  # retried, not lost
            assert calls(sim)["429"] == {"resourceGroups": 1}
        finally:
            made.close()


def test_standin_replicas_answer_for_every_app_at_the_simulators_address(tmp_path: Path):
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.01, standin_replicas=True) as sim:
        made = Clients(sim)
        try:
            environment = make_environment(made)
            app = made.apps.container_apps.begin_create_or_update("rg", "bot", app_body(environment.id), **FAST).result()
            assert app.configuration.ingress.fqdn == f"127.0.0.1:{sim.port}"
            assert httpx.get(f"https://{app.configuration.ingress.fqdn}/readyz", verify=trusting(sim)).status_code == 200
        finally:
            made.close()
