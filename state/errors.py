"""Domain errors of the state layer. The API maps each to one problem+json status."""

from __future__ import annotations


class StateError(Exception):
    """Base class: ``detail`` is a sentence a person can act on."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StateError):
    pass


class AlreadyExists(StateError):
    pass


class Conflict(StateError):
    """The request clashes with the resource's current state (for example, being deleted)."""


class PreconditionFailed(StateError):
    """An If-Match / resourceVersion precondition did not hold."""


class InvalidChange(StateError):
    """A change the resource's rules forbid, for example to an immutable field."""

    def __init__(self, detail: str, fields: list[str], messages: list[str] | None = None) -> None:
        super().__init__(detail)
        self.fields = fields
        self.messages = messages or ["is immutable"] * len(fields)


class Fenced(StateError):
    """A write by a reconciler that no longer holds the leader lease: refused, so that a
    deposed leader can never write after its successor has started."""
