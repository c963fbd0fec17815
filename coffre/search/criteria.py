"""Search criteria parsed into an immutable value before any look-up is planned."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from coffre.exceptions import FhirError

SUPPORTED = ("_id", "identifier")
# Result parameters say how to answer, not what to find; ``_snapshot`` and ``_offset`` are
# Coffre's paging cursor, ``_totalMethod`` what fhirpy's count() adds to ``_count=0``.
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_format",
        "_pretty",
        "_summary",
        "_elements",
        "_total",
        "_totalMethod",
        "_snapshot",
        "_offset",
    }
)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter; a match needs any of ``values`` (a comma is an OR)."""

    parameter: str
    values: tuple[str, ...]


def _split_or(raw: str) -> tuple[str, ...]:
    """Split on commas that are not escaped as ``\\,``."""
    parts, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return tuple(parts)


def parse_criteria(
    pairs: str | list[tuple[str, str]], what: str = "search"
) -> tuple[Criterion, ...]:
    """Parse ``identifier=sys|val&_id=a,b`` (or decoded pairs); repeated parameters are ANDed."""
    items = parse_qsl(pairs, keep_blank_values=True) if isinstance(pairs, str) else pairs
    criteria = []
    for name, raw in items:
        if name in RESULT_PARAMETERS:
            continue
        if name not in SUPPORTED:
            raise FhirError(
                400,
                "not-supported",
                f"the {what} uses the search parameter {name!r}, which Coffre does not support"
                f" here yet; supported: {', '.join(SUPPORTED)}",
            )
        if raw == "":
            raise FhirError(400, "invalid", f"the search parameter {name!r} has no value")
        criteria.append(Criterion(name, _split_or(raw)))
    return tuple(criteria)
