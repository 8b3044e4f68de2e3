"""EleutherAI's lm-evaluation-harness, unchanged and with its defaults (model
``local-completions``: token-id prompts, the remote tokenizer routes, echo with logprobs for
scoring), against a real serving app on the tiny model: a generation task and a
multiple-choice task, written as local files, run to results that a direct forward pass of the
same model and adapter predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH
from tests.serving.reference import Reference
from tests.serving.test_keys import KEYS_FILE, entry, write_keys

lm_eval_utils = pytest.importorskip("lm_eval.utils", reason="lm-eval is a dev dependency: make installs it")

QUESTIONS = [
    {"question": "Q: What is the colour of the sky?\nA:", "answer": " blue"},
    {"question": "Q: Say hello.\nA:", "answer": " hello"},
    {"question": "Q: Count to three.\nA:", "answer": " one two three"},
]
CHOICES = [
    # The harness puts its target delimiter (a space) between the question and each choice.
    {"question": "The capital of France is", "choices": ["Paris", "Rome", "Berlin"], "label": 0},
    {"question": "Two plus two is", "choices": ["three", "four", "five"], "label": 1},
    {"question": "Water is", "choices": ["wet", "dry"], "label": 0},
    {"question": "The opposite of up is", "choices": ["down", "left", "sideways", "up"], "label": 0},
]
MAX_GEN_TOKS = 8


def write_tasks(folder: Path) -> None:
    folder.mkdir()
    (folder / "gen.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in QUESTIONS))
    (folder / "mc.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in CHOICES))
    common = "dataset_path: json\ntest_split: test\n"
    (folder / "tiny_gen.yaml").write_text(
        f"task: tiny_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        f"generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: {MAX_GEN_TOKS}\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    (folder / "tiny_mc.yaml").write_text(
        f"task: tiny_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: choices\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n"
    )


def continuation_logprob(reference: Reference, context: str, continuation: str) -> tuple[float, bool]:
    """What the harness should get for one choice: it tokenizes context + continuation whole,
    and counts the tokens past the context's."""
    whole = reference.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_length = len(reference.tokenizer(context, add_special_tokens=False)["input_ids"])
    table = reference.logprobs(whole)
    positions = range(context_length, len(whole))
    total = sum(float(table[i - 1, whole[i]]) for i in positions)
    greedy = all(int(table[i - 1].argmax()) == whole[i] for i in positions)
    return total, greedy


def logged_samples(out: Path, task: str) -> list[dict]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def greedy_answer(reference: Reference, context: str) -> str:
    ids = reference.tokenizer(context, add_special_tokens=False)["input_ids"]
    tokens, _ = reference.greedy(ids, MAX_GEN_TOKS)
    return reference.tokenizer.decode(tokens, skip_special_tokens=True).split("\n")[0]


def test_lm_eval_runs_a_generation_and_a_multiple_choice_task_to_the_models_results(serve_app, tiny_share, tmp_path):
    app = serve_app(tiny_share, deployment="support-bot", batch_wait_ms=0)
    write_tasks(tmp_path / "tasks")
    hf_home = tmp_path / "hf"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "local-completions",
        "--model_args",
        f"model=support-bot,base_url={app.url}/v1/completions",
        "--tasks",
        "tiny_gen,tiny_mc",
        "--include_path",
        str(tmp_path / "tasks"),
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Using remote tokenizer" in run.stderr  # its default found our tokenizer routes
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]

    reference = Reference(tiny_share / TINY_MODEL_PATH, tiny_share / ADAPTER_PATH)
    samples = {task: logged_samples(tmp_path / "out", task) for task in ("tiny_gen", "tiny_mc")}
    assert len(samples["tiny_mc"]) == len(CHOICES) and len(samples["tiny_gen"]) == len(QUESTIONS)

    # Multiple choice: each choice's loglikelihood is the direct forward pass's, and the
    # accuracy is what those numbers pick.
    correct = 0
    for sample in samples["tiny_mc"]:
        asked = [(args["arg_0"], args["arg_1"]) for args in sample["arguments"].values()]
        assert [continuation for _, continuation in asked] == [" " + choice for choice in sample["doc"]["choices"]]
        expected = [continuation_logprob(reference, context, continuation) for context, continuation in asked]
        for response, (want_logprob, want_greedy) in zip(sample["resps"], expected, strict=True):
            got_logprob, got_greedy = response[0]
            assert float(got_logprob) == pytest.approx(want_logprob, abs=1e-4)
            assert str(got_greedy) == str(want_greedy)
        correct += max(range(len(expected)), key=lambda i: expected[i][0]) == sample["doc"]["label"]
    assert results["tiny_mc"]["acc,none"] == pytest.approx(correct / len(CHOICES))

    # Generation: each answer is the model's greedy continuation, cut at the task's stop.
    matches = 0
    for sample in samples["tiny_gen"]:
        want = greedy_answer(reference, sample["arguments"]["gen_args_0"]["arg_0"])
        assert sample["resps"][0][0] == want
        matches += want == sample["doc"]["answer"]
    assert results["tiny_gen"]["exact_match,none"] == pytest.approx(matches / len(QUESTIONS))


def test_with_inference_keys_the_harness_reaches_the_tokenizer_routes_with_its_auth_token(serve_app, tiny_share):
    """With keys on, lm-eval sends OPENAI_API_KEY to the completions route and its ``auth_token``
    model argument to the tokenizer routes (README: Evaluating an adapter)."""
    write_keys(tiny_share, entry("eval", "lpk_eval-secret"))
    app = serve_app(tiny_share, api_keys_file=KEYS_FILE)
    base_url = f"{app.url}/v1/completions"
    assert lm_eval_utils.check_remote_tokenizer_support(base_url, auth_token="lpk_eval-secret", max_retries=1)
    assert not lm_eval_utils.check_remote_tokenizer_support(base_url, max_retries=1)
    tokenizer = lm_eval_utils.RemoteTokenizer(base_url, auth_token="lpk_eval-secret")
    assert tokenizer.decode(tokenizer.encode("Hello world")) == "Hello world"
    assert tokenizer.eos_token == "<|end|>"
