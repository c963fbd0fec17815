"""The FHIR RESTful interactions (R4 http.html), one handler each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.access import access_of
from coffre.api.history import history_bundle
from coffre.api.negotiation import check_format, if_match, prefer_return, read_json
from coffre.api.responses import fhir_response, information, resource_response
from coffre.api.search import everything_page, search_page
from coffre.exceptions import FhirError
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.validation import validate
from coffre.ledger.leaf import LeafKind
from coffre.search import Criterion, check_criteria, parse_criteria
from coffre.service import Outcome, RecordStore, Stored
from coffre.service.bundles import BundleProcessor
from coffre.service.commits import GroupCommitter
from coffre.service.records import Writer, check_id

T = TypeVar("T")


def _records(request: Request) -> RecordStore:
    records: RecordStore = request.app.state.records
    return records


def base_url(request: Request) -> str:
    base_path: str = request.app.state.base_path
    return str(request.base_url).rstrip("/") + base_path


def _type(request: Request) -> str:
    resource_type: str = request.path_params["type"]
    if resource_type not in RESOURCE_TYPES:
        raise FhirError(
            404,
            "not-found",
            f"Coffre knows no resource type {resource_type!r} (FHIR R4 names, such as Patient or Observation)",
        )
    return resource_type


def _id(request: Request) -> str:
    resource_id: str = request.path_params["id"]
    return resource_id


def _criteria_query(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]


def _written(request: Request, outcome: Outcome) -> Response:
    stored = outcome.stored
    status = 201 if outcome.created else 200
    location = f"{base_url(request)}/{stored.reference}/_history/{stored.version}"
    return resource_response(stored, status, prefer_return(request), location)


async def _body(request: Request) -> Any:
    return await read_json(request, request.app.state.max_body_bytes)


def _required_criteria(request: Request, what: str, needs: str) -> tuple[Criterion, ...]:
    criteria = parse_criteria(_criteria_query(request), what)
    if not criteria:
        raise FhirError(400, "invalid", f"{request.method} {_type(request)} needs {needs}")
    return criteria


async def _validated_body(request: Request, resource_type: str) -> dict[str, Any]:
    """The body as a valid resource of the type the URL names."""
    resource = await _body(request)
    body_type = validate(resource)
    if body_type != resource_type:
        message = f"the body is a {body_type}, but the URL names {resource_type}"
        raise FhirError(400, "invalid", message, "resourceType")
    valid: dict[str, Any] = resource
    return valid


async def _log_access(request: Request, kind: LeafKind, handed_out: list[Stored]) -> None:
    """Record what is about to leave; the caller answers only once this is durable."""
    if handed_out:
        await _commit(request, lambda writer: writer.log_access(kind, handed_out))


async def read(request: Request) -> Response:
    check_format(request)
    stored = _records(request).read(_type(request), _id(request))
    if request.headers.get("if-none-match", "").strip() == f'W/"{stored.version}"':
        return fhir_response(None, 304)
    await _log_access(request, LeafKind.READ, [stored])
    return resource_response(stored)


async def vread(request: Request) -> Response:
    check_format(request)
    stored = _records(request).vread(_type(request), _id(request), request.path_params["vid"])
    await _log_access(request, LeafKind.READ, [stored])
    return resource_response(stored)


async def access_history(request: Request) -> Response:
    """``Patient/{id}/$access-history``: who wrote or opened the patient's records, newest
    first. Looking at it is itself a read of the patient's record, and logged as one."""
    check_format(request)
    records = _records(request)
    patient = records.read("Patient", _id(request))
    events = records.access_history(patient.id)
    await _log_access(request, LeafKind.READ, [patient])
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "total": len(events),
        "entry": [{"resource": event} for event in events],
    }
    return fhir_response(bundle)


async def _commit(request: Request, job: Callable[[Writer], T]) -> T:
    """Run a write in the next group commit; it is durable when this returns."""
    committer: GroupCommitter = request.app.state.committer
    return await committer.run(job, access_of(request))


async def create(request: Request) -> Response:
    """Create; conditional when If-None-Exist (or, as fhirpy sends it, a query) names criteria."""
    check_format(request)
    resource_type = _type(request)
    resource = await _validated_body(request, resource_type)
    condition = request.headers.get("if-none-exist") or request.url.query
    criteria = parse_criteria(condition, "If-None-Exist condition") if condition else ()
    check_criteria(resource_type, criteria, what="If-None-Exist condition")

    def job(writer: Writer) -> Outcome:
        existing = (
            writer.find_one(resource_type, criteria, "If-None-Exist condition")
            if criteria
            else None
        )
        if existing:
            return Outcome(existing, created=False, changed=False)
        return writer.create(resource, validated=True)

    return _written(request, await _commit(request, job))


async def update(request: Request) -> Response:
    check_format(request)
    resource_type, resource_id = _type(request), _id(request)
    check_id(resource_type, resource_id)
    resource = await _validated_body(request, resource_type)
    expected = if_match(request)
    outcome = await _commit(
        request,
        lambda writer: writer.update(
            resource_type, resource_id, resource, expected, validated=True
        ),
    )
    return _written(request, outcome)


async def conditional_update(request: Request) -> Response:
    check_format(request)
    resource_type = _type(request)
    resource = await _validated_body(request, resource_type)
    criteria = _required_criteria(
        request, "conditional update", "an id in the URL or search criteria"
    )
    expected = if_match(request)

    def job(writer: Writer) -> Outcome:
        match = writer.find_one(resource_type, criteria, "conditional update")
        body_id = resource.get("id")
        if match is None:
            if body_id:
                return writer.update(resource_type, body_id, resource, expected, validated=True)
            return writer.create(resource, validated=True)
        if body_id not in (None, match.id):
            message = f"the body's id {body_id!r} differs from the matching resource's {match.id!r}"
            raise FhirError(400, "invalid", message)
        resource["id"] = match.id
        return writer.update(resource_type, match.id, resource, expected, validated=True)

    return _written(request, await _commit(request, job))


async def delete(request: Request) -> Response:
    check_format(request)
    resource_type, resource_id = _type(request), _id(request)
    expected = if_match(request)
    outcome = await _commit(
        request, lambda writer: writer.delete(resource_type, resource_id, expected)
    )
    if outcome is None:
        return fhir_response(
            information(f"{resource_type}/{resource_id} did not exist or was already deleted"), 200
        )
    return fhir_response(None, 204, {"ETag": f'W/"{outcome.stored.version}"'})


async def conditional_delete(request: Request) -> Response:
    check_format(request)
    resource_type = _type(request)
    criteria = _required_criteria(
        request, "conditional delete", "search criteria (never a whole type)"
    )

    def job(writer: Writer) -> int:
        matches = writer.find(resource_type, criteria)
        for match in matches:
            writer.delete(resource_type, match.id)
        return len(matches)

    deleted = await _commit(request, job)
    return fhir_response(information(f"{deleted} {resource_type} deleted"), 200)


async def search(request: Request) -> Response:
    """GET or POST ``_search``; leniently, unknown parameters are reported in the Bundle."""
    check_format(request)
    resource_type = _type(request)
    pairs = _criteria_query(request)
    if request.method == "POST":
        try:
            form = (await request.body()).decode()
        except UnicodeDecodeError:
            raise FhirError(400, "structure", "the search form is not UTF-8 text") from None
        pairs += parse_qsl(form, keep_blank_values=True)
    prefer = request.headers.get("prefer", "")
    bundle, handed_out = search_page(
        _records(request), base_url(request), resource_type, pairs, prefer
    )
    await _log_access(request, LeafKind.SEARCH, handed_out)
    return fhir_response(bundle)


async def everything(request: Request) -> Response:
    """``Patient/{id}/$everything`` (``_since``, ``_type``, ``_count``)."""
    check_format(request)
    bundle, handed_out = everything_page(
        _records(request), base_url(request), _id(request), _criteria_query(request)
    )
    await _log_access(request, LeafKind.SEARCH, handed_out)
    return fhir_response(bundle)


async def bundle(request: Request) -> Response:
    check_format(request)
    body = await _body(request)
    processor = BundleProcessor(
        _records(request),
        base_url(request),
        include_resources=prefer_return(request) == "representation",
    )
    prepared = processor.prepare(body)
    return fhir_response(await _commit(request, lambda writer: processor.execute(prepared, writer)))


async def _history_response(
    request: Request, page: tuple[dict[str, Any], list[Stored]]
) -> Response:
    bundle, handed_out = page
    await _log_access(request, LeafKind.HISTORY, handed_out)
    return fhir_response(bundle)


async def history_instance(request: Request) -> Response:
    check_format(request)
    resource_type, resource_id = _type(request), _id(request)
    records = _records(request)
    loc = records.keys.location(resource_type, resource_id)
    if records.checked_latest(loc) is None:  # also: the log confirms the versions listed
        raise FhirError(404, "not-found", f"{resource_type}/{resource_id} does not exist")
    return await _history_response(
        request, history_bundle(request, base_url(request), records, loc=loc)
    )


async def history_type(request: Request) -> Response:
    check_format(request)
    records = _records(request)
    kind = records.keys.kind(_type(request))
    return await _history_response(
        request, history_bundle(request, base_url(request), records, kind=kind)
    )


async def history_system(request: Request) -> Response:
    check_format(request)
    return await _history_response(
        request, history_bundle(request, base_url(request), _records(request))
    )
