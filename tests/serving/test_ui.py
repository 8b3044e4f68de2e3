"""The chat UI: a conversation streamed through the engine, on the adapter or the base model,
with a system prompt, temperature and token budget, naming what answers from the first load."""

from __future__ import annotations

import httpx
from gradio_client import Client

from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH
from serving.ui import BASE, chat_stream


def test_the_chat_streams_token_by_token_and_shows_the_adapter(serve_app, tiny_share):
    app = serve_app(tiny_share, max_tokens_default=12)
    version = httpx.get(f"{app.url}/v1/adapter").json()["version"]
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    # Greedy, so the random tiny model answers the same every run (sampled, it may stop at once).
    steps = list(chat_stream(app.engine, app.settings, "How are you?", history, temperature=0.0))
    texts = [text for text, _ in steps]
    assert len(steps) >= 2
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
    assert texts[-1]
    assert {label for _, label in steps} == {f"**Adapter:** `{version}`"}
    assert app.engine.registry.active.in_flight == 0  # the chat released its adapter


def test_settings_decide_the_answer(serve_app, tiny_share):
    app = serve_app(tiny_share)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]

    def answer(**settings) -> tuple[str, str]:
        return list(chat_stream(app.engine, app.settings, "And then?", history, **settings))[-1]

    greedy = answer(temperature=0.0, max_tokens=8)
    assert answer(temperature=0.0, max_tokens=8) == greedy  # temperature 0: the same answer

    def generated() -> float:
        page = httpx.get(f"{app.url}/metrics").text
        return float(next(line.split()[1] for line in page.splitlines() if line.startswith("loraplane_serving_generated_tokens_total")))

    before = generated()
    answer(temperature=0.0, max_tokens=2)
    assert 1 <= generated() - before <= 2  # the budget holds
    text, label = answer(temperature=0.0, max_tokens=8, use_adapter=False)
    assert label == "**Base model:** no adapter"
    assert app.engine.registry.active.in_flight == 0


def test_the_page_names_the_serving_version_and_keeps_a_conversation(serve_app, tiny_share):
    app = serve_app(tiny_share, ui=True, max_tokens_default=6)
    version = httpx.get(f"{app.url}/v1/adapter").json()["version"]
    client = Client(f"{app.url}/", verbose=False, download_files=False)
    # What the page shows on its first load (before: "none loaded yet" until a message).
    assert client.predict(api_name="/serving") == f"**Adapter:** `{version}`"
    history, label, cleared = client.predict("Hi", [], "the adapter", "Be brief.", 0.0, 4, api_name="/respond")
    assert label == f"**Adapter:** `{version}`" and cleared == ""
    assert [turn["role"] for turn in history] == ["user", "assistant"]
    history, label, _ = client.predict("And then?", history, BASE, "", 0.0, 4, api_name="/respond")
    assert [turn["role"] for turn in history] == ["user", "assistant", "user", "assistant"]
    assert label == "**Base model:** no adapter"


def test_with_several_adapters_the_chat_answers_with_the_one_named(serve_app, tiny_share):
    from tests.serving.test_many_adapters import POINTER, write_pointer

    write_pointer(tiny_share, {"billing": ("b1", ADAPTER_PATH), "legal": ("l1", SECOND_ADAPTER_PATH)})
    app = serve_app(tiny_share, ui=True, adapter_pointer=POINTER, deployment="support-bot", max_tokens_default=6)
    steps = list(chat_stream(app.engine, app.settings, "Hi", [], adapter_name="legal", temperature=0.0))
    assert steps[-1][1] == "**Adapter:** legal `l1`"
    client = Client(f"{app.url}/", verbose=False, download_files=False)
    _, label, _ = client.predict("Hi", [], "billing", "", 0.0, 4, api_name="/respond")
    assert label == "**Adapter:** billing `b1`"
