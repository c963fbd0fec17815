"""``_typeFilter`` of a Bulk Data export: for some types, FHIR search queries
(``Type?parameter=value&...``) one of which each of their resources must meet.

A filter is read at kick-off by the search's own rules (``coffre/search/criteria.py``):
what a search of the type takes, a filter takes, and what a search refuses, a filter
refuses. It is tested on each resource as the export opens it, by the search's exact test
(``Searcher.matches``), its chains and ``_has`` resolved once per export, as of the
export's snapshot. What is said of an ignored criterion names parameters, never values:
a filter's values are health data (a code, a patient).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from coffre.exceptions import FhirError
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.search.criteria import (
    RESULT_PARAMETERS,
    Criterion,
    check_criteria,
    criterion,
    parameter_of,
    parse_criteria,
    problem,
    query_pairs,
)
from coffre.search.matching import check_values
from coffre.service.searching import Searcher
from coffre.service.stored import Stored

TypeFilters = tuple[tuple[str, str], ...]
"""Each filter as its type and the query of the criteria it keeps (``code=...&date=...``)."""

SHAPE = (
    "a _typeFilter is a search of one resource type, Type?parameter=value&..., each query"
    " URL-encoded and the queries joined by commas (MedicationRequest%3Fstatus%3Dactive)"
)


def read_type_filters(
    queries: Iterable[str], types: Iterable[str], lenient: bool
) -> tuple[TypeFilters, list[str]]:
    """The filters of ``queries`` (``Type?query``, each as a search of its type takes it),
    over the export's ``types``, and why each criterion left out was (``lenient``: a
    criterion Coffre cannot answer is left out, its file then holds more; otherwise 400)."""
    exported = frozenset(types)
    filters: list[tuple[str, str]] = []
    notes: list[str] = []
    for query in queries:
        resource_type, kept, ignored = _read_one(query, exported, lenient)
        filters.append((resource_type, kept))
        notes += ignored
    return tuple(filters), notes


def _read_one(query: str, exported: frozenset[str], lenient: bool) -> tuple[str, str, list[str]]:
    resource_type, mark, rest = query.partition("?")
    if not mark or resource_type not in RESOURCE_TYPES:
        raise FhirError(400, "invalid", f"{SHAPE}; one does not begin with an R4 type and a ?")
    if resource_type not in exported:
        message = (
            f"a _typeFilter searches {resource_type}, which this export does not hold: add"
            f" {resource_type} to _type, or leave its filter out"
        )
        raise FhirError(400, "invalid", message)
    pairs = query_pairs(rest)
    if not pairs:
        raise FhirError(400, "invalid", f"a _typeFilter of {resource_type} has no criterion")
    kept: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, raw in pairs:
        reason = _unanswerable(resource_type, name, raw, lenient)
        if reason is None:
            kept.append((name, raw))
        else:
            ignored.append(f"a _typeFilter of {resource_type}: {reason}")
    return resource_type, urlencode(kept), ignored


def _unanswerable(resource_type: str, name: str, raw: str, lenient: bool) -> str | None:
    """Why a filter cannot hold ``name=raw``, when ``lenient`` lets it be left out (400
    otherwise, and always for a value its parameter cannot read); None if it can."""
    if name in RESULT_PARAMETERS:
        reason = f"{name} is a result parameter, which the IG forbids in a _typeFilter"
        if not lenient:
            raise FhirError(400, "invalid", reason)
        return reason
    found = criterion(name, raw)
    kept, ignored = check_criteria(resource_type, (found,), strict=not lenient, what="_typeFilter")
    if kept:
        check_values(resource_type, found)  # a date, number or quantity it cannot read: 400 now
    return ignored[0] if ignored else None


def reached_types(filters: TypeFilters) -> list[str]:
    """The types a filter's chains and ``_has`` search, besides its own: a token must
    export them too, or a filter would tell it of records it may not read."""
    reached: set[str] = set()
    for resource_type, query in filters:
        for found in parse_criteria(query):
            reached |= _searched_types(resource_type, found)
    return sorted(reached)


def _searched_types(resource_type: str, found: Criterion) -> set[str]:
    """The types a criterion's chain or ``_has`` searches, at any depth."""
    if found.chain is None:
        return set()
    inner = criterion(found.chain, "x")
    if found.has is not None:
        return {found.has[0], *_searched_types(found.has[0], inner)}
    param = parameter_of(resource_type, found.parameter)
    targets = (found.modifier,) if found.modifier else param.targets if param else ()
    searched = {t for t in targets if problem(t, inner) is None}
    return searched.union(*(_searched_types(t, inner) for t in searched))


class FilterTest:
    """An export's filters, ready to test the resources it opens: each type's queries
    parsed, their chains and ``_has`` resolved by ``searcher`` (pinned to the export's
    snapshot) the first time a resource of the type is tested."""

    def __init__(self, searcher: Searcher, filters: TypeFilters) -> None:
        self._searcher = searcher
        self._queries: dict[str, list[str]] = {}
        for resource_type, query in filters:
            self._queries.setdefault(resource_type, []).append(query)
        self._resolved: dict[str, list[tuple[Criterion, ...]]] = {}

    def filters(self, resource_type: str) -> bool:
        """Whether the type has filters, and its resources must be opened to be counted."""
        return resource_type in self._queries

    def admits(self, stored: Stored) -> bool:
        """Whether a resource meets one of its type's filters (always, for a type with none)."""
        resource_type = stored.resource_type
        if resource_type not in self._queries:
            return True
        if resource_type not in self._resolved:
            self._resolved[resource_type] = [
                self._searcher.resolve(resource_type, parse_criteria(query))
                for query in self._queries[resource_type]
            ]
        return any(self._searcher.matches(stored, found) for found in self._resolved[resource_type])
