"""Search result Bundles: paging pinned to a snapshot, ``_sort``, ``_total``, ``_summary``,
``_elements``, ``_include`` / ``_revinclude`` and ``Patient/$everything``."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from itertools import islice
from typing import Any

from coffre.api.history import (
    AFTER,
    PAGING,
    links,
    pinned_snapshot,
    refuse_unsupported,
    since,
)
from coffre.api.negotiation import refuse_parameters
from coffre.exceptions import FhirError, bounded, operation_outcome
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.bundles import fhir_bundle
from coffre.fhir.values import LARGEST
from coffre.search import Criterion, check_criteria, parse_criteria
from coffre.search.criteria import RESULT_PARAMETERS, criterion
from coffre.search.results import Pairs, listed, number, one_of, page_count
from coffre.search.shapes import SUMMARIES, search_shape, unknown_elements
from coffre.service import RecordStore, Stored
from coffre.service.includes import (
    ITERATE_ROUNDS,
    Include,
    included_by,
    includes,
    supporting,
)
from coffre.service.searching import Scope, Searcher, everything, everything_types, sort_results
from coffre.service.stored import check_id
from coffre.service.writer import Writer

Admit = Callable[[Stored], bool]
TOTALS = ("none", "estimate", "accurate")


_CUT = (
    f"_include:iterate past {ITERATE_ROUNDS} rounds: the resources included stop there, and"
    " those the last ones refer to are left out"
)


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
    anchored: bool = False,
    after: bytes | None = None,
    supported: AbstractSet[str] = frozenset(),
) -> tuple[dict[str, Any], list[Stored]]:
    """``complete``: ``matches`` holds every match, not only enough for this page;
    ``specs`` the includes to follow, ``ignored`` why parts of the request were not;
    ``anchored``: ``matches`` are in location order, so that the next page can start
    after this one's last (``_after``), and this one after ``after`` if given;
    ``supported``: the types of the resources the page refers to that come with it
    (``$everything``'s practitioners, organisations...), as includes."""
    shape = search_shape(pairs)
    total_mode = one_of(pairs, "_total", TOTALS)
    count = 0 if shape.summary == "count" else page_count(pairs)
    offset = number(pairs, "_offset") or 0
    start = offset if after is None else bisect_right([m.loc for m in matches], after)
    page = matches[start : start + count]
    included, cut = included_by(searcher, page, specs)
    if cut:
        ignored = [*ignored, _CUT]
    there = {s.reference for s in included}
    included += [s for s in supporting(searcher, page, supported) if s.reference not in there]
    snapshot = searcher.scope.as_of or 0
    entries = [
        {
            "fullUrl": f"{base}/{s.reference}",
            "resource": shown.served(s.body),
            "search": {"mode": mode},
        }
        for mode, group, shown in (("match", page, shape), ("include", included, shape.of_includes))
        for s in group
    ]
    if ignored:
        entries.append(_outcome(ignored))
    total = {"total": len(matches)} if total_mode != "none" and complete else {}
    last = page[-1].id if anchored and page else None
    left = offset - start + len(matches)  # the matches from the offset on, as ``links`` counts
    link = links(page_url, pairs, snapshot, offset, count, left, last)
    # A count alone (``_summary=count``, ``_count=0``) hands out no record but tells of
    # each it counts (that this patient has a Condition of that code): logged as a page
    # of them would be, or a positive answer would leave no trace in her access history.
    counted = matches if count == 0 and total else []
    return fhir_bundle("searchset", entries, **total, link=link), page + included + counted


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
    pairs = _answered(pairs, criteria)
    specs, skipped = includes(pairs, strict)
    skipped += unknown_elements(resource_type, search_shape(pairs), strict)
    searcher = Searcher(records, _scope(records, pairs, base, admit, within, writer))
    sort = _sort_keys(pairs)
    found, complete = searcher.search(
        resource_type, criteria, None if sort else _limit(pairs), matches or admit
    )
    if sort:
        found = sort_results(resource_type, found, sort, base)
    page_url = f"{base}/{resource_type}"
    after = None if sort else _after(records, resource_type, pairs)
    return _bundle(
        base, pairs, page_url, found, searcher, specs, ignored + skipped, complete, not sort, after
    )


def _answered(pairs: Pairs, kept: tuple[Criterion, ...]) -> Pairs:
    """The request's parameters but the criteria it ignored (reported in the Bundle):
    its links repeat them, and ``self`` must say what the search used (search.html)."""
    used = set(kept)
    return [(k, v) for k, v in pairs if k in RESULT_PARAMETERS or criterion(k, v) in used]


def _after(records: RecordStore, resource_type: str, pairs: Pairs) -> bytes | None:
    """Where a page of matches in location order starts: after the record ``_after`` names
    (the last of the page before), so that a record deleted or changed since does not
    shift it; None: at ``_offset``."""
    named = [value for key, value in pairs if key == AFTER]
    if not named:
        return None
    check_id(resource_type, named[0])
    return records.keys.location(resource_type, named[0])


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
    snapshot = pinned_snapshot(pairs, reader.last_seq())
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
    """``Patient/{id}/$everything``: the patient's records (``everything_types``),
    ``_type`` and ``_since`` narrowing them, paged by ``_count``, each page with the
    resources of other types that its records refer to (of ``_type`` too); the caller
    has read the Patient (404, 410). Other parameters are refused when ``strict``, else
    left out of the page's links and reported in it."""
    takes = "_type, _since and _count"
    refuse_unsupported(pairs, ("start", "end"), "$everything", takes)
    unknown = sorted({k for k, _ in pairs if k.partition(":")[0] not in EVERYTHING_TAKES})
    if strict:
        refuse_parameters([(k, v) for k, v in pairs if k in unknown], "$everything", takes)
    pairs = [(k, v) for k, v in pairs if k not in unknown]
    types = listed(pairs, "_type") or RESOURCE_TYPES
    for name in types:
        if name not in RESOURCE_TYPES:
            raise FhirError(400, "invalid", f"_type names {name!r}, not a FHIR R4 resource type")
    specs, ignored = includes(pairs, strict)
    ignored += [f"{name} is no parameter of $everything" for name in unknown]
    searcher = Searcher(records, _scope(records, pairs, base, admit))
    limit = _limit(pairs)
    wanted = [t for t in everything_types() if t in types]
    supported = frozenset(types).difference(everything_types())
    found = everything(searcher, patient_id, wanted, None if limit is None else limit + 1)
    after = since(pairs)
    if after is not None:
        found = (s for s in found if s.ts >= after)
    matches, complete = _first(found, limit)
    page_url = f"{base}/Patient/{patient_id}/$everything"
    return _bundle(
        base, pairs, page_url, matches, searcher, specs, ignored, complete, supported=supported
    )


def _first(found: Iterator[Stored], limit: int | None) -> tuple[list[Stored], bool]:
    """The first ``limit`` of ``found`` (all without a limit), and whether that is all."""
    if limit is None:
        return list(found), True
    taken = list(islice(found, limit))
    return taken, len(taken) < limit or next(found, None) is None
