"""The model, its adapters, and batched generation.

One worker thread owns the model. It loads it, then runs, in turn, queued model changes
(loading or unloading an adapter) and batches of generation jobs. A batch holds jobs admitted
on the same adapter version (up to ``max_batch_size``), decoded together by one prefill pass and
then one pass per token, with per-row sampling, stopping, scoring and streaming, so concurrent
clients share the forward passes.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.adapter_check import check_safetensors_header, read_safetensors_head
from serving.adapters import (
    AdapterError,
    AdapterRegistry,
    Candidate,
    Loaded,
    peft_name,
)
from serving.settings import ServingSettings

log = logging.getLogger("loraplane.serving")

# ("prompt", [TokenScore | None]) | ("delta", Piece) | ("done", (finish_reason, usage)) | ("error", message)
Emit = Callable[[str, Any], None]

# How many tokens before a scored one travel with it: enough to decode an alternative token in
# context (a byte-level piece, a leading space) without decoding the whole text again.
CONTEXT_TOKENS = 4


@dataclass(frozen=True)
class TokenScore:
    """A token's logprob under the model, and the ``top`` most likely tokens in its place."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, logprob), most likely first
    before: tuple[int, ...]  # the tokens just before it


@dataclass(frozen=True)
class Piece:
    """New text of a generation, with the scored tokens it completes (when logprobs were
    asked for): each token's share of the text and its score."""

    text: str
    tokens: list[tuple[str, TokenScore]]


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_size = Histogram(
            "loraplane_serving_batch_size",
            "Jobs decoded together in one batch",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.tokens = Counter("loraplane_serving_generated_tokens", "Tokens generated", registry=self.registry)
        self.requests = Counter("loraplane_serving_generations", "Generations finished, by how", ["finish"], registry=self.registry)
        self.forward_passes = Counter("loraplane_serving_forward_passes", "Forward passes of the model", registry=self.registry)
        self.waiting = Gauge("loraplane_serving_waiting_jobs", "Jobs admitted and not yet in a batch", registry=self.registry)


@dataclass
class Job:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    adapter: Loaded | None
    emit: Emit
    min_tokens: int = 0
    logprobs: int | None = None  # score each generated token, with this many alternatives
    prompt_logprobs: int | None = None  # score the prompt's tokens, with this many alternatives
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already emitted
    scores: list[TokenScore] = field(default_factory=list)  # of the generated tokens
    ends: list[int] = field(default_factory=list)  # where each generated token's text ends
    flushed: int = 0  # scores already emitted
    done: bool = False  # no more tokens for this job
    closed: bool = False  # its end was emitted and its adapter released


class Engine:
    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.registry = AdapterRegistry()
        self.tokenizer: Any = None
        self.base: Any = None
        self.peft: Any = None  # the PeftModel once an adapter was loaded
        self.device = "cpu"
        self.context_length = 4096
        self.vocab_size = 0
        self._cache_name = "past_key_values"
        self._trims_logits = False
        self.model_name = settings.model_dir.name
        self.load_error: str | None = None
        self._jobs: deque[Job] = deque()
        self._tasks: deque[tuple[Callable[[], Any], Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.loaded = threading.Event()
        self.metrics = EngineMetrics()

    # -------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, *jobs: Job) -> None:
        """Queue jobs together: a request's prompts reach the batcher at once."""
        with self._cond:
            self._jobs.extend(jobs)
            self.metrics.waiting.set(len(self._jobs))
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the worker thread between batches: the only place the model changes."""
        future: Future = Future()
        with self._cond:
            self._tasks.append((fn, future))
            self._cond.notify()
        return future

    # ---------------------------------------------------------------------------- loading

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model_dir = self.settings.model_dir
        root = os.path.realpath(self.settings.share_root)
        if not os.path.realpath(model_dir).startswith(root.rstrip("/") + "/"):
            raise FileNotFoundError(f"the model folder {model_dir} leads outside the share root {self.settings.share_root}: not followed")
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no model at {model_dir} (config.json missing); put the base model there or set LORAPLANE_MODEL_PATH")
        self.device = self.settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_name = self.settings.dtype or (
            ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if self.device.startswith("cuda") else "float32"
        )
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype_name)}
        if self.settings.load_in_4bit:
            quantization = _four_bit_config(dtype_name, self.device)
            if quantization is not None:
                kwargs["quantization_config"] = quantization
                kwargs["device_map"] = {"": self.device}
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if "device_map" not in kwargs:
            # transformers types ``to`` through a decorator that loses ``self``: a false alarm.
            model = model.to(self.device)  # type: ignore[arg-type]
        model.eval()
        self.tokenizer, self.base = tokenizer, model
        self.context_length = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
        # transformers 5.2x renamed the KV cache from ``past_key_values`` to ``cache`` (the old
        # name warns); models on older releases, or with their own code, know only the old one.
        parameters = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in parameters else "past_key_values"
        self._trims_logits = "logits_to_keep" in parameters
        # Ids a prompt may hold: known to the tokenizer and inside the embedding (which may be
        # padded past the vocabulary, or a tokenizer may know more tokens than the model).
        embedding: Any = model.get_input_embeddings()
        self.vocab_size = min(len(tokenizer), int(embedding.num_embeddings))
        self.model_name = str(getattr(model.config, "_name_or_path", "") or model_dir.name)
        log.info("loaded %s on %s as %s", model_dir, self.device, dtype_name)

    def load_adapter(self, candidate: Candidate) -> Loaded:
        """On the worker thread: check the weights against the model, load beside the current
        adapter, and make it what new requests get. Raises AdapterError, leaving the old one."""
        self._check_against_model(candidate)
        name = peft_name(candidate.version)
        if self.peft is not None and name in self.peft.peft_config:
            self.peft.delete_adapter(name)  # the same version reloaded after a failure
        try:
            if self.peft is None:
                from peft import PeftModel

                self.peft = PeftModel.from_pretrained(self.base, str(candidate.path), adapter_name=name, is_trainable=False)
                self.peft.eval()
            else:
                self.peft.load_adapter(str(candidate.path), adapter_name=name, is_trainable=False)
        except Exception as exc:
            if self.peft is not None and name in self.peft.peft_config and len(self.peft.peft_config) > 1:
                self.peft.delete_adapter(name)
            raise AdapterError(f"the weights of {candidate.path} do not load into the model: {exc}") from exc
        # PEFT will not delete its active adapter: make the new one active, so the old one can go.
        self.peft.set_adapter(name)
        loaded = Loaded(candidate.version, candidate.fingerprint, candidate.path, name)
        self._unload(self.registry.activate(loaded))
        log.info("serving adapter %s from %s", candidate.version, candidate.path)
        return loaded

    def serve_base_only(self) -> None:
        self._unload(self.registry.activate(Loaded("base", "", self.settings.model_dir, None)))

    def _unload(self, drained: Loaded | None) -> None:
        if drained is None or not drained.peft_name or self.peft is None:
            return
        if drained.peft_name not in self.peft.peft_config:
            return
        if drained.peft_name == self.peft.active_adapter:
            current = self.registry.active
            if current is None or not current.peft_name:
                return  # serving the base model now; PEFT needs some adapter to stay active
            self.peft.set_adapter(current.peft_name)
        self.peft.delete_adapter(drained.peft_name)
        log.info("unloaded drained adapter %s", drained.version)

    def _check_against_model(self, candidate: Candidate) -> None:
        """Target modules exist and the LoRA shapes fit them, before touching the model."""
        modules = dict(self.base.named_modules())
        targets = candidate.config.get("target_modules")
        names = [targets] if isinstance(targets, str) else list(targets or [])
        if isinstance(targets, list):
            missing = [t for t in names if not any(n == t or n.endswith("." + t) for n in modules)]
            if missing:
                raise AdapterError(f"the adapter at {candidate.path} targets modules this model does not have: {', '.join(missing)}")
        if candidate.weights.suffix != ".safetensors":
            return
        shapes, _ = check_safetensors_header(
            read_safetensors_head(candidate.weights), candidate.weights.stat().st_size, candidate.config["r"]
        )
        for key, shape in shapes.items():
            if ".lora_A" not in key and ".lora_B" not in key:
                continue
            path = key.split(".lora_")[0]
            for prefix in ("base_model.model.", "base_model."):
                if path.startswith(prefix):
                    path = path[len(prefix) :]
                    break
            module = modules.get(path)
            if module is None:
                raise AdapterError(f"the adapter at {candidate.path} has weights for {path}, which this model lacks")
            in_f, out_f = getattr(module, "in_features", None), getattr(module, "out_features", None)
            expected_dim = in_f if ".lora_A" in key else out_f
            actual_dim = shape[1] if ".lora_A" in key else shape[0]
            if expected_dim is not None and len(shape) == 2 and actual_dim != expected_dim:
                raise AdapterError(
                    f"the adapter at {candidate.path} does not fit this model: {key} has shape "
                    f"{shape}, but {path} is {in_f}x{out_f} (was it trained for another base model?)"
                )

    # ----------------------------------------------------------------------------- worker

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._load_model()
                self.load_error = None
                break
            except Exception as exc:  # reported by /readyz; tried again, the share may be late
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.error("cannot load the model: %s", self.load_error)
                with self._cond:
                    self._cond.wait(self.settings.watch_interval_seconds)
        self.loaded.set()
        while True:
            with self._cond:
                while not self._stopping and not self._tasks and not self._jobs:
                    self._cond.wait()
                if self._stopping:
                    self._fail_pending("the server is shutting down")
                    return
                task = self._tasks.popleft() if self._tasks else None
                batch = [] if task else self._take_batch()
            if task is not None:
                _run_task(*task)
                continue
            try:
                self.metrics.batch_size.observe(len(batch))
                self._generate(batch)
            except Exception as exc:
                log.exception("generation failed")
                for job in batch:
                    self._finish(job, None, error=f"generation failed: {type(exc).__name__}: {exc}")

    def between_steps(self, batch_adapter: Loaded | None) -> None:
        """Called between decode steps: run queued model changes now, rather than after a
        long batch, so a new adapter serves new requests while old ones finish. Only when
        the batch runs on an adapter: wrapping the base model mid-batch is not safe."""
        if self.peft is None or batch_adapter is None or batch_adapter.peft_name is None:
            return
        import torch

        while True:
            with self._cond:
                if not self._tasks:
                    return
                task = self._tasks.popleft()
            # Decoding runs under inference_mode; weights loaded under it would be inference
            # tensors that PEFT cannot use later, so step out of it for the change.
            with torch.inference_mode(False), torch.no_grad():
                _run_task(*task)
                self.peft.set_adapter(batch_adapter.peft_name)  # the batch keeps its adapter

    def _take_batch(self) -> list[Job]:
        """Called with the lock held: the oldest job and up to max_batch_size - 1 more on its
        adapter, waiting a moment for company when the batch is not full."""
        limit = self.settings.max_batch_size
        wait = self.settings.batch_wait_ms / 1000
        if wait > 0 and len(self._jobs) < limit:
            deadline = time.monotonic() + wait
            while len(self._jobs) < limit and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        first = self._jobs[0]
        batch = [job for job in self._jobs if job.adapter is first.adapter][:limit]
        for job in batch:
            self._jobs.remove(job)
        self.metrics.waiting.set(len(self._jobs))
        return batch

    def _fail_pending(self, message: str) -> None:
        while self._jobs:
            self._finish(self._jobs.popleft(), None, error=message)
        self.metrics.waiting.set(0)
        while self._tasks:
            self._tasks.popleft()[1].set_exception(RuntimeError(message))

    def _generate(self, batch: list[Job]) -> None:
        import torch

        for job in batch:
            if job.cancelled.is_set():  # the client left while it waited
                self._finish(job, None)
        batch = [job for job in batch if not job.done]
        if not batch:
            return
        adapter = batch[0].adapter
        context = nullcontext()
        model = self.peft if self.peft is not None else self.base
        if self.peft is not None:
            if adapter is None or adapter.peft_name is None:
                context = self.peft.disable_adapter()
            else:
                self.peft.set_adapter(adapter.peft_name)
        with context, torch.inference_mode():
            self._decode(model, batch)
        for job in batch:
            self._finish(job, "length")  # a no-op for jobs already closed

    def _decode(self, model: Any, batch: list[Job]) -> None:
        """Our own loop rather than ``generate``: one prefill pass over the left-padded prompts
        (which also scores the prompt tokens of the rows that ask, so scoring a prompt costs
        that one pass), then one pass per generated token for the whole batch."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(job.prompt_ids) for job in batch)
        input_ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in batch], device=self.device)
        attention = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in batch], device=self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # Logits only where they are read: the last position, or the whole prompt of the
        # longest row that wants its prompt scored (rows are left-padded, so that covers all).
        keep = max([1] + [len(job.prompt_ids) for job in batch if job.prompt_logprobs is not None])
        cache_name = self._cache_name
        trim = {"logits_to_keep": keep} if self._trims_logits else {}  # else every position's logits come back
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **trim)
        keep = out.logits.shape[1]
        self.metrics.forward_passes.inc()
        for row, job in enumerate(batch):
            if job.prompt_logprobs is not None:
                first = keep - len(job.prompt_ids)  # the row's first token, in the kept positions
                job.emit("prompt", _prompt_scores(out.logits[row, first:], job.prompt_ids, job.prompt_logprobs))
        rows = _Rows(self, batch)
        for job in batch:
            if job.max_new_tokens == 0:  # scored, nothing to generate
                self._finish(job, "length")
        # A copy: a view would keep the whole prefill's logits alive through the decode.
        logits, cache = out.logits[:, -1, :].clone(), getattr(out, cache_name)
        del out
        while True:
            tokens = rows.step(logits)
            if all(job.done for job in batch):
                return
            self.between_steps(batch[0].adapter)
            attention = torch.cat([attention, attention.new_ones((len(batch), 1))], dim=1)
            positions = positions[:, -1:] + 1
            step_ids = torch.tensor(tokens, device=self.device)[:, None]
            out = model(input_ids=step_ids, attention_mask=attention, position_ids=positions, use_cache=True, **{cache_name: cache})
            self.metrics.forward_passes.inc()
            logits, cache = out.logits[:, -1, :], getattr(out, cache_name)

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.base.generation_config, "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, list) else {configured}
        return sorted(i for i in ids if i is not None)

    def _finish(self, job: Job, reason: str | None, *, error: str | None = None) -> None:
        """Close a job once: emit its end, release its adapter (unloading a drained one)."""
        job.done = True
        if job.closed:
            return
        job.closed = True
        if job.adapter is not None:
            drained = self.registry.release(job.adapter)
            if drained is not None:
                self.call(lambda: self._unload(drained))
        self.metrics.tokens.inc(len(job.generated))
        self.metrics.requests.labels("error" if error else (reason or "cancelled")).inc()
        if error is not None:
            job.emit("error", error)
        elif reason is not None and not job.cancelled.is_set():
            usage = {
                "prompt_tokens": len(job.prompt_ids),
                "completion_tokens": len(job.generated),
                "total_tokens": len(job.prompt_ids) + len(job.generated),
            }
            job.emit("done", (reason, usage))

    # ------------------------------------------------------------------------- prompts

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.encode(text)
        # A base model without a chat template: a plain transcript.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.encode(text)


class _Rows:
    """Per-row sampling, stopping, scoring and streaming for one batch."""

    def __init__(self, engine: Engine, jobs: list[Job]) -> None:
        import torch

        self.engine, self.jobs = engine, jobs
        self.eos = set(engine._eos_ids())
        self.pad = engine.tokenizer.pad_token_id
        self.generators = []
        for job in jobs:
            generator = torch.Generator(device=engine.device)
            generator.manual_seed(job.seed if job.seed is not None else random.getrandbits(63))
            self.generators.append(generator)
        self.longest_stop = max((len(s) for job in jobs for s in job.stop), default=0)

    def step(self, logits) -> list[int]:
        """Choose each row's next token from its logits, emit what it completes, and return
        the tokens to feed the next pass (a finished row gets padding, which no one reads)."""
        import torch

        fed = []
        for row, job in enumerate(self.jobs):
            if job.done:
                fed.append(self.pad)
                continue
            if job.cancelled.is_set():
                self.engine._finish(job, None)
                fed.append(self.pad)
                continue
            raw = logits[row].float()
            scores = raw
            if len(job.generated) < job.min_tokens:
                scores = raw.clone()
                scores[list(self.eos)] = float("-inf")
            if job.temperature == 0:
                token = int(torch.argmax(scores))
            else:
                probs = torch.softmax(scores / job.temperature, dim=-1)
                if job.top_p < 1.0:
                    ordered, order = torch.sort(probs, descending=True)
                    keep = torch.cumsum(ordered, dim=-1) - ordered < job.top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
                token = int(torch.multinomial(probs, 1, generator=self.generators[row]))
            fed.append(token)
            if job.logprobs is not None:  # the model's own distribution, before sampling's changes
                before = (job.prompt_ids + job.generated)[-CONTEXT_TOKENS:]
                job.scores.append(_score(torch.log_softmax(raw, dim=-1), token, job.logprobs, before))
            self._advance(job, token)
        return fed

    def _advance(self, job: Job, token: int) -> None:
        if token in self.eos:
            # Its score still counts (harnesses read the last token's logprob), though the
            # text leaves it out.
            eos_score = job.scores.pop() if job.logprobs is not None else None
            self._flush(job, self._text(job), final=True)
            if eos_score is not None:
                name = self.engine.tokenizer.decode([token], skip_special_tokens=False)
                job.emit("delta", Piece("", [(name, eos_score)]))
            self.engine._finish(job, "stop")
            return
        job.generated.append(token)
        text = self._text(job)
        previous = job.ends[-1] if job.ends else 0
        job.ends.append(max(previous, len(text.rstrip("\ufffd"))))
        cut = _first_stop(text, job.stop, max(0, job.sent - self.longest_stop))
        if cut is not None:
            self._flush(job, text[:cut], final=True)
            self.engine._finish(job, "stop")
        elif len(job.generated) >= job.max_new_tokens:
            self._flush(job, text, final=True)
            self.engine._finish(job, "length")
        else:
            # Hold back what may be half a character or the start of a stop sequence.
            safe = len(text.rstrip("\ufffd"))
            if job.stop:
                safe = min(safe, max(job.sent, len(text) - self.longest_stop + 1))
            self._flush(job, text[:safe])

    def _text(self, job: Job) -> str:
        return self.engine.tokenizer.decode(job.generated, skip_special_tokens=True)

    @staticmethod
    def _flush(job: Job, text: str, *, final: bool = False) -> None:
        """Emit the text past what was sent, with the scored tokens it completes: those that
        end within it, or, at the end, all that start within it."""
        tokens: list[tuple[str, TokenScore]] = []
        if job.logprobs is not None:
            start = last_start = job.ends[job.flushed - 1] if job.flushed else 0
            while job.flushed < len(job.scores):
                end = job.ends[job.flushed]
                if not (end <= len(text) or (final and start < len(text))):
                    break
                tokens.append((text[start : min(end, len(text))], job.scores[job.flushed]))
                job.flushed += 1
                last_start, start = start, end
            if final and tokens:  # the last token takes what is left (a trailing \ufffd, say)
                tokens[-1] = (text[last_start:], tokens[-1][1])
        if len(text) > job.sent or tokens:
            job.emit("delta", Piece(text[job.sent :], tokens))
            job.sent = max(job.sent, len(text))


def _score(logprobs, token: int, top: int, before: list[int]) -> TokenScore:
    best = logprobs.topk(top) if top else None
    alternatives = tuple(zip(best.indices.tolist(), best.values.tolist(), strict=True)) if best is not None else ()
    return TokenScore(token, float(logprobs[token]), alternatives, tuple(before))


def _prompt_scores(logits, prompt_ids: list[int], top: int) -> list[TokenScore | None]:
    """Each prompt token's logprob given the ones before it; the first has none. ``logits``
    holds the prompt's positions; the softmax is taken in float32, for all of them at once."""
    import torch

    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    targets = torch.tensor(prompt_ids[1:], device=logprobs.device)
    chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    best_ids: list[list[int]] = [[] for _ in chosen]
    best_values: list[list[float]] = [[] for _ in chosen]
    if top and chosen:
        best = logprobs.topk(top, dim=-1)
        best_ids, best_values = best.indices.tolist(), best.values.tolist()
    scores: list[TokenScore | None] = [None]
    for i, token in enumerate(prompt_ids[1:]):
        before = tuple(prompt_ids[max(0, i + 1 - CONTEXT_TOKENS) : i + 1])
        scores.append(TokenScore(token, chosen[i], tuple(zip(best_ids[i], best_values[i], strict=True)), before))
    return scores


def _run_task(fn: Callable[[], Any], future: Future) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to whoever waits on the future
        future.set_exception(exc)


def _first_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _four_bit_config(dtype_name: str, device: str) -> Any:
    """bitsandbytes 4-bit when asked and possible; otherwise say so and load normally."""
    try:
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError:
        log.warning("LORAPLANE_LOAD_IN_4BIT is set but bitsandbytes is not installed: loading unquantised")
        return None
    if not device.startswith("cuda"):
        log.warning("LORAPLANE_LOAD_IN_4BIT needs a CUDA device: loading unquantised on %s", device)
        return None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype_name))
