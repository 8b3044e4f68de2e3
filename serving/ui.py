"""A Gradio chat at ``/``: streams tokens through the same engine, shows the adapter in use."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import gradio as gr

from serving.engine import Engine, Job
from serving.settings import ServingSettings


def _label(version: str | None) -> str:
    return f"**Adapter:** `{version}`" if version else "**Adapter:** none loaded yet"


def chat_stream(engine: Engine, settings: ServingSettings, message: str, history: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """The chat's reply, growing token by token, with the adapter version that writes it."""
    adapter = engine.registry.acquire()
    if engine.base is None or adapter is None:
        if adapter is not None:
            engine.registry.release(adapter)
        yield "The model is not ready yet; try again in a moment.", _label(None)
        return
    turns = [{"role": h["role"], "content": h["content"] if isinstance(h["content"], str) else str(h["content"])} for h in history]
    turns.append({"role": "user", "content": message})
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    job = Job(
        prompt_ids=engine.chat_prompt(turns),
        max_new_tokens=settings.max_tokens_default,
        temperature=0.7,
        top_p=0.95,
        stop=[],
        seed=None,
        adapter=adapter,
        emit=lambda kind, payload: events.put((kind, payload)),
    )
    engine.submit(job)
    text, label = "", _label(adapter.version)
    try:
        while True:
            kind, payload = events.get()
            if kind == "delta":
                text += payload
                yield text, label
            elif kind == "done":
                yield text, label
                return
            else:
                yield f"{text}\n\n[error: {payload}]", label
                return
    finally:
        job.cancelled.set()


def build_ui(engine: Engine, settings: ServingSettings) -> gr.Blocks:
    def respond(message: str, history: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        yield from chat_stream(engine, settings, message, history)

    with gr.Blocks(title="loraplane chat") as ui:
        gr.Markdown(f"## loraplane · {settings.deployment or settings.model_dir.name}")
        version = gr.Markdown(_label(engine.registry.active.version if engine.registry.active else None))
        gr.ChatInterface(respond, additional_outputs=[version])
    return ui
