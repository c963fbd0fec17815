"""References inside resources: finding them, parsing them, rewriting them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from coffre.fhir._definitions_r4 import RESOURCE_TYPES

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE = re.compile(
    r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$"
)


def iter_references(node: Any) -> Iterator[dict[str, Any]]:
    """Every Reference object (a dict with a string ``reference``) in a resource, nested ones too."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            if isinstance(value, dict | list):
                yield from iter_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_references(value)


def rewrite_references(node: Any, replace: Callable[[str], str | None]) -> None:
    """Replace each reference for which ``replace`` returns a new value, in place."""
    for reference in iter_references(node):
        new = replace(reference["reference"])
        if new is not None:
            reference["reference"] = new


def parse_reference(reference: str) -> tuple[str, str] | None:
    """``(type, id)`` of a literal reference such as ``Patient/123`` or ``http://x/fhir/Patient/123``;
    None for contained (``#a``), conditional (``Patient?...``) and ``urn:`` references."""
    if reference.startswith(("#", "urn:")) or "?" in reference:
        return None
    match = _RELATIVE.match(reference)
    if match is None or match.group(1) not in RESOURCE_TYPES:
        return None
    return match.group(1), match.group(2)
