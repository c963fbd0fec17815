"""A person's name as people write it, from a FHIR resource's HumanName list."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

_USES = ("usual", "official", None, "temp", "nickname", "anonymous", "maiden", "old")
"""The name a person goes by first (R4's NameUse), those that no longer hold last."""


def human_name(resource: dict[str, Any], today: date | None = None) -> str:
    """The name ``resource``'s person goes by ``today``: the usual one, else the official
    one..., a former name (``old``, ``maiden``, a period that has ended) only when there is
    no other; written as its text, else prefix, given names and family name in that order;
    "" when it has none. A former name shown to a patient or of a professional (after a
    marriage, a transition) would be a wrong, and a hurt."""
    day = (today or datetime.now(UTC).date()).isoformat()
    names = [name for name in resource.get("name", []) if isinstance(name, dict)]
    for name in sorted(names, key=lambda name: _rank(name, day)):
        written = _written(name)
        if written:
            return written
    return ""


def _rank(name: dict[str, Any], day: str) -> tuple[bool, int]:
    period = name.get("period")
    end = period.get("end") if isinstance(period, dict) else None
    ended = isinstance(end, str) and end[:10] < day
    use = name.get("use")
    return ended, _USES.index(use) if use in _USES else _USES.index(None)


def _written(name: dict[str, Any]) -> str:
    if name.get("text"):
        return str(name["text"])
    parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
    return " ".join(str(part) for part in parts if part)
