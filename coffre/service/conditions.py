"""Conditional interactions (FHIR R4 http.html#concurrency, #cread, #ccreate; RFC 9110
§13): the version ETags of If-Match and If-None-Match, a read's 304, and the search a
conditional create's If-None-Exist names. Over REST they come as headers, in a Bundle as
an entry's ``request`` fields: both read them here."""

from __future__ import annotations

import re

from coffre.exceptions import FhirError
from coffre.fhir.values import whole_number
from coffre.service.stored import Stored

_VERSION_TAG = re.compile(r'(?:W/)?"([0-9]+)"|([0-9]+)')
NO_VERSION = 0
"""A version no record is at: an expectation that never holds (a form whose version is
no number cancels nothing)."""
ANY_VERSION = -1
"""``If-Match: *`` (RFC 9110 §13.1.1): whatever version the record is at, so long as it
exists; an update that must not create. No ETag parses to it (``W/"0"`` names version 0,
which no record is at: a 412)."""


def parse_if_match(value: str | None) -> int | None:
    """``W/"3"``, ``"3"`` or ``3`` → 3, ``*`` → ANY_VERSION; anything else is a 400. An
    ETag is compared as written (RFC 9110 §8.8.3.2): ``W/"03"`` names no version, a 412
    whatever the record."""
    if value is None:
        return None
    if value.strip() == "*":
        return ANY_VERSION
    tag = _VERSION_TAG.fullmatch(value.strip())
    digits = None if tag is None else tag.group(1) or tag.group(2)
    number = None if digits is None else whole_number(digits)
    if number is None:
        raise FhirError(400, "invalid", f'If-Match {value!r} is not a version ETag such as W/"3"')
    if digits != str(number):
        raise FhirError(
            412,
            "conflict",
            f'If-Match {value!r} names no version: version ids have no leading zero (W/"{number}")',
        )
    return number


def check_if_match(reference: str, current: Stored | None, if_match: int | None) -> None:
    """If-Match's precondition (RFC 9110 §13.1.1), for any method, reads too: a 412
    unless ``current`` is at version ``if_match``."""
    if if_match is None:
        return
    if if_match == ANY_VERSION:
        if current is None or current.deleted:
            raise FhirError(
                412,
                "conflict",
                f"{reference} does not exist, and If-Match * updates only a record that does",
            )
        return
    have = None if current is None else current.version
    if have != if_match:
        raise FhirError(
            412,
            "conflict",
            f"{reference} is at version {have if have is not None else 'none'},"
            f" not {if_match} as If-Match expects: read it again and retry",
        )


def _named(tags: str) -> set[str]:
    """The entity tags of an If-None-Match list, compared weakly (RFC 9110 §13.1.2):
    ``"3"`` and ``W/"3"`` both name version 3."""
    return {tag.strip().removeprefix("W/") for tag in tags.split(",")}


def none_match(tags: str, version: int) -> bool:
    """Whether an If-None-Match list names this version, or is ``*``."""
    named = _named(tags)
    return "*" in named or f'"{version}"' in named


def check_none_match(current: Stored | None, tags: str | None) -> None:
    """A write's If-None-Match (RFC 9110 §13.1.2): refused (412) when the record exists
    and the list names its version, or is ``*``, "only if there is none"."""
    if tags is None or current is None or current.deleted:
        return
    named = _named(tags)
    if "*" in named:
        advice = "it exists already (If-None-Match: * writes only a new record)"
    elif f'"{current.version}"' in named:
        advice = f"If-None-Match {tags!r} names its version"
    else:
        return
    raise FhirError(
        412,
        "conflict",
        f"{current.reference} is at version {current.version} and {advice}: nothing was"
        " written; read it, then update it with If-Match, or drop If-None-Match",
    )


def not_modified(stored: Stored, if_none_match: str | None, modified_since: int | None) -> bool:
    """Whether a conditional read answers 304 (RFC 9110 §13.2.2): If-None-Match, the exact
    condition, decides alone when given (§13.1.3); else the record is unchanged when last
    updated at or before ``modified_since`` (microseconds since the epoch)."""
    if if_none_match is not None:
        return none_match(if_none_match, stored.version)
    return modified_since is not None and stored.ts <= modified_since


def if_none_exist_query(resource_type: str, condition: str) -> str:
    """The search criteria of a conditional create's If-None-Exist (a header, or a Bundle
    entry's ``ifNoneExist``): the query itself (``identifier=...``) or, as HAPI FHIR's
    clients write it, a search URL of the created type (``Patient?identifier=...``, after
    a base or nothing); a search URL of another type is a 400."""
    path, mark, query = condition.partition("?")
    if not mark or "=" in path or "&" in path:
        return condition
    named = path.rstrip("/").rpartition("/")[2]
    if named and named != resource_type:
        raise FhirError(
            400,
            "invalid",
            f"the If-None-Exist condition searches {named}, but the request creates a"
            f" {resource_type}: give the criteria of a {resource_type} search, such as"
            " identifier=system|value",
        )
    return query
