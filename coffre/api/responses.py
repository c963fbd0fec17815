"""FHIR JSON responses and the headers every resource response carries."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response

from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.service import Outcome, Stored
from coffre.service.stored import written_outcome

FHIR_JSON = "application/fhir+json; charset=utf-8"

NO_STORE = {"Cache-Control": "no-store"}
"""No cache, a browser's or a proxy's, keeps a copy of a FHIR answer: health data never lies
in one, and every read reaches Coffre, which logs it (a client that keeps its own copy
revalidates it with If-None-Match, and the 304 is logged as a read)."""


def fhir_response(
    content: dict[str, Any] | bytes | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = (
        b"" if content is None else content if isinstance(content, bytes) else json.dumps(content)
    )
    return Response(
        body,
        status_code=status,
        headers={**NO_STORE, **headers} if headers else NO_STORE,
        media_type=FHIR_JSON if content is not None else None,
    )


def outcome_response(error: FhirError, headers: dict[str, str] | None = None) -> Response:
    return fhir_response(error.outcome(), error.status, headers)


def version_headers(stored: Stored) -> dict[str, str]:
    modified = datetime.fromtimestamp(stored.ts / 1_000_000, UTC)
    return {
        "ETag": stored.etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
    }


def resource_response(stored: Stored, status: int = 200) -> Response:
    return fhir_response(stored.body, status, version_headers(stored))


def written_response(outcome: Outcome, prefer: str | None, location: str) -> Response:
    """A write's answer as the client's ``Prefer: return=`` asks: the resource, nothing,
    or an outcome that says what was done."""
    status = 201 if outcome.created else 200
    headers = {**version_headers(outcome.stored), "Location": location}
    if prefer == "minimal":
        return fhir_response(None, status, headers)
    if prefer == "OperationOutcome":
        return fhir_response(written_outcome(outcome), status, headers)
    return fhir_response(outcome.stored.body, status, headers)
