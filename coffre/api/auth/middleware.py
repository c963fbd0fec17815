"""Every /fhir request passes here: a bearer token becomes ``request.state.principal``.

With ``COFFRE_AUTH=required`` a request without a valid token gets 401; with ``off``, a
request without a token passes as an unauthenticated client, and one with a token still
has it checked (a client that sends a bad token must learn it). /metadata and
/.well-known stay open, as SMART discovery needs; /ledger and /auth are outside /fhir.
/research needs a token in every mode.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from coffre.api.auth.authority import FHIR_BASE_PATH, Authority
from coffre.api.auth.external import IssuerUnavailable
from coffre.api.auth.tokens import InvalidToken
from coffre.api.responses import outcome_response
from coffre.exceptions import FhirError

REALM = "coffre"
RESEARCH_PATH = "/research"
"""The research hub's endpoints: a token always, whatever the mode (they answer a
researcher only, and the log names who asked)."""
_OPEN = (FHIR_BASE_PATH + "/metadata", FHIR_BASE_PATH + "/.well-known/")
_UNQUOTABLE = re.compile(r'["\\\x00-\x1f\x7f]')


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def _guarded(path: str) -> bool:
    if _under(path, RESEARCH_PATH):
        return True
    if not _under(path, FHIR_BASE_PATH):
        return False
    return not (path == _OPEN[0] or path.startswith(_OPEN[1]))


def challenge(description: str | None) -> str:
    """The WWW-Authenticate value (RFC 6750 §3): with no token at all, no error code."""
    if description is None:
        return f'Bearer realm="{REALM}"'
    safe = _UNQUOTABLE.sub("'", description)
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{safe}"'


def unauthorised(description: str | None) -> FhirError:
    if description is None:
        return FhirError(401, "login", "this request needs a bearer token")
    code = "expired" if "expired" in description else "security"
    return FhirError(401, code, description)


class Authenticate:
    """Pure ASGI, so that the unauthenticated path costs one header look-up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        authority: Authority = scope["app"].state.authority
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:  # RFC 6750 §2: one token, one way; a proxy's may come first
            await self._refuse(scope, receive, send, "send one Authorization header, not several")
            return
        header = headers[0] if headers else None
        if header is None:
            if authority.required or _under(scope["path"], RESEARCH_PATH):
                await self._refuse(scope, receive, send, None)
                return
            await self.app(scope, receive, send)
            return
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await self._refuse(
                scope, receive, send, "the Authorization header is not a Bearer token"
            )
            return
        try:
            principal = await authority.authenticate(token.strip(), request)
        except InvalidToken as error:
            await self._refuse(scope, receive, send, str(error))
            return
        except IssuerUnavailable as error:
            response = outcome_response(
                FhirError(503, "transient", str(error)), {"Retry-After": "5"}
            )
            await response(scope, receive, send)
            return
        request.state.principal = principal
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, description: str | None) -> None:
        response = outcome_response(
            unauthorised(description), {"WWW-Authenticate": challenge(description)}
        )
        await response(scope, receive, send)
