"""The gate's judgement of answers, its prompts from the spec and the share, and its verdict:
pure, on answers made up as the serving app gives them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from infra.endpoints import AppAnswer
from reconciler.gate import GateInvalid, judge, prompts_of, reason_of, request_of, run, verdict
from state.resource import GatePrompt, GateSpec

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def chat(text: str, *, seconds: float = 0.05) -> AppAnswer:
    return AppAnswer(200, {"choices": [{"message": {"role": "assistant", "content": text}}]}, seconds)


def completion(text: str) -> AppAnswer:
    return AppAnswer(200, {"choices": [{"text": text}]}, 0.05)


def prompt(**fields) -> GatePrompt:
    return GatePrompt.model_validate({"prompt": "Where is my refund?", **fields})


def test_contains_and_not_contains_name_what_is_missing_and_what_is_there():
    result = judge("refund", prompt(contains=["refund", "5 days"], notContains="sorry"), completion("Sorry: your refund is late"), None)
    assert not result.passed
    assert result.failures == ["expected it to contain '5 days'"]
    result = judge("refund", prompt(contains="refund", notContains=["late"]), completion("your refund is late"), None)
    assert result.failures == ["expected it not to contain 'late'"]
    assert judge("ok", prompt(contains="refund"), completion("refund in 5 days"), None).passed


def test_a_regex_must_match_and_one_that_never_ends_fails_rather_than_hangs():
    assert judge("r", prompt(regex=r"\d+ days"), completion("in 5 days"), None).passed
    failed = judge("r", prompt(regex=r"\d+ days"), completion("soon"), None)
    assert failed.failures == ["expected it to match the regex '\\\\d+ days'"]
    slow = judge("r", prompt(regex=r"(a|aa)+$"), completion("a" * 60 + "!"), None)
    assert not slow.passed and "took over" in slow.failures[0]


def test_json_schema_wants_json_that_meets_it_and_says_where_it_does_not():
    schema = {"type": "object", "required": ["intent"], "properties": {"intent": {"enum": ["refund", "billing"]}}}
    assert judge("j", prompt(jsonSchema=schema), completion('{"intent": "refund"}'), None).passed
    assert judge("j", prompt(jsonSchema=schema), completion("refund please"), None).failures == [
        "expected JSON that meets the schema; it is not JSON"
    ]
    wrong = judge("j", prompt(jsonSchema=schema), completion('{"intent": "travel"}'), None)
    assert wrong.failures[0].startswith("expected JSON that meets the schema; at intent: 'travel' is not one of")


def test_latency_and_the_baseline():
    assert judge("l", prompt(maxLatencyMs=100), chat("hi", seconds=0.25), None).failures == ["expected it within 100 ms; it took 250 ms"]
    same = prompt(equalsBaseline=True)
    assert judge("b", same, chat("Hello there"), chat("Hello there")).passed
    assert judge("b", same, chat("Hello"), chat("Hello there")).failures == ["expected the serving version's answer 'Hello there'"]
    assert judge("b", same, chat("anything"), None).passed  # nothing serves yet: nothing to compare with


def test_an_error_answer_fails_the_prompt_with_the_apps_message():
    refused = AppAnswer(500, {"error": {"message": "produced non-finite logits"}}, 0.01)
    result = judge("e", prompt(contains="x"), refused, None)
    assert not result.passed and result.failures == ["the app answered 500: produced non-finite logits"] and result.answer is None


def test_a_prompt_asks_deterministically_by_route_and_named_model():
    assert request_of(prompt(contains="x", maxTokens=12), "billing@v2") == (
        "completions",
        {"model": "billing@v2", "max_tokens": 12, "temperature": 0, "prompt": "Where is my refund?"},
    )
    messages = GatePrompt.model_validate({"messages": [{"role": "user", "content": "Hi"}], "contains": "x"})
    route, body = request_of(messages, "billing@v2")
    assert route == "chat/completions" and body["messages"] == [{"role": "user", "content": "Hi"}]


def test_the_spec_refuses_a_prompt_without_an_expectation_a_bad_regex_or_schema():
    with pytest.raises(ValidationError, match="needs an expectation"):
        GatePrompt.model_validate({"prompt": "Hi"})
    with pytest.raises(ValidationError, match="is not a regular expression"):
        prompt(regex="(unclosed")
    with pytest.raises(ValidationError, match="is not a JSON Schema"):
        prompt(jsonSchema={"type": "no-such-type"})
    with pytest.raises(ValidationError, match="either prompt"):
        GatePrompt.model_validate({"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "contains": "x"})
    with pytest.raises(ValidationError, match="needs golden prompts"):
        GateSpec.model_validate({})


def test_prompts_come_from_the_spec_then_the_file_each_named():
    lines = [json.dumps({"prompt": "One", "contains": "a"}), "", json.dumps({"name": "two", "prompt": "Two", "contains": "b"})]
    gate = GateSpec.model_validate({"prompts": [{"prompt": "Zero", "contains": "z"}], "file": "evals/bot.jsonl"})
    named = prompts_of(gate, lambda path: "\n".join(lines).encode() if path == "evals/bot.jsonl" else None)
    assert [p.name for p in named] == ["prompt 1", "evals/bot.jsonl:1", "two"]
    with pytest.raises(GateInvalid, match="is not on the share"):
        prompts_of(gate, lambda path: None)
    with pytest.raises(GateInvalid, match=r"evals/bot.jsonl, line 2, is not a golden prompt"):
        prompts_of(gate, lambda path: b'{"prompt": "ok", "contains": "a"}\n{"prompt": "no expectation"}\n')


def test_the_verdict_holds_the_pass_rate_and_a_rejection_names_the_failing_prompts():
    results = [judge(f"p{i}", prompt(contains="refund"), completion("refund" if i < 3 else "nope"), None) for i in range(4)]
    assert verdict(results, 0.75, NOW).passed
    failing = verdict(results, 1.0, NOW)
    assert not failing.passed and failing.pass_rate == 0.75
    assert reason_of(failing) == (
        "it failed its gate: 1 of 4 golden prompts failed (pass rate 75%, at least 100% needed): "
        "p3: expected it to contain 'refund'; it answered 'nope'"
    )


def test_run_asks_each_prompt_of_the_candidate_and_the_baseline_only_where_compared():
    asked: list[str] = []

    def ask(route: str, body: dict) -> AppAnswer:
        asked.append(body["model"])
        return completion("Hello" if body["model"].endswith("@v1") else "Hello!")

    prompts = prompts_of(
        GateSpec.model_validate({"prompts": [{"prompt": "a", "contains": "Hello"}, {"prompt": "b", "equalsBaseline": True}]}),
        lambda p: None,
    )
    result = run(prompts, ask, candidate="bot@v2", baseline="bot@v1", min_pass_rate=1.0, timeout=30, clock=lambda: NOW)
    assert sorted(asked) == ["bot@v1", "bot@v2", "bot@v2"]
    assert [r.passed for r in result.prompts] == [True, False] and not result.passed
