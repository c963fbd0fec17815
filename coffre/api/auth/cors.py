"""Cross-origin requests from the browser apps registered here.

A SMART app that runs in a page (a public client, PKCE) calls the token endpoint and the
FHIR API (or, for a researcher's, the research hub) from its own origin: the browser lets its script read an answer only when the
answer names that origin (CORS). Coffre names the origins of the registered apps'
redirect URIs, read from the registry as it changes, and no other: ``coffre clients
add-app`` is the one place where a hospital decides which apps may run. No cookie is
sent or honoured cross-origin (a bearer token is the credential), and requests without
``Origin``, or outside the APIs, the token endpoint, the JWKS and OpenID Connect's
discovery document, pass as before.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from coffre.api.auth.authority import FHIR_BASE_PATH, Authority
from coffre.api.auth.middleware import RESEARCH_PATH
from coffre.api.auth.registry import APP, origin_of

CROSS_ORIGIN_PATHS = (
    FHIR_BASE_PATH + "/",
    RESEARCH_PATH + "/",
    "/auth/token",
    "/auth/jwks",
    "/auth/.well-known/",
)
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_REQUEST_HEADERS = (
    "Authorization",
    "If-Match",
    "If-Modified-Since",
    "If-None-Exist",
    "If-None-Match",
    "Prefer",
    "X-Security-Context",
)
_ANSWER_HEADERS = (
    "Content-Location",
    "ETag",
    "Last-Modified",
    "Location",
    "Retry-After",
    "WWW-Authenticate",
    "X-Progress",
    "X-Security-Context",
)


class RegisteredAppOrigins(CORSMiddleware):
    def __init__(self, app: ASGIApp, authority: Authority) -> None:
        super().__init__(
            app,
            allow_methods=_METHODS,
            allow_headers=_REQUEST_HEADERS,
            expose_headers=_ANSWER_HEADERS,
        )
        self._authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(CROSS_ORIGIN_PATHS)
            or not any(name == b"origin" for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def is_allowed_origin(self, origin: str) -> bool:
        clients = self._authority.registry.current().clients.values()
        return any(
            origin == origin_of(uri)
            for client in clients
            if client.kind == APP
            for uri in client.redirect_uris
        )
