"""References inside resources: finding them, parsing them, rewriting them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from coffre.fhir._definitions_r4 import RESOURCE_TYPES

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE = re.compile(
    r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$"
)


def references_in(node: Any) -> list[dict[str, Any]]:
    """Every Reference object (a dict with a string ``reference``) in parsed JSON, nested
    ones too. Gathered into a list by plain recursion: a generator of generators took
    twice as long, and every entry of every Bundle is walked."""
    found: list[dict[str, Any]] = []
    if type(node) is dict:
        _in_object(node, found)
    elif type(node) is list:
        _in_array(node, found)
    return found


def _in_object(node: dict[str, Any], found: list[dict[str, Any]]) -> None:
    if type(node.get("reference")) is str:
        found.append(node)
    for value in node.values():
        kind = type(value)
        if kind is dict:
            _in_object(value, found)
        elif kind is list:
            _in_array(value, found)


def _in_array(items: list[Any], found: list[dict[str, Any]]) -> None:
    for value in items:
        kind = type(value)
        if kind is dict:
            _in_object(value, found)
        elif kind is list:
            _in_array(value, found)


def rewrite_references(node: Any, replace: Callable[[str], str | None]) -> None:
    """Replace each reference for which ``replace`` returns a new value, in place."""
    for reference in references_in(node):
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
