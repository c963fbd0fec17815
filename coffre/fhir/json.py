"""FHIR JSON in and out: orjson, with a canonical form for what gets sealed."""

from __future__ import annotations

from typing import Any

import orjson

from coffre.exceptions import FhirError

MAX_DEPTH = 128
"""How deeply a body from a client may nest arrays and objects: a stored resource must
still be written inside the Bundles that answers put it in."""
_WRITTEN_DEPTH = 254  # the deepest orjson writes


def loads(body: bytes | str, where: str = "the body", max_depth: int | None = None) -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise FhirError(400, "structure", f"{where} is not valid JSON: {error}") from None
    if max_depth is not None and not _nests_within(value, max_depth):
        raise FhirError(
            400, "structure", f"{where} nests arrays and objects more than {max_depth} deep"
        )
    return value


def _nests_within(value: Any, depth: int) -> bool:
    """Whether ``value`` nests at most ``depth`` deep: orjson writes it inside
    ``_WRITTEN_DEPTH - depth`` arrays only then (in C: a tenth of a walk in Python)."""
    for _ in range(_WRITTEN_DEPTH - depth):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def embedded(document: bytes) -> orjson.Fragment:
    """JSON already serialised, which ``dumps`` writes as is inside another document."""
    return orjson.Fragment(document)


def canonical(value: Any) -> bytes:
    """Keys sorted, no spaces: equal resources give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
