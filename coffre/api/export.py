"""FHIR Bulk Data export (Bulk Data Access IG v2): ``$export`` at system, Patient and
Group level, its status URL and its NDJSON files (docs/export.md).

The kick-off only pins a snapshot and answers with a status URL that describes the job
(``coffre/service/export.py``); the status counts each type's resources in the
background the first time it is asked, then gives the manifest; each file is made as it
is downloaded, a batch at a time, each batch logged in the ledger before it leaves.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from coffre.api.access import access_of
from coffre.api.auth.enforce import guard_of
from coffre.api.auth.scopes import Context, Interaction, Target, decide
from coffre.api.export_parameters import KickOff, from_parameters, from_query
from coffre.api.http_protocol import MAX_URL_BYTES
from coffre.api.negotiation import (
    check_format,
    preferences,
    query_pairs,
    read_json,
    refuse_parameters,
)
from coffre.api.responses import NO_STORE, fhir_response
from coffre.api.routes import base_url
from coffre.api.state import committer_of, records_of
from coffre.exceptions import FhirError, information
from coffre.fhir import json
from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.ledger.leaf import LeafKind
from coffre.search.shapes import Shape
from coffre.service import Stored
from coffre.service.export import (
    Export,
    ExportJob,
    check_patients,
    elements_of,
    ignored_outcome,
    is_cancelled,
    job_stored,
    start_job,
)
from coffre.service.stored import instant
from coffre.service.type_filters import reached_types

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = (NDJSON, "application/ndjson", "ndjson")
# Resources opened, logged and sent at a time, and their JSON's size at most (unless one
# resource is larger): the memory a download holds, whatever the size of the vault.
BATCH = 200
BATCH_BYTES = 512 * 1024
# Counts a gateway process runs at once, each in a thread of the pool that downloads and
# sign-ins use too; a poll for another export waits its turn (202, waiting).
COUNTING_AT_ONCE = 2
# Exports whose counts a gateway process remembers (each is a few numbers), the finished
# ones forgotten least recently asked for first: far more than clients poll at once, or a
# count would be forgotten before its client came back for it, counted again, and so on.
REMEMBERED = 4096


@dataclass(slots=True)
class _Counting:
    """A count running or done in this process: progress, then counts or the error."""

    done: int = 0
    total: int = 0
    counts: dict[str, int] | None = None
    error: BaseException | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.counts is not None or self.error is not None

    def drop(self) -> None:
        """Nobody waits for this count any more: its thread stops at the next resource."""
        self.stop.set()
        if self.task is not None:
            self.task.cancel()


def _countings_of(app: Starlette) -> OrderedDict[str, _Counting]:
    """This process's counts, by job: another process counts a job again if asked."""
    state = app.state
    if not hasattr(state, "export_counts"):
        state.export_counts = OrderedDict()
    countings: OrderedDict[str, _Counting] = state.export_counts
    return countings


@asynccontextmanager
async def counts_stop_with_the_process(app: Starlette) -> AsyncIterator[None]:
    """The app's lifespan: the counts still running when it stops are told to stop, since
    the process exits only once their threads end (asyncio waits for them), and a count
    of a large vault would hold a restart for as long as it reads. The next process
    counts again when asked."""
    try:
        yield
    finally:
        countings = _countings_of(app)
        while countings:
            countings.popitem()[1].drop()


# -- kick-off -------------------------------------------------------------------------------


async def _kick_off(request: Request) -> KickOff:
    """What a kick-off asks for: a GET's query, or a POST's Parameters body."""
    check_format(request)
    if "respond-async" not in preferences(request):
        raise FhirError(400, "invalid", "a bulk export needs the header Prefer: respond-async")
    pairs = query_pairs(request)
    if request.method == "GET":
        return from_query(pairs, request.url.query)
    refuse_parameters(pairs, "a POST $export", "its Parameters body only")
    return from_parameters(await read_json(request, request.app.state.max_body_bytes))


def _kick_off_job(
    request: Request, level: str, asked: KickOff, group: str | None = None
) -> ExportJob:
    """The job a kick-off asks for, or its refusal; in a thread: it waits for the write lock."""
    lenient = preferences(request).get("handling") == "lenient"
    if asked.unknown and not lenient:
        message = (
            f"$export does not support {', '.join(asked.unknown)}: leave them out, or send"
            " Prefer: handling=lenient to have them ignored (the manifest then warns of each)"
        )
        raise FhirError(400, "not-supported", message)
    output = NDJSON if asked.output_format is None else asked.output_format
    if output not in OUTPUT_FORMATS:
        raise FhirError(
            400, "not-supported", f"_outputFormat={output}: Coffre exports {NDJSON} only"
        )
    records = records_of(request)
    job = start_job(
        records,
        level,
        str(request.url),
        asked.types,
        asked.since,
        group,
        asked.unknown,
        _client_of(request),
        type_filters=asked.type_filters,
        lenient=lenient,
        patients=asked.patients,
        elements=asked.elements,
    )
    _check_access(request, _needed(job, job.resource_types()))
    check_patients(records, job)
    return job


def _client_of(request: Request) -> str | None:
    """The client a request's token was issued to, by its issuer and client id."""
    principal = guard_of(request).principal
    return None if principal is None else f"{principal.issuer} {principal.client_id}"


def _needed(job: ExportJob, types: list[str]) -> list[str]:
    """The types a token must export to get ``types`` of ``job``: a Group's export reads
    the Group too, whose members it tells by whose records it holds, and a filter's
    chains and ``_has`` the types they search."""
    group = ["Group"] if job.level == "group" else []
    reached = [t for t in reached_types(job.filters) if t not in types and t not in group]
    return [*types, *group, *reached]


def _check_access(request: Request, types: list[str]) -> None:
    """An export hands out every record of its types: only the system scopes of a token
    count (``system/*.rs``, or ``system/Type.rs`` for each type), never patient or user
    ones, whoever the token speaks for (403 otherwise)."""
    principal = guard_of(request).principal
    if principal is None:
        return  # no token: COFFRE_AUTH is off, as for every other request
    system = replace(principal, scopes=principal.scopes.in_context(Context.SYSTEM))
    refused = [
        name
        for name in types
        if not (decision := decide(system, Target(Interaction.OPERATION, name))).allowed
        or decision.within is not None
    ]
    if len(refused) == len(types):
        message = (
            "this token may export none of these types: a bulk export needs a system scope"
            " (system/*.rs, or system/Type.rs for each type), whoever the token speaks for"
        )
        raise FhirError(403, "forbidden", message)
    if refused:
        named = ", ".join(refused[:5]) + (
            f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        )
        message = (
            f"this token may not export {named}: ask for the other types with _type, or for"
            " a token with a system/Type.rs scope for each (system/*.rs for all)"
        )
        raise FhirError(403, "forbidden", message)


def _accepted(request: Request, job: ExportJob) -> Response:
    token = job.token(records_of(request).keys)  # it holds the kick-off URL, sealed
    base = base_url(request)
    status_url = f"{base}/$export-status/{token}"
    longest = len(f"{base}/$export-file/{token}/") + max(map(len, job.resource_types()))
    if longest > MAX_URL_BYTES:
        posted = request.method == "POST"  # its parameters came in the body, not the URL
        asked = "" if posted else f" (this kick-off URL is {len(str(request.url)):,} bytes)"
        too_long = (
            f"the export's URLs, which carry its kick-off's parameters sealed{asked}, would"
            f" be {longest:,} bytes, more than the {MAX_URL_BYTES:,} a request may hold; ask"
            " for fewer types or filters at a time, or leave out what is ignored"
        )
        raise FhirError(413 if posted else 414, "too-long", too_long)
    message = information("the export is accepted: poll the Content-Location URL")
    return fhir_response(message, 202, {"Content-Location": status_url})


async def export_system(request: Request) -> Response:
    """``GET`` or ``POST [base]/$export``: every resource of the vault."""
    asked = await _kick_off(request)
    return _accepted(request, await asyncio.to_thread(_kick_off_job, request, "system", asked))


async def export_patients(request: Request) -> Response:
    """``GET`` or ``POST [base]/Patient/$export``: every patient's compartment."""
    asked = await _kick_off(request)
    return _accepted(request, await asyncio.to_thread(_kick_off_job, request, "patient", asked))


async def export_group(request: Request) -> Response:
    """``GET`` or ``POST [base]/Group/{id}/$export``: the compartments of the group's
    Patient members."""
    group_id: str = request.path_params["id"]
    asked = await _kick_off(request)
    job = await asyncio.to_thread(_kick_off_job, request, "group", asked, group_id)
    records_of(request).read("Group", group_id)  # 404 or 410 now rather than at download
    return _accepted(request, job)


# -- status -----------------------------------------------------------------------------------


def _job(request: Request, types: list[str] | None = None) -> tuple[ExportJob, str]:
    """The job the URL names, once its MAC checks and unless it was cancelled (404), if
    the request's token may export ``types`` (default: all the job's types).

    Only the client that started the job reaches it: another one, even with the same
    scopes, could otherwise cancel it or fetch its files from a URL it overheard.
    """
    records = records_of(request)
    job = ExportJob.from_token(records.keys, request.path_params["job"])
    if job.client is not None and job.client != _client_of(request):
        message = (
            "no such export for this client: an export is reached by the client that started it"
        )
        raise FhirError(404, "not-found", message)
    _check_access(request, _needed(job, job.resource_types() if types is None else types))
    job_id = job.job_id(records.keys)
    if is_cancelled(records, job_id):
        raise FhirError(404, "not-found", "this export was cancelled")
    return job, job_id


def _start_counting(request: Request, job: ExportJob, job_id: str) -> _Counting | None:
    """The job's count, started if this process has none; None while others run."""
    countings = _countings_of(request.app)
    counting = countings.get(job_id)
    if counting is not None:
        countings.move_to_end(job_id)
        return counting
    if sum(not c.finished for c in countings.values()) >= COUNTING_AT_ONCE:
        return None
    # A Group gone since the kick-off: 404 each time.
    export = Export(records_of(request), job, base_url(request))
    counting = countings[job_id] = _Counting()
    while len(countings) > REMEMBERED:
        del countings[next(name for name, c in countings.items() if c.finished)]

    def progress(done: int, total: int) -> None:
        counting.done, counting.total = done, total

    async def count() -> None:
        try:
            counting.counts = await asyncio.to_thread(export.count, progress, counting.stop.is_set)
        except Exception as error:  # reported at the next poll
            counting.error = error

    counting.task = asyncio.get_running_loop().create_task(count())
    return counting


def _manifest(request: Request, job: ExportJob, counts: dict[str, int]) -> dict[str, Any]:
    token = job.token(records_of(request).keys)
    files = f"{base_url(request)}/$export-file/{token}"
    warnings = f"{base_url(request)}/$export-warnings/{token}"
    return {
        "transactionTime": instant(job.started),
        "request": job.request,
        "requiresAccessToken": request.app.state.authority.required,
        "output": [
            {"type": name, "url": f"{files}/{name}", "count": count}
            for name, count in counts.items()
        ],
        "error": [{"type": "OperationOutcome", "url": warnings}] if _warnings(job) else [],
    }


async def export_status(request: Request) -> Response:
    """202 with ``X-Progress`` while the counts run, then the manifest."""
    job, job_id = _job(request)
    counting = _start_counting(request, job, job_id)
    if counting is None:
        progress = f"waiting: {COUNTING_AT_ONCE} other exports are being counted"
        return fhir_response(None, 202, {"X-Progress": progress, "Retry-After": "2"})
    if counting.error is not None:  # reported once: the next poll counts again
        _countings_of(request.app).pop(job_id, None)
        raise counting.error
    if counting.counts is None:
        progress = f"counting: {counting.done} of {counting.total or '?'} resource types"
        return fhir_response(None, 202, {"X-Progress": progress, "Retry-After": "1"})
    expires = format_datetime(datetime.fromtimestamp(job.expires / 1_000_000, UTC), usegmt=True)
    body = json.dumps(_manifest(request, job, counting.counts))
    # The manifest is no FHIR resource: the IG serves it as application/json.
    return Response(body, 200, {**NO_STORE, "Expires": expires}, media_type="application/json")


async def cancel(request: Request) -> Response:
    """``DELETE`` on the status URL: the job's URLs answer 404 from now on, in every
    gateway process; the cancellation is an EXPORT leaf of the log."""
    _, job_id = _job(request)
    counting = _countings_of(request.app).pop(job_id, None)
    if counting is not None:
        counting.drop()
    keys = records_of(request).keys
    await _log(request, [job_stored(keys, job_id)])
    return fhir_response(information("the export is cancelled"), 202)


# -- files ------------------------------------------------------------------------------------


async def _log(request: Request, handed_out: list[Stored]) -> None:
    """Record an EXPORT leaf per version; durable when this returns."""
    committer = committer_of(request)
    await committer.run(
        lambda writer: writer.log_access(LeafKind.EXPORT, handed_out), access_of(request)
    )


async def export_file(request: Request) -> Response:
    """One type's NDJSON, made as it is sent: each batch opened, logged, then sent."""
    resource_type: str = request.path_params["type"]
    job, _ = _job(request, [resource_type])  # the downloader's token, which may be another
    if resource_type not in RESOURCE_TYPES or resource_type not in job.resource_types():
        raise FhirError(404, "not-found", f"this export has no {resource_type} file")
    if request.method == "HEAD":  # nothing is opened, sent or logged as exported
        return Response(headers=NO_STORE, media_type=NDJSON)
    export = Export(records_of(request), job, base_url(request))
    batches = export.batches(resource_type, BATCH, BATCH_BYTES)
    shape = Shape(None, elements_of(job, resource_type))
    # The first batch is read and logged before the 200 is sent: a failure there (the
    # storage away, its disk full) is an answer of its own, not a 200 cut short.
    first = await asyncio.to_thread(next, batches, None)
    if first is not None:
        await _log(request, first)
    lines = _stream(request, first, batches, shape)
    return StreamingResponse(lines, headers=NO_STORE, media_type=NDJSON)


async def export_warnings(request: Request) -> Response:
    """The manifest's error file: a warning for each parameter the export went without."""
    job, _ = _job(request)
    body = b"".join(json.dumps(outcome) + b"\n" for outcome in _warnings(job))
    if not body:
        raise FhirError(404, "not-found", "this export has no warnings")
    return Response(body, headers=NO_STORE, media_type=NDJSON)


def _warnings(job: ExportJob) -> list[dict[str, Any]]:
    """A warning OperationOutcome for each parameter and filter criterion the export
    went without (``handling=lenient``)."""
    ignored = [ignored_outcome(name) for name in job.ignored]
    return ignored + [ignored_outcome("_typeFilter", note) for note in job.notes]


async def _stream(
    request: Request, logged: list[Stored] | None, rest: Iterator[list[Stored]], shape: Shape
) -> AsyncIterator[bytes]:
    """The NDJSON of ``logged``, then of each batch of ``rest`` once it is logged, each
    resource as ``shape`` (``_elements``) shows it."""
    batch = logged
    while batch is not None:
        yield b"".join(_line(stored.body, shape) for stored in batch)
        batch = await asyncio.to_thread(next, rest, None)
        if batch is not None:
            await _log(request, batch)


def _line(body: bytes, shape: Shape) -> bytes:
    """A resource's line: its JSON as sealed, or the elements ``shape`` keeps of it
    (mandatory ones too, tagged SUBSETTED), as a search's ``_elements`` shows it."""
    return (body if shape.whole else json.dumps(shape.served(body))) + b"\n"


def export_routes() -> list[Route]:
    """Mounted under the FHIR base, before the routes of ``/{type}/{id}``."""
    return [
        Route("/$export", export_system, methods=["GET", "POST"]),
        Route("/Patient/$export", export_patients, methods=["GET", "POST"]),
        Route("/Group/{id}/$export", export_group, methods=["GET", "POST"]),
        Route("/$export-status/{job}", export_status, methods=["GET"]),
        Route("/$export-status/{job}", cancel, methods=["DELETE"]),
        Route("/$export-file/{job}/{type}", export_file, methods=["GET"]),
        Route("/$export-warnings/{job}", export_warnings, methods=["GET"]),
    ]
