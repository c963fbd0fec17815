"""The Starlette application: routes under the FHIR base, errors as OperationOutcomes."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import cache

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Receive, Scope, Send

from coffre import config
from coffre.api import booking, consent, routes
from coffre.api.access import access_of, acting_for, add_access_hook
from coffre.api.admission import ComeBack, WaitingRoom
from coffre.api.asgi import HttpLayer
from coffre.api.auth import Authenticate, Authority, auth_routes, smart_routes
from coffre.api.auth.cors import RegisteredAppOrigins
from coffre.api.auth.middleware import RESEARCH_PATH
from coffre.api.auth.registry import RegistryUnreadable
from coffre.api.auth.security import smart_security
from coffre.api.capability import capability_statement
from coffre.api.export import counts_stop_with_the_process, export_routes
from coffre.api.health import health_routes
from coffre.api.labelling import LabelAsAsked
from coffre.api.ledger import ledger_routes
from coffre.api.metrics import CommitMetrics, MeasureRequests, RoomMetrics, integrity_failed
from coffre.api.negotiation import check_format
from coffre.api.notices import tell_patients
from coffre.api.portal import error_page, portal_routes
from coffre.api.research import research_routes
from coffre.api.responses import fhir_response, outcome_response
from coffre.api.scraping import ScrapeAccess, scrape_routes
from coffre.api.state import committer_of
from coffre.api.validate import validate_instance, validate_type
from coffre.exceptions import (
    CoffreError,
    CommitUnknownError,
    CustodyError,
    FhirError,
    IndexDamagedError,
    LogDamagedError,
    RolledBackError,
    SealError,
    StorageError,
    StorageFullError,
)
from coffre.ledger import LedgerError
from coffre.research.folder import ResearchFolder
from coffre.service import RecordStore
from coffre.service.booking import FreeSeats
from coffre.service.commits import GroupCommitter

BASE_PATH = "/fhir"
PERSON_RETRY_SECONDS = 60
"""When a client is asked to come back after what only a person mends: a full disk, a
storage rolled back."""
log = logging.getLogger("coffre.api")


class _Name(Convertor[str]):
    """A path segment that names a resource or its type, not an operation (``$export``)
    nor another fixed part of the API (``_history``, ``_search``: no id or type starts
    with ``_``): the routes of ``/{type}`` and ``/{type}/{id}`` never take such a URL, so
    that a method it does not take is a 405 naming those it does."""

    regex = r"[^/$_][^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _TypeName(_Name):
    """A resource type's segment, which ``/metadata`` is not (``metadata`` may be an id)."""

    regex = r"(?!metadata(?:/|$))" + _Name.regex


register_url_convertor("name", _Name())
register_url_convertor("type_name", _TypeName())


async def metadata(request: Request) -> Response:
    check_format(request)
    statement = capability_statement(routes.base_url(request))
    authority: Authority = request.app.state.authority
    if authority.required:
        statement["rest"][0]["security"] = smart_security(
            authority.endpoint(request, "authorize"), authority.endpoint(request, "token")
        )
    return fhir_response(statement)


_NO_SYSTEM_SEARCH = "no-system-search"


def _no_system_search(allow: str) -> Callable[[Request], Awaitable[Response]]:
    """What ``GET /fhir?...`` and ``/fhir/_search`` answer: Coffre searches one resource
    type at a time; ``allow``: what the URL does take (a Bundle at the base)."""

    async def refuse(request: Request) -> Response:
        example = f"{routes.base_url(request)}/Patient?name=..."
        message = (
            f"Coffre does not support whole-system search: search one resource type,"
            f" as GET {example} (or POST to Patient/_search)"
        )
        return outcome_response(FhirError(405, "not-supported", message), {"Allow": allow})

    return refuse


def _interaction(request: Request) -> str:
    """What a log line may say of a request: its method, resource type and operation
    (``$export-file``), never an id, a search value or a body."""
    resource_type = request.path_params.get("type", "")
    operations = [part for part in request.url.path.split("/") if part in _operations()]
    return " ".join([request.method, resource_type or "(base)", *operations[:1]])


@cache
def _operations() -> frozenset[str]:
    """The operations the FHIR routes name (``$everything``...): what a client puts in a
    path after ``$`` is its own text otherwise, which no log line repeats."""
    routes = [*export_routes(), *_fhir_routes()]
    return frozenset(part for route in routes for part in route.path.split("/") if part[:1] == "$")


PORTAL_PATH = "/portal"


def _refusal(request: Request, error: FhirError, headers: dict[str, str] | None = None) -> Response:
    """An error as its asker reads it: an OperationOutcome, or a page of the portal."""
    if request.url.path == PORTAL_PATH or request.url.path.startswith(PORTAL_PATH + "/"):
        page = error_page(request, error.status)
        page.headers.update(headers or {})  # a 405's Allow, a 503's Retry-After
        return page
    return outcome_response(error, headers)


async def _fhir_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, FhirError)
    if isinstance(error, ComeBack):
        return _refusal(request, error, {"Retry-After": str(error.seconds)})
    return _refusal(request, error)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(routes: Sequence[BaseRoute], path: str) -> set[str]:
    """The methods the routes take at ``path``: Starlette's 405 names those of the first
    route whose path matches only, where several share it; not those that only say whole-system
    search is not supported."""
    allowed: set[str] = set()
    for route in routes:
        if isinstance(route, Mount) and (path + "/").startswith(route.path + "/"):
            allowed |= _allowed_methods(route.routes, path.removeprefix(route.path) or "/")
        elif (
            isinstance(route, Route)
            and route.methods
            and route.name != _NO_SYSTEM_SEARCH
            and route.path_regex.match(path)
        ):
            allowed |= route.methods
    return allowed


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        found = _allowed_methods(request.app.routes, request.url.path)
        allowed = ", ".join(method for method in _METHODS if method in found)
        takes = f": it takes {allowed}" if allowed else ", nor is any other"
        message = f"{request.method} is not an interaction this URL supports{takes}"
        return _refusal(request, FhirError(405, "not-supported", message), {"Allow": allowed})
    return _refusal(
        request, FhirError(error.status_code, "not-found", f"no endpoint at {request.url.path}")
    )


async def _seal_error(request: Request, error: Exception) -> Response:
    log.error("a sealed record failed its integrity check: %s", _interaction(request))
    return await _integrity_failure(
        request, error, "the record failed its integrity check; it was not served"
    )


async def _log_damaged(request: Request, error: Exception) -> Response:
    """The log failed its check (a signature, a root, a gap the host left): a 500 that
    says it is the log, not a record nor an outage to wait out."""
    log.error("the log failed its integrity check (%s): %s", error, _interaction(request))
    return await _integrity_failure(request, error, f"the log failed its integrity check: {error}")


async def _index_damaged(request: Request, error: Exception) -> Response:
    """The index searches read failed its check: a 500 that says so, never an empty
    answer; its message names no record."""
    log.error("%s: %s", error, _interaction(request))
    return await _integrity_failure(request, error, str(error))


async def _integrity_failure(request: Request, error: Exception, message: str) -> Response:
    integrity_failed(error)
    if request.url.path.startswith(BASE_PATH) or acting_for(request) is not None:
        await _log_integrity_failure(request)
    return _refusal(request, FhirError(500, "exception", message))


def _named_record(request: Request) -> str | None:
    """``Type/id`` or ``Type/id/_history/n``, when the URL names one record."""
    params = request.path_params
    if "type" not in params or "id" not in params:
        return None
    reference = f"{params['type']}/{params['id']}"
    return f"{reference}/_history/{params['vid']}" if "vid" in params else reference


async def _log_integrity_failure(request: Request) -> None:
    """Put the refusal in the log too, where auditors and the sovereign side see it; a log
    that cannot take it (the host may have tampered with the log itself) is only noted."""
    committer = committer_of(request)
    try:
        await committer.run(
            lambda writer: writer.log_integrity_failure(_named_record(request)),
            acting_for(request) or access_of(request),
        )
    except CoffreError:
        log.error("the integrity failure could not be logged: %s", _interaction(request))


async def _storage_error(request: Request, error: Exception) -> Response:
    log.error("storage error: %s", error)
    message, seconds = "the storage is unavailable; try again shortly", 1
    if isinstance(error, CommitUnknownError):
        message = (
            "the storage became unavailable as this request was being committed, so it may"
            " have been saved: read before repeating it (a create repeated makes a second one)"
        )
    elif isinstance(error, RolledBackError):
        message = (
            "the storage holds an older state of the log than this server followed: it was"
            " rolled back or replaced, and is not served until the operator restores it"
        )
        seconds = PERSON_RETRY_SECONDS
    elif isinstance(error, StorageFullError):
        message = (
            "the storage's disk is full, so this request changed nothing: try again once the"
            " operator has freed space"
        )
        seconds = PERSON_RETRY_SECONDS
    return _come_back(request, message, seconds)


async def _custody_error(request: Request, error: Exception) -> Response:
    """The key custody failed (a token removed or reset): its message names the token and
    what failed, never a key or a PIN; the client is told to come back."""
    log.error("custody error: %s", error)
    return _come_back(request, "the vault's key custody is unavailable; try again shortly")


def _come_back(request: Request, message: str, seconds: int = 1) -> Response:
    """A 503 that tells the client to try again in ``seconds``."""
    return _refusal(request, FhirError(503, "transient", message), {"Retry-After": str(seconds)})


async def _client_gone(request: Request, error: Exception) -> Response:
    """The client hung up before its body arrived whole: nothing was read or written, and
    nobody hears this answer; no error on Coffre's side to log."""
    return _refusal(
        request,
        FhirError(400, "incomplete", "the request's body did not arrive whole: send it again"),
    )


class _ContainUnexpected(HttpLayer):
    """The outermost layer: an unexpected error gets a 500 OperationOutcome (or the
    portal's page), and the log a line that names its type and the interaction only; the
    error's message and traceback may quote a record. Starlette's own last resort would
    re-raise the error after answering, for the server to log whole."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except Exception as error:
            answer = _unexpected(Request(scope), error)
            if not started:  # else the client sees its answer cut short
                await answer(scope, receive, send)


_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EDQUOT})
"""What the operating system runs out of for a while: a 503, not a fault of Coffre's."""


def _unexpected(request: Request, error: Exception) -> Response:
    """The answer to an error no handler took, and its one log line. A write may have been
    committed before it: only a read can be said to have changed nothing."""
    read = request.method in ("GET", "HEAD")
    after = "" if read else "; it may have been saved: read before repeating it"
    if isinstance(error, OSError) and error.errno in _SHORTAGES:
        log.error(
            "the server is short of a resource (%s): %s", error.strerror, _interaction(request)
        )
        return _come_back(request, f"the server is short of a resource ({error.strerror}){after}")
    if isinstance(error, RegistryUnreadable):  # its message names the file, for the operator
        log.error("%s: %s", error, _interaction(request))
        return _come_back(
            request,
            "Coffre cannot check access now: its registry of apps and"
            " users cannot be read (the operator is told in the log)",
        )
    log.error("unexpected %s: %s", type(error).__name__, _interaction(request))
    failed = "Coffre failed to answer this request" + ("; it changed nothing" if read else after)
    return _refusal(request, FhirError(500, "exception", failed))


def _base_routes(path: str) -> list[Route]:
    """What the FHIR base takes: at ``[base]/`` within its mount, and at ``[base]`` itself,
    which the mount alone would answer with a redirect to ``[base]/`` (that a client
    without redirects, curl without -L, takes for the answer)."""
    return [
        Route(path, routes.bundle, methods=["POST"]),
        Route(path, _no_system_search("POST"), methods=["GET"], name=_NO_SYSTEM_SEARCH),
    ]


def _fhir_routes() -> list[Route]:
    return [
        Route("/metadata", metadata, methods=["GET"]),
        *_base_routes("/"),
        Route("/_search", _no_system_search(""), methods=["GET", "POST"], name=_NO_SYSTEM_SEARCH),
        Route("/_history", routes.history_system, methods=["GET"]),
        Route("/Patient/{id}/$access-history", routes.access_history, methods=["GET"]),
        Route("/Patient/{id}/$everything", routes.everything, methods=["GET"]),
        Route("/Appointment/$find", booking.find, methods=["GET"]),
        Route("/Appointment/$book", booking.book, methods=["POST"]),
        Route(
            "/Patient/{id}/$research-consent",
            consent.research_consent,
            methods=["GET", "PUT", "POST"],
        ),
        Route("/{type:type_name}/$validate", validate_type, methods=["POST"]),
        Route("/{type:type_name}/{id:name}/$validate", validate_instance, methods=["POST"]),
        Route("/{type:type_name}", routes.search, methods=["GET"]),
        Route("/{type:type_name}", routes.create, methods=["POST"]),
        Route("/{type:type_name}", routes.conditional_update, methods=["PUT"]),
        Route("/{type:type_name}", routes.conditional_delete, methods=["DELETE"]),
        Route("/{type:type_name}", routes.conditional_patch, methods=["PATCH"]),
        Route("/{type:type_name}/_search", routes.search, methods=["POST"]),
        Route("/{type:type_name}/_history", routes.history_type, methods=["GET"]),
        Route("/{type:type_name}/{id:name}", routes.read, methods=["GET"]),
        Route("/{type:type_name}/{id:name}", routes.update, methods=["PUT"]),
        Route("/{type:type_name}/{id:name}", routes.delete, methods=["DELETE"]),
        Route("/{type:type_name}/{id:name}", routes.patch, methods=["PATCH"]),
        Route("/{type:type_name}/{id:name}/_history", routes.history_instance, methods=["GET"]),
        Route("/{type:type_name}/{id:name}/$map-proof", routes.map_proof, methods=["GET"]),
        Route("/{type:type_name}/{id:name}/_history/{vid}", routes.vread, methods=["GET"]),
    ]


def create_app(
    records: RecordStore,
    *,
    max_body_bytes: int = int(config.MAX_BODY_BYTES.default),
    authority: Authority | None = None,
    waiting_room: WaitingRoom | None = None,
    research: ResearchFolder | None = None,
    scrape_access: ScrapeAccess | None = None,
) -> Starlette:
    """``authority``: the authorisation server and token checks; without one, an
    ephemeral one (a random signing key, no registered clients, tokens optional).
    ``research``: the research projects and extracts the hub's endpoints serve.
    ``scrape_access``: who may read /metrics; without it, anyone unless tokens are
    required."""
    authority = authority or Authority.ephemeral()
    app = Starlette(
        routes=[
            *_base_routes(BASE_PATH),
            Mount(BASE_PATH, routes=[*smart_routes(), *export_routes(), *_fhir_routes()]),
            Mount("/auth", routes=auth_routes()),
            Mount("/ledger", routes=ledger_routes()),
            Mount(PORTAL_PATH, routes=portal_routes()),
            Mount(RESEARCH_PATH, routes=research_routes()),
            Mount("/health", routes=health_routes()),
            *scrape_routes(),
        ],
        middleware=[
            Middleware(MeasureRequests),
            Middleware(_ContainUnexpected),
            Middleware(LabelAsAsked),
            Middleware(RegisteredAppOrigins, authority=authority),
            Middleware(Authenticate),
        ],
        lifespan=counts_stop_with_the_process,
        exception_handlers={
            FhirError: _fhir_error,
            HTTPException: _http_error,
            SealError: _seal_error,
            LedgerError: _log_damaged,
            LogDamagedError: _log_damaged,
            IndexDamagedError: _index_damaged,
            StorageError: _storage_error,
            CustodyError: _custody_error,
            ClientDisconnect: _client_gone,
        },
    )
    app.state.records = records
    commits = CommitMetrics()
    commits.followed(records.latest_writes.known, records.latest_writes.newest_leaf)
    app.state.committer = GroupCommitter(records, commits)
    app.state.base_path = BASE_PATH
    app.state.max_body_bytes = max_body_bytes
    app.state.authority = authority
    app.state.free_seats = FreeSeats(records)
    app.state.research = research
    app.state.waiting_room = waiting_room or WaitingRoom(
        int(config.BOOKING_SERVING.default), int(config.BOOKING_WAITING.default), RoomMetrics()
    )
    app.state.scrape_access = scrape_access or ScrapeAccess(open=not authority.required)
    add_access_hook(app, tell_patients)
    return app
