"""The completions API as evaluation harnesses use it: every prompt form, echo, logprobs of the
prompt and of the completion (checked against a direct forward pass of the same model and
adapter), chat logprobs, batching of scoring requests, and the tokenizer routes."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH
from tests.fakes import eventually
from tests.serving.reference import Reference

TOLERANCE = 1e-4
BASE_ID = "loraplane/tiny-llama"


@pytest.fixture
def app(serve_app, tiny_share):
    return serve_app(tiny_share, deployment="support-bot")


@pytest.fixture
def reference(tiny_share) -> Reference:
    return Reference(tiny_share / TINY_MODEL_PATH, tiny_share / ADAPTER_PATH)


@pytest.fixture
def base_reference(tiny_share) -> Reference:
    return Reference(tiny_share / TINY_MODEL_PATH, None)


def complete(app, **body) -> dict:
    response = httpx.post(f"{app.url}/v1/completions", json={"model": "support-bot", **body}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def metric(app, name: str) -> float:
    page = httpx.get(f"{app.url}/metrics", timeout=10).text
    return float(next(line.split()[1] for line in page.splitlines() if line.startswith(name + " ")))


def pairs(app) -> float:
    """Forward passes over exactly two rows."""
    return metric(app, 'loraplane_serving_batch_size_bucket{le="2.0"}') - metric(app, 'loraplane_serving_batch_size_bucket{le="1.0"}')


def ids_of(reference: Reference, text: str) -> list[int]:
    return reference.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("model", ["support-bot", BASE_ID])
def test_prompt_logprobs_match_a_direct_forward_pass(app, reference, base_reference, model):
    expected = reference if model == "support-bot" else base_reference
    # Two prompts of different lengths in one batch: the shorter is padded, which must not
    # change its numbers.
    prompts = [ids_of(expected, "The quick brown fox jumps over the lazy dog"), ids_of(expected, "Hello there")]
    answer = complete(app, model=model, prompt=prompts, max_tokens=0, echo=True, logprobs=3, temperature=0)
    assert [choice["index"] for choice in answer["choices"]] == [0, 1]
    for choice, ids in zip(answer["choices"], prompts, strict=True):
        assert choice["text"] == expected.tokenizer.decode(ids)
        assert choice["finish_reason"] == "length"
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(ids)
        assert "".join(logprobs["tokens"]) == choice["text"]
        assert logprobs["text_offset"][0] == 0
        assert logprobs["text_offset"][1:] == [sum(map(len, logprobs["tokens"][:i])) for i in range(1, len(ids))]
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
        direct = expected.prompt_logprobs(ids)
        assert max(abs(got - want) for got, want in zip(logprobs["token_logprobs"][1:], direct, strict=True)) < TOLERANCE
        table = expected.logprobs(ids)
        for position in range(1, len(ids)):
            top = logprobs["top_logprobs"][position]
            best = table[position - 1].topk(3)
            # The model's three best (by text: two byte pieces may read alike) and the prompt's own
            # token among them.
            allowed = [*best.values.tolist(), logprobs["token_logprobs"][position]]
            assert all(min(abs(value - a) for a in allowed) < TOLERANCE for value in top.values())
            assert max(top.values()) == pytest.approx(best.values[0].item(), abs=TOLERANCE)
            assert top[logprobs["tokens"][position]] == logprobs["token_logprobs"][position]
    assert answer["usage"] == {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": 0, "total_tokens": sum(map(len, prompts))}


def test_completion_logprobs_follow_the_echoed_prompt_and_match_the_model(app, reference):
    prompt = "Once upon a time"
    ids = ids_of(reference, prompt)
    tokens, direct = reference.greedy(ids, 5)
    answer = complete(app, prompt=prompt, max_tokens=5, echo=True, logprobs=2, temperature=0)
    (choice,) = answer["choices"]
    completion = reference.tokenizer.decode(tokens, skip_special_tokens=True)
    assert choice["text"] == prompt + completion
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) + len(tokens)
    generated = logprobs["token_logprobs"][len(ids) :]
    assert max(abs(got - want) for got, want in zip(generated, direct, strict=True)) < TOLERANCE
    assert logprobs["text_offset"][len(ids)] == len(prompt)
    for token, offset in zip(logprobs["tokens"][len(ids) :], logprobs["text_offset"][len(ids) :], strict=True):
        if token != reference.tokenizer.eos_token:  # the end token reads as itself, not in the text
            assert choice["text"][offset : offset + len(token)] == token
    # Greedy: each chosen token is the best of its alternatives.
    for chosen, top in zip(generated, logprobs["top_logprobs"][len(ids) :], strict=True):
        assert chosen == max(top.values())


def test_every_prompt_form_gives_one_choice_per_prompt_in_order(app, reference):
    texts = ["Hello", "The weather today"]
    ids = [ids_of(reference, text) for text in texts]

    def texts_of(prompt) -> list[str]:
        answer = complete(app, prompt=prompt, max_tokens=4, temperature=0)
        assert [choice["index"] for choice in answer["choices"]] == list(range(len(answer["choices"])))
        return [choice["text"] for choice in answer["choices"]]

    one = texts_of(texts[0])
    assert texts_of(ids[0]) == one
    both = texts_of(texts)
    assert both[0] == one[0] and len(both) == 2
    assert texts_of(ids) == both
    # The official SDK sends each form as it is.
    sdk = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)
    batch = sdk.completions.create(model="support-bot", prompt=ids, max_tokens=4, temperature=0)
    assert [choice.text for choice in sorted(batch.choices, key=lambda c: c.index)] == both


@pytest.mark.parametrize(
    ("prompt", "extra", "words"),
    [
        ([[5, 600, 7]], {}, "the prompt holds token id 600 at position 1, outside the model's vocabulary (ids 0 to 393)"),
        ([[5], [9, 512]], {}, "prompt 1 holds token id 512 at position 1"),
        ([], {}, "prompt: must be a string, a list of strings, a list of token ids, or a list of lists of token ids"),
        ([1, "a"], {}, "mixes forms"),
        ([[]], {}, "prompt 0 is an empty list of token ids"),
        ([3, -1], {}, "holds -1 at position 1: token ids are integers from 0 up"),
        ([3, 1.5], {}, "holds 1.5 at position 1"),
        (["fine", ""], {}, "prompt 1 is empty"),
        ("Hello", {"logprobs": 21}, "logprobs: Input should be less than or equal to 20"),
        ("Hello", {"max_tokens": -1}, "max_tokens: Input should be greater than or equal to 0"),
        ([[1]] * 129, {}, "129 prompts, more than the 128"),
    ],
)
def test_bad_prompts_get_a_400_naming_what_is_wrong(app, prompt, extra, words):
    response = httpx.post(f"{app.url}/v1/completions", json={"prompt": prompt, "max_tokens": 2, **extra}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert error["param"] in ("prompt", "logprobs", "max_tokens")


def test_echo_alone_returns_the_prompt_before_the_completion(app):
    plain = complete(app, prompt="Hello", max_tokens=3, temperature=0)["choices"][0]
    echoed = complete(app, prompt="Hello", max_tokens=3, temperature=0, echo=True)["choices"][0]
    assert echoed["text"] == "Hello" + plain["text"] and echoed["logprobs"] is None
    scored = complete(app, prompt="Hello", max_tokens=0, echo=True)["choices"][0]
    assert scored["text"] == "Hello" and scored["finish_reason"] == "length"
    nothing = complete(app, prompt="Hello", max_tokens=0)
    assert nothing["choices"][0]["text"] == "" and nothing["usage"]["completion_tokens"] == 0


def test_streamed_logprobs_are_the_whole_answers_in_pieces(app):
    body = {"model": "support-bot", "prompt": ["Hello", "Good morning"], "max_tokens": 6, "temperature": 0, "logprobs": 2, "echo": True}
    whole = complete(app, **body)
    pieces: dict[int, list[dict]] = {0: [], 1: []}
    with httpx.stream("POST", f"{app.url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line.removeprefix("data: "))
        (choice,) = chunk["choices"]
        pieces[choice["index"]].append(choice)
    for index, choice in enumerate(whole["choices"]):
        streamed = pieces[index]
        assert "".join(piece["text"] for piece in streamed) == choice["text"]
        assert streamed[-1]["finish_reason"] == choice["finish_reason"]
        for field in ("tokens", "text_offset", "token_logprobs"):
            joined = [value for piece in streamed if piece.get("logprobs") for value in piece["logprobs"][field]]
            if field == "token_logprobs":
                assert joined[0] is None and choice["logprobs"][field][0] is None
                assert joined[1:] == pytest.approx(choice["logprobs"][field][1:], abs=TOLERANCE)
            else:
                assert joined == choice["logprobs"][field]


def test_chat_logprobs_in_the_chat_shape_plain_and_streamed(app, reference):
    sdk = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Hello"}]
    answer = sdk.chat.completions.create(model="support-bot", messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    generated = answer.usage.completion_tokens
    assert len(content) == generated + (answer.choices[0].finish_reason == "stop")
    assert "".join(entry.token for entry in content[:generated]) == answer.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 2 and entry.bytes == list(entry.token.encode())
        # Greedy: the chosen token is the best one.
        assert entry.top_logprobs[0].logprob == entry.logprob and entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[1].logprob <= entry.logprob
    # The same numbers as a direct forward pass over the chat prompt.
    prompt = httpx.post(f"{app.url}/tokenize", json={"messages": messages}).json()["tokens"]
    _, direct = reference.greedy(prompt, 5)
    assert [entry.logprob for entry in content] == pytest.approx(direct, abs=TOLERANCE)
    stream = sdk.chat.completions.create(
        model="support-bot", messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2, stream=True
    )
    streamed = [entry for chunk in stream if chunk.choices and chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [entry.token for entry in streamed] == [entry.token for entry in content]
    # Without logprobs there are none; top_logprobs alone is a mistake worth naming.
    assert sdk.chat.completions.create(model="support-bot", messages=messages, max_tokens=2).choices[0].logprobs is None
    refused = httpx.post(f"{app.url}/v1/chat/completions", json={"messages": messages, "top_logprobs": 2})
    assert refused.status_code == 400 and "top_logprobs needs logprobs: true" in refused.json()["error"]["message"]


def test_scoring_a_batch_of_prompts_costs_one_forward_pass(app, reference):
    prompts = [ids_of(reference, text) for text in ("one", "two words", "three more words", "and four words here")]
    before = metric(app, "loraplane_serving_forward_passes_total")
    answer = complete(app, prompt=prompts, max_tokens=0, echo=True, logprobs=1)
    assert len(answer["choices"]) == 4
    assert metric(app, "loraplane_serving_forward_passes_total") == before + 1


def test_a_scoring_request_rides_in_a_batch_with_a_generation(app, reference):
    engine = app.engine
    release = threading.Event()
    engine.call(release.wait)  # hold the worker so both requests queue up before either runs
    try:
        before = metric(app, "loraplane_serving_forward_passes_total")
        passes_of_two = pairs(app)
        with ThreadPoolExecutor(2) as pool:
            generation = pool.submit(complete, app, prompt="Tell me a story", max_tokens=4, temperature=0)
            eventually(lambda: metric(app, "loraplane_serving_waiting_jobs") == 1, what="the generation to queue")
            scoring = pool.submit(complete, app, prompt=ids_of(reference, "Score me"), max_tokens=0, echo=True, logprobs=1)
            eventually(lambda: metric(app, "loraplane_serving_waiting_jobs") == 2, what="the scoring request to queue")
            release.set()
            generated, scored = generation.result(timeout=60), scoring.result(timeout=60)
    finally:
        release.set()
    assert pairs(app) == passes_of_two + 1  # one prefill for the two of them
    tokens = generated["usage"]["completion_tokens"]
    ended_early = generated["choices"][0]["finish_reason"] == "stop"
    # The generation's passes (a prefill, then one per further token), and none more for the score.
    assert metric(app, "loraplane_serving_forward_passes_total") == before + tokens + ended_early
    assert scored["choices"][0]["logprobs"]["token_logprobs"][1:] == pytest.approx(
        reference.prompt_logprobs(ids_of(reference, "Score me")), abs=TOLERANCE
    )


def test_the_tokenizer_routes_answer_as_vllms_do(app, reference):
    with app.client() as client:
        tokenized = client.post("/tokenize", json={"prompt": "Hello world", "return_token_strs": True}).json()
        assert tokenized["tokens"] == ids_of(reference, "Hello world")
        assert tokenized["count"] == len(tokenized["tokens"]) and tokenized["max_model_len"] == 1024
        assert "".join(tokenized["token_strs"]) == "Hello world"
        assert client.post("/detokenize", json={"tokens": tokenized["tokens"]}).json() == {"prompt": "Hello world"}
        info = client.get("/tokenizer_info").json()
        assert info["eos_token"] == "<|end|>" and info["pad_token"] == "<pad>" and info["vocab_size"] == len(reference.tokenizer) == 394
        bad = client.post("/detokenize", json={"tokens": [1, 4096]})
        assert bad.status_code == 400 and "token id 4096 is outside the model's vocabulary" in bad.json()["error"]["message"]
        neither = client.post("/tokenize", json={})
        assert neither.status_code == 400 and "either prompt" in neither.json()["error"]["message"]
