"""The ARM limiter and the ARM error table, with real SDK clients against the simulator."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.appcontainers import models as aca
from azure.mgmt.loganalytics import LogAnalyticsManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

from azuresim.server import AzureSimulator
from azuresim.state import ArmLimits
from infra.azure.clients import AzureClients, AzureConfig
from infra.azure.credentials import StaticTokenCredential, make_credential
from infra.azure.errors import QUOTA_RETRY_SECONDS, classify_azure_error
from infra.azure.kinds import ContainerApp
from infra.azure.limiter import ArmLimiter, BucketSpec, TokenBucket, kind_of, principal_of, scope_of
from infra.errors import PermanentError, TemporaryError
from infra.ratelimit import TICKET_GRACE_SECONDS, Throttled, fail_fast
from state.resource import AzureSpec
from tests.conftest import azure_manifest
from tests.fakes import FakeClock

SUB = "00000000-0000-0000-0000-000000000000"


# ------------------------------------------------------------------------------ limiter


def test_a_bucket_gives_its_burst_then_one_token_per_interval():
    clock = FakeClock(0.0)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    bucket = TokenBucket(BucketSpec(rate_per_second=10, burst=3), clock=clock, sleep=sleep)
    assert [bucket.acquire() for _ in range(3)] == [0, 0, 0]
    assert bucket.acquire() == pytest.approx(0.1, abs=0.002)
    assert bucket.acquire() == pytest.approx(0.1, abs=0.002)
    clock.advance(10)  # idle time refills up to the burst, no further
    assert [bucket.acquire() for _ in range(3)] == [0, 0, 0]
    assert bucket.acquire() == pytest.approx(0.1, abs=0.002)


def test_calls_are_sorted_into_reads_writes_and_deletes():
    assert [kind_of(m) for m in ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE")] == ["read", "read", "write", "write", "write", "delete"]
    limiter = ArmLimiter()
    # ARM's rates, with bursts a tenth below ARM's (250, 200, 200).
    assert limiter.specs == {"read": BucketSpec(25.0, 225), "write": BucketSpec(10.0, 180), "delete": BucketSpec(10.0, 180)}
    with pytest.raises(ValueError):
        TokenBucket(BucketSpec(0, 1))


def test_callers_turned_away_get_tickets_one_token_apart_and_find_their_token_kept():
    clock = FakeClock(0.0)
    bucket = TokenBucket(BucketSpec(rate_per_second=10, burst=2), clock=clock)
    assert [bucket.reserve("a"), bucket.reserve("b")] == [0, 0]
    # Empty: each caller turned away is told a time of its own, 0.1 s after the one before.
    assert [bucket.reserve(name) for name in ("c", "d", "e")] == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    assert bucket.reserve("d") == pytest.approx(0.2)  # asking again early: the same time
    clock.advance(0.2)
    # A newcomer queues behind the tickets; c and d find their tokens kept for them.
    assert bucket.reserve("f") == pytest.approx(0.2)
    assert [bucket.reserve("d"), bucket.reserve("c")] == [0, 0]
    assert bucket.take() > 0  # a waiting caller (take/acquire) is behind the tickets too
    clock.advance(1.0)
    assert [bucket.reserve("e"), bucket.reserve("f")] == [0, 0]
    assert bucket.tickets() == 0


def test_a_ticket_never_redeemed_gives_its_token_back():
    clock = FakeClock(0.0)
    bucket = TokenBucket(BucketSpec(rate_per_second=0.01, burst=1), clock=clock)  # a token every 100 s
    assert bucket.reserve("a") == 0
    assert bucket.reserve("gone") == pytest.approx(100.0)  # its deployment is deleted meanwhile
    clock.advance(100.0 + TICKET_GRACE_SECONDS + 1.0)
    # 0.31 of the next token has come, not a whole one: the one kept for "gone" is given to the
    # next caller (never more than the burst).
    assert bucket.reserve("b") == 0
    assert bucket.reserve("c") == pytest.approx(100.0)
    assert bucket.tickets() == 1


def _jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"Bearer e30.{part}.c2ln"


def test_buckets_are_arms_own_per_subscription_principal_and_kind():
    assert scope_of(f"https://management.azure.com/subscriptions/{SUB.upper()}/resourceGroups/rg?api-version=1") == SUB
    assert scope_of("https://management.azure.com/tenants?api-version=2022-01-01") == "tenant"
    assert principal_of(_jwt({"oid": "1111", "appid": "2222"})) == "1111"
    assert principal_of(_jwt({"appid": "2222"})) == "2222"
    assert principal_of("Bearer loraplane-simulator-token") == principal_of(None) == ""
    clock = FakeClock(0.0)
    limiter = ArmLimiter({"write": BucketSpec(1, 2)}, clock=clock, sleep=lambda s: clock.advance(s))
    other = "11111111-1111-1111-1111-111111111111"
    with fail_fast("support-bot"):
        limiter.acquire("PUT", SUB)
        limiter.acquire("POST", SUB)
        with pytest.raises(Throttled) as info:
            limiter.acquire("PATCH", SUB)
        assert info.value.delay == pytest.approx(1.0)
        assert f"write budget of subscription {SUB}" in info.value.message
        # Another subscription, another principal, or another kind of call: budgets of their own.
        limiter.acquire("PUT", other)
        limiter.acquire("PUT", SUB, principal="1111")
        limiter.acquire("GET", SUB)
        limiter.acquire("DELETE", SUB)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.05) as running:
        yield running


def options(sim: AzureSimulator, **extra) -> dict:
    return {"base_url": sim.url, "connection_verify": str(sim.ca_bundle), **extra}


def set_faults(sim: AzureSimulator, **faults) -> None:
    httpx.post(f"{sim.url}/_sim/faults", json=faults, verify=ssl.create_default_context(cafile=str(sim.ca_bundle)))


def test_every_sdk_attempt_waits_for_a_token(sim):
    clock = FakeClock(0.0)
    waited: list[float] = []
    limiter = ArmLimiter(
        {"read": BucketSpec(5, 2), "write": BucketSpec(5, 1)}, clock=clock, sleep=lambda s: (waited.append(s), clock.advance(s))
    )
    client = ResourceManagementClient(
        StaticTokenCredential(), SUB, **options(sim, per_retry_policies=[limiter.policy()], retry_backoff_factor=0.01)
    )
    client.resource_groups.create_or_update("rg", {"location": "westus3"})
    for _ in range(4):
        client.resource_groups.get("rg")
    assert waited == [pytest.approx(0.2, abs=0.002), pytest.approx(0.2, abs=0.002)]  # 2 reads from the burst, then 1 per 0.2 s
    # Retries are attempts too: a throttled call takes a token for each try.
    set_faults(sim, rate=1.0, kinds=["server_error"], seed=1)
    with pytest.raises(HttpResponseError):
        client.resource_groups.get("rg", retry_total=2)
    assert len(waited) == 5
    client.close()


def test_a_worker_over_budget_sends_nothing_and_is_told_when_to_come_back(sim):
    clock = FakeClock(0.0)
    limiter = ArmLimiter({"write": BucketSpec(2, 1)}, clock=clock, sleep=lambda s: pytest.fail("a worker must not wait"))
    client = ResourceManagementClient(StaticTokenCredential(), SUB, **options(sim, per_retry_policies=[limiter.policy()]))
    with fail_fast("support-bot"):
        client.resource_groups.create_or_update("rg", {"location": "westus3"})
        with pytest.raises(Throttled) as info:
            client.resource_groups.create_or_update("rg-two", {"location": "westus3"})
        assert info.value.delay == pytest.approx(0.5)
        clock.advance(0.5)
        client.resource_groups.create_or_update("rg-two", {"location": "westus3"})  # its ticket's token
    assert calls_of(sim)["PUT"] == {"resourceGroups": 2}  # the throttled attempt never left
    assert [client.resource_groups.get(name).name for name in ("rg", "rg-two")] == ["rg", "rg-two"]
    client.close()


def test_a_list_begun_is_finished_its_later_pages_waiting_for_their_tokens(sim):
    """A worker may be turned away before a list's first page, but not halfway through it: a
    list broken off is lost whole, and every pass after it would begin it again."""
    apps = make_group_and_environment(sim)
    environment = apps.managed_environments.begin_create_or_update("rg", "env", env(), polling_interval=0.05).result()
    for index in range(130):  # two pages
        body = aca.ContainerApp(location="westus3", managed_environment_id=environment.id, template=aca.Template(containers=[]))
        apps.container_apps.begin_create_or_update("rg", f"app-{index:03d}", body, polling=False)
    apps.close()
    clock = FakeClock(0.0)
    waited: list[float] = []
    limiter = ArmLimiter({"read": BucketSpec(2, 1)}, clock=clock, sleep=lambda s: (waited.append(s), clock.advance(s)))
    clients = AzureClients(SUB, AzureConfig(arm_url=sim.url, ca_bundle=sim.ca_bundle), StaticTokenCredential(), limiter)
    azure = AzureSpec.model_validate(azure_manifest("lister")["spec"]["azure"]).model_copy(update={"resource_group": "rg"})
    try:
        with fail_fast("lister"):
            listed = [item["name"] for item in ContainerApp().list_group(clients, azure)]
            assert sorted(listed) == [f"app-{index:03d}" for index in range(130)]
            assert waited == [pytest.approx(0.5)]  # the second page waited for its token
            with pytest.raises(Throttled):  # the next list cannot begin: the pass is given back
                next(iter(ContainerApp().list_group(clients, azure)))
        assert calls_of(sim)["GET"]["Microsoft.App/containerApps (list)"] == 2
    finally:
        clients.close()


def test_a_429_from_arm_empties_the_bucket_and_a_worker_gives_the_pass_back(tmp_path: Path):
    arm_clock = FakeClock(0.0)
    limits = ArmLimits(clock=arm_clock, buckets={"write": (1, 0.5)})
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.01, arm_limits=limits) as sim:
        clock = FakeClock(0.0)
        limiter = ArmLimiter(clock=clock, sleep=lambda s: pytest.fail("a worker must not wait"))
        client = ResourceManagementClient(StaticTokenCredential(), SUB, **options(sim, per_retry_policies=[limiter.policy()]))
        with fail_fast("support-bot"):
            client.resource_groups.create_or_update("rg", {"location": "westus3"})
            # Someone else spends the subscription's write budget: ARM says 429, Retry-After 2.
            with pytest.raises(Throttled) as info:
                client.resource_groups.create_or_update("rg-two", {"location": "westus3"})
            assert info.value.delay == pytest.approx(2.0)
            # Every caller of that subscription now waits too, rather than spending into 429s.
            with pytest.raises(Throttled):
                client.resource_groups.create_or_update("rg-three", {"location": "westus3"})
        assert sum(calls_of(sim).get("429", {}).values()) == 1
        client.close()


def calls_of(sim: AzureSimulator) -> dict[str, dict[str, int]]:
    return httpx.get(f"{sim.url}/_sim/calls", verify=ssl.create_default_context(cafile=str(sim.ca_bundle))).json()


# ------------------------------------------------------------------------------ errors


def make_group_and_environment(sim: AzureSimulator) -> ContainerAppsAPIClient:
    ResourceManagementClient(StaticTokenCredential(), SUB, **options(sim)).resource_groups.create_or_update("rg", {"location": "westus3"})
    return ContainerAppsAPIClient(StaticTokenCredential(), SUB, **options(sim, retry_total=0))


def env(profile: str = "Consumption-GPU-NC24-A100", location: str = "westus3") -> aca.ManagedEnvironment:
    return aca.ManagedEnvironment(location=location, workload_profiles=[aca.WorkloadProfile(name="gpu", workload_profile_type=profile)])


def classify_call(call) -> Exception:
    with pytest.raises(Exception) as info:
        call()
    return classify_azure_error(info.value, doing="creating managed environment env")


def test_quota_is_a_slow_retry_carrying_azures_message(sim):
    apps = make_group_and_environment(sim)
    set_faults(sim, rate=1.0, kinds=["quota"])
    error = classify_call(lambda: apps.managed_environments.begin_create_or_update("rg", "env", env(), polling_interval=0.05).result())
    assert isinstance(error, TemporaryError)
    assert (error.reason, error.delay) == ("QuotaExceeded", QUOTA_RETRY_SECONDS)
    assert "cannot have more than 1 SubscriptionNCA100Gpus" in error.message
    assert error.message.startswith("creating managed environment env: Azure said MaxRegionalQuotaExceeded")


def test_an_unknown_region_or_workload_profile_is_permanent(sim):
    apps = make_group_and_environment(sim)
    error = classify_call(
        lambda: apps.managed_environments.begin_create_or_update("rg", "env", env(location="atlantis"), polling_interval=0.05).result()
    )
    assert isinstance(error, PermanentError) and error.reason == "UnknownRegion"
    error = classify_call(
        lambda: apps.managed_environments.begin_create_or_update("rg", "env", env(profile="NC999-Quantum"), polling_interval=0.05).result()
    )
    assert isinstance(error, PermanentError) and error.reason == "UnknownWorkloadProfile"


def test_throttling_waits_as_long_as_azure_says(sim):
    apps = make_group_and_environment(sim)
    set_faults(sim, rate=1.0, kinds=["throttle"], retryAfterSeconds=7)
    error = classify_call(lambda: apps.managed_environments.get("rg", "env"))
    assert isinstance(error, TemporaryError) and (error.reason, error.delay) == ("Throttled", 7.0)


def test_server_errors_and_missing_parents_are_temporary(sim):
    apps = ContainerAppsAPIClient(StaticTokenCredential(), SUB, **options(sim, retry_total=0))
    error = classify_call(lambda: apps.managed_environments.begin_create_or_update("rg", "env", env(), polling_interval=0.05).result())
    assert isinstance(error, TemporaryError) and error.reason == "DependencyNotReady"
    make_group_and_environment(sim)
    set_faults(sim, rate=1.0, kinds=["server_error"])
    error = classify_call(lambda: apps.managed_environments.get("rg", "env"))
    assert isinstance(error, TemporaryError) and error.reason == "AzureError" and error.delay is None


def test_a_failed_long_running_operation_is_temporary(sim):
    make_group_and_environment(sim)
    logs = LogAnalyticsManagementClient(StaticTokenCredential(), SUB, **options(sim, retry_total=0))
    set_faults(sim, rate=1.0, kinds=["failed_operation"])
    error = classify_call(
        lambda: logs.workspaces.begin_create_or_update("rg", "logs", {"location": "westus3"}, polling_interval=0.05).result()
    )
    assert isinstance(error, TemporaryError)


def test_refused_credentials_are_permanent_and_unknown_credential_kinds_are_refused():
    error = classify_azure_error(ClientAuthenticationError(message="token expired"), doing="reading app")
    assert isinstance(error, PermanentError) and error.reason == "AuthorizationFailed"
    with pytest.raises(ValueError, match="'default' or 'static'"):
        make_credential("magic")
    assert make_credential("static").get_token("scope").token
