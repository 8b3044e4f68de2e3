"""The chat UI's reply streams through the engine and names its adapter."""

from __future__ import annotations

import httpx

from serving.ui import chat_stream


def test_the_chat_streams_token_by_token_and_shows_the_adapter(serve_app, tiny_share):
    app = serve_app(tiny_share, max_tokens_default=12)
    version = httpx.get(f"{app.url}/v1/adapter").json()["version"]
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    steps = list(chat_stream(app.engine, app.settings, "How are you?", history))
    texts = [text for text, _ in steps]
    assert len(steps) >= 2
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
    assert texts[-1]
    assert {label for _, label in steps} == {f"**Adapter:** `{version}`"}
    assert app.engine.registry.active.in_flight == 0  # the chat released its adapter
