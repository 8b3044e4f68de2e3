"""A Gradio chat at ``/``: a conversation streamed through the same engine, on the adapter or
the base model, with a system prompt, temperature and a token budget; the adapter version in
use is shown from the page's first load and kept current.

Its API (``/respond``, for gradio_client) takes the whole conversation, so a client holds the
history, as with the OpenAI API."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import gradio as gr

from serving.decode import Job
from serving.engine import Engine
from serving.settings import ServingSettings

ADAPTER, BASE = "the adapter", "the base model"
CHOICES = [ADAPTER, BASE]
DEFAULT_TEMPERATURE = 0.7


def serving_label(engine: Engine) -> str:
    """What new requests get now: the adapter version, or why there is none."""
    active = engine.registry.active
    if active is not None:
        return f"**Adapter:** `{active.version}`"
    if engine.base is None:
        return "**Adapter:** the model is loading"
    first = next(iter(engine.registry.slots()), None)
    return f"**Adapter:** none loaded ({(first.last_error if first else None) or 'waiting for one'})"


def chat_stream(
    engine: Engine,
    settings: ServingSettings,
    message: str,
    history: list[dict[str, Any]],
    *,
    use_adapter: bool = True,
    adapter_name: str | None = None,
    system_prompt: str = "",
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int | None = None,
) -> Iterator[tuple[str, str]]:
    """The reply to ``message`` after ``history`` (OpenAI-style messages), growing token by
    token, with the label of what writes it (an adapter version, or the base model).
    ``adapter_name`` picks one adapter of several (None: the first)."""
    adapter = engine.registry.acquire(adapter_name) if use_adapter else None
    if engine.base is None or (use_adapter and adapter is None):
        if adapter is not None:
            engine.registry.release(adapter)
        yield "The model is not ready yet; try again in a moment.", serving_label(engine)
        return
    turns = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    turns += [{"role": h["role"], "content": h["content"] if isinstance(h["content"], str) else str(h["content"])} for h in history]
    turns.append({"role": "user", "content": message})
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    budget = min(int(max_tokens or settings.max_tokens_default), settings.max_tokens_limit)
    job = Job(
        prompt_ids=engine.chat_prompt(turns),
        max_new_tokens=max(1, budget),
        temperature=float(temperature),
        top_p=0.95 if temperature > 0 else 1.0,
        stop=[],
        seed=None,
        adapter=adapter,
        emit=lambda kind, payload: events.put((kind, payload)),
    )
    engine.submit(job)
    many = len(engine.registry.names()) > 1
    named = f"{adapter.adapter} " if adapter is not None and many else ""
    text, label = "", (f"**Adapter:** {named}`{adapter.version}`" if adapter is not None else "**Base model:** no adapter")
    try:
        while True:
            kind, payload = events.get()
            if kind == "delta":
                text += payload.text
                yield text, label
            elif kind == "done":
                yield text, label
                return
            else:
                yield f"{text}\n\n[error: {payload}]", label
                return
    finally:
        job.cancelled.set()


def model_choices(engine: Engine) -> list[str]:
    """What the page may answer with: each adapter by name (the one adapter as "the adapter"),
    or the base model."""
    names = engine.registry.names()
    return [*names, BASE] if len(names) > 1 else CHOICES


def build_ui(engine: Engine, settings: ServingSettings) -> gr.Blocks:
    def respond(
        message: str, history: list[dict[str, Any]], model: str, system_prompt: str, temperature: float, max_tokens: float
    ) -> Iterator[tuple[list[dict[str, Any]], str, str]]:
        history = list(history or [])
        if not message.strip():
            yield history, serving_label(engine), ""
            return
        asked = [*history, {"role": "user", "content": message}]
        for text, label in chat_stream(
            engine,
            settings,
            message,
            history,
            use_adapter=model != BASE,
            adapter_name=model if model in engine.registry.names() else None,
            system_prompt=system_prompt or "",
            temperature=float(temperature),
            max_tokens=int(max_tokens),
        ):
            yield [*asked, {"role": "assistant", "content": text}], label, ""

    with gr.Blocks(title="loraplane chat") as ui:
        gr.Markdown(f"## loraplane · {settings.deployment or settings.model_dir.name}")
        version = gr.Markdown(serving_label(engine))
        with gr.Row():
            # Any adapter by name (allow_custom_value): the page may be built before the pointer names them.
            model = gr.Dropdown(model_choices(engine), value=model_choices(engine)[0], label="Answer with", allow_custom_value=True)
            temperature = gr.Slider(0.0, 2.0, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature (0: always the same answer)")
            max_tokens = gr.Slider(1, settings.max_tokens_limit, value=settings.max_tokens_default, step=1, label="Max tokens")
        system_prompt = gr.Textbox(label="System prompt", placeholder="optional: how the assistant should answer", lines=2)
        chatbot = gr.Chatbot(label="Conversation", height=420)
        message = gr.Textbox(placeholder="Ask something, then Enter", show_label=False)
        clear = gr.Button("New conversation")
        message.submit(
            respond, [message, chatbot, model, system_prompt, temperature, max_tokens], [chatbot, version, message], api_name="respond"
        )
        clear.click(lambda: ([], serving_label(engine)), None, [chatbot, version], api_visibility="private")
        # The label is the version now, not when the page was built (before the first adapter
        # loaded, it said "none loaded yet" until the first message), and it follows swaps.
        ui.load(lambda: serving_label(engine), None, version, api_name="serving")
        # The adapters are known once the pointer is read, perhaps after the page was built.
        ui.load(lambda: gr.update(choices=model_choices(engine), value=model_choices(engine)[0]), None, model, api_visibility="private")
        gr.Timer(5.0).tick(lambda: serving_label(engine), None, version, api_visibility="private")
    return ui
