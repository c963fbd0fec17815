"""What every page of the portal stands on: the language, the signed-in patient and
their session, forms and their CSRF check, logging what a page shows before it is sent,
redirects and error pages, and the patient's own authorisation."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from coffre.api.access import act_for, principal_access
from coffre.api.auth.enforce import Guard
from coffre.api.auth.signin import language
from coffre.api.portal.html import page
from coffre.api.portal.session import (
    SESSION_COOKIE,
    Session,
    posted_here,
    same,
    session_of,
    set_cookie,
)
from coffre.api.portal.summary import day
from coffre.api.portal.text import LANGUAGES, TEXT, word
from coffre.api.state import committer_of, records_of
from coffre.exceptions import FhirError
from coffre.ledger.leaf import LeafKind
from coffre.service import RecordStore, Stored
from coffre.service.audit import Access
from coffre.service.searching import Scope, Searcher
from coffre.service.stored import instant
from coffre.service.writer import Writer

LANG_COOKIE = "coffre_lang"
HOME = "/portal/"
SIGN_IN = "/portal/sign-in"
SIGN_OUT = "/portal/sign-out"
MAX_FORM_BYTES = 4096
T = TypeVar("T")


def lang_of(request: Request) -> str:
    return language(request, request.query_params.get("lang") or request.cookies.get(LANG_COOKIE))


def remember_lang(request: Request, response: Response) -> Response:
    """Keep a language chosen with ``?lang=`` for the next pages."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        set_cookie(request, response, LANG_COOKIE, asked, 365 * 24 * 3600)
    return response


def patient_access(request: Request, session: Session) -> Access:
    """The patient, as the AuditEvents of what the portal shows them name them."""
    address = request.client.host if request.client else None
    return principal_access(session.principal, address)


async def commit_for(request: Request, session: Session, job: Callable[[Writer], T]) -> T:
    committer = committer_of(request)
    return await committer.run(job, patient_access(request, session))


async def log_shown(
    request: Request, session: Session, *shown: tuple[LeafKind, list[Stored]]
) -> None:
    """Log what a page is about to show (what it searched, what it read); the page is
    sent only once this is durable."""

    def job(writer: Writer) -> None:
        for kind, handed in shown:
            writer.log_access(kind, handed)

    if any(handed for _, handed in shown):
        await commit_for(request, session, job)


async def read_form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FhirError(413, "too-costly", "the form is too large")
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise FhirError(400, "structure", "the form is not UTF-8") from None
    return {name: values[0] for name, values in parsed.items()}


def error_page(request: Request, status: int) -> Response:
    """A refusal or failure inside the portal, as a page in the patient's language: what
    an API client reads in an OperationOutcome would mean nothing to them."""
    lang = lang_of(request)
    key = f"error_{status}" if f"error_{status}" in TEXT[lang] else f"error_{status // 100}00"
    body = (
        f'<p role="alert">{escape(word(lang, key))}</p>'
        f'<p><a href="{HOME}">{escape(word(lang, "back"))}</a></p>'
    )
    return page(lang, word(lang, "error_title"), body, path=HOME, status=status)


def redirect_to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def signed_in(
    handler: Callable[[Request, Session, str], Any], *, shows_record: bool = True
) -> Callable[[Request], Any]:
    """A page for a signed-in patient; others are sent to the sign-in page. A page that
    ``shows_record`` says, once Coffre erased the patient, that it did and when, and
    nothing else (an empty record would say that nothing was recorded, nobody looked)."""

    async def wrapped(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return redirect_to(_sign_in_then(request))
        act_for(request, patient_access(request, session))
        lang = lang_of(request)
        if request.method == "POST" and not _checked_form(request, session):
            return error_page(request, 403)
        erased = _erased_at(records_of(request), session.patient_id) if shows_record else None
        if erased is not None:
            return remember_lang(request, _erased_page(request, session, lang, erased))
        response: Response = await handler(request, session, lang)
        return remember_lang(request, response)

    return wrapped


def _erased_at(records: RecordStore, patient_id: str) -> int | None:
    """When Coffre erased the patient (µs since the epoch), or None."""
    records.log_followed()
    return records.latest_writes.erased_at(records.keys.patient_compartment(patient_id))


def _erased_page(request: Request, session: Session, lang: str, when: int) -> Response:
    """410: the record is gone for good, and since when."""
    said = word(lang, "erased").format(date=day(instant(when)))
    body = f'<p role="alert">{escape(said)}</p>'
    return page(
        lang,
        word(lang, "record"),
        body,
        path=request.url.path,
        current="record",
        csrf=session.csrf,
        status=410,
    )


def here(request: Request) -> str:
    """This page's address, for its language switch: a GET's query kept (the page to go
    back to once signed in) but ``lang``."""
    asked = request.query_params.multi_items() if request.method == "GET" else []
    kept = [(name, value) for name, value in asked if name != "lang"]
    return f"{request.url.path}?{urlencode(kept)}" if kept else request.url.path


def _sign_in_then(request: Request) -> str:
    """The sign-in page, asked to come back to the page asked for (for a form, the page
    it is on), and to say so when the session that sent this has ended."""
    query = f"?{request.url.query}" if request.url.query and request.method == "GET" else ""
    wanted = next_page(request.url.path + query)
    asks = [f"next={quote(wanted, safe='')}"] if wanted != HOME else []
    if SESSION_COOKIE in request.cookies:  # a form sent is said lost; a page, not
        asks.append(f"ended={'form' if request.method == 'POST' else 'page'}")
    return f"{SIGN_IN}?{'&'.join(asks)}" if asks else SIGN_IN


def next_page(asked: str | None) -> str:
    """Where to go once signed in: ``asked`` if it is a page of this portal (a path on
    this site, never another site's address: no open redirect), else the record."""
    if not asked or any(c in asked for c in "\\\r\n") or asked.startswith("//"):
        return HOME
    parts = urlsplit(asked)
    steps = unquote(parts.path).split("/")  # a browser resolves /portal/../x to /x
    if parts.scheme or parts.netloc or not parts.path.startswith(HOME) or ".." in steps:
        return HOME
    return HOME if parts.path in (SIGN_IN, SIGN_OUT) else asked


def _checked_form(request: Request, session: Session) -> bool:
    form: dict[str, str] = request.state.form if hasattr(request.state, "form") else {}
    return posted_here(request) and same(session.csrf, form.get("csrf"))


def with_form(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Read a POST's form once, before the session check needs its CSRF token."""

    async def wrapped(request: Request) -> Response:
        if request.method == "POST":
            request.state.form = await read_form(request)
        response: Response = await handler(request)
        return response

    return wrapped


def current_record(records: RecordStore, resource_type: str, resource_id: str) -> Stored | None:
    """A record as it is now; None when it does not exist (or no longer does)."""
    try:
        return records.read(resource_type, resource_id)
    except FhirError as error:
        if error.status in (400, 404, 410):
            return None
        raise


def guard_for(records: RecordStore, session: Session) -> Guard:
    """The patient's authorisation, as the API holds their own token to it: a page shows
    only what that token could read (a record that names other patients too is not theirs
    alone, and stays hidden)."""
    return Guard(records, session.principal, None)


def searcher_for(records: RecordStore, session: Session, guard: Guard) -> Searcher:
    """Searches of the patient's compartment, keeping what their token may see."""
    admit = guard.search_filter()
    return Searcher(records, Scope(records.storage, admit=admit, within=session.patient_id))
