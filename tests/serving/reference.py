"""The tiny model and its adapter run directly with transformers and peft, no serving app: what
the endpoint's numbers are checked against."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


class Reference:
    def __init__(self, model_dir: Path, adapter_dir: Path | None) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(model, str(adapter_dir)) if adapter_dir is not None else model
        self.model.eval()

    def logprobs(self, ids: list[int]) -> torch.Tensor:
        """Row i: the log-distribution of the token after ids[: i + 1], from one plain forward pass."""
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.float(), dim=-1)

    def prompt_logprobs(self, ids: list[int]) -> list[float]:
        """Each token's logprob given those before it, from the second token on."""
        table = self.logprobs(ids)
        return [float(table[i - 1, token]) for i, token in enumerate(ids) if i > 0]

    def greedy(self, ids: list[int], steps: int, *, end: bool = True) -> tuple[list[int], list[float]]:
        """The most likely continuation, one full forward pass per token (no cache), and its
        tokens' logprobs. ``end=False``: never the end token, as min_tokens asks (its logprobs
        stay the model's own)."""
        tokens: list[int] = []
        logprobs: list[float] = []
        for _ in range(steps):
            row = self.logprobs(ids + tokens)[-1]
            choosable = row if end else row.clone().index_fill_(0, torch.tensor([self.tokenizer.eos_token_id]), float("-inf"))
            token = int(torch.argmax(choosable))
            tokens.append(token)
            logprobs.append(float(row[token]))
            if token == self.tokenizer.eos_token_id:
                break
        return tokens, logprobs
