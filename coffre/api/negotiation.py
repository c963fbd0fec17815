"""What a request asks for and carries: formats, bodies, Prefer and conditional headers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.service.bundles import parse_if_match

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


def check_format(request: Request) -> None:
    """Coffre speaks FHIR JSON only: a request for XML or Turtle gets a 406."""
    requested = request.query_params.get("_format")
    if requested is not None and requested not in _JSON_FORMATS:
        raise FhirError(
            406,
            "not-supported",
            f"_format={requested} is not supported: Coffre serves FHIR JSON only (_format=json)",
        )
    accept = request.headers.get("accept", "")
    if accept and not any(t in accept for t in (*JSON_TYPES, "*/*", "application/*")):
        raise FhirError(
            406,
            "not-supported",
            f"Accept: {accept} cannot be met: Coffre serves application/fhir+json",
        )


async def read_json(request: Request, max_bytes: int) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise FhirError(
            415,
            "not-supported",
            f"the body's Content-Type is {content_type or 'missing'}; send application/fhir+json",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    if not body:
        raise FhirError(400, "required", "the request has no body; send a FHIR resource as JSON")
    return json.loads(bytes(body), max_depth=json.MAX_DEPTH)


def _too_large(max_bytes: int) -> FhirError:
    return FhirError(
        413,
        "too-costly",
        f"the body is larger than the {max_bytes} bytes accepted; split it into smaller bundles",
    )


def prefer_return(request: Request) -> str | None:
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
            return value
    return None


def if_match(request: Request) -> int | None:
    return parse_if_match(request.headers.get("if-match"))
