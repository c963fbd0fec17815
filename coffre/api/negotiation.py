"""What a request asks for and carries: formats, bodies, Prefer and conditional headers."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.requests import Request

from coffre.api.http_dates import http_date
from coffre.api.media_types import (
    MediaRange,
    MediaType,
    parse_accept,
    parse_media_type,
    preference,
)
from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.fhir.json_patch import MEDIA_TYPE as JSON_PATCH
from coffre.fhir.values import whole_number
from coffre.search.criteria import NOT_UTF8
from coffre.service import Stored
from coffre.service.conditions import check_if_match, parse_if_match
from coffre.service.conditions import not_modified as read_unchanged

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
FORM = "application/x-www-form-urlencoded"
SERVED = "FHIR R4 (fhirVersion=4.0) as application/fhir+json in UTF-8"
_JSON_MEDIA = [MediaType("application", media.partition("/")[2]) for media in JSON_TYPES]
_FHIR_JSON = _JSON_MEDIA[0]
_R4 = re.compile(r"4\.0(?:\.[0-9]+)?")


def check_format(request: Request) -> None:
    """Coffre speaks FHIR R4 JSON only: a request for XML, Turtle or another FHIR version
    gets a 406. ``_format``, where given, overrides ``Accept`` (http.html#mime-type).
    A query whose escapes are not UTF-8 is a 400."""
    check_query_text(request.scope["query_string"])
    requested = request.query_params.get("_format")
    if requested is not None:
        check_format_parameter(requested)
        return
    accept = request.headers.get("accept", "")
    if accept.strip() and not _accepted(accept):
        raise FhirError(
            406, "not-supported", f"Accept: {accept} cannot be met: Coffre serves {SERVED}"
        )


def check_format_parameter(requested: str) -> None:
    """A 406 for a ``_format`` (in a query, or a POST search's form) other than JSON's."""
    if not _json_format(requested):
        raise FhirError(
            406,
            "not-supported",
            f"_format={requested} is not supported: Coffre serves {SERVED} (_format=json)",
        )


def check_query_text(query: bytes) -> None:
    """A query's ``%XX`` escapes must spell UTF-8 text: decoded leniently, ``name=%E9``
    would search for a replacement character and find nothing, with no error."""
    if b"%" not in query:
        return
    try:
        unquote_to_bytes(query).decode()
    except UnicodeDecodeError:
        raise FhirError(400, "structure", f"the URL's query {NOT_UTF8}") from None


@lru_cache(maxsize=256)
def _accepted(accept: str) -> bool:
    """``accepts_json`` of an ``Accept`` header: clients send the same few again and
    again, and parsing one costs 5 to 30 µs."""
    return accepts_json(parse_accept(accept))


def _json_format(value: str) -> bool:
    """Whether ``_format`` asks for FHIR R4 JSON: ``json``, or a JSON media type whose
    parameters Coffre takes. A ``+`` left unencoded in a URL reaches us as a space."""
    if value.strip().lower() == "json":
        return True
    media = _format_media(value)
    return media is not None and _json_media(media) and takes_parameters(media)


def _format_media(value: str) -> MediaType | None:
    """The media type a ``_format`` names, a ``+`` it left unencoded (a space) put back."""
    name, mark, parameters = value.partition(";")
    return parse_media_type(name.strip().replace(" ", "+") + mark + parameters)


def accepts_json(ranges: list[MediaRange]) -> bool:
    """Whether a client that sends these media ranges takes what Coffre answers: FHIR R4
    JSON under one of its names, application/fhir+json, application/json (the answer is
    then labelled so: ``answers_plain_json``) or application/json+fhir. A range counts
    only if its parameters ask for what Coffre sends (``takes_parameters``)."""
    said = (preference(ranges, media, takes_parameters) for media in _JSON_MEDIA)
    return any(p is not None and p.quality > 0 for p in said)


@lru_cache(maxsize=256)
def answers_plain_json(accept: str, requested_format: str | None) -> bool:
    """Whether an answer is labelled application/json rather than application/fhir+json:
    ``_format`` names it, or else ``Accept`` weighs it above application/fhir+json (as
    the most specific range naming each says; ``*/*``, or no ``Accept``, takes the FHIR
    name)."""
    if requested_format is not None:
        media = _format_media(requested_format)
        return media is not None and (media.type, media.subtype) == ("application", "json")
    ranges = parse_accept(accept)
    plain = preference(ranges, _JSON_MEDIA[1], takes_parameters)
    fhir = preference(ranges, _FHIR_JSON, takes_parameters)
    return plain is not None and plain.quality > (fhir.quality if fhir else 0)


def _json_media(media: MediaType) -> bool:
    return any((media.type, media.subtype) == (j.type, j.subtype) for j in _JSON_MEDIA)


def takes_parameters(media: MediaType) -> bool:
    """Whether Coffre reads or writes this media type's parameters: its FHIR version (R4,
    ``4.0`` or ``4.0.1``; http.html#version-parameter) and its charset (UTF-8); others
    change nothing."""
    version = media.parameter("fhirversion")
    charset = media.parameter("charset")
    return (version is None or _R4.fullmatch(version) is not None) and (
        charset is None or charset.lower() == "utf-8"
    )


async def read_json(request: Request, max_bytes: int) -> Any:
    content_type = _content_type(request)
    if content_type not in JSON_TYPES:
        raise FhirError(
            415,
            "not-supported",
            f"the body's Content-Type is {content_type or 'missing'}; send application/fhir+json",
        )
    declared = request.headers["content-type"]
    media = parse_media_type(declared)
    if media is not None and not takes_parameters(media):
        raise FhirError(
            415, "not-supported", f"the body's Content-Type is {declared}; send {SERVED}"
        )
    body = await read_body(request, max_bytes)
    if not body:
        raise FhirError(400, "required", "the request has no body; send a FHIR resource as JSON")
    return json.loads(body, max_depth=json.MAX_DEPTH)


async def read_patch(request: Request, max_bytes: int) -> bytes:
    """A PATCH's body: a JSON Patch document (RFC 6902), the patch format Coffre takes
    (http.html#patch); any other is a 415 that says so."""
    content_type = _content_type(request)
    if content_type != JSON_PATCH:
        raise FhirError(
            415,
            "not-supported",
            f"the patch's Content-Type is {content_type or 'missing'}; send a JSON Patch"
            f" (RFC 6902) as {JSON_PATCH}: Coffre does not take FHIRPath Patch",
        )
    body = await read_body(request, max_bytes)
    if not body:
        raise FhirError(400, "required", "the request has no body; send a JSON Patch document")
    return body


async def read_form(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """The search parameters a ``POST _search`` carries in its body, if any."""
    body = await read_body(request, max_bytes)
    if not body:
        return []
    content_type = _content_type(request)
    if content_type != FORM:
        raise FhirError(
            415,
            "not-supported",
            f"the search's body is {content_type or 'of no Content-Type'}; send its parameters"
            f" as {FORM}",
        )
    media = parse_media_type(request.headers["content-type"])
    charset = None if media is None else media.parameter("charset")
    if charset is not None and charset.lower() != "utf-8":
        raise FhirError(415, "not-supported", f"the search form is in {charset}; send it in UTF-8")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise FhirError(400, "structure", "the search form is not UTF-8 text") from None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, max_bytes: int) -> bytes:
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise FhirError(
            415,
            "not-supported",
            f"the body's Content-Encoding is {coding}, which Coffre does not decode: send it"
            " as it is, without Content-Encoding",
        )
    if _declares_more(request.headers.get("content-length", ""), max_bytes):
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


def _declares_more(declared: str, max_bytes: int) -> bool:
    """Whether a Content-Length says more than ``max_bytes``: a number of more digits than
    any integer Coffre reads does too; one that is no number is left to the count of the
    bytes as they come."""
    number = whole_number(declared)
    if number is None:
        return declared.isascii() and declared.isdigit()
    return number > max_bytes


def _too_large(max_bytes: int) -> FhirError:
    return FhirError(
        413,
        "too-costly",
        f"the body is larger than the {max_bytes} bytes accepted; split it into smaller bundles",
    )


def preferences(request: Request) -> dict[str, str]:
    """The client's ``Prefer`` headers, name to value (``""`` for a bare one such as
    ``respond-async``): RFC 7240 separates preferences with commas, several headers
    add up, and semicolons, which some clients use instead, separate them too."""
    found: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.replace(";", ",").split(","):
            name, _, value = part.strip().partition("=")
            if name:
                found.setdefault(name.strip().lower(), value.strip().strip('"'))
    return found


def prefer_return(request: Request) -> str | None:
    value = preferences(request).get("return")
    return value if value in ("minimal", "representation", "OperationOutcome") else None


def check_read_match(request: Request, stored: Stored) -> None:
    """A read's ``If-Match``: a 412, with nothing handed out, unless it names ``stored``'s
    version (RFC 9110 §13.1.1 holds it for every method)."""
    check_if_match(stored.reference, stored, parse_if_match(request.headers.get("if-match")))


def not_modified(request: Request, stored: Stored) -> bool:
    """Whether a read's ``If-None-Match`` or ``If-Modified-Since`` finds ``stored`` as the
    client holds it (RFC 9110 §13.1.2, §13.1.3)."""
    return read_unchanged(stored, request.headers.get("if-none-match"), _modified_since(request))


def _modified_since(request: Request) -> int | None:
    """``If-Modified-Since`` as the last microsecond of the second it names, or None where
    RFC 9110 §13.1.3 has it ignored: no HTTP-date, more than one, a method other than GET
    or HEAD. Last-Modified is sent in whole seconds: a client that sends back the one it
    was given holds what was written within that second (If-None-Match is exact)."""
    values = request.headers.getlist("if-modified-since")
    if len(values) != 1 or request.method not in ("GET", "HEAD"):
        return None
    moment = http_date(values[0])
    return None if moment is None else int(moment.timestamp()) * 1_000_000 + 999_999


def write_conditions(request: Request) -> tuple[int | None, str | None]:
    """A write's preconditions: the version If-Match names, and If-None-Match as sent."""
    return parse_if_match(request.headers.get("if-match")), request.headers.get("if-none-match")


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query's parameters, in order, ``_format`` left out (``check_format`` took it)."""
    return [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]


def refuse_parameters(
    pairs: list[tuple[str, str]], operation: str, takes: str, allowed: frozenset[str] = frozenset()
) -> None:
    """Refuse the parameters an operation would ignore (a 400, not the whole answer
    anyway); ``takes`` says what it does take."""
    given = sorted({name for name, _ in pairs} - allowed)
    if given:
        raise FhirError(
            400,
            "not-supported",
            f"{operation} does not support {', '.join(given)}: it takes {takes}",
        )
