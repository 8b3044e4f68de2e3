"""The local provider's plan: pure, from what was observed to what must be done."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import PermanentError, TemporaryError
from infra.local.process import ProcessRecord
from infra.local.provider import LocalFacts, LocalProvider, RunningProcess, restart_delay
from infra.provider import Action, Observation, Target
from state.resource import DeploymentSpec
from tests.conftest import local_manifest

NOW = 1_800_000_000.0


def target(**spec) -> Target:
    return Target("bot", "uid-1", 1, DeploymentSpec.model_validate(local_manifest(**spec)["spec"]))


def observed(*, running: bool = False, config_hash: str | None = None, recorded: bool = True, **facts) -> Observation[LocalFacts]:
    base = {"now": NOW, "share_root_exists": True, "model_exists": True, "record": None, "log_tail": ""}
    process = RunningProcess(pid=1, port=1, config_hash=config_hash, recorded=recorded) if running else None
    return Observation(LocalFacts(**{**base, **facts}, running=process))


@pytest.fixture
def provider(tmp_path: Path) -> LocalProvider:
    return LocalProvider(tmp_path, serving_command=["serve-me"])


def record(**fields) -> ProcessRecord:
    base = dict(uid="uid-1", pid=1, create_time=1.0, port=1, config_hash="x", started_at=NOW - 100)
    return ProcessRecord(**{**base, **fields})


def test_not_running_means_start_it(provider):
    assert provider.plan(target(), observed()) == [Action("create", "ServingProcess", "bot", "not running")]


def test_running_with_the_same_settings_means_nothing_to_do(provider):
    t = target()
    facts = observed(running=True, config_hash=provider.launch_config(t).hash)
    assert provider.plan(t, facts) == []


def test_running_with_other_settings_means_restart(provider):
    t = target()
    old_hash = provider.launch_config(t).hash
    changed = target(model={"path": "models/other"})
    actions = provider.plan(changed, observed(running=True, config_hash=old_hash))
    assert actions == [Action("restart", "ServingProcess", "bot", "its settings changed")]


def test_the_settings_hash_follows_what_the_app_is_told(provider):
    base = provider.launch_config(target()).hash
    assert provider.launch_config(target(adapter={"path": "a/b"})).hash != base
    # The rollout timing settings are not the app's: they do not restart it.
    assert provider.launch_config(target(adapter={"settleSeconds": 99})).hash == base


def test_a_missing_model_is_permanent_and_names_the_path(provider):
    with pytest.raises(PermanentError) as info:
        provider.plan(target(model={"path": "models/phi"}), observed(model_exists=False))
    assert info.value.reason == "ModelNotFound"
    assert "/srv/share/models/phi" in info.value.message


def test_a_missing_share_is_permanent(provider):
    with pytest.raises(PermanentError, match="share root /srv/share does not exist") as info:
        provider.plan(target(), observed(share_root_exists=False))
    assert info.value.reason == "ShareRootNotFound"


def test_scale_to_zero_stops_it(provider):
    t = target(scale={"minReplicas": 0, "maxReplicas": 0})
    assert provider.plan(t, observed(running=True)) == [Action("delete", "ServingProcess", "bot", "scale.maxReplicas is 0")]
    assert provider.plan(t, observed()) == []


def test_a_quick_death_waits_out_a_growing_delay(provider):
    for failures, lived in [(0, 0.25), (1, 0.5), (3, 2.0)]:
        facts = observed(record=record(started_at=NOW - lived, consecutive_failures=failures), log_tail="boom\nTraceback: oops")
        with pytest.raises(TemporaryError) as info:
            provider.plan(target(), facts)
        assert info.value.reason == "ServingProcessCrashed"
        assert info.value.delay == pytest.approx(restart_delay(failures) - lived)
        assert "its log ends: Traceback: oops" in info.value.message


def test_once_the_delay_has_passed_it_restarts(provider):
    facts = observed(record=record(started_at=NOW - 5, consecutive_failures=1))
    assert provider.plan(target(), facts) == [Action("create", "ServingProcess", "bot", "the serving process exited")]


def test_restart_delays_double_up_to_five_minutes():
    assert [restart_delay(n) for n in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
