"""A canary's figures from the replicas' reports, and its verdict: pure."""

from __future__ import annotations

from reconciler.canary import counts_of, judge, shown, since
from state.models import TrafficFigures
from state.resource import CanarySpec

SPEC = CanarySpec(weight=10, duration_seconds=600, max_error_rate=0.05, max_latency_ratio=1.5, min_requests=20)


def report(replica: str, started: str, traffic: dict[str, tuple[int, int, float]], adapter: str = "billing") -> dict:
    return {
        "replica": replica,
        "startedAt": started,
        "adapter": {
            "adapters": [
                {"name": adapter, "traffic": {v: {"requests": r, "errors": e, "seconds": s} for v, (r, e, s) in traffic.items()}},
                {"name": "other", "traffic": {"v9": {"requests": 1000, "errors": 1000, "seconds": 1.0}}},
            ]
        },
    }


def test_figures_are_counted_since_the_baseline_over_every_replica():
    before = counts_of([report("a", "t0", {"v1": (100, 1, 50.0)}), report("b", "t0", {"v1": (40, 0, 20.0)})], "billing")
    now = counts_of(
        [
            report("a", "t0", {"v1": (190, 2, 95.0), "v2": (10, 1, 5.0)}),
            # b restarted: a new report, all of it since; the old one is gone with its counts.
            report("b", "t1", {"v1": (30, 0, 15.0), "v2": (5, 0, 2.5)}),
        ],
        "billing",
    )
    assert since(now, before, "v1") == TrafficFigures(requests=120, errors=1, seconds=60.0)
    assert since(now, before, "v2") == TrafficFigures(requests=15, errors=1, seconds=7.5)
    assert shown("v2", since(now, before, "v2")).model_dump() == {
        "version": "v2",
        "requests": 15,
        "errors": 1,
        "error_rate": 0.0667,
        "mean_latency_ms": 500.0,
    }


def figures(version: str, requests: int, errors: int = 0, mean: float = 0.5):
    return shown(version, TrafficFigures(requests=requests, errors=errors, seconds=mean * requests))


def test_it_waits_within_its_limits_until_its_time_is_up_then_is_promoted():
    assert judge(SPEC, figures("v2", 30), figures("v1", 270), elapsed=100, decision=None).action == "wait"
    verdict = judge(SPEC, figures("v2", 60), figures("v1", 540), elapsed=600, decision=None)
    assert verdict.action == "promote" and "within its limits for 600s" in verdict.reason


def test_errors_past_the_limit_roll_it_back_once_it_has_answered_min_requests():
    assert judge(SPEC, figures("v2", 19, errors=19), figures("v1", 200), elapsed=10, decision=None).action == "wait"
    verdict = judge(SPEC, figures("v2", 20, errors=2), figures("v1", 200), elapsed=10, decision=None)
    assert verdict.action == "rollback"
    assert verdict.reason.startswith("its error rate 10.0% is over rollout.canary.maxErrorRate 5.0%")
    assert "v2: 2 errors in 20 requests (10.0%)" in verdict.reason and "stable v1: 0 errors in 200 requests" in verdict.reason
    # At its end it is judged on whatever it answered.
    assert judge(SPEC, figures("v2", 3, errors=1), figures("v1", 30), elapsed=600, decision=None).action == "rollback"


def test_a_slower_canary_is_rolled_back_and_one_with_no_traffic_is_promoted_at_its_end():
    slow = judge(SPEC, figures("v2", 30, mean=1.0), figures("v1", 300, mean=0.5), elapsed=10, decision=None)
    assert slow.action == "rollback" and "mean latency is 2.00x the stable version's" in slow.reason
    quiet = judge(SPEC, figures("v2", 0), figures("v1", 0), elapsed=600, decision=None)
    assert quiet.action == "promote" and "answered no user's request" in quiet.reason


def test_a_decision_through_the_api_comes_first():
    assert judge(SPEC, figures("v2", 30, errors=30), figures("v1", 300), elapsed=5, decision="promote:alice").action == "promote"
    aborted = judge(SPEC, figures("v2", 1), figures("v1", 3), elapsed=5, decision="abort:bob")
    assert aborted.action == "rollback" and aborted.reason.startswith("aborted by bob after 5s")
