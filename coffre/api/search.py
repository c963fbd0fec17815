"""Search result Bundles: paging pinned to a snapshot, ``_sort``, ``_total``, ``_summary``,
``_elements``, ``_include`` / ``_revinclude`` and ``Patient/$everything``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from itertools import islice
from typing import Any

from coffre.api.history import PAGING, links, refuse_unsupported, since
from coffre.api.negotiation import refuse_parameters
from coffre.exceptions import FhirError, bounded, operation_outcome
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.values import LARGEST
from coffre.search import Criterion, check_criteria, parse_criteria
from coffre.search.criteria import parameter_of
from coffre.search.extract import index_values
from coffre.search.parameters import parameters_for
from coffre.search.results import Pairs, listed, number, one_of, page_count
from coffre.search.shapes import SUMMARIES, search_shape
from coffre.search.values import Ref
from coffre.service import RecordStore, Stored
from coffre.service.records import Writer
from coffre.service.searching import Scope, Searcher, compartment_types, everything, sort_results

Admit = Callable[[Stored], bool]
TOTALS = ("none", "estimate", "accurate")
# How many rounds ``:iterate`` follows references at most.
ITERATE_ROUNDS = 4


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


def _included(searcher: Searcher, page: list[Stored], specs: list[Include]) -> list[Stored]:
    """Everything the page's ``_include`` and ``_revinclude`` bring, iterating where asked."""
    seen = {s.reference for s in page}
    added: list[Stored] = []
    current = page
    for round_ in range(ITERATE_ROUNDS):
        following = [spec for spec in specs if spec.iterate or round_ == 0]
        new = _includes(searcher, current, following)
        current = [s for s in new if s.reference not in seen]
        seen |= {s.reference for s in current}
        added += current
        if not current:
            break
    return added


def _outcome(ignored: list[str]) -> dict[str, Any]:
    return {
        "resource": operation_outcome(
            "warning", "not-supported", *(bounded(f"ignored: {why}") for why in ignored)
        ),
        "search": {"mode": "outcome"},
    }


def _bundle(
    base: str,
    pairs: Pairs,
    page_url: str,
    matches: list[Stored],
    searcher: Searcher,
    specs: list[Include],
    ignored: list[str],
    complete: bool = True,
) -> tuple[dict[str, Any], list[Stored]]:
    """``complete``: ``matches`` holds every match, not only enough for this page;
    ``specs`` the includes to follow, ``ignored`` why parts of the request were not."""
    shape = search_shape(pairs)
    total_mode = one_of(pairs, "_total", TOTALS)
    count = 0 if shape.summary == "count" else page_count(pairs)
    offset = number(pairs, "_offset") or 0
    page = matches[offset : offset + count]
    included = _included(searcher, page, specs)
    snapshot = searcher.scope.as_of or 0
    entries = [
        {
            "fullUrl": f"{base}/{s.reference}",
            "resource": shape.served(s.body),
            "search": {"mode": mode},
        }
        for mode, group in (("match", page), ("include", included))
        for s in group
    ]
    if ignored:
        entries.append(_outcome(ignored))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total_mode != "none" and complete:
        bundle["total"] = len(matches)
    bundle["link"] = links(page_url, pairs, snapshot, offset, count, len(matches))
    bundle["entry"] = entries
    return bundle, page + included


def search_page(
    records: RecordStore,
    base: str,
    resource_type: str,
    pairs: Pairs,
    strict: bool = False,
    admit: Admit | None = None,
    within: str | None = None,
    matches: Admit | None = None,
    writer: Writer | None = None,
) -> tuple[dict[str, Any], list[Stored]]:
    """A page of a type's search results, and every resource it hands out; ``admit``
    keeps out what the request may not see, from matches, includes and chains alike, but
    for ``matches`` which, when given, decides of the search's own matches instead (they
    carry its criteria); ``within`` names the one patient whose compartment it can see,
    if it is confined. ``writer``: search a write transaction's view (a Bundle's search
    entry) instead of the committed records."""
    criteria, ignored = check_criteria(resource_type, parse_criteria(pairs), strict=strict)
    specs, skipped = includes(pairs, strict)
    searcher = Searcher(records, _scope(records, pairs, base, admit, within, writer))
    sort = _sort_keys(pairs)
    found, complete = searcher.search(
        resource_type, criteria, None if sort else _limit(pairs), matches or admit
    )
    if sort:
        found = sort_results(resource_type, found, sort, base)
    page_url = f"{base}/{resource_type}"
    return _bundle(base, pairs, page_url, found, searcher, specs, ignored + skipped, complete)


def _scope(
    records: RecordStore,
    pairs: Pairs,
    base: str,
    admit: Admit | None,
    within: str | None = None,
    writer: Writer | None = None,
) -> Scope:
    """Where a page searches: the committed records, or ``writer``'s transaction, as of the
    request's ``_snapshot`` or else the newest version, which its links then pin."""
    reader = records.storage if writer is None else writer.txn
    snapshot = number(pairs, "_snapshot") or reader.last_seq()
    if writer is None:
        return Scope(records.storage, base=base, as_of=snapshot, admit=admit, within=within)
    return writer.scope(base=base, as_of=snapshot, admit=admit, within=within)


def _sort_keys(pairs: Pairs) -> list[str]:
    """The ``_sort`` keys, each a parameter name with ``-`` before it for descending order;
    400 for an empty key or name (``_sort=``, ``_sort=a,,b``) or a doubled ``-``."""
    keys = []
    for key, raw in pairs:
        if key != "_sort":
            continue
        for part in raw.split(","):
            name = part.removeprefix("-")
            if not name or name.startswith("-"):
                raise FhirError(
                    400,
                    "invalid",
                    f"_sort={raw!r} is not a valid _sort: it lists search parameters separated"
                    " by commas, each with '-' before it for descending order"
                    " (_sort=-birthdate,family)",
                )
            keys.append(part)
    return keys


def _limit(pairs: Pairs) -> int | None:
    """How many matches a page must read: its own, those of the pages before it, and one
    more to know whether a next page exists (no more than a 64-bit count, which a huge
    _offset would pass); None when every match must be found."""
    if _needs_total(pairs):
        return None
    return min(page_count(pairs) + (number(pairs, "_offset") or 0) + 1, LARGEST)


def _needs_total(pairs: Pairs) -> bool:
    """Whether every match must be found: an exact total was asked for, or only a count.
    Otherwise a page reads just enough records to fill itself and say whether more follow,
    and gives a total only when that reading happened to be complete."""
    return (
        one_of(pairs, "_total", TOTALS) == "accurate"
        or one_of(pairs, "_summary", SUMMARIES) == "count"
        or page_count(pairs) == 0
    )


EVERYTHING_TAKES = frozenset(
    {"_type", "_since", "_count", "_include", "_revinclude", "_summary", "_elements", "_total"}
).union(PAGING)
"""What ``$everything`` answers by, modifiers aside (``_include:iterate``)."""


def everything_page(
    records: RecordStore,
    base: str,
    patient_id: str,
    pairs: Pairs,
    admit: Admit | None = None,
    strict: bool = False,
) -> tuple[dict[str, Any], list[Stored]]:
    """``Patient/{id}/$everything``: the patient's compartment, ``_type`` and ``_since``
    narrowing it, paged by ``_count``; the caller has read the Patient (404, 410). Other
    parameters are refused when ``strict``, else left out of the page's links and
    reported in it."""
    takes = "_type, _since and _count"
    refuse_unsupported(pairs, ("start", "end"), "$everything", takes)
    unknown = sorted({k for k, _ in pairs if k.partition(":")[0] not in EVERYTHING_TAKES})
    if strict:
        refuse_parameters([(k, v) for k, v in pairs if k in unknown], "$everything", takes)
    pairs = [(k, v) for k, v in pairs if k not in unknown]
    types = listed(pairs, "_type") or list(compartment_types())
    for name in types:
        if name not in RESOURCE_TYPES:
            raise FhirError(400, "invalid", f"_type names {name!r}, not a FHIR R4 resource type")
    specs, ignored = includes(pairs, strict)
    ignored += [f"{name} is no parameter of $everything" for name in unknown]
    searcher = Searcher(records, _scope(records, pairs, base, admit))
    limit = _limit(pairs)
    wanted = [t for t in compartment_types() if t in types]
    found = everything(searcher, patient_id, wanted, None if limit is None else limit + 1)
    after = since(pairs)
    if after is not None:
        found = (s for s in found if s.ts >= after)
    matches, complete = _first(found, limit)
    page_url = f"{base}/Patient/{patient_id}/$everything"
    return _bundle(base, pairs, page_url, matches, searcher, specs, ignored, complete)


def _first(found: Iterator[Stored], limit: int | None) -> tuple[list[Stored], bool]:
    """The first ``limit`` of ``found`` (all without a limit), and whether that is all."""
    if limit is None:
        return list(found), True
    taken = list(islice(found, limit))
    return taken, len(taken) < limit or next(found, None) is None
