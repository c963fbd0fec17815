"""Result parameters read alike by a search over REST and a Bundle's search entries."""

from __future__ import annotations

from coffre.exceptions import FhirError
from coffre.fhir.values import given_whole_number

DEFAULT_COUNT = 50
MAX_COUNT = 1000

Pairs = list[tuple[str, str]]


def single(pairs: Pairs, name: str) -> str | None:
    """The value of a parameter that takes one (``_count``, ``_since``, ``_summary``...);
    400 when it is given different ones, between which Coffre could only guess."""
    values = {value for key, value in pairs if key == name}
    if len(values) > 1:
        raise FhirError(
            400, "invalid", f"give {name} once: the request gives it {len(values)} different values"
        )
    return values.pop() if values else None


def number(pairs: Pairs, name: str) -> int | None:
    raw = single(pairs, name)
    if raw is None:
        return None
    return given_whole_number(name, raw)


def page_count(pairs: Pairs) -> int:
    """How many matches a page shows: ``_count``, 50 by default, 1,000 at most."""
    count = number(pairs, "_count")
    return DEFAULT_COUNT if count is None else min(count, MAX_COUNT)


def one_of(pairs: Pairs, name: str, allowed: tuple[str, ...]) -> str | None:
    """The value of a parameter that takes one of ``allowed`` (``_summary``, ``_total``)."""
    raw = single(pairs, name)
    if raw is not None and raw not in allowed:
        raise FhirError(400, "invalid", f"{name}={raw} is not one of {', '.join(allowed)}")
    return raw


def listed(pairs: Pairs, name: str) -> list[str]:
    """The values of a parameter that takes a list (``_elements=a,b``), however often given;
    400 for an empty one (``_type=``, ``a,,b``), which would otherwise narrow nothing."""
    parts = [part.strip() for key, raw in pairs if key == name for part in raw.split(",")]
    if "" in parts:
        raise FhirError(
            400, "invalid", f"{name} has an empty value: give names separated by commas (a,b)"
        )
    return parts
