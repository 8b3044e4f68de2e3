"""JSON as the API and the CLI read it: a key given twice in one object is an error (which value
was meant?), where ``json.loads`` would keep the last one silently. No dependencies: the CLI's
client commands import it too."""

from __future__ import annotations

from typing import Any


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} is given twice in one object: say it once")
        self.key = key


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKey(key)
        document[key] = value
    return document
