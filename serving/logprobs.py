"""Token scores from the engine in the two wire shapes: the legacy completions shape (parallel
``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``) and the chat shape
(``content: [{token, logprob, bytes, top_logprobs}]``). One implementation for both endpoints;
the engine only hands over numbers, and the strings are made here, on the request's side.
"""

from __future__ import annotations

from typing import Any

from serving.decode import CONTEXT_TOKENS, Piece, TokenScore
from serving.protocol import CompletionLogprobs, TokenLogprob, TopLogprob


class TokenTexts:
    """A token's text where it stands: decoded after the few tokens before it and cut off
    from theirs, so a byte-level piece or a leading space comes out as it reads in the text."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def of(self, token: int, before: tuple[int, ...] | list[int]) -> str:
        if not before:
            return self._decode([token])
        prefix, whole = self._decode(list(before)), self._decode([*before, token])
        return whole[len(prefix) :] if whole.startswith(prefix) else self._decode([token])

    def prompt(self, ids: list[int]) -> list[str]:
        return [self.of(token, ids[max(0, i - CONTEXT_TOKENS) : i]) for i, token in enumerate(ids)]


def _top_dict(texts: TokenTexts, score: TokenScore, chosen: str) -> dict[str, float]:
    """The alternatives by text, with the chosen token among them (harnesses compare its
    logprob with the best one to tell a greedy continuation); two tokens that read the same
    keep the likelier."""
    top: dict[str, float] = {}
    for token, logprob in [*score.top, (score.token, score.logprob)]:
        text = chosen if token == score.token else texts.of(token, score.before)
        if text not in top or logprob > top[text]:
            top[text] = logprob
    return top


class LegacyLogprobs:
    """Builds one choice's legacy logprobs as its tokens arrive; ``text_offset`` counts from
    the start of the choice's text (the echoed prompt, when there is one)."""

    def __init__(self, texts: TokenTexts) -> None:
        self.texts = texts
        self.offset = 0

    def prompt(self, ids: list[int], scores: list[TokenScore | None]) -> CompletionLogprobs:
        part = CompletionLogprobs()
        for text, score in zip(self.texts.prompt(ids), scores, strict=True):
            self._add(part, text, score)
        return part

    def piece(self, piece: Piece) -> CompletionLogprobs:
        part = CompletionLogprobs()
        for text, score in piece.tokens:
            self._add(part, text, score)
        return part

    def _add(self, part: CompletionLogprobs, text: str, score: TokenScore | None) -> None:
        part.tokens.append(text)
        part.text_offset.append(self.offset)
        part.token_logprobs.append(score.logprob if score is not None else None)
        part.top_logprobs.append(_top_dict(self.texts, score, text) if score is not None else None)
        self.offset += len(text)


def merge(parts: list[CompletionLogprobs]) -> CompletionLogprobs:
    whole = CompletionLogprobs()
    for part in parts:
        whole.tokens += part.tokens
        whole.token_logprobs += part.token_logprobs
        whole.top_logprobs += part.top_logprobs
        whole.text_offset += part.text_offset
    return whole


def chat_logprobs(texts: TokenTexts, piece: Piece, top: int) -> list[TokenLogprob]:
    """Chat's shape: each generated token with its ``top`` alternatives (the chosen token is
    listed among them only where it is one of the best)."""
    entries = []
    for text, score in piece.tokens:
        alternatives = []
        for token, logprob in score.top[:top]:
            alternative = text if token == score.token else texts.of(token, score.before)
            alternatives.append(TopLogprob(token=alternative, logprob=logprob, bytes=list(alternative.encode())))
        entries.append(TokenLogprob(token=text, logprob=score.logprob, bytes=list(text.encode()), top_logprobs=alternatives))
    return entries
