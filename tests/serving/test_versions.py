"""Versions loaded beside the serving one, as loraplane's gate and canary use them: a version
named as ``NAME@VERSION`` answers and users are never given it; a canary takes its share of
users, the same user always on the same side; users' requests are counted per version; a
version loaded beside becomes the serving one without being read again; and versions whose
weights are broken are refused at load, or fail their requests, never the others'."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest

from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH
from tests.broken_adapters import write_nan_adapter, write_overflowing_adapter
from tests.fakes import eventually
from tests.serving.test_many_adapters import POINTER

CHAT = "/v1/chat/completions"


def write_pointer(share: Path, entries: dict[str, dict]) -> None:
    pointer = share / POINTER
    pointer.parent.mkdir(parents=True, exist_ok=True)
    scratch = pointer.with_name(".current.json.tmp")
    scratch.write_text(json.dumps({"adapters": entries}))
    os.replace(scratch, pointer)


def entry(version: str, path: str, *, loaded: dict[str, str] | None = None, canary: tuple[str, int] | None = None) -> dict:
    document: dict = {"version": version, "path": path, "loaded": [{"version": v, "path": p} for v, p in (loaded or {}).items()]}
    if canary is not None:
        document["canary"] = {"version": canary[0], "weight": canary[1]}
    return document


def ask(url: str, model: str, *, user: str | None = None, session: str | None = None, temperature: float = 0) -> httpx.Response:
    body: dict = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": temperature}
    if user is not None:
        body["user"] = user
    headers = {"x-session-id": session} if session is not None else {}
    return httpx.post(f"{url}{CHAT}", json=body, headers=headers, timeout=120)


def billing(url: str) -> dict:
    return next(a for a in httpx.get(f"{url}/v1/adapter").json()["adapters"] if a["name"] == "billing")


def metric(url: str, name: str) -> float:
    page = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in page.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


@pytest.fixture
def app(serve_app, tiny_share: Path):
    write_pointer(tiny_share, {"billing": entry("v1", ADAPTER_PATH, loaded={"v2": SECOND_ADAPTER_PATH})})
    return serve_app(tiny_share, adapter_pointer=POINTER, deployment="support-bot", watch_interval_seconds=0.1)


def test_a_version_loaded_beside_answers_when_named_and_users_never_get_it(app):
    named = ask(app.url, "billing@v2")
    assert named.status_code == 200 and named.headers["x-adapter-version"] == "v2"
    assert named.json()["model"] == "billing@v2"
    assert {ask(app.url, "billing").headers["x-adapter-version"] for _ in range(20)} == {"v1"}
    state = billing(app.url)
    assert state["version"] == "v1"
    assert [v["version"] for v in state["loaded"]] == ["v2"]
    missing = ask(app.url, "billing@v9")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found" and "loaded here: v1, v2" in missing.json()["error"]["message"]
    # The serving version answers by its name too; the names' versions answer as they do.
    assert (
        ask(app.url, "billing@v1").json()["choices"][0]["message"]["content"]
        == ask(app.url, "billing").json()["choices"][0]["message"]["content"]
    )


def test_users_requests_are_counted_per_version_and_named_ones_are_not(app):
    for _ in range(3):
        assert ask(app.url, "billing").status_code == 200
    assert ask(app.url, "billing@v2").status_code == 200
    traffic = billing(app.url)["traffic"]
    assert set(traffic) == {"v1"}
    assert traffic["v1"]["requests"] == 3 and traffic["v1"]["errors"] == 0 and traffic["v1"]["seconds"] > 0
    assert metric(app.url, "loraplane_serving_adapter_requests_total") == 3


def test_a_canary_takes_its_share_of_users_and_a_user_stays_on_one_side(app, tiny_share):
    write_pointer(tiny_share, {"billing": entry("v1", ADAPTER_PATH, loaded={"v2": SECOND_ADAPTER_PATH}, canary=("v2", 25))})
    eventually(lambda: (billing(app.url).get("canary") or {}).get("weight") == 25, what="the canary at 25%")
    served = Counter(ask(app.url, "billing", user=f"user-{i}").headers["x-adapter-version"] for i in range(200))
    # 200 users, each on the canary with probability 1/4: 50 expected, and 30-70 holds with
    # a probability above 0.999 (binomial, 6 standard deviations wide).
    assert 30 <= served["v2"] <= 70, served
    assert served["v1"] + served["v2"] == 200
    for user in ("alice", "bob", "carol"):
        assert len({ask(app.url, "billing", user=user).headers["x-adapter-version"] for _ in range(5)}) == 1
    assert len({ask(app.url, "billing", session="s-42").headers["x-adapter-version"] for _ in range(5)}) == 1
    traffic = billing(app.url)["traffic"]
    assert traffic["v1"]["requests"] + traffic["v2"]["requests"] == 220  # every user's request, under the side it took
    assert traffic["v2"]["requests"] >= served["v2"]
    write_pointer(tiny_share, {"billing": entry("v1", ADAPTER_PATH, loaded={"v2": SECOND_ADAPTER_PATH})})
    eventually(lambda: billing(app.url).get("canary") is None, what="the canary ended")
    assert {ask(app.url, "billing", user=f"user-{i}").headers["x-adapter-version"] for i in range(40)} == {"v1"}


def test_a_version_loaded_beside_becomes_the_serving_one_without_being_read_again(app, tiny_share):
    eventually(lambda: [v["version"] for v in billing(app.url)["loaded"]] == ["v2"], what="v2 loaded beside v1")
    loads = metric(app.url, "loraplane_serving_adapter_weight_loads_total")
    answer_of_v2 = ask(app.url, "billing@v2").json()["choices"][0]["message"]["content"]
    write_pointer(tiny_share, {"billing": entry("v2", SECOND_ADAPTER_PATH, loaded={"v1": ADAPTER_PATH})})
    eventually(lambda: billing(app.url)["version"] == "v2", what="v2 serving")
    assert ask(app.url, "billing").json()["choices"][0]["message"]["content"] == answer_of_v2
    assert [v["version"] for v in billing(app.url)["loaded"]] == ["v1"]  # the one before, for a rollback
    assert metric(app.url, "loraplane_serving_adapter_weight_loads_total") == loads


def test_a_version_whose_weights_hold_nan_is_refused_at_load_and_the_others_serve(serve_app, tiny_share):
    write_nan_adapter(tiny_share / SECOND_ADAPTER_PATH, tiny_share / "models/diverged")
    write_pointer(tiny_share, {"billing": entry("v1", ADAPTER_PATH, loaded={"v3": "models/diverged"})})
    app = serve_app(tiny_share, adapter_pointer=POINTER, deployment="support-bot")
    state = eventually(lambda: billing(app.url)["loaded"] or None, what="v3 judged")
    assert state[0]["version"] == "v3" and "NaN or infinite" in state[0]["error"]
    refused = ask(app.url, "billing@v3")
    assert refused.status_code == 404 and "NaN or infinite" in refused.json()["error"]["message"]
    assert ask(app.url, "billing").headers["x-adapter-version"] == "v1"


def test_a_version_that_overflows_fails_its_own_requests_and_no_one_elses(app, tiny_share):
    write_overflowing_adapter(tiny_share / SECOND_ADAPTER_PATH, tiny_share / "models/exploded")
    write_pointer(tiny_share, {"billing": entry("v1", ADAPTER_PATH, loaded={"v4": "models/exploded"}, canary=("v4", 50))})
    eventually(lambda: (billing(app.url).get("canary") or {}).get("version") == "v4", what="v4 as the canary")
    answers = [ask(app.url, "billing", user=f"user-{i}", temperature=0.7) for i in range(40)]
    failed = [a for a in answers if a.status_code != 200]
    assert failed and all(a.headers["x-adapter-version"] == "v4" for a in failed)
    assert "non-finite logits" in failed[0].json()["error"]["message"]
    assert all(a.status_code == 200 for a in answers if a.headers["x-adapter-version"] == "v1")
    traffic = billing(app.url)["traffic"]
    assert traffic["v4"]["errors"] == traffic["v4"]["requests"] == len(failed)
    assert traffic["v1"]["errors"] == 0
