"""FHIR JSON in and out: orjson, with a canonical form for what gets sealed."""

from __future__ import annotations

from typing import Any

import orjson

from coffre.exceptions import FhirError


def loads(body: bytes | str, where: str = "the body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise FhirError(400, "structure", f"{where} is not valid JSON: {error}") from None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def embedded(document: bytes) -> orjson.Fragment:
    """JSON already serialised, which ``dumps`` writes as is inside another document."""
    return orjson.Fragment(document)


def canonical(value: Any) -> bytes:
    """Keys sorted, no spaces: equal resources give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
