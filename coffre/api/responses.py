"""FHIR JSON responses and the headers every resource response carries."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response

from coffre.exceptions import FhirError, operation_outcome
from coffre.fhir import json
from coffre.service import Stored

FHIR_JSON = "application/fhir+json; charset=utf-8"


def fhir_response(
    content: dict[str, Any] | bytes | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = (
        b"" if content is None else content if isinstance(content, bytes) else json.dumps(content)
    )
    return Response(
        body,
        status_code=status,
        headers=headers,
        media_type=FHIR_JSON if content is not None else None,
    )


def outcome_response(error: FhirError, headers: dict[str, str] | None = None) -> Response:
    return fhir_response(error.outcome(), error.status, headers)


def information(message: str) -> dict[str, Any]:
    return operation_outcome("information", "informational", message)


def version_headers(stored: Stored) -> dict[str, str]:
    modified = datetime.fromtimestamp(stored.ts / 1_000_000, UTC)
    return {
        "ETag": f'W/"{stored.version}"',
        "Last-Modified": format_datetime(modified, usegmt=True),
    }


def resource_response(
    stored: Stored, status: int = 200, prefer: str | None = None, location: str | None = None
) -> Response:
    """A resource as the client's ``Prefer: return=`` asks: itself, nothing, or an outcome."""
    headers = version_headers(stored)
    if location:
        headers["Location"] = location
    if prefer == "minimal":
        return fhir_response(None, status, headers)
    if prefer == "OperationOutcome":
        verb = "created" if status == 201 else "stored"
        return fhir_response(
            information(f"{stored.reference} {verb} at version {stored.version}"), status, headers
        )
    return fhir_response(stored.body, status, headers)
