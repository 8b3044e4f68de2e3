"""The serving app through the official openai client and plain HTTP: what a client sees."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from serving.tiny import ADAPTER_PATH


@pytest.fixture
def app(serve_app, tiny_share):
    return serve_app(tiny_share, admin_token="s3cret", deployment="support-bot")


@pytest.fixture
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)


def test_the_openai_client_completes_a_chat(client, app):
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
    )
    version = raw.headers["x-adapter-version"]
    assert version.startswith("sha-")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.system_fingerprint == f"lp-{version}"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert 0 < completion.usage.completion_tokens <= 8


def test_the_openai_client_streams_a_chat(client):
    stream = client.chat.completions.create(
        model="support-bot",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens > 0
    # Streaming and not streaming give the same greedy text.
    whole = client.chat.completions.create(
        model="support-bot", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0
    )
    assert text == whole.choices[0].message.content
    assert {c.system_fingerprint for c in chunks} == {whole.system_fingerprint}


def test_sse_ends_with_done(app):
    with httpx.stream(
        "POST",
        f"{app.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-adapter-version"].startswith("sha-")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_openai_client_lists_the_base_and_the_adapter(client, app):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"loraplane/tiny-llama", "support-bot"}
    adapter = models["support-bot"].model_dump()
    assert adapter["parent"] == "loraplane/tiny-llama"
    assert adapter["adapter_version"] == httpx.get(f"{app.url}/v1/adapter").json()["version"]


def test_completions_plain_and_streamed(client):
    plain = client.completions.create(model="support-bot", prompt="The quick brown", max_tokens=5, temperature=0)
    assert plain.object == "text_completion" and plain.usage.completion_tokens > 0
    streamed = client.completions.create(model="support-bot", prompt="The quick brown", max_tokens=5, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text


def test_the_base_model_can_be_asked_for_by_name(client):
    raw = client.chat.completions.with_raw_response.create(
        model="loraplane/tiny-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0
    )
    assert raw.headers["x-adapter-version"] == "base"
    adapted = client.chat.completions.create(
        model="support-bot", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0
    )
    assert raw.parse().choices[0].message.content != adapted.choices[0].message.content


def test_a_seed_makes_sampling_repeatable(client):
    def sample(seed):
        return (
            client.chat.completions.create(
                model="support-bot",
                messages=[{"role": "user", "content": "Tell me"}],
                max_tokens=12,
                temperature=1.0,
                top_p=0.9,
                seed=seed,
            )
            .choices[0]
            .message.content
        )

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_a_stop_sequence_ends_the_text_before_it(client):
    def complete(**extra):
        return client.completions.create(model="support-bot", prompt="Hello", max_tokens=16, temperature=0, **extra).choices[0]

    full = complete().text
    stop = full[4:6]
    assert stop, full
    stopped = complete(stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == full[: full.index(stop)]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", "Input should be"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2000}, "max_tokens", "context of 1024 tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages", "only text"),
    ],
)
def test_bad_requests_get_openai_style_errors(app, body, param, words):
    body = {"model": "support-bot", "max_tokens": 4, **body}
    response = httpx.post(f"{app.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    assert response.headers["x-adapter-version"].startswith("sha-")


def test_an_unknown_model_and_invalid_json(app):
    unknown = httpx.post(f"{app.url}/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert "support-bot" in unknown.json()["error"]["message"]
    broken = httpx.post(f"{app.url}/v1/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["message"] == "the request body is not valid JSON"


def test_the_reload_endpoint_needs_the_token(app):
    assert httpx.post(f"{app.url}/admin/adapter/reload").status_code == 401
    assert httpx.post(f"{app.url}/admin/adapter/reload", headers={"authorization": "Bearer nope"}).status_code == 401
    ok = httpx.post(f"{app.url}/admin/adapter/reload", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["status"] == "unchanged"


def test_the_reload_endpoint_is_off_without_a_token(serve_app, tiny_share):
    app = serve_app(tiny_share)
    response = httpx.post(f"{app.url}/admin/adapter/reload", headers={"authorization": "Bearer anything"})
    assert response.status_code == 404
    assert "LORAPLANE_ADMIN_TOKEN" in response.json()["error"]["message"]


def test_health_readiness_adapter_and_metrics(app):
    assert httpx.get(f"{app.url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{app.url}/readyz").json()
    info = httpx.get(f"{app.url}/v1/adapter").json()
    assert ready["detail"] == f"serving adapter {info['version']}"
    assert info["path"].endswith(ADAPTER_PATH) and info["last_error"] is None and not info["base_only"]
    httpx.post(f"{app.url}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=30)
    metrics = httpx.get(f"{app.url}/metrics").text
    assert "loraplane_serving_generated_tokens_total" in metrics


def test_a_missing_adapter_is_not_ready_and_names_the_path(serve_app, tiny_share):
    missing = tiny_share / "models/none"
    app = serve_app(tiny_share, ready=False, adapter_path="models/none")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = httpx.get(f"{app.url}/readyz")
        if "no adapter" in response.json()["detail"]:
            break
        time.sleep(0.1)
    assert response.status_code == 503
    assert str(missing) in response.json()["detail"]
    refused = httpx.post(f"{app.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert refused.status_code == 503 and "no adapter" in refused.json()["error"]["message"]


def test_base_only_when_allowed(serve_app, tiny_share):
    app = serve_app(tiny_share, adapter_path="models/none", allow_base_only=True)
    response = httpx.post(
        f"{app.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 3}, timeout=30
    )
    assert response.status_code == 200
    assert response.headers["x-adapter-version"] == "base"
    assert httpx.get(f"{app.url}/v1/adapter").json()["base_only"] is True


def test_a_waiting_stream_sends_keep_alive_comments(serve_app, tiny_share):
    app = serve_app(tiny_share, keepalive_seconds=0.1)
    # The engine is busy until the client has seen three keep-alives: the stream must wait.
    seen_three = threading.Event()
    busy = app.engine.call(lambda: seen_three.wait(60))
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{app.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if lines.count(": keep-alive") >= 3:
                seen_three.set()
    assert busy.result() is True, "the stream never sent three keep-alives while the engine was busy"
    keepalives = [i for i, line in enumerate(lines) if line == ": keep-alive"]
    first_token = next(i for i, line in enumerate(lines) if '"content":"' in line and '"content":""' not in line)
    assert keepalives[2] < first_token  # sent while waiting, before any token
    assert lines[-1] == "data: [DONE]"
