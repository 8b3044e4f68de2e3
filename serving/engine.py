"""The model, its adapters, and batched generation.

One worker thread owns the model. It loads it, then runs, in turn, queued model changes
(loading or unloading an adapter) and decode steps. Scheduling is iteration-level: at each
step, finished rows leave the batch, waiting jobs (up to ``max_batch_size`` rows in all) are
prefilled and join, and every row decodes one token, each on the adapter version it was
admitted with (``serving.decode``), so a model change waits one step, not one batch.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
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
from serving.decode import Batch, Job, Rows, prompt_scores
from serving.mixed_lora import StackedLora
from serving.settings import ServingSettings
from serving.traffic import TrafficStats

log = logging.getLogger("loraplane.serving")


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_size = Histogram(
            "loraplane_serving_batch_size",
            "Rows in one forward pass (a prefill's newcomers, or a decode step's batch)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.tokens = Counter("loraplane_serving_generated_tokens", "Tokens generated", registry=self.registry)
        self.requests = Counter("loraplane_serving_generations", "Generations finished, by how", ["finish"], registry=self.registry)
        self.forward_passes = Counter("loraplane_serving_forward_passes", "Forward passes of the model", registry=self.registry)
        self.waiting = Gauge("loraplane_serving_waiting_jobs", "Jobs admitted and not yet in a batch", registry=self.registry)
        self.queue_seconds = Histogram(
            "loraplane_serving_queue_seconds",
            "Time from admission to prefill",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.refused = Counter("loraplane_serving_queue_full", "Requests refused with 429: the queue was full", registry=self.registry)
        self.adapter_loads = Counter(
            "loraplane_serving_adapter_reloads",
            "Adapters loaded again on a request, after being unloaded to make room",
            registry=self.registry,
        )
        self.weight_loads = Counter(
            "loraplane_serving_adapter_weight_loads",
            "Adapter versions whose weights were read into the model (one loaded beside the serving version is not read again to serve)",
            registry=self.registry,
        )
        self.adapter_unloads = Counter(
            "loraplane_serving_adapter_evictions",
            "Idle adapters unloaded to stay within LORAPLANE_MAX_RESIDENT_ADAPTERS",
            registry=self.registry,
        )


class QueueFull(Exception):
    """The queue holds ``max_queued_jobs`` already: the request should come back later."""


class Engine:
    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.registry = AdapterRegistry()
        self.tokenizer: Any = None
        self.base: Any = None
        self.peft: Any = None  # the PeftModel once an adapter was loaded
        self._stacked: StackedLora | None = None  # its adapters stacked, for passes that mix them
        self.device = "cpu"
        self.context_length = 4096
        self.vocab_size = 0
        self._cache_name = "past_key_values"
        self._trims_logits = False
        self.model_name = settings.model_dir.name
        self.load_error: str | None = None
        self._jobs: deque[Job] = deque()
        self._batch = Batch()  # the rows decoding now: only the worker thread touches it
        self._tasks: deque[tuple[Callable[[], Any], Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.loaded = threading.Event()
        self.metrics = EngineMetrics()
        self.traffic = TrafficStats(self.metrics.registry)

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
        """Queue jobs together: a request's prompts reach the batcher at once. Raises
        QueueFull past ``max_queued_jobs`` (a request is always taken by an empty queue)."""
        with self._cond:
            if self._jobs and len(self._jobs) + len(jobs) > self.settings.max_queued_jobs:
                self.metrics.refused.inc()
                raise QueueFull(f"{len(self._jobs)} jobs are waiting, the most this server queues (LORAPLANE_MAX_QUEUED_JOBS)")
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

    def load_adapter(self, candidate: Candidate, adapter: str) -> Loaded:
        """On the worker thread: check the weights against the model, load them beside the
        adapters already loaded, and make them what new requests for ``adapter`` get (the
        versions loaded beside it stay). Raises AdapterError, leaving what served before."""
        loaded = self.prepare(candidate, adapter)
        self.unload(self.registry.activate(loaded))
        self._trim(keep=loaded)
        log.info("serving adapter %s version %s from %s", adapter, candidate.version, candidate.path)
        return loaded

    def prepare(self, candidate: Candidate, adapter: str) -> Loaded:
        """On the worker thread: ``candidate`` as a version of ``adapter`` whose weights are in
        the model, ready for any role: the one already loaded (made resident again if it was
        unloaded to make room), else loaded now. Raises AdapterError, changing nothing."""
        known = self.registry.find(adapter, candidate.version)
        if known is not None and known.fingerprint == candidate.fingerprint and known.peft_name is not None:
            self.make_resident(known)
            return known
        self._check_against_model(candidate)
        name = peft_name(adapter, candidate.version)
        if self.registry.holding(name) is None:
            self._load_weights(candidate.path, name)
        return Loaded(candidate.version, candidate.fingerprint, candidate.path, name, adapter)

    def arrange(self, adapter: str, active: Loaded | None, standby: list[Loaded], canary: tuple[str, int] | None) -> None:
        """The adapter's versions in their roles (``AdapterRegistry.arrange``), at once: their
        weights are in the model already, so new requests get the new roles from here on,
        without waiting for the running step. What lost its role and nothing holds leaves the
        model on the worker thread, between two steps, as every change of the model does."""
        drained = self.registry.arrange(adapter, active, standby, canary)
        if drained or len(self.registry.residents()) > self.settings.max_resident_adapters:

            def unload() -> None:
                self.unload_all(drained)
                self._trim(keep=active)

            self.call(unload)

    def make_resident(self, loaded: Loaded) -> None:
        """On the worker thread: load again, from its staged copy, a version unloaded to make
        room (LORAPLANE_MAX_RESIDENT_ADAPTERS), then unload the least recently used if that is
        one too many."""
        if loaded.resident or loaded.peft_name is None:
            return
        self._load_weights(loaded.path, loaded.peft_name)
        loaded.resident = True
        self.metrics.adapter_loads.inc()
        self._trim(keep=loaded)
        log.info("loaded adapter %s version %s again from %s", loaded.adapter, loaded.version, loaded.path)

    def _load_weights(self, folder: Path, name: str) -> None:
        import torch

        self._adapters_changed()
        if self.peft is not None and name in self.peft.peft_config:
            self._delete(name)  # left by a load that failed half-way
        # A request brings an evicted adapter in during a pass, under inference mode. Weights
        # made there are inference tensors, on which a later change of the model outside it
        # (PEFT sets requires_grad on the adapter it makes active when one is deleted) raises
        # half-way through a delete and leaves PEFT inconsistent. So every change of the
        # model's adapters happens outside inference mode, wherever it is called from.
        try:
            with torch.inference_mode(False):
                if self.peft is None:
                    from peft import PeftModel

                    self.peft = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name, is_trainable=False)
                    self.peft.eval()
                else:
                    self.peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:
            if self.peft is not None and name in self.peft.peft_config and len(self.peft.peft_config) > 1:
                self._delete(name)
            raise AdapterError(f"the weights of {folder} do not load into the model: {exc}") from exc
        self.metrics.weight_loads.inc()
        broken = self._non_finite(name)
        if broken is not None:
            if len(self.peft.peft_config) > 1:
                self._delete(name)
            raise AdapterError(f"the weights of {folder} are broken: {broken} holds NaN or infinite values (did training diverge?)")

    def _non_finite(self, name: str) -> str | None:
        """The first of adapter ``name``'s weights that is not finite, or None. A diverged
        training run saves NaNs as readily as numbers; its header and shapes look fine."""
        import torch

        for module_name, module in self.peft.named_modules():
            for part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
                holder = getattr(module, part, None)
                weight = holder[name] if holder is not None and name in holder else None
                tensor = getattr(weight, "weight", weight)
                if isinstance(tensor, torch.Tensor) and not bool(torch.isfinite(tensor).all()):
                    return f"{module_name}.{part}"
        return None

    def serve_base_only(self) -> None:
        adapter = self.registry.default or self.settings.deployment or "adapter"
        self.unload(self.registry.activate(Loaded("base", "", self.settings.model_dir, None, adapter)))

    def unload(self, drained: Loaded | None) -> None:
        """A version nothing holds any more leaves the model (unless another entry holds the
        same weights: the version was rolled back to)."""
        if drained is None or not drained.peft_name or not drained.resident:
            return
        if self.registry.holding(drained.peft_name) not in (None, drained):
            return
        if self._delete(drained.peft_name):
            drained.resident = False
            log.info("unloaded drained adapter %s version %s", drained.adapter, drained.version)

    def unload_all(self, drained: list[Loaded]) -> None:
        for version in drained:
            self.unload(version)

    def _trim(self, keep: Loaded | None = None) -> None:
        """Unload the least recently used idle adapters while more are resident than
        LORAPLANE_MAX_RESIDENT_ADAPTERS allows. One in use stays: then the cap is passed for
        as long as it is (a request is never refused for it)."""
        while len(self.registry.residents()) > self.settings.max_resident_adapters:
            victim = self.registry.least_recently_used(keep)
            if victim is None or victim.peft_name is None or not self._delete(victim.peft_name):
                return
            victim.resident = False
            self.metrics.adapter_unloads.inc()
            log.info("unloaded adapter %s version %s to make room; it loads again on its next request", victim.adapter, victim.version)

    def _delete(self, name: str) -> bool:
        """Take adapter ``name`` out of the model. PEFT will not delete its active adapter, and
        needs one to stay: another one is made active first; the last one stays."""
        if self.peft is None or name not in self.peft.peft_config:
            return True
        import torch

        self._adapters_changed()
        with torch.inference_mode(False):  # as _load_weights says
            if name == self.peft.active_adapter:
                other = next((n for n in self.peft.peft_config if n != name), None)
                if other is None:
                    return False
                self.peft.set_adapter(other)
            self.peft.delete_adapter(name)
        return True

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
        if self.base is None:  # stopped before the model ever loaded
            with self._cond:
                self._fail_pending("the server is shutting down")
            return
        rows = Rows(self.tokenizer, set(self._eos_ids()), self.device, self._finish)
        while True:
            with self._cond:
                while not self._stopping and not self._tasks and not self._jobs and not self._batch:
                    self._cond.wait()
                if self._stopping:
                    self._fail_pending("the server is shutting down")
                    return
                # Model changes first: between two decode steps is the only time the model changes.
                task = self._tasks.popleft() if self._tasks else None
                newcomers = [] if task else self._take_newcomers()
            if task is not None:
                _run_task(*task)
                continue
            try:
                self._step(rows, newcomers)
            except Exception as exc:
                log.exception("generation failed")
                for job in [*self._batch.jobs, *newcomers]:
                    self._finish(job, None, error=f"generation failed: {type(exc).__name__}: {exc}")
                self._batch = Batch()

    def _take_newcomers(self) -> list[Job]:
        """Called with the lock held: the jobs that join the batch at this step, oldest first,
        as many as it has room for (static batching: only once it has emptied). With the
        batch empty, wait a moment for company when the queue is short."""
        limit = self.settings.max_batch_size - len(self._batch)
        if limit <= 0 or (self.settings.batching == "static" and self._batch):
            return []
        wait = self.settings.batch_wait_ms / 1000
        if not self._batch and wait > 0 and len(self._jobs) < limit:
            deadline = time.monotonic() + wait
            while len(self._jobs) < limit and not self._stopping and not self._tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        newcomers = [self._jobs.popleft() for _ in range(min(limit, len(self._jobs)))]
        now = time.monotonic()
        for job in newcomers:
            self.metrics.queue_seconds.observe(now - job.queued_at)
        self.metrics.waiting.set(len(self._jobs))
        return newcomers

    def _fail_pending(self, message: str) -> None:
        while self._jobs:
            self._finish(self._jobs.popleft(), None, error=message)
        self.metrics.waiting.set(0)
        for job in self._batch.jobs:
            self._finish(job, None, error=message)
        self._batch = Batch()
        while self._tasks:
            self._tasks.popleft()[1].set_exception(RuntimeError(message))

    def _step(self, rows: Rows, newcomers: list[Job]) -> None:
        """One iteration: finished and cancelled rows leave, newcomers are prefilled (their
        first token chosen) and join, then every row decodes one token."""
        import torch

        with torch.inference_mode():
            self._leave()
            for job in newcomers:
                if job.cancelled.is_set():  # the client left while it waited
                    self._finish(job, None)
            for job in newcomers:
                self._bring_in(job)
            newcomers = [job for job in newcomers if not job.done]
            if newcomers:
                self._prefill(rows, newcomers)
            if self._batch:
                self._decode(rows)
                self._leave()

    def _bring_in(self, job: Job) -> None:
        """A job for an adapter unloaded to make room: load it again first (its request holds
        it, so it cannot be unloaded again before the job ends)."""
        if job.done or job.adapter is None or job.adapter.resident:
            return
        try:
            self.make_resident(job.adapter)
        except AdapterError as exc:
            self._finish(job, None, error=f"the adapter {job.adapter.adapter} cannot be loaded again: {exc}")

    def _leave(self) -> None:
        for job in self._batch.jobs:
            if job.cancelled.is_set():
                self._finish(job, None)
        if self.settings.batching == "static" and not all(job.done for job in self._batch.jobs):
            return  # as generate did: a finished row stays, fed what it had, until all have finished
        self._batch.keep([i for i, job in enumerate(self._batch.jobs) if not job.done])

    def _prefill(self, rows: Rows, jobs: list[Job]) -> None:
        """One pass over the newcomers' left-padded prompts: it scores the prompt tokens of the
        rows that ask (so scoring a prompt costs this pass and no other) and chooses each
        one's first token; the rows still going join the batch."""
        import torch
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id
        width = max(len(job.prompt_ids) for job in jobs)
        input_ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs], device=self.device)
        attention = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs], device=self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # Logits only where they are read: the last position, or the whole prompt of the
        # longest row that wants its prompt scored (rows are left-padded, so that covers all).
        keep = max([1] + [len(job.prompt_ids) for job in jobs if job.prompt_logprobs is not None])
        extra: dict[str, Any] = {"logits_to_keep": keep} if self._trims_logits else {}
        # A cache of plain layers (not the model's sliding-window ones), which rows can join.
        extra[self._cache_name] = DynamicCache()
        out = self._forward(jobs, input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **extra)
        keep = out.logits.shape[1]
        best, finite = _argmax_and_finite(out.logits[:, -1])
        for row, job in enumerate(jobs):
            rows.start(job)
            if not finite[row]:
                self._finish(job, None, error=_non_finite_message(job))
                continue
            if job.prompt_logprobs is not None:
                first = keep - len(job.prompt_ids)  # the row's first token, in the kept positions
                job.emit("prompt", prompt_scores(out.logits[row, first:], job.prompt_ids, job.prompt_logprobs))
            if job.max_new_tokens == 0:  # scored, nothing to generate
                self._finish(job, "length")
            else:
                rows.choose(job, out.logits[row, -1], best[row])
        going = [row for row, job in enumerate(jobs) if not job.done]
        if going:
            cache = getattr(out, self._cache_name)
            if len(going) < len(jobs):
                cache.batch_select_indices(torch.tensor(going, device=self.device))
            self._batch.join([jobs[row] for row in going], cache, attention[going])

    def _decode(self, rows: Rows) -> None:
        """One pass for the whole batch: each row feeds the token it chose last and chooses
        the next."""
        import torch

        batch = self._batch
        step_ids = torch.tensor([[job.next_token] for job in batch.jobs], device=self.device)
        positions = torch.tensor([[job.position] for job in batch.jobs], device=self.device)
        batch.attention = torch.cat([batch.attention, batch.attention.new_ones((len(batch), 1))], dim=1)
        extra = {self._cache_name: batch.cache}
        out = self._forward(batch.jobs, input_ids=step_ids, attention_mask=batch.attention, position_ids=positions, use_cache=True, **extra)
        batch.cache = getattr(out, self._cache_name)
        best, finite = _argmax_and_finite(out.logits[:, -1])
        for row, job in enumerate(batch.jobs):
            job.position += 1
            if job.done:
                continue
            if finite[row]:
                rows.choose(job, out.logits[row, -1], best[row])
            else:
                self._finish(job, None, error=_non_finite_message(job))

    def _forward(self, jobs: list[Job], **inputs: Any) -> Any:
        """The model on these rows, each on its own adapter: one adapter (or none) for all of
        them is the plain path; a mix goes through PEFT's per-row ``adapter_names``."""
        import torch

        self.metrics.forward_passes.inc()
        self.metrics.batch_size.observe(len(jobs))
        if self.peft is None:
            return self.base(**inputs)
        # A finished row (static batching keeps them) no longer holds its adapter, which may be
        # gone: it rides on a running row's, as nobody reads what it computes.
        running = next((job.peft_name for job in jobs if not job.done), jobs[0].peft_name)
        row_names = [running if job.done else job.peft_name for job in jobs]
        names = set(row_names)
        if len(names) > 1:
            stacked = self._stacked_lora()
            if stacked.supports({name for name in names if name}):
                with stacked.rows(row_names):
                    return self.peft(**inputs)
            return self.peft(**inputs, adapter_names=[name or "__base__" for name in row_names])
        (name,) = names
        if name is None:
            stacked = self._stacked_lora()
            if stacked.supports(set()):  # PEFT's disable_adapter costs more than a small model's pass
                with stacked.rows(row_names):
                    return self.peft(**inputs)
            with self.peft.disable_adapter():
                return self.peft(**inputs)
        if self.peft.active_adapter != name:
            with torch.inference_mode(False):  # as _load_weights says
                self.peft.set_adapter(name)
        return self.peft(**inputs)

    def _stacked_lora(self) -> StackedLora:
        """The loaded adapters stacked for mixed passes: made again after any load or delete."""
        if self._stacked is None:
            self._stacked = StackedLora(self.peft)
        return self._stacked

    def _adapters_changed(self) -> None:
        if self._stacked is not None:
            self._stacked.close()
            self._stacked = None

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.base.generation_config, "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, list) else {configured}
        return sorted(i for i in ids if i is not None)

    def release(self, job: Job) -> None:
        """Let go of the adapter version a job held (unloading it once drained)."""
        if job.adapter is not None:
            drained = self.registry.release(job.adapter)
            if drained is not None:
                self.call(lambda: self.unload(drained))
            elif len(self.registry.residents()) > self.settings.max_resident_adapters:
                self.call(self._trim)  # over the cap while it was in use

    def _finish(self, job: Job, reason: str | None, *, error: str | None = None) -> None:
        """Close a job once: emit its end, release its adapter (unloading a drained one)."""
        job.done = True
        if job.closed:
            return
        job.closed = True
        self.release(job)
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


def _argmax_and_finite(logits: Any) -> tuple[list[int], list[bool]]:
    """Each row's most likely token, and whether its logits are all finite, in one transfer
    from the device (the step's one synchronisation)."""
    import torch

    both = torch.stack([logits.argmax(dim=-1), torch.isfinite(logits).all(dim=-1).to(torch.long)]).tolist()
    return both[0], [bool(ok) for ok in both[1]]


def _non_finite_message(job: Job) -> str:
    """A row whose logits are NaN or infinite has no next token: its adapter's weights (or the
    model's) blow up on this input."""
    which = f"the adapter {job.adapter.adapter} version {job.adapter.version}" if job.peft_name and job.adapter else "the base model"
    return f"{which} produced non-finite logits (NaN or infinite) for this prompt: the weights are broken"


def _run_task(fn: Callable[[], Any], future: Future) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to whoever waits on the future
        future.set_exception(exc)


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
