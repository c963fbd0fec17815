"""``_include`` and ``_revinclude`` (``:iterate`` too): which specs a search can follow,
and the resources they bring beside a page of matches, each through the search's own
scope (so that an include never reaches what the requester may not see)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache

from coffre.exceptions import FhirError
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.search import Criterion
from coffre.search.criteria import parameter_of
from coffre.search.extract import index_values
from coffre.search.naming import record_patients
from coffre.search.parameters import parameters_for
from coffre.search.results import Pairs, listed
from coffre.search.values import Ref
from coffre.service.searching import Searcher
from coffre.service.stored import Stored

ITERATE_ROUNDS = 4
"""How many rounds ``:iterate`` follows references at most."""


def _references(stored: Stored, names: frozenset[str], target: str | None) -> list[tuple[str, str]]:
    """The local references of ``stored`` under ``names`` as (type, id), to ``target`` if
    given."""
    return [
        (value.type, local_id)
        for values in index_values(stored.resource(), None, names).values()
        for value in values
        if type(value) is Ref
        and value.type in RESOURCE_TYPES
        and (local_id := value.local_id) is not None
        and target in (None, value.type)
    ]


def _reference_names(resource_type: str) -> frozenset[str]:
    return frozenset(c for c, p in parameters_for(resource_type).items() if p.type == "reference")


def _forward(searcher: Searcher, found: list[Stored], parts: tuple[str, ...]) -> list[Stored]:
    source, target = parts[0], parts[2] if len(parts) > 2 else None
    wanted: dict[str, set[str]] = {}
    for stored in found:
        if source not in ("*", stored.resource_type):
            continue
        wide = source == "*" or parts[1] == "*"
        names = _reference_names(stored.resource_type) if wide else frozenset({parts[1]})
        for resource_type, local_id in _references(stored, names, target):
            wanted.setdefault(resource_type, set()).add(local_id)
    return _fetched(searcher, wanted)


def _fetched(searcher: Searcher, wanted: dict[str, set[str]]) -> list[Stored]:
    """The current resources of these ids, by type, that the search's scope lets out."""
    return [
        stored
        for resource_type, ids in wanted.items()
        for stored in searcher.find(resource_type, (Criterion("_id", tuple(sorted(ids))),))
    ]


def _reverse(searcher: Searcher, found: list[Stored], parts: tuple[str, ...]) -> list[Stored]:
    target = parts[2] if len(parts) > 2 else None
    targets = {s.resource_type for s in found if target in (None, s.resource_type)}
    refs = tuple(s.reference for s in found if s.resource_type in targets)
    if not refs:
        return []
    sources = searcher.present(RESOURCE_TYPES) if parts[0] == "*" else [parts[0]]
    return [
        stored
        for source in sources
        for name in (_reference_names(source) if parts[1] == "*" else (parts[1],))
        if (param := parameter_of(source, name)) is not None
        and (not param.targets or targets.intersection(param.targets))
        for stored in searcher.find(source, (Criterion(name, refs),))
    ]


@dataclass(frozen=True, slots=True)
class Include:
    """One ``_include`` or ``_revinclude``: ``Type:parameter[:target]`` split (``*`` for
    any type or every reference parameter)."""

    parts: tuple[str, ...]
    reverse: bool
    iterate: bool


INCLUDE_NAMES = ("_include", "_revinclude", "_include:iterate", "_revinclude:iterate")


@cache
def _any_reference_names() -> frozenset[str]:
    return frozenset(name for t in RESOURCE_TYPES for name in _reference_names(t))


def _include_problem(parts: tuple[str, ...]) -> str | None:
    """Why Coffre cannot follow an include, or None when it can."""
    source, name = parts[0], parts[1]
    target = parts[2] if len(parts) > 2 else None
    if name == "*":
        return None
    if source == "*":
        known = name in _any_reference_names()
        return None if known else f"no resource type has a reference search parameter {name!r}"
    param = parameter_of(source, name)
    if param is None or param.type != "reference":
        return f"{source} has no reference search parameter {name!r} Coffre supports"
    if target is not None and param.targets and target not in param.targets:
        return f"{source}'s {name!r} does not refer to {target} resources"
    return None


def includes(pairs: Pairs, strict: bool) -> tuple[list[Include], list[str]]:
    """The ``_include`` and ``_revinclude`` specs Coffre follows, and why each other one
    is ignored: like an unknown search parameter, one naming a parameter Coffre cannot
    follow is refused under ``strict`` (400), else ignored and reported."""
    kept: list[Include] = []
    ignored: list[str] = []
    for key in INCLUDE_NAMES:
        for spec in listed(pairs, key):
            parts = tuple(spec.split(":"))
            if (len(parts) < 2 and parts != ("*",)) or parts[0] not in (*RESOURCE_TYPES, "*"):
                raise FhirError(400, "invalid", f"{spec!r} is not Type:parameter[:target]")
            if len(parts) > 2 and parts[2] not in RESOURCE_TYPES:  # a typo, not a choice
                raise FhirError(
                    400, "invalid", f"{key}={spec}: {parts[2]!r} is not a FHIR R4 resource type"
                )
            parts = parts if len(parts) > 1 else ("*", "*")
            reason = _include_problem(parts)
            if reason is None:
                kept.append(Include(parts, key.startswith("_rev"), key.endswith(":iterate")))
                continue
            reason = f"{key}={spec} cannot be followed: {reason}"
            if strict:
                raise FhirError(400, "not-supported", f"the search cannot be answered: {reason}")
            ignored.append(reason)
    return kept, ignored


def _includes(searcher: Searcher, found: list[Stored], specs: list[Include]) -> list[Stored]:
    """Resources ``_include`` (references from ``found``) or ``_revinclude`` (references
    to ``found``) specs name."""
    out: dict[str, Stored] = {}
    for spec in specs:
        for stored in (_reverse if spec.reverse else _forward)(searcher, found, spec.parts):
            out.setdefault(stored.reference, stored)
    return list(out.values())


def included_by(
    searcher: Searcher, page: list[Stored], specs: list[Include]
) -> tuple[list[Stored], bool]:
    """Everything the page's ``_include`` and ``_revinclude`` bring, iterating where asked,
    and whether ``:iterate`` stopped at ``ITERATE_ROUNDS`` with more left to bring (a
    round more is looked up then, to tell)."""
    seen = {s.reference for s in page}
    added: list[Stored] = []
    current = page
    for round_ in range(ITERATE_ROUNDS + 1):
        following = [spec for spec in specs if spec.iterate or round_ == 0]
        new = _includes(searcher, current, following)
        current = [s for s in new if s.reference not in seen]
        if round_ == ITERATE_ROUNDS or not current:
            break
        seen |= {s.reference for s in current}
        added += current
    return added, bool(current)


_REFERENCE = re.compile(
    rb'"reference"\s*:\s*"([A-Z][A-Za-z]{0,63})/([A-Za-z0-9.-]{1,64})(?:/_history/[^"/]{1,64})?"'
)
"""A relative reference (``Type/id``, versioned or not) as JSON writes it: inside a text,
a look-alike has its quotes escaped (``\\"reference\\":``), which this never matches."""


def relative_references(stored: Stored) -> Iterator[tuple[str, str]]:
    """Every relative reference the record holds, as (type, id), read from its JSON text:
    references in elements no search parameter covers too (a participant's individual,
    a dosage's...), and a few times faster than their search parameters' extraction."""
    for match in _REFERENCE.finditer(stored.body):
        resource_type = match[1].decode()
        if resource_type in RESOURCE_TYPES:
            yield resource_type, match[2].decode()


def supporting(searcher: Searcher, page: list[Stored], types: AbstractSet[str]) -> list[Stored]:
    """The resources of ``types`` that a page of a patient's records refers to, and those
    these refer to in turn (``ITERATE_ROUNDS`` at most): the practitioners,
    organisations, locations, medications... that ``Patient/$everything`` hands out
    beside the records they support. A record of a patient is never one: this patient's
    are matches of their own, and another patient's are not this one's to hand out."""
    if not types:  # a search: no page's JSON is read for references
        return []
    seen = {s.reference for s in page}
    added: list[Stored] = []
    current = page
    for _ in range(ITERATE_ROUNDS):
        wanted: dict[str, set[str]] = {}
        for stored in current:
            for resource_type, local_id in relative_references(stored):
                if resource_type in types and f"{resource_type}/{local_id}" not in seen:
                    wanted.setdefault(resource_type, set()).add(local_id)
        found = _fetched(searcher, wanted)
        seen |= {s.reference for s in found}
        current = [s for s in found if not record_patients(s.resource())]
        added += current
        if not current:
            break
    return added
