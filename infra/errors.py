"""The two kinds of failure a provider reports. The reconciler classifies everything else."""

from __future__ import annotations


class ProviderError(Exception):
    """``reason`` is CamelCase for the status condition; the message is for a person."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class TemporaryError(ProviderError):
    """Worth retrying: after ``delay`` seconds when given, else with per-key backoff."""

    def __init__(self, message: str, *, reason: str = "TemporaryError", delay: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class PermanentError(ProviderError):
    """Retrying cannot help: the spec (or the world it points at) must change first."""

    def __init__(self, message: str, *, reason: str = "PermanentError") -> None:
        super().__init__(message, reason=reason)
