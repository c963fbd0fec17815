"""The FHIR RESTful interactions (R4 http.html), one handler each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.access import announce, commit, log_access
from coffre.api.auth.enforce import (
    GuardGate,
    guard_of,
    refusal,
    refuse_research_choice,
    target_for,
)
from coffre.api.auth.scopes import Decision, Interaction, Outcome, Role, Target
from coffre.api.binary import asks_native, native_body, native_response
from coffre.api.history import PAGING, history_bundle, links, pinned_snapshot
from coffre.api.ledger import map_proof_response
from coffre.api.metrics import note_interaction
from coffre.api.negotiation import (
    check_format,
    check_format_parameter,
    check_query_text,
    check_read_match,
    not_modified,
    prefer_return,
    preferences,
    query_pairs,
    read_form,
    read_json,
    read_patch,
    refuse_parameters,
    write_conditions,
)
from coffre.api.responses import (
    fhir_response,
    resource_response,
    version_headers,
    written_response,
)
from coffre.api.search import everything_page, search_page
from coffre.api.state import records_of
from coffre.exceptions import FhirError, information
from coffre.fhir.bundles import fhir_bundle
from coffre.fhir.json_patch import JsonPatch, parse_json_patch
from coffre.fhir.references import localise_standalone
from coffre.fhir.validation import check_url_type, resource_type_of, url_type, validate
from coffre.ledger.leaf import LeafKind
from coffre.search import Criterion, check_criteria, parse_criteria
from coffre.search.results import Pairs, number, page_count
from coffre.search.shapes import Shape, read_shape
from coffre.service import Outcome as Written
from coffre.service import Stored
from coffre.service.audit import is_break_glass
from coffre.service.bundles import BundleProcessor, EntrySearch
from coffre.service.conditions import if_none_exist_query
from coffre.service.indexing import OwnTokens, own_tokens
from coffre.service.interactions import (
    answered,
    conditional_update_id,
    delete_visible,
    patch_visible,
    patched_id,
    update_visible,
    visible_match,
)
from coffre.service.stored import check_id, no_version, not_found, nothing_deleted
from coffre.service.writer import Writer


def base_url(request: Request) -> str:
    base_path: str = request.app.state.base_path
    return str(request.base_url).rstrip("/") + base_path


def _type(request: Request) -> str:
    return url_type(request.path_params["type"])


def _id(request: Request) -> str:
    resource_id: str = request.path_params["id"]
    return resource_id


def _written(request: Request, outcome: Written) -> Response:
    stored = outcome.stored
    location = f"{base_url(request)}/{stored.reference}/_history/{stored.version}"
    return written_response(outcome, prefer_return(request), location)


async def _write(request: Request, job: Callable[[Writer], Written]) -> Response:
    """Run a write and answer it; one that wrote nothing is a read (``answered``), and a
    clinician's first access is announced."""
    outcome = await commit(request, lambda writer: answered(writer, job(writer)))
    if not outcome.changed:
        guard_of(request).note([outcome.stored])
        await announce(request)
    return _written(request, outcome)


async def _body(request: Request) -> Any:
    return await read_json(request, request.app.state.max_body_bytes)


def _required_criteria(request: Request, needs: str) -> tuple[Criterion, ...]:
    criteria = parse_criteria(query_pairs(request))
    if not criteria:
        raise FhirError(400, "invalid", f"{request.method} {_type(request)} needs {needs}")
    return criteria


async def _validated_body(request: Request, resource_type: str) -> dict[str, Any]:
    """The body as a valid resource of the type the URL names (a Binary may come as its
    bytes)."""
    resource = await native_body(request, resource_type) or await _body(request)
    # The type first: a 422 would tell the wrong fault.
    check_url_type(resource_type_of(resource), resource_type)
    validate(resource)
    localise_standalone(resource, base_url(request))
    valid: dict[str, Any] = resource
    return valid


def _opened(
    request: Request,
    interaction: Interaction,
    resource_type: str,
    open_: Callable[[], Stored],
    deletion: Callable[[], Stored],
    missing: FhirError,
) -> Stored:
    """A record (or version) opened by ``open_``, once the request may have it: a hidden
    one answers ``missing``, as a record that does not exist; a deleted one answers 410
    only to whom may see the record it was (``deletion`` opens the tombstone)."""
    guard = guard_of(request)
    try:
        stored = open_()
    except FhirError as error:
        guard.check_type(interaction, resource_type)  # a 403 whether the record exists or not
        if error.status == 410 and error.code == "deleted" and guard.enforced:
            guard.check_stored(interaction, deletion(), missing)
        raise
    # The record's decision checks its type and interaction too: the same 403 for any id.
    guard.check_stored(interaction, stored, missing)
    return stored


def _current(request: Request, interaction: Interaction, resource_type: str) -> Stored:
    records, resource_id = records_of(request), _id(request)

    def tombstone() -> Stored:
        sealed = records.checked_latest(records.keys.location(resource_type, resource_id))
        assert sealed is not None
        return records.open(resource_type, resource_id, sealed)

    return _opened(
        request,
        interaction,
        resource_type,
        lambda: records.read(resource_type, resource_id),
        tombstone,
        not_found(resource_type, resource_id),
    )


def _check_read_format(request: Request, resource_type: str) -> bool:
    """Whether the read is answered in the record's own content type (a Binary's);
    otherwise the request must take FHIR JSON."""
    if asks_native(request, resource_type):
        check_query_text(request.scope["query_string"])
        return True
    check_format(request)
    return False


async def read(request: Request) -> Response:
    native = _check_read_format(request, _type(request))
    shape = read_shape(request.query_params.multi_items())
    stored = _current(request, Interaction.READ, _type(request))
    return await _answer_read(request, stored, native, shape)


async def _answer_read(request: Request, stored: Stored, native: bool, shape: Shape) -> Response:
    """A read's or vread's answer, once its If-Match holds and ``stored`` is logged.

    A 304 is logged as the read it is: it tells the client that what it holds is the
    record as it stands now (for a vread, the version, which never changes), which
    discloses the record as much as sending it would (a diagnosis still stands, a
    prescription was not changed), and the patient's access history must show who
    checked. A Binary's bytes are made first: an Accept that refuses them is a 406 that
    hands nothing out."""
    check_read_match(request, stored)
    bytes_as_they_are = native_response(request, stored) if native else None
    await log_access(request, LeafKind.READ, [stored])
    if not_modified(request, stored):
        return fhir_response(None, 304, version_headers(stored))
    return _shaped(stored, shape) if bytes_as_they_are is None else bytes_as_they_are


async def map_proof(request: Request) -> Response:
    """``Type/id/$map-proof``: the map proof of a record the request may read, with its
    location, which ``/ledger/proof/map`` takes from anyone; looking is a read, logged."""
    check_format(request)
    refuse_parameters(
        query_pairs(request), "$map-proof", "no parameters and proves the record's latest write"
    )
    records = records_of(request)
    stored = _current(request, Interaction.READ, _type(request))
    await log_access(request, LeafKind.READ, [stored])
    loc = records.keys.location(stored.resource_type, stored.id)
    return map_proof_response(records, loc, record=stored.reference)


def _shaped(stored: Stored, shape: Shape) -> Response:
    """A read's answer: the resource, or the part of it ``_summary``/``_elements`` ask."""
    if shape.whole:
        return resource_response(stored)
    return fhir_response(shape.served(stored.body), 200, version_headers(stored))


async def vread(request: Request) -> Response:
    records, resource_type, resource_id = records_of(request), _type(request), _id(request)
    native = _check_read_format(request, resource_type)
    shape = read_shape(request.query_params.multi_items())
    version = request.path_params["vid"]
    stored = _opened(
        request,
        Interaction.VREAD,
        resource_type,
        lambda: records.vread(resource_type, resource_id, version),
        lambda: records.deletion(resource_type, resource_id, int(version)),
        no_version(resource_type, resource_id, version),
    )
    return await _answer_read(request, stored, native, shape)


def _may_see_access_history(request: Request) -> None:
    """The access history is the patient's, and auditors': a patient's token sees their
    own, a system's or an administrator's token any patient's if its scopes read
    AuditEvent; a clinician or researcher never (403: the token decides)."""
    guard = guard_of(request)
    principal = guard.principal
    if principal is None:
        return
    if principal.role in (Role.CLINICIAN, Role.RESEARCHER):
        raise FhirError(
            403, "forbidden", "the access history is for the patient and auditors, not care"
        )
    guard.check_type(Interaction.READ, "AuditEvent")
    missing = not_found("Patient", _id(request))
    guard.check(Target(Interaction.READ, "AuditEvent", patient=_id(request)), missing=missing)


async def access_history(request: Request) -> Response:
    """``Patient/{id}/$access-history``: who wrote or opened the patient's records,
    break-glass accesses first, then newest first, a page of ``_count`` at a time; the
    first page pins the log's length, so that later pages list the same history however
    many accesses come meanwhile. Looking at it is itself a read of the patient's record,
    and logged as one."""
    check_format(request)
    pairs = query_pairs(request)
    takes = "_count, and the _offset and _snapshot of its own page links"
    refuse_parameters(pairs, "$access-history", takes, frozenset({"_count", *PAGING}))
    count, offset = page_count(pairs), number(pairs, "_offset") or 0
    records = records_of(request)
    _may_see_access_history(request)
    # A deleted Patient's compartment keeps its records and who opened them (an erased
    # one's are gone: 410).
    patient = records.latest_version("Patient", _id(request))
    snapshot = pinned_snapshot(pairs, records.log_followed())
    events = records.access_history(patient.id, snapshot)
    events.sort(key=lambda event: not is_break_glass(event))  # stable: newest first within
    await log_access(request, LeafKind.READ, [patient])
    page_url = str(request.url).split("?")[0]
    page = events[offset : offset + count]
    entries = [{"resource": event, "search": {"mode": "match"}} for event in page]
    link = links(page_url, pairs, snapshot, offset, count, len(events))
    return fhir_response(fhir_bundle("searchset", entries, total=len(events), link=link))


def _as_utf8(header: str) -> str:
    """A header's value as its client wrote it: HTTP hands over bytes, which Starlette
    reads as Latin-1, so a search value sent as UTF-8 unescaped (Élise) would be looked
    for as mojibake, matching nothing and letting a conditional create write twice."""
    try:
        return header.encode("latin-1").decode()
    except UnicodeDecodeError:
        raise FhirError(
            400,
            "structure",
            "the If-None-Exist condition holds bytes that are not UTF-8: send its values"
            " %-escaped, each character as its UTF-8 bytes (é is %C3%A9)",
        ) from None


def _create_condition(request: Request, resource_type: str) -> tuple[Criterion, ...]:
    """A create's If-None-Exist criteria, or those of its query (as fhirpy sends them),
    where a query of result parameters only (``_format=json``) makes a plain create, but
    an If-None-Exist header never does."""
    header = request.headers.get("if-none-exist")
    if header is None:
        return parse_criteria(request.url.query)
    header = _as_utf8(header)
    criteria = parse_criteria(if_none_exist_query(resource_type, header))
    if not criteria:
        raise FhirError(
            400,
            "invalid",
            f"the If-None-Exist condition {header!r} names no search criteria: give those of a"
            f" {resource_type} search, such as identifier=system|value",
        )
    return criteria


async def create(request: Request) -> Response:
    """Create; conditional when If-None-Exist (or, as fhirpy sends it, a query) names criteria."""
    check_format(request)
    resource_type = _type(request)
    resource = await _validated_body(request, resource_type)
    criteria = _create_condition(request, resource_type)
    check_criteria(resource_type, criteria, what="If-None-Exist condition")
    guard = guard_of(request)
    guard.check(target_for(Interaction.CREATE, resource, sent=True))
    gate = GuardGate(guard)
    tokens = own_tokens(records_of(request).keys, resource)

    def job(writer: Writer) -> Written:
        existing = (
            visible_match(writer, gate, resource_type, criteria, "If-None-Exist condition")
            if criteria
            else None
        )
        if existing:
            return Written(existing, created=False, changed=False)
        return writer.create(resource, validated=True, own_tokens=tokens)

    return await _write(request, job)


async def _updatable(
    request: Request, resource_type: str
) -> tuple[dict[str, Any], OwnTokens, GuardGate]:
    """The body of an update, once the request may write it, and its own index tokens
    (computed here, before the write lock)."""
    guard = guard_of(request)
    guard.check_type(Interaction.UPDATE, resource_type)
    resource = await _validated_body(request, resource_type)
    guard.check(target_for(Interaction.UPDATE, resource, sent=True), resource.get("id", ""))
    if guard.enforced:  # an update-as-create too: her first choice is hers as well
        refuse_research_choice(Interaction.UPDATE, resource)
    return resource, own_tokens(records_of(request).keys, resource), GuardGate(guard)


async def update(request: Request) -> Response:
    check_format(request)
    resource_type, resource_id = _type(request), _id(request)
    check_id(resource_type, resource_id)
    resource, own_tokens, gate = await _updatable(request, resource_type)
    expected, none_match = write_conditions(request)
    return await _write(
        request,
        lambda writer: update_visible(
            writer, gate, resource_type, resource_id, resource, expected, none_match, own_tokens
        ),
    )


async def conditional_update(request: Request) -> Response:
    check_format(request)
    resource_type = _type(request)
    resource, own_tokens, gate = await _updatable(request, resource_type)
    criteria = _required_criteria(request, "an id in the URL or search criteria")
    expected, none_match = write_conditions(request)

    def job(writer: Writer) -> Written:
        match = visible_match(writer, gate, resource_type, criteria, "conditional update")
        resource_id = conditional_update_id(
            writer, gate, resource_type, match, resource.get("id"), expected
        )
        resource["id"] = resource_id
        return update_visible(
            writer, gate, resource_type, resource_id, resource, expected, none_match, own_tokens
        )

    return await _write(request, job)


async def _patchable(request: Request, resource_type: str) -> tuple[JsonPatch, GuardGate]:
    """A PATCH's document, once the request may read and update records of its type
    (whether it may patch the record, and what the patch makes of it, is checked under
    the lock): ``patch_visible`` says why a patch reads."""
    check_format(request)
    guard = guard_of(request)
    guard.check_type(Interaction.UPDATE, resource_type)
    guard.check_type(Interaction.READ, resource_type)
    body = await read_patch(request, request.app.state.max_body_bytes)
    return parse_json_patch(body), GuardGate(guard)


async def patch(request: Request) -> Response:
    """A JSON Patch of a record (http.html#patch), written as an update of it."""
    resource_type, resource_id = _type(request), _id(request)
    check_id(resource_type, resource_id)
    document, gate = await _patchable(request, resource_type)
    conditions, base = write_conditions(request), base_url(request)
    return await _write(
        request,
        lambda writer: patch_visible(
            writer, gate, resource_type, resource_id, document, conditions, base
        ),
    )


async def conditional_patch(request: Request) -> Response:
    """A JSON Patch of the one record the search criteria match (http.html#patch): 404
    when none does, 412 when several."""
    resource_type = _type(request)
    document, gate = await _patchable(request, resource_type)
    criteria = _required_criteria(request, "an id in the URL or search criteria")
    conditions, base = write_conditions(request), base_url(request)

    def job(writer: Writer) -> Written:
        resource_id = patched_id(writer, gate, resource_type, criteria)
        return patch_visible(writer, gate, resource_type, resource_id, document, conditions, base)

    return await _write(request, job)


async def delete(request: Request) -> Response:
    check_format(request)
    resource_type, resource_id = _type(request), _id(request)
    expected, none_match = write_conditions(request)
    guard = guard_of(request)
    guard.check_type(Interaction.DELETE, resource_type)
    gate = GuardGate(guard)

    outcome = await commit(
        request,
        lambda writer: delete_visible(
            writer, gate, resource_type, resource_id, expected, none_match
        ),
    )
    if outcome is None:
        return fhir_response(nothing_deleted(f"{resource_type}/{resource_id}"), 200)
    return fhir_response(None, 204, {"ETag": outcome.stored.etag})


async def conditional_delete(request: Request) -> Response:
    check_format(request)
    resource_type = _type(request)
    criteria = _required_criteria(request, "search criteria (never a whole type)")
    expected, none_match = write_conditions(request)
    guard = guard_of(request)
    guard.check_type(Interaction.DELETE, resource_type)
    gate = GuardGate(guard)

    def job(writer: Writer) -> int:
        matches = gate.find(writer, resource_type, criteria)
        deleted = [
            delete_visible(writer, gate, resource_type, match.id, expected, none_match)
            for match in matches
        ]
        return sum(outcome is not None for outcome in deleted)

    deleted = await commit(request, job)
    return fhir_response(information(f"{deleted} {resource_type} deleted"), 200)


async def search(request: Request) -> Response:
    """GET or POST ``_search``; leniently, unknown parameters are reported in the Bundle."""
    check_format(request)
    resource_type = _type(request)
    pairs = query_pairs(request)
    if request.method == "POST":
        form = await read_form(request, request.app.state.max_body_bytes)
        for name, value in form:
            if name == "_format":  # as in the URL: what the answer is to be
                check_format_parameter(value)
        pairs += form
    bundle, handed_out = _search_page(request, resource_type, pairs)
    await log_access(request, LeafKind.SEARCH, handed_out)
    return fhir_response(bundle)


def _search_page(
    request: Request, resource_type: str, pairs: Pairs, writer: Writer | None = None
) -> tuple[dict[str, Any], list[Stored]]:
    """A page of a search as the request may see it, and what it hands out; ``writer``:
    in a write transaction's view (a Bundle's search entry)."""
    guard = guard_of(request)
    decision = guard.check_type(Interaction.SEARCH, resource_type, tuple(pairs))
    find = None if writer is None else writer.find
    return search_page(
        records_of(request),
        base_url(request),
        resource_type,
        pairs,
        preferences(request).get("handling") == "strict",
        guard.search_filter(find=find),
        decision.within,
        guard.search_filter(tuple(pairs), find),
        writer,
    )


def _entry_search(request: Request) -> EntrySearch:
    """A Bundle's search entries, answered as the same searches over REST."""

    def search(
        writer: Writer, resource_type: str, pairs: Pairs
    ) -> tuple[dict[str, Any], list[Stored]]:
        page = _search_page(request, resource_type, pairs, writer)
        guard_of(request).note(page[1])
        return page

    return search


async def everything(request: Request) -> Response:
    """``Patient/{id}/$everything`` (``_since``, ``_type``, ``_count``)."""
    check_format(request)
    _current(request, Interaction.OPERATION, "Patient")
    admit = guard_of(request).search_filter()
    bundle, handed_out = everything_page(
        records_of(request),
        base_url(request),
        _id(request),
        query_pairs(request),
        admit,
        preferences(request).get("handling") == "strict",
    )
    await log_access(request, LeafKind.SEARCH, handed_out)
    return fhir_response(bundle)


async def bundle(request: Request) -> Response:
    check_format(request)
    body = await _body(request)
    guard = guard_of(request)
    processor = BundleProcessor(
        records_of(request),
        base_url(request),
        returning=prefer_return(request),
        search=_entry_search(request),
        gate=GuardGate(guard) if guard.enforced else None,
    )
    # Validating a large Bundle and computing its tokens ahead take a while: off the loop.
    prepared = await asyncio.to_thread(processor.prepare, body)
    note_interaction(request, prepared.kind)
    answer = await commit(request, lambda writer: processor.execute(prepared, writer))
    await announce(request)
    return fhir_response(answer)


async def _history_response(
    request: Request, page: tuple[dict[str, Any], list[Stored]]
) -> Response:
    bundle, handed_out = page
    await log_access(request, LeafKind.HISTORY, handed_out)
    return fhir_response(bundle)


async def history_instance(request: Request) -> Response:
    check_format(request)
    resource_type, resource_id = _type(request), _id(request)
    records, guard = records_of(request), guard_of(request)
    guard.check_type(Interaction.HISTORY, resource_type)
    loc = records.keys.location(resource_type, resource_id)
    latest = records.checked_latest(loc)  # also: the log confirms the versions listed
    missing = not_found(resource_type, resource_id)
    if latest is None:
        raise missing
    admit = None
    if guard.enforced:
        opened = records.open(resource_type, resource_id, latest)
        guard.check_stored(Interaction.HISTORY, opened, missing)
        admit = partial(guard.admits, interaction=Interaction.HISTORY)
    return await _history_response(
        request, history_bundle(request, base_url(request), records, loc=loc, admit=admit)
    )


def _check_wide_history(request: Request, resource_type: str | None) -> None:
    """A type's or the system's history lists every record's versions: only a token
    that reaches every record of the types it covers gets it (403 otherwise: the token
    decides). A confined one uses instance history, or a search with _lastUpdated."""
    guard = guard_of(request)
    if resource_type is None:
        decision = guard.check(Target(Interaction.HISTORY, None))
    else:
        decision = guard.check_type(Interaction.HISTORY, resource_type)
    if guard.enforced and not guard.unconfined(decision, resource_type):
        error = refusal(Decision(Outcome.FORBID, _CONFINED_HISTORY), resource_type or "", "")
        assert error is not None
        raise error


_CONFINED_HISTORY = (
    "a history across records needs a token that is not confined to a patient or to care"
    " relationships: use instance history, or a search with _lastUpdated"
)


async def history_type(request: Request) -> Response:
    check_format(request)
    records, resource_type = records_of(request), _type(request)
    _check_wide_history(request, resource_type)
    kind = records.keys.kind(resource_type)
    return await _history_response(
        request, history_bundle(request, base_url(request), records, kind=kind)
    )


async def history_system(request: Request) -> Response:
    check_format(request)
    _check_wide_history(request, None)
    return await _history_response(
        request, history_bundle(request, base_url(request), records_of(request))
    )
