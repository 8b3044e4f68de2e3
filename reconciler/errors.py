"""The one place where a failure is classified as temporary or permanent."""

from __future__ import annotations

from dataclasses import dataclass

from infra.errors import PermanentError, ProviderError, TemporaryError

__all__ = ["Classified", "PermanentError", "TemporaryError", "classify"]


@dataclass(frozen=True)
class Classified:
    permanent: bool
    reason: str
    message: str
    delay: float | None = None  # None: use the key's backoff


def classify(exc: BaseException) -> Classified:
    if isinstance(exc, PermanentError):
        return Classified(True, exc.reason, exc.message)
    if isinstance(exc, TemporaryError):
        return Classified(False, exc.reason, exc.message, exc.delay)
    if isinstance(exc, ProviderError):
        return Classified(False, exc.reason, exc.message)
    # Anything unforeseen is temporary: retried with backoff, never left to crash the loop.
    return Classified(False, "UnexpectedError", f"{type(exc).__name__}: {exc}"[:500])
