"""History Bundles, and the paging links search shares, that stay valid while data changes.

A first page pins the newest sequence number it saw (``_snapshot``); later pages list
only versions up to it, so a write between two pages shifts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from coffre.api.negotiation import preferences
from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.fhir.bundles import fhir_bundle
from coffre.search.normalise import instant
from coffre.search.plan import query_date, split_prefix, unreadable
from coffre.search.results import Pairs, number, page_count, single
from coffre.service import RecordStore, Stored
from coffre.storage import HistoryQuery

PAGING = ("_snapshot", "_offset")
AFTER = "_after"
"""A search's next page starts after the record of this id, in location order: an offset
alone shifts when a record before it is deleted or stops matching."""


def since(pairs: Pairs) -> int | None:
    raw = single(pairs, "_since")
    if raw is None:
        return None
    moment = instant(raw)
    if moment is None:
        what = (
            "a FHIR instant: to the second, with a time zone (Z, or ±hh:mm up to 14:00),"
            " such as 2026-01-31T12:00:00Z"
        )
        raise unreadable(f"_since={raw}", what, "_since=2026-01-31T12:00:00%2B01:00")
    return moment


def _at(pairs: Pairs, one_record: bool) -> tuple[int, int] | None:
    """The period of ``_at`` as ``[low, high)`` microseconds (``2024-03`` is the month,
    as a search reads a date), if given: a record's history only, and no prefix, since
    the parameter asks which versions were current at some point of one period."""
    raw = single(pairs, "_at")
    if raw is None:
        return None
    if not one_record:
        raise FhirError(
            400,
            "not-supported",
            "_at is taken by one record's history (Type/id/_history); across records, a search"
            " with _lastUpdated finds what changed in a period",
        )
    prefix, _ = split_prefix(raw)
    if prefix != "eq" or raw[:2] == "eq":
        raise FhirError(
            400, "invalid", f"_at takes a date or time without a prefix, not {prefix}: _at=2024-03"
        )
    return query_date(raw)


def current_during(versions: list[Stored], low: int, high: int) -> list[Stored]:
    """The versions of one record that were current at some point of ``[low, high)``:
    each is from its own time to the next version's (the latest, to now)."""
    starts = {stored.version: stored.ts for stored in versions}
    return [
        stored
        for stored in versions
        if stored.ts < high and starts.get(stored.version + 1, high) > low
    ]


def _every_version(records: RecordStore, query: HistoryQuery) -> list[Stored]:
    """The versions ``query`` lists, ``_since`` aside."""
    every = replace(query, since_ts=None, offset=0)
    return records.history(replace(every, limit=records.storage.count_history(every)))


UNSUPPORTED = ("_list", "_sort", "_summary", "_elements", "_include", "_revinclude", "_type")
"""What a search takes and a history does not (R4 gives it _count, _since, _at, _list;
R5 gives a system history ``_type``, which a client may send to an R4 server too)."""
TAKEN = frozenset({"_count", "_since", "_at", "_format", "_pretty", *PAGING})
"""What a history reads (``_pretty``, a general parameter, changes nothing here)."""


def refuse_unsupported(pairs: Pairs, names: tuple[str, ...], what: str, takes: str) -> None:
    """Parameters that would narrow an answer Coffre cannot narrow by them (a history's
    ``_at`` and ``_list``): ignored, they would hand out what the client did not ask for."""
    given = {name for name, _ in pairs}
    for name in names:
        if name in given:
            raise FhirError(
                400, "not-supported", f"Coffre's {what} does not support {name}; it takes {takes}"
            )


def _method(stored: Stored) -> str:
    if stored.deleted:
        return "DELETE"
    return "POST" if stored.version == 1 else "PUT"


def history_entry(base: str, stored: Stored) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "fullUrl": f"{base}/{stored.reference}",
        "request": {
            "method": _method(stored),
            "url": stored.resource_type
            if stored.version == 1 and not stored.deleted
            else stored.reference,
        },
        "response": {
            "status": "204 No Content"
            if stored.deleted
            else ("201 Created" if stored.version == 1 else "200 OK"),
            "etag": stored.etag,
            "lastModified": stored.last_updated,
        },
    }
    if not stored.deleted:
        entry["resource"] = json.embedded(stored.body)
    return entry


def history_bundle(
    request: Request,
    base: str,
    records: RecordStore,
    loc: bytes | None = None,
    kind: bytes | None = None,
    admit: Callable[[Stored], bool] | None = None,
) -> tuple[dict[str, Any], list[Stored]]:
    """A page of history, and the versions it hands out (for the access log); ``admit``
    leaves out the versions of one record the request may not see (in another patient's
    compartment before it moved): they are neither listed, nor counted in its total, nor
    take a place in its pages."""
    pairs = list(request.query_params.multi_items())
    refuse_unsupported(pairs, UNSUPPORTED, "history", "_since, _at and _count")
    period = _at(pairs, loc is not None)
    if preferences(request).get("handling") == "strict":
        # Unknown ones are otherwise ignored, as a lenient search ignores them; a history
        # Bundle has no place for the outcome that would say so (its entries are versions).
        unknown = sorted({name for name, _ in pairs} - TAKEN)
        if unknown:
            raise FhirError(
                400,
                "not-supported",
                f"a history takes _since, _at and _count, not {', '.join(unknown)}"
                " (Prefer: handling=strict)",
            )
    count = page_count(pairs)
    snapshot = pinned_snapshot(pairs, records.storage.last_seq())
    offset = number(pairs, "_offset") or 0
    query = HistoryQuery(
        loc=loc, kind=kind, since_ts=since(pairs), before_seq=snapshot, limit=count, offset=offset
    )
    if admit is None and period is None:
        versions = records.history(query)
        total = records.storage.count_history(query)
    else:
        whole = replace(query, limit=records.storage.count_history(query), offset=0)
        visible = records.history(whole)
        if period is not None:  # the next version decides, listed by _since or not
            every = visible if query.since_ts is None else _every_version(records, whole)
            kept = {stored.version for stored in current_during(every, *period)}
            visible = [stored for stored in visible if stored.version in kept]
        if admit is not None:
            visible = [stored for stored in visible if admit(stored)]
        versions, total = visible[offset : offset + count], len(visible)
    page_url = str(request.url).split("?")[0]
    entries = [history_entry(base, stored) for stored in versions]
    link = links(page_url, pairs, snapshot, offset, count, total)
    return fhir_bundle("history", entries, total=total, link=link), versions


def pinned_snapshot(pairs: Pairs, last: int) -> int:
    """The newest write a page of history or search lists: the one its first page saw
    (``_snapshot``), else ``last``, the newest there is. One past the end would let later
    writes into later pages, shifting them."""
    pinned = number(pairs, "_snapshot")
    if pinned is None:
        return last
    if pinned > last:
        raise FhirError(
            400,
            "invalid",
            f"_snapshot={pinned} is past the newest write ({last}): follow the page"
            " links as they were given, or start again without _snapshot",
        )
    return pinned


def links(
    page_url: str,
    pairs: Pairs,
    snapshot: int,
    offset: int,
    count: int,
    total: int,
    last: str | None = None,
) -> list[dict[str, str]]:
    """self, next and previous, keeping every criterion (repeated ones too); ``last``: the
    id of the page's last match, after which the next page starts (``_after``)."""
    kept = [(k, v) for k, v in pairs if k not in (*PAGING, AFTER, "_count")]
    asked = [(k, v) for k, v in pairs if k == AFTER][:1]

    def url(page_offset: int, after: list[tuple[str, str]]) -> str:
        paging = [
            ("_count", str(count)),
            ("_snapshot", str(snapshot)),
            ("_offset", str(page_offset)),
            *after,
        ]
        return f"{page_url}?{urlencode(kept + paging)}"

    links = [{"relation": "self", "url": url(offset, asked)}]
    if count > 0 and offset + count < total:
        after = [(AFTER, last)] if last is not None else []
        links.append({"relation": "next", "url": url(offset + count, after)})
    if offset > 0 and count > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count), [])})
    return links
