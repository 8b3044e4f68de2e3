"""The engine's iteration-level scheduling as a client sees it: a request joins a running batch
and is answered while the batch goes on, rows on different adapters share passes, and every
row's numbers stay those of a direct forward pass; a full queue is a 429; parameters the
engine cannot honour are a 400 naming them, those it can are honoured."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH
from tests.fakes import eventually
from tests.serving.reference import Reference

TOLERANCE = 1e-4
BASE_ID = "loraplane/tiny-llama"


@pytest.fixture
def app(serve_app, tiny_share):
    return serve_app(tiny_share, deployment="support-bot", batch_wait_ms=0)


@pytest.fixture
def reference(tiny_share) -> Reference:
    return Reference(tiny_share / TINY_MODEL_PATH, tiny_share / ADAPTER_PATH)


def ids_of(reference: Reference, text: str) -> list[int]:
    return reference.tokenizer(text, add_special_tokens=False)["input_ids"]


def complete(app, **body) -> dict:
    response = httpx.post(f"{app.url}/v1/completions", json={"model": "support-bot", "temperature": 0, **body}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def metric(app, name: str) -> float:
    page = httpx.get(f"{app.url}/metrics", timeout=10).text
    return float(next(line.split()[1] for line in page.splitlines() if line.startswith(name + " ")))


def assert_greedy(reference: Reference, prompt: list[int], text: str, token_logprobs: list[float], tokens: int) -> None:
    """The text is the model's greedy continuation (min_tokens keeps the end token out), with
    its logprobs."""
    expected, logprobs = reference.greedy(prompt, tokens, end=False)
    assert text == reference.tokenizer.decode(expected, skip_special_tokens=True)
    assert token_logprobs == pytest.approx(logprobs, abs=TOLERANCE)


def test_a_request_joins_a_running_batch_and_is_answered_while_it_goes_on(app, reference):
    long_prompt = ids_of(reference, "Hi")
    chunks: list[dict] = []

    def stream_long() -> None:
        body = {"model": "support-bot", "prompt": long_prompt, "max_tokens": 120, "min_tokens": 120, "temperature": 0, "logprobs": 0}
        with httpx.stream("POST", f"{app.url}/v1/completions", json={**body, "stream": True}, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line.removeprefix("data: ")))

    runner = threading.Thread(target=stream_long)
    runner.start()
    eventually(lambda: chunks, what="the long generation to stream its first text")
    # One newcomer longer than the running row's cache (the running row is padded to it),
    # one shorter (it is padded): both decode beside it and leave while it goes on.
    longer = ids_of(reference, "The quick brown fox jumps over the lazy dog. " * 8)
    shorter = ids_of(reference, "Yes")
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda ids: complete(app, prompt=ids, max_tokens=5, min_tokens=5, logprobs=0), [longer, shorter]))
    assert not any(chunk["choices"][0].get("finish_reason") for chunk in chunks)  # still generating
    for prompt, answer in zip([longer, shorter], answers, strict=True):
        (choice,) = answer["choices"]
        assert_greedy(reference, prompt, choice["text"], choice["logprobs"]["token_logprobs"], 5)
    runner.join(timeout=120)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # The running row's cache was padded and trimmed under it: its numbers are still the model's.
    choices = [chunk["choices"][0] for chunk in chunks]
    streamed = [p for choice in choices if choice.get("logprobs") for p in choice["logprobs"]["token_logprobs"]]
    assert_greedy(reference, long_prompt, "".join(choice["text"] for choice in choices), streamed, 120)


def test_rows_on_the_adapter_and_on_the_base_model_share_passes(app, reference, tiny_share):
    base = Reference(tiny_share / TINY_MODEL_PATH, None)
    prompt = ids_of(reference, "Tell me about the sea")
    release = threading.Event()
    app.engine.call(release.wait)  # hold the worker so that both requests queue up
    try:
        with ThreadPoolExecutor(2) as pool:
            on_adapter = pool.submit(complete, app, prompt=prompt, max_tokens=6, min_tokens=6, logprobs=0, echo=True)
            eventually(lambda: metric(app, "loraplane_serving_waiting_jobs") == 1, what="the adapter request to queue")
            on_base = pool.submit(complete, app, model=BASE_ID, prompt=prompt, max_tokens=6, min_tokens=6, logprobs=0, echo=True)
            eventually(lambda: metric(app, "loraplane_serving_waiting_jobs") == 2, what="the base request to queue")
            passes = metric(app, "loraplane_serving_forward_passes_total")
            release.set()
            adapter_answer, base_answer = on_adapter.result(timeout=120), on_base.result(timeout=120)
    finally:
        release.set()
    assert metric(app, "loraplane_serving_forward_passes_total") == passes + 6  # one prefill, five steps: shared
    for expected, answer in ((reference, adapter_answer), (base, base_answer)):
        logprobs = answer["choices"][0]["logprobs"]["token_logprobs"]
        assert logprobs[1 : len(prompt)] == pytest.approx(expected.prompt_logprobs(prompt), abs=TOLERANCE)
        tokens, direct = expected.greedy(prompt, 6, end=False)
        assert logprobs[len(prompt) :] == pytest.approx(direct, abs=TOLERANCE)
    assert adapter_answer["choices"][0]["text"] != base_answer["choices"][0]["text"]


def test_past_the_queue_limit_a_request_gets_429_with_retry_after(serve_app, tiny_share):
    app = serve_app(tiny_share, max_queued_jobs=1, batch_wait_ms=0)
    release = threading.Event()
    app.engine.call(release.wait)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{app.url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2}, timeout=60)
            eventually(lambda: metric(app, "loraplane_serving_waiting_jobs") == 1, what="the first request to queue")
            sdk = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.RateLimitError) as refused:
                sdk.completions.create(model="adapter", prompt="Hello", max_tokens=2)
            assert refused.value.response.headers["retry-after"] == "1"
            assert refused.value.body["code"] == "queue_full" and "LORAPLANE_MAX_QUEUED_JOBS" in refused.value.body["message"]
            release.set()
            assert first.result(timeout=60).status_code == 200
    finally:
        release.set()
    assert metric(app, "loraplane_serving_queue_full_total") == 1
    assert metric(app, "loraplane_serving_queue_seconds_count") >= 1


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "does not call tools"),
        ({"tool_choice": "required"}, "tool_choice", "does not call tools"),
        ({"response_format": {"type": "json_object"}}, "response_format", "'json_object' is not supported"),
        ({"n": 2}, "n", "one choice per request (n=1)"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "keys are token ids"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "from -100 to 100"),
        ({"logit_bias": {"9999": 1}}, "logit_bias", "names token 9999, outside the model's vocabulary"),
        ({"presence_penalty": 3}, "presence_penalty", "less than or equal to 2"),
        ({"max_tokens": 5000}, "max_tokens", "more than the 4096 this server generates"),
    ],
)
def test_parameters_the_engine_cannot_honour_get_a_400_naming_them(app, extra, param, words):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    response = httpx.post(f"{app.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]


def test_completions_refuse_suffix_and_best_of_and_accept_unknown_fields_with_a_log_line(app, caplog):
    for extra, param in (({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of")):
        response = httpx.post(f"{app.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, **extra}, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    with caplog.at_level(logging.INFO, logger="loraplane.serving"):
        accepted = httpx.post(
            f"{app.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, "vendor_knob": 1, "user": "u1"}, timeout=30
        )
    assert accepted.status_code == 200
    assert [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()] == [
        "ignoring fields this server does not know: vendor_knob"
    ]


def test_logit_bias_and_penalties_steer_the_choice_as_openai_defines_them(app, reference):
    prompt = ids_of(reference, "Once upon a time")
    favoured = ids_of(reference, " the")[0]
    biased = complete(app, prompt=prompt, max_tokens=4, min_tokens=4, logit_bias={str(favoured): 100})
    assert biased["choices"][0]["text"] == reference.tokenizer.decode([favoured] * 4)
    # Presence and frequency penalties: each token's logit lowered by presence (once it has
    # appeared) plus frequency times its count so far; greedy picks from what is left.
    answer = complete(app, prompt=prompt, max_tokens=12, min_tokens=12, presence_penalty=1.5, frequency_penalty=0.5)
    tokens: list[int] = []
    for _ in range(12):
        row = reference.logprobs(prompt + tokens)[-1].clone()  # logits less a constant: the same argmax
        for token in set(tokens):
            row[token] -= 1.5 + 0.5 * tokens.count(token)
        row[reference.tokenizer.eos_token_id] = float("-inf")
        tokens.append(int(torch.argmax(row)))
    assert answer["choices"][0]["text"] == reference.tokenizer.decode(tokens, skip_special_tokens=True)


def test_a_model_is_retrieved_by_id_and_an_unknown_one_is_a_404(app):
    sdk = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)
    adapter = sdk.models.retrieve("support-bot")
    assert adapter.id == "support-bot" and adapter.object == "model"
    assert sdk.models.retrieve(BASE_ID).id == BASE_ID  # an id with a slash in it
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("gpt-4")
    assert missing.value.body["code"] == "model_not_found" and "support-bot" in missing.value.body["message"]


def test_the_context_message_names_the_numbers_that_do_not_fit(app, reference):
    prompt = ids_of(reference, "word " * 300)[:300]
    too_long = httpx.post(f"{app.url}/v1/completions", json={"prompt": prompt, "max_tokens": 900}, timeout=30)
    assert too_long.status_code == 400
    message = too_long.json()["error"]["message"]
    assert f"the prompt is {len(prompt)} tokens and max_tokens is 900" in message
    assert f"at most {1024 - len(prompt)} tokens are left" in message
    # Without max_tokens the default is cut to the room that is left.
    near_full = ids_of(reference, "word " * 2000)[:1020]
    answer = complete(app, prompt=near_full, min_tokens=4)
    assert answer["usage"]["completion_tokens"] == 4 and answer["choices"][0]["finish_reason"] == "length"


def test_static_batching_makes_a_newcomer_wait_for_the_batch_to_end(serve_app, tiny_share):
    """LORAPLANE_BATCHING=static, kept to measure against: a request that arrives while a batch
    decodes waits in the queue until the whole batch has finished."""
    app = serve_app(tiny_share, batching="static", batch_wait_ms=0)
    chunks: list[str] = []

    def long() -> None:
        body = {"prompt": "Hi", "max_tokens": 200, "min_tokens": 200, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{app.url}/v1/completions", json=body, timeout=120) as response:
            chunks.extend(line for line in response.iter_lines() if line.startswith("data: {"))

    runner = threading.Thread(target=long)
    runner.start()
    eventually(lambda: chunks, what="the long generation to start")
    with ThreadPoolExecutor(1) as pool:
        short = pool.submit(httpx.post, f"{app.url}/v1/completions", json={"prompt": "Yes", "max_tokens": 2}, timeout=120)
        eventually(lambda: metric(app, "loraplane_serving_waiting_jobs") == 1, what="the short request to queue")
        seen = len(chunks)
        eventually(lambda: len(chunks) >= seen + 10, what="the long generation to go on")
        assert metric(app, "loraplane_serving_waiting_jobs") == 1  # still waiting: not admitted beside it
        assert short.result(timeout=120).status_code == 200
    runner.join(timeout=120)


def test_a_client_that_leaves_frees_its_row_at_once(app):
    """The stream is closed after a few chunks: the row is dropped at the next step, long before
    its 400 tokens, and a request after it is answered."""
    body = {"prompt": "Hi", "max_tokens": 400, "min_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{app.url}/v1/completions", json=body, timeout=60) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: {")
            if received == 3:
                break  # leaving the block closes the connection
    eventually(lambda: metric(app, 'loraplane_serving_generations_total{finish="cancelled"}') == 1, what="the row to be dropped")
    assert metric(app, "loraplane_serving_generated_tokens_total") < 400
    assert complete(app, prompt="Yes", max_tokens=2)["choices"][0]["finish_reason"] in ("stop", "length")
