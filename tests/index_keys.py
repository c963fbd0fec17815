"""What a resource is findable under, written out from the rule ``index_tokens`` keeps
(``coffre.service.indexing``: a parameter with a value is present, and each value has the
keys ``plan.value_keys`` gives): the oracle the search plan is checked against, and the
tokens a record is stored with."""

from __future__ import annotations

from coffre.search.plan import PRESENT, value_keys
from coffre.search.values import Value


def index_keys(values: dict[str, list[Value]]) -> list[tuple[str, str]]:
    """``(parameter, key)`` pairs a resource with these index values is findable under."""
    found: dict[tuple[str, str], None] = {}
    for code, items in values.items():
        if items:  # an element without a value (only its extensions) is no value
            found[(code, PRESENT)] = None
        for value in items:
            for key in value_keys(value):
                found[(code, key)] = None
    return list(found)
