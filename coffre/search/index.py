"""What a resource is indexed under, how a criterion becomes index keys, and exact matching.

Index keys are plain strings here; the sealing layer turns each into a blind token. A
token identifier gives three keys, so that ``system|value``, ``value`` (any system),
``|value`` (no system) and ``system|`` (any value) are each one look-up.
"""

from __future__ import annotations

from typing import Any

from coffre.search.criteria import Criterion

_ANY = "\x00*"


def _identifier_keys(identifier: dict[str, Any]) -> list[str]:
    value, system = identifier.get("value"), identifier.get("system")
    keys = []
    if isinstance(value, str):
        keys.append(f"{_ANY}|{value}")
        keys.append(f"{system or ''}|{value}")
    if isinstance(system, str):
        keys.append(f"{system}|{_ANY}")
    return keys


def index_entries(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """``(parameter, key)`` pairs a current resource is findable under."""
    identifiers = resource.get("identifier")
    entries: list[tuple[str, str]] = []
    for identifier in identifiers if isinstance(identifiers, list) else []:
        if isinstance(identifier, dict):
            entries.extend(("identifier", key) for key in _identifier_keys(identifier))
    return entries


def query_keys(criterion: Criterion) -> list[str]:
    """The index keys any of which a resource must carry to match the criterion."""
    keys = []
    for value in criterion.values:
        system, bar, code = value.partition("|")
        if not bar:
            keys.append(f"{_ANY}|{value}")
        elif code == "":
            keys.append(f"{system}|{_ANY}")
        else:
            keys.append(value)
    return keys


def matches(resource: dict[str, Any], criteria: tuple[Criterion, ...]) -> bool:
    """The exact test, on the decrypted resource: blind tokens may have false hits."""
    for criterion in criteria:
        if criterion.parameter == "_id":
            found = resource.get("id") in criterion.values
        else:
            carried = {key for _, key in index_entries(resource)}
            found = any(key in carried for key in query_keys(criterion))
        if not found:
            return False
    return True
