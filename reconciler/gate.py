"""A new adapter version's gate: golden prompts it must answer well before users get it.

The prompts come from the spec (``rollout.gate.prompts``) and from a JSONL file on the share
(``rollout.gate.file``: one prompt a line, in the spec's form). Each is asked of the version by
name (``NAME@VERSION``) at temperature 0, and, where it expects the answer of the version that
serves now (``equalsBaseline``), of that one too. Judging an answer is pure
(``judge``); asking is the caller's (``run``'s ``ask``), so both are tested apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime

import regex
from jsonschema import validators
from pydantic import ValidationError

from infra.endpoints import AppAnswer
from state.models import GatePromptResult, GateResult
from state.resource import GatePrompt, GateSpec

# A gate file's size at most: prompts, not a data set.
MAX_GATE_FILE_BYTES = 4 * 1024 * 1024
# What a result keeps of an answer, and what a rejection's message shows of one.
ANSWER_KEPT = 400
ANSWER_SHOWN = 120
# A regex is matched for at most this long: a pattern that backtracks without end must not
# hold a worker.
REGEX_SECONDS = 1.0
# Prompts asked at once: the engine batches them.
CONCURRENCY = 8


class GateInvalid(Exception):
    """The gate cannot be run as written (its file is missing or a line is not a prompt): the
    team's to fix, not the version's fault."""


@dataclass(frozen=True)
class NamedPrompt:
    name: str
    prompt: GatePrompt


def cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def prompts_of(gate: GateSpec, read_file: Callable[[str], bytes | None]) -> list[NamedPrompt]:
    """The gate's prompts, inline first, then the file's, each with a name: its own, or where
    it comes from (``prompt 3``, ``evals/support.jsonl:7``). ``read_file`` gives the file's
    bytes, or None when it is not on the share."""
    found = [NamedPrompt(p.name or f"prompt {i + 1}", p) for i, p in enumerate(gate.prompts or [])]
    if gate.file is None:
        return found
    content = read_file(gate.file)
    if content is None:
        raise GateInvalid(f"the gate file {gate.file} is not on the share: put it there, or take rollout.gate.file out")
    if len(content) > MAX_GATE_FILE_BYTES:
        raise GateInvalid(f"the gate file {gate.file} is {len(content)} bytes, more than the {MAX_GATE_FILE_BYTES} a gate reads")
    for number, line in enumerate(content.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompt = GatePrompt.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise GateInvalid(f"the gate file {gate.file}, line {number}, is not a golden prompt: {problem}") from exc
        found.append(NamedPrompt(prompt.name or f"{gate.file}:{number}", prompt))
    if not found:
        raise GateInvalid(f"the gate file {gate.file} holds no prompts")
    return found


def request_of(prompt: GatePrompt, model: str) -> tuple[str, dict]:
    """The route and body that ask ``model`` the prompt, deterministically."""
    body: dict = {"model": model, "max_tokens": prompt.max_tokens, "temperature": 0}
    if prompt.messages is not None:
        return "chat/completions", {**body, "messages": [m.model_dump() for m in prompt.messages]}
    return "completions", {**body, "prompt": prompt.prompt}


def text_of(answer: AppAnswer) -> str | None:
    """The answer's text, or None when the app did not answer with one."""
    if answer.status != 200:
        return None
    try:
        choice = answer.body["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def judge(name: str, prompt: GatePrompt, answer: AppAnswer, baseline: AppAnswer | None) -> GatePromptResult:
    """Pure: how ``answer`` meets the prompt's expectations. ``baseline`` is the serving
    version's answer, for ``equalsBaseline`` (None: no version serves yet, and it is skipped)."""
    text = text_of(answer)
    latency = round(answer.seconds * 1000)
    if text is None:
        error = answer.body.get("error") if isinstance(answer.body.get("error"), dict) else {}
        why = error.get("message") if isinstance(error, dict) else None
        return GatePromptResult(
            name=name, passed=False, latency_ms=latency, failures=[f"the app answered {answer.status}: {cut(str(why or answer.body), 200)}"]
        )
    failures: list[str] = []
    contains, not_contains = prompt.expected_texts
    failures += [f"expected it to contain {s!r}" for s in contains if s not in text]
    failures += [f"expected it not to contain {s!r}" for s in not_contains if s in text]
    if prompt.regex is not None:
        try:
            if regex.search(prompt.regex, text, timeout=REGEX_SECONDS) is None:
                failures.append(f"expected it to match the regex {prompt.regex!r}")
        except TimeoutError:
            failures.append(f"the regex {prompt.regex!r} took over {REGEX_SECONDS:.0f}s on it: simplify the pattern")
    if prompt.json_schema is not None:
        failures += _schema_failures(text, prompt.json_schema)
    if prompt.max_latency_ms is not None and latency > prompt.max_latency_ms:
        failures.append(f"expected it within {prompt.max_latency_ms} ms; it took {latency} ms")
    if prompt.equals_baseline and baseline is not None:
        expected = text_of(baseline)
        if expected is None:
            failures.append(f"the serving version's answer, to compare with, could not be had (the app answered {baseline.status})")
        elif expected != text:
            failures.append(f"expected the serving version's answer {cut(expected, ANSWER_SHOWN)!r}")
    return GatePromptResult(name=name, passed=not failures, answer=cut(text, ANSWER_KEPT), latency_ms=latency, failures=failures)


def _schema_failures(text: str, schema: dict) -> list[str]:
    try:
        document = json.loads(text)
    except ValueError:
        return ["expected JSON that meets the schema; it is not JSON"]
    validator = validators.validator_for(schema)(schema)
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
    if error is None:
        return []
    where = "/".join(str(part) for part in error.path) or "the document"
    return [f"expected JSON that meets the schema; at {where}: {cut(error.message, 160)}"]


def verdict(results: list[GatePromptResult], min_pass_rate: float, finished_at: datetime) -> GateResult:
    passed = sum(1 for r in results if r.passed)
    rate = passed / len(results) if results else 0.0
    return GateResult(
        passed=rate >= min_pass_rate, pass_rate=round(rate, 4), min_pass_rate=min_pass_rate, finished_at=finished_at, prompts=results
    )


def reason_of(result: GateResult, limit: int = 3) -> str:
    """Why a version failed its gate, for a person: the failing prompts (the first few), each
    with what was expected and what it answered."""
    failing = [r for r in result.prompts if not r.passed]
    parts = []
    for r in failing[:limit]:
        answered = f"; it answered {cut(r.answer, ANSWER_SHOWN)!r}" if r.answer is not None else ""
        parts.append(f"{r.name}: {'; '.join(r.failures)}{answered}")
    more = f" (and {len(failing) - limit} more)" if len(failing) > limit else ""
    return (
        f"it failed its gate: {len(failing)} of {len(result.prompts)} golden prompts failed "
        f"(pass rate {result.pass_rate:.0%}, at least {result.min_pass_rate:.0%} needed): {' | '.join(parts)}{more}"
    )


def run(
    prompts: list[NamedPrompt],
    ask: Callable[[str, dict], AppAnswer],
    *,
    candidate: str,
    baseline: str | None,
    min_pass_rate: float,
    timeout: float,
    clock: Callable[[], datetime],
) -> GateResult:
    """Ask every prompt of ``candidate`` (and of ``baseline`` where one compares with it), a
    few at once, and judge them. A prompt not answered within ``timeout`` fails as such.
    ``ask(route, body)`` raises when nothing answers (the app is gone): that ends the gate,
    to be run again, since it says nothing of the version."""

    def one(named: NamedPrompt) -> GatePromptResult:
        route, body = request_of(named.prompt, candidate)
        answer = ask(route, body)
        base = ask(*request_of(named.prompt, baseline)) if named.prompt.equals_baseline and baseline is not None else None
        return judge(named.name, named.prompt, answer, base)

    pool = ThreadPoolExecutor(max_workers=min(CONCURRENCY, max(1, len(prompts))), thread_name_prefix="gate")
    try:
        futures = [pool.submit(one, named) for named in prompts]
        done, _ = wait(futures, timeout=timeout)
        results = []
        for named, future in zip(prompts, futures, strict=True):
            if future in done:
                results.append(future.result())  # an ask that raised ends the gate here
            else:
                results.append(GatePromptResult(name=named.name, passed=False, failures=[f"not answered within the gate's {timeout:.0f}s"]))
    finally:
        # What is still asking finishes on its own (each ask has its own time limit); the
        # pass does not wait for it.
        pool.shutdown(wait=False, cancel_futures=True)
    return verdict(results, min_pass_rate, clock())
