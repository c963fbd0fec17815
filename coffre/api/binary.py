"""A Binary in its own content type (R4 binary.html): a read that names no FHIR format gets
the bytes themselves, labelled with the record's ``contentType`` (a scanned referral as
the PDF it is, for a viewer or an ``<img>``), and a create or update may send the bytes
as they are, with their own ``Content-Type``. ``X-Security-Context`` carries the
Binary's ``securityContext`` both ways (a reference: ``Patient/123`` makes the bytes that
patient's record, ``coffre.search.naming``).

The bytes come from the sealed record and are logged as any read. They are served so that
a browser runs nothing in them: a sandbox policy keeps an HTML or SVG document from
running script with Coffre's origin, and ``nosniff``, which ``coffre serve`` puts on every
answer, keeps the label the record gives.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.media_types import MediaType, parse_accept, parse_media_type, preference
from coffre.api.negotiation import JSON_TYPES, SERVED, read_body
from coffre.api.responses import NO_STORE, version_headers
from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.service import Stored

BINARY = "Binary"
SECURITY_CONTEXT = "X-Security-Context"
SANDBOX = {"Content-Security-Policy": "sandbox; default-src 'none'"}
_FHIR_PARAMETERS = ("_format", "_summary", "_elements")
_UNLABELLED = "application/octet-stream"


def asks_native(request: Request, resource_type: str) -> bool:
    """Whether a read is answered with a Binary's own bytes: it names no FHIR format
    (no ``_format``, ``_summary`` or ``_elements``, and no JSON type in ``Accept``:
    ``*/*`` names none)."""
    if resource_type != BINARY or any(p in request.query_params for p in _FHIR_PARAMETERS):
        return False
    ranges = parse_accept(request.headers.get("accept", ""))
    return not any(
        r.quality > 0 and f"{r.media.type}/{r.media.subtype}" in JSON_TYPES for r in ranges
    )


def native_response(request: Request, stored: Stored) -> Response:
    """The Binary's bytes with its ``contentType``, or a 406 if ``Accept`` refuses it
    (made before the read is logged: a refusal hands nothing out)."""
    resource = json.loads(stored.body)
    label, media = _label(resource.get("contentType", _UNLABELLED))
    ranges = parse_accept(request.headers.get("accept", ""))
    if ranges:  # none, or none that is a media range (``,,``): as if not sent
        said = preference(ranges, media, lambda _: True)
        if said is None or said.quality == 0:
            raise FhirError(
                406,
                "not-supported",
                f"{stored.reference} is {label}; ask for it, or for {SERVED}",
            )
    data = base64.b64decode(resource.get("data", ""))
    # The label as stored: Starlette's media_type would add a UTF-8 charset to any text.
    headers = {**NO_STORE, **version_headers(stored), **SANDBOX, "Content-Type": label}
    context = resource.get("securityContext", {}).get("reference")
    if isinstance(context, str) and context.isascii() and context.isprintable():
        headers[SECURITY_CONTEXT] = context  # a header holds no line break
    return Response(data, 200, headers=headers)


def _label(content_type: str) -> tuple[str, MediaType]:
    """The Content-Type a Binary's bytes are served under: its ``contentType``, unless it
    is no media type a header can carry as it is (the schema takes any code, and a quoted
    parameter any character), then bytes."""
    media = parse_media_type(content_type)
    if media is None or not (content_type.isascii() and content_type.isprintable()):
        return _UNLABELLED, MediaType("application", "octet-stream")
    return content_type, media


async def native_body(request: Request, resource_type: str) -> dict[str, Any] | None:
    """The Binary that a create or update sends as its bytes, or None when the body is
    FHIR JSON (or has no Content-Type: that 415 is the JSON reader's to give)."""
    label = request.headers.get("content-type", "").strip()
    if resource_type != BINARY or not label or label.split(";")[0].strip().lower() in JSON_TYPES:
        return None
    if parse_media_type(label) is None:
        raise FhirError(415, "not-supported", f"the body's Content-Type {label!r} is malformed")
    resource: dict[str, Any] = {"resourceType": BINARY, "contentType": label}
    if "id" in request.path_params:
        resource["id"] = request.path_params["id"]
    context = request.headers.get(SECURITY_CONTEXT, "").strip()
    if context:
        resource["securityContext"] = {"reference": context}
    data = await read_body(request, request.app.state.max_body_bytes)
    if data:
        resource["data"] = base64.b64encode(data).decode("ascii")
    return resource
