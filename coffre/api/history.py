"""History and list Bundles with paging links that stay valid while data changes.

A first page pins the newest sequence number it saw (``_snapshot``); later pages list
only versions up to it, so a write between two pages shifts nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from coffre.exceptions import FhirError
from coffre.service import RecordStore, Stored
from coffre.storage import HistoryQuery

DEFAULT_COUNT = 50
MAX_COUNT = 1000


def page_count(request: Request) -> int:
    raw = request.query_params.get("_count", str(DEFAULT_COUNT))
    if not raw.isdigit():
        raise FhirError(400, "invalid", f"_count={raw} is not a whole number")
    return min(int(raw), MAX_COUNT)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise FhirError(400, "invalid", f"{name}={raw} is not a whole number")
    return int(raw)


def _since(request: Request) -> int | None:
    raw = request.query_params.get("_since")
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(
            400, "invalid", f"_since={raw} is not a FHIR instant such as 2026-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise FhirError(400, "invalid", f"_since={raw} needs a time zone, such as Z or +01:00")
    return int(moment.timestamp() * 1_000_000)


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
            "etag": f'W/"{stored.version}"',
            "lastModified": stored.last_updated,
        },
    }
    if not stored.deleted:
        entry["resource"] = stored.resource()
    return entry


def history_bundle(
    request: Request,
    base: str,
    records: RecordStore,
    loc: bytes | None = None,
    kind: bytes | None = None,
) -> dict[str, Any]:
    count = page_count(request)
    snapshot = _int_param(request, "_snapshot") or records.storage.last_seq()
    offset = _int_param(request, "_offset") or 0
    query = HistoryQuery(
        loc=loc,
        kind=kind,
        since_ts=_since(request),
        before_seq=snapshot,
        limit=count,
        offset=offset,
    )
    versions = records.history(query)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "total": records.storage.count_history(query),
        "link": _links(request, snapshot, offset, count, has_next=len(versions) == count),
        "entry": [history_entry(base, stored) for stored in versions],
    }
    return bundle


def _links(
    request: Request, snapshot: int, offset: int, count: int, *, has_next: bool
) -> list[dict[str, str]]:
    def url(page_offset: int) -> str:
        params = {
            k: v for k, v in request.query_params.items() if k not in ("_snapshot", "_offset")
        }
        params.update(
            {"_snapshot": str(snapshot), "_offset": str(page_offset), "_count": str(count)}
        )
        return f"{str(request.url).split('?')[0]}?{urlencode(params)}"

    links = [{"relation": "self", "url": url(offset)}]
    if has_next:
        links.append({"relation": "next", "url": url(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    return links


def searchset(request: Request, base: str, matches: list[Stored], count: int) -> dict[str, Any]:
    offset = _int_param(request, "_offset") or 0
    page = matches[offset : offset + count]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "link": _links(request, 0, offset, count, has_next=offset + count < len(matches)),
        "entry": [
            {
                "fullUrl": f"{base}/{s.reference}",
                "resource": s.resource(),
                "search": {"mode": "match"},
            }
            for s in page
        ],
    }
