"""Many adapters on one base model: each served by name, rows of different adapters in one
batch, one adapter swapped while the others serve on, a bad version of one refused alone, and
a cap on how many are resident."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import httpx
import pytest

from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, TINY_MODEL_PATH, write_random_adapter
from tests.fakes import eventually
from tests.serving.test_hot_reload import Load

POINTER = ".loraplane/support-bot/current.json"
THIRD_ADAPTER_PATH = "models/third/adapter"
NAMES = ("billing", "legal", "travel")


def write_pointer(share: Path, adapters: dict[str, tuple[str, str]]) -> None:
    """As loraplane writes it: every adapter's version and folder, replaced whole."""
    pointer = share / POINTER
    pointer.parent.mkdir(parents=True, exist_ok=True)
    scratch = pointer.with_name(".current.json.tmp")
    scratch.write_text(json.dumps({"adapters": {name: {"version": v, "path": p} for name, (v, p) in adapters.items()}}))
    os.replace(scratch, pointer)


@pytest.fixture
def three_adapters(tiny_share: Path) -> Path:
    write_random_adapter(tiny_share / TINY_MODEL_PATH, tiny_share / THIRD_ADAPTER_PATH, seed=3)
    write_pointer(
        tiny_share,
        {"billing": ("b1", ADAPTER_PATH), "legal": ("l1", SECOND_ADAPTER_PATH), "travel": ("t1", THIRD_ADAPTER_PATH)},
    )
    return tiny_share


def ask(url: str, model: str | None, *, tokens: int = 6) -> httpx.Response:
    body: dict = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": tokens, "temperature": 0}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def adapters_of(url: str) -> dict[str, dict]:
    return {a["name"]: a for a in httpx.get(f"{url}/v1/adapter").json()["adapters"]}


def test_each_adapter_is_served_by_name_from_one_base_model(serve_app, three_adapters):
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot")
    answers = {name: ask(app.url, name) for name in NAMES}
    assert {name: r.headers["x-adapter-version"] for name, r in answers.items()} == {"billing": "b1", "legal": "l1", "travel": "t1"}
    assert {name: r.json()["system_fingerprint"] for name, r in answers.items()} == {
        "billing": "lp-b1",
        "legal": "lp-l1",
        "travel": "lp-t1",
    }
    assert {name: r.json()["model"] for name, r in answers.items()} == {name: name for name in NAMES}
    texts = {name: text_of(r) for name, r in answers.items()}
    base = ask(app.url, "loraplane/tiny-llama")
    assert base.headers["x-adapter-version"] == "base"
    assert len({*texts.values(), text_of(base)}) == 4  # each adapter changes the output its own way
    # A request that names no model gets the first adapter listed.
    assert ask(app.url, None).headers["x-adapter-version"] == "b1"
    models = httpx.get(f"{app.url}/v1/models").json()["data"]
    assert [(m["id"], m.get("adapter_version")) for m in models] == [
        ("loraplane/tiny-llama", None),
        ("billing", "b1"),
        ("legal", "l1"),
        ("travel", "t1"),
    ]
    unknown = ask(app.url, "support-bot")
    assert unknown.status_code == 404 and "billing, legal" in unknown.json()["error"]["message"]
    assert list(app.engine.peft.peft_config) and len(app.engine.peft.peft_config) == 3  # one base, three adapters beside it


def test_rows_of_different_adapters_decode_in_one_batch_and_answer_as_alone(serve_app, three_adapters):
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot")
    alone = {name: text_of(ask(app.url, name, tokens=8)) for name in [*NAMES, "loraplane/tiny-llama"]}
    # Hold the engine while the four requests queue, so that they join one batch together.
    hold, queued = threading.Event(), app.engine.call(lambda: None)
    queued.result()
    busy = app.engine.call(lambda: hold.wait(60))
    passes_before = app.engine.metrics.forward_passes._value.get()
    results: dict[str, httpx.Response] = {}
    threads = [threading.Thread(target=lambda n=name: results.__setitem__(n, ask(app.url, n, tokens=8))) for name in alone]
    for thread in threads:
        thread.start()
    eventually(lambda: app.engine.metrics.waiting._value.get() == 4, what="the four requests to queue")
    hold.set()
    busy.result()
    for thread in threads:
        thread.join(timeout=120)
    assert {name: text_of(r) for name, r in results.items()} == alone
    # Together: one prefill and at most eight decode passes, not four requests' worth.
    assert app.engine.metrics.forward_passes._value.get() - passes_before <= 9


def test_one_adapter_rolls_out_under_load_on_all_and_only_its_version_changes(serve_app, three_adapters):
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot")
    loads = {name: Load(app.url, clients=2, model=name) for name in NAMES}
    for load in loads.values():
        load.__enter__()
    try:
        eventually(lambda: all(load.answered(v) >= 2 for load, v in zip(loads.values(), ("b1", "l1", "t1"), strict=True)), what="load")
        write_pointer(
            three_adapters,
            {"billing": ("b1", ADAPTER_PATH), "legal": ("l2", ADAPTER_PATH), "travel": ("t1", THIRD_ADAPTER_PATH)},
        )
        eventually(lambda: loads["legal"].answered("l2") >= 4, what="answers from legal's new version")
        eventually(lambda: loads["billing"].answered("b1") >= 6 and loads["travel"].answered("t1") >= 6, what="more answers")
    finally:
        for load in loads.values():
            load.__exit__()
    for name, load in loads.items():
        assert load.errors == [] and all(status == 200 for _, status, _, _ in load.results), name
    assert {v for _, _, v, _ in loads["billing"].results} == {"b1"}
    assert {v for _, _, v, _ in loads["travel"].results} == {"t1"}
    assert {v for _, _, v, _ in loads["legal"].results} == {"l1", "l2"}
    eventually(lambda: adapters_of(app.url)["legal"]["draining"] == [], what="legal's old version to drain")
    assert sorted(app.engine.peft.peft_config) == sorted(["a_billing__b1", "a_legal__l2", "a_travel__t1"])


def test_a_bad_version_of_one_adapter_is_refused_while_the_others_serve(serve_app, three_adapters):
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot", admin_token="admin")
    broken = three_adapters / "models/broken/adapter"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{not json")
    (broken / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    write_pointer(
        three_adapters,
        {"billing": ("b1", ADAPTER_PATH), "legal": ("l2", "models/broken/adapter"), "travel": ("t1", THIRD_ADAPTER_PATH)},
    )
    eventually(lambda: adapters_of(app.url)["legal"]["last_error"], what="legal's refusal")
    states = adapters_of(app.url)
    assert "does not parse as JSON" in states["legal"]["last_error"]
    assert {name: s["version"] for name, s in states.items()} == {"billing": "b1", "legal": "l1", "travel": "t1"}
    assert states["billing"]["last_error"] is None and states["travel"]["last_error"] is None
    assert {name: ask(app.url, name).headers["x-adapter-version"] for name in NAMES} == {"billing": "b1", "legal": "l1", "travel": "t1"}
    reload = httpx.post(f"{app.url}/admin/adapter/reload", headers={"Authorization": "Bearer admin"})
    assert reload.status_code == 422
    assert reload.json()["adapters"]["legal"]["status"] == "refused"
    assert reload.json()["adapters"]["billing"]["status"] == "unchanged"


def test_past_the_resident_cap_every_request_is_answered_as_if_all_were_loaded(serve_app, three_adapters):
    everything = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot")
    expected = {name: text_of(ask(everything.url, name)) for name in NAMES}
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot", max_resident_adapters=2)
    assert len(app.engine.peft.peft_config) == 2  # the third one listed pushed out the least recently used
    assert [a["resident"] for a in adapters_of(app.url).values()] == [False, True, True]
    for round_ in range(2):
        for name in NAMES:
            assert text_of(ask(app.url, name)) == expected[name], (round_, name)
            assert len(app.engine.peft.peft_config) <= 2
    assert app.engine.metrics.adapter_loads._value.get() >= 4  # each request in turn needed one unloaded
    # Concurrent requests for all three at once are answered too: the cap gives way while
    # every adapter is in use, and is kept again once they are idle.
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda n=name: results.__setitem__(n, text_of(ask(app.url, n)))) for name in NAMES * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == expected
    eventually(lambda: len(app.engine.peft.peft_config) <= 2, what="the cap to hold again once idle")


def test_an_adapter_loaded_again_by_a_request_survives_the_next_rollout(serve_app, three_adapters):
    """A request loads an evicted adapter again in the middle of a pass; a rollout then changes
    the model between passes. Both kinds of change must leave the model whole."""
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot", max_resident_adapters=2)
    assert [a["resident"] for a in adapters_of(app.url).values()] == [False, True, True]
    expected = text_of(ask(app.url, "billing"))  # loaded again, pushing out legal
    assert text_of(ask(app.url, "travel"))  # travel is the adapter the model last ran
    write_pointer(
        three_adapters,
        {"billing": ("b1", ADAPTER_PATH), "legal": ("l1", SECOND_ADAPTER_PATH), "travel": ("t2", SECOND_ADAPTER_PATH)},
    )
    eventually(lambda: adapters_of(app.url)["travel"]["version"] == "t2", what="travel's new version")
    assert adapters_of(app.url)["travel"]["last_error"] is None
    # t1 left the model (a delete that failed half-way would leave it, and PEFT broken).
    eventually(lambda: sorted(app.engine.peft.peft_config) == ["a_billing__b1", "a_travel__t2"], what="t1 unloaded")
    for name, version in (("travel", "t2"), ("billing", "b1"), ("legal", "l1")):
        answer = ask(app.url, name)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-adapter-version"] == version
    assert text_of(ask(app.url, "billing")) == expected


def test_an_adapter_left_out_of_the_pointer_stops_being_served(serve_app, three_adapters):
    app = serve_app(three_adapters, adapter_pointer=POINTER, deployment="support-bot")
    write_pointer(three_adapters, {"billing": ("b1", ADAPTER_PATH), "travel": ("t1", THIRD_ADAPTER_PATH)})
    eventually(lambda: "legal" not in adapters_of(app.url), what="legal to go")
    assert ask(app.url, "legal").status_code == 404
    assert ask(app.url, "travel").headers["x-adapter-version"] == "t1"
    eventually(lambda: sorted(app.engine.peft.peft_config) == ["a_billing__b1", "a_travel__t1"], what="legal unloaded")


def test_the_restart_strategy_serves_the_versions_it_was_started_with(serve_app, three_adapters):
    staged = three_adapters / ".loraplane/support-bot/adapters"
    for version, source in (("b0", ADAPTER_PATH), ("l0", SECOND_ADAPTER_PATH)):
        (staged / version).mkdir(parents=True)
        for file in (three_adapters / source).iterdir():
            (staged / version / file.name).write_bytes(file.read_bytes())
    app = serve_app(
        three_adapters, adapter_pointer=POINTER, deployment="support-bot", watch=False, adapter_versions={"billing": "b0", "legal": "l0"}
    )
    # billing and legal as started (the pointer's b1 and l1 are not theirs to follow); travel follows it.
    assert {name: ask(app.url, name).headers["x-adapter-version"] for name in NAMES} == {"billing": "b0", "legal": "l0", "travel": "t1"}
