"""What the engine decodes: jobs, the running batch and its KV cache, and each row's sampling,
stopping, scoring and streaming. Torch is imported where it is used, so that importing this
(for the wire types) costs nothing.

The batch is iteration-level: a job joins after its prefill, at the next decode step, and
leaves when it finishes. Its rows are left-padded to one cache length; a row's positions are
its own (padding shifts its slots, not its positions), so rows of any length share the cache.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.adapters import Loaded

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
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stream: bool = True  # its text is sent as it grows; else only the whole of it, at the end
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.monotonic)
    generated: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # of the generated tokens, for penalties
    sent: int = 0  # characters of the decoded text already emitted
    # Incremental decoding (as vLLM does it): the text of generated[:read_offset], and where
    # the few tokens before read_offset start, decoded again with each new one for context.
    stable: str = ""
    prefix_offset: int = 0
    read_offset: int = 0
    scores: list[TokenScore] = field(default_factory=list)  # of the generated tokens
    ends: list[int] = field(default_factory=list)  # where each generated token's text ends
    flushed: int = 0  # scores already emitted
    next_token: int = 0  # chosen, to be fed at the next step
    position: int = 0  # the position of that token
    generator: Any = None
    done: bool = False  # no more tokens for this job
    closed: bool = False  # its end was emitted and its adapter released

    @property
    def peft_name(self) -> str | None:
        return self.adapter.peft_name if self.adapter is not None else None

    @property
    def quiet(self) -> bool:
        """Nothing to do per token but count: not streamed, no stop sequence to look for, no
        scores (whose text shares are cut as the text grows). Decoding waits for the end."""
        return not self.stream and not self.stop and self.logprobs is None

    @property
    def longest_stop(self) -> int:
        return max((len(s) for s in self.stop), default=0)


class Batch:
    """The rows decoding together: their jobs, their KV cache and attention mask (``[rows,
    slots]``, 0 for a row's padding)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.cache: Any = None
        self.attention: Any = None

    def __len__(self) -> int:
        return len(self.jobs)

    def join(self, jobs: list[Job], cache: Any, attention: Any) -> None:
        """Add prefilled rows: whichever side is shorter is padded on the left to the other's
        length, then the rows are stacked."""
        import torch
        from transformers import DynamicCache

        if not self.jobs:
            self.jobs, self.cache, self.attention = list(jobs), cache, attention
            return
        width = max(self.attention.shape[1], attention.shape[1])
        layers = []
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)], dim=0)
            values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)], dim=0)
            layers.append((keys, values))
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.attention = torch.cat([_pad_mask(self.attention, width), _pad_mask(attention, width)], dim=0)
        self.jobs += jobs

    def keep(self, rows: list[int]) -> None:
        """Only these rows stay; slots that are padding in every row left go too."""
        import torch
        from transformers import DynamicCache

        if len(rows) == len(self.jobs):
            return
        self.jobs = [self.jobs[i] for i in rows]
        if not rows:
            self.cache = self.attention = None
            return
        index = torch.tensor(rows, device=self.attention.device)
        attention = self.attention[index]
        # The first slot any remaining row uses: everything before it is padding for all.
        first = int((attention.cumsum(dim=1) == 0).sum(dim=1).min())
        self.attention = attention[:, first:]
        self.cache = DynamicCache(
            ddp_cache_data=[(layer.keys[index, :, first:], layer.values[index, :, first:]) for layer in self.cache.layers]
        )


def _pad_left(states: Any, width: int) -> Any:
    import torch

    missing = width - states.shape[2]
    if missing == 0:
        return states
    pad = states.new_zeros((states.shape[0], states.shape[1], missing, states.shape[3]))
    return torch.cat([pad, states], dim=2)


def _pad_mask(mask: Any, width: int) -> Any:
    import torch

    missing = width - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


class Rows:
    """Each row's choice of its next token, and what that token means for its text: stop
    sequences, the end token, held-back half characters, scores, the stream."""

    def __init__(self, tokenizer: Any, eos: set[int], device: str, finish: Callable[..., None]) -> None:
        self.tokenizer, self.eos, self.device, self.finish = tokenizer, eos, device, finish

    def start(self, job: Job) -> None:
        import torch

        job.generator = torch.Generator(device=self.device)
        job.generator.manual_seed(job.seed if job.seed is not None else random.getrandbits(63))
        job.position = len(job.prompt_ids)

    def choose(self, job: Job, logits: Any, best: int) -> None:
        """Pick the job's next token from its logits (``best``: their argmax, found for the
        whole batch at once), score it if asked, and act on it."""
        import torch

        steered = bool(job.logit_bias or job.counts)  # a bias, or penalties on what came before
        early = len(job.generated) < job.min_tokens
        # The common greedy row needs nothing more: unsteered, the argmax stands, and min_tokens
        # changes it only where the argmax is an end token.
        if job.temperature == 0 and job.logprobs is None and not steered and not (early and best in self.eos):
            job.next_token = best
            self._advance(job, best)
            return
        raw = logits.float()
        scores = raw
        if steered or early:
            scores = raw.clone()
            if job.logit_bias:
                ids = torch.tensor(list(job.logit_bias), device=scores.device)
                scores[ids] += torch.tensor(list(job.logit_bias.values()), device=scores.device)
            if job.counts and (job.presence_penalty or job.frequency_penalty):
                ids = torch.tensor(list(job.counts), device=scores.device)
                counts = torch.tensor(list(job.counts.values()), device=scores.device, dtype=scores.dtype)
                scores[ids] -= job.frequency_penalty * counts + job.presence_penalty
            if len(job.generated) < job.min_tokens:
                scores[list(self.eos)] = float("-inf")
        if job.temperature == 0:
            token = int(torch.argmax(scores))
        else:
            probs = torch.softmax(scores / job.temperature, dim=-1)
            if job.top_p < 1.0:
                ordered, order = torch.sort(probs, descending=True)
                keep = torch.cumsum(ordered, dim=-1) - ordered < job.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
            token = int(torch.multinomial(probs, 1, generator=job.generator))
        if job.logprobs is not None:  # the model's own distribution, before sampling's changes
            before = (job.prompt_ids + job.generated)[-CONTEXT_TOKENS:]
            job.scores.append(score(torch.log_softmax(raw, dim=-1), token, job.logprobs, before))
        job.next_token = token
        self._advance(job, token)

    def _advance(self, job: Job, token: int) -> None:
        if token in self.eos:
            # Its score still counts (harnesses read the last token's logprob), though the
            # text leaves it out.
            eos_score = job.scores.pop() if job.logprobs is not None else None
            self._flush(job, self._text(job), final=True)
            if eos_score is not None:
                name = self.tokenizer.decode([token], skip_special_tokens=False)
                job.emit("delta", Piece("", [(name, eos_score)]))
            self.finish(job, "stop")
            return
        job.generated.append(token)
        if job.presence_penalty or job.frequency_penalty:
            job.counts[token] = job.counts.get(token, 0) + 1
        if job.quiet:
            if len(job.generated) >= job.max_new_tokens:
                self._flush(job, self._text(job), final=True)
                self.finish(job, "length")
            return
        text = self._text(job)
        previous = job.ends[-1] if job.ends else 0
        job.ends.append(max(previous, len(text.rstrip("\ufffd"))))
        longest = job.longest_stop
        cut = _first_stop(text, job.stop, max(0, job.sent - longest))
        if cut is not None:
            self._flush(job, text[:cut], final=True)
            self.finish(job, "stop")
        elif len(job.generated) >= job.max_new_tokens:
            self._flush(job, text, final=True)
            self.finish(job, "length")
        else:
            # Hold back what may be half a character or the start of a stop sequence.
            safe = len(text.rstrip("\ufffd"))
            if job.stop:
                safe = min(safe, max(job.sent, len(text) - longest + 1))
            self._flush(job, text[:safe])

    def _text(self, job: Job) -> str:
        """The generated text so far, decoding only the tokens since the last whole character
        (with a few before them for context), not all of them at every step."""
        prefix = self.tokenizer.decode(job.generated[job.prefix_offset : job.read_offset], skip_special_tokens=True)
        current = self.tokenizer.decode(job.generated[job.prefix_offset :], skip_special_tokens=True)
        if not current.startswith(prefix):  # a tokenizer that reads differently in context
            whole = self.tokenizer.decode(job.generated, skip_special_tokens=True)
            if not whole.endswith("\ufffd"):  # start again from here, a few tokens of context kept
                job.stable = whole
                job.prefix_offset, job.read_offset = max(0, len(job.generated) - CONTEXT_TOKENS), len(job.generated)
            return whole
        new = current[len(prefix) :]
        if new and not new.endswith("\ufffd"):  # whole characters: they stay as they are
            job.stable += new
            job.prefix_offset, job.read_offset = job.read_offset, len(job.generated)
            return job.stable
        return job.stable + new

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


def score(logprobs: Any, token: int, top: int, before: list[int]) -> TokenScore:
    best = logprobs.topk(top) if top else None
    alternatives = tuple(zip(best.indices.tolist(), best.values.tolist(), strict=True)) if best is not None else ()
    return TokenScore(token, float(logprobs[token]), alternatives, tuple(before))


def prompt_scores(logits: Any, prompt_ids: list[int], top: int) -> list[TokenScore | None]:
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


def _first_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None
