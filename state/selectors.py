"""Label selectors, Kubernetes style: ``team=support,tier!=dev,canary,!legacy``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from state.resource import LABEL_KEY, LABEL_KEY_RULE, LABEL_VALUE, LABEL_VALUE_RULE

Operator = Literal["=", "!=", "exists", "!exists"]


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    value: str | None = None


def parse_selector(text: str) -> list[Requirement]:
    """Parse one selector expression; raises ValueError naming the bad term."""
    requirements: list[Requirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            operator: Operator = "!="
        elif "=" in term:
            key, value = (part.strip() for part in term.split("=", 1))
            value = value[1:] if value.startswith("=") else value  # accept '=='
            operator = "="
        elif term.startswith("!"):
            key, value, operator = term[1:].strip(), None, "!exists"
        else:
            key, value, operator = term, None, "exists"
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(f"label selector term {term!r}: {LABEL_KEY_RULE}")
        if value is not None and not LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label selector term {term!r}: {LABEL_VALUE_RULE}")
        requirements.append(Requirement(key, operator, value))
    return requirements


def matches(requirements: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy every requirement (what the store's query says, in memory)."""
    for req in requirements:
        present = req.key in labels
        if req.operator == "exists" and not present:
            return False
        if req.operator == "!exists" and present:
            return False
        if req.operator == "=" and labels.get(req.key) != req.value:
            return False
        if req.operator == "!=" and present and labels.get(req.key) == req.value:
            return False
    return True
