"""The built-in authorisation server: SMART and OpenID Connect discovery, the JWKS, the
token endpoint (SMART Backend Services and authorisation code with PKCE) and the sign-in
page."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, urlencode

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from coffre.api.auth.authority import Authority, SignInWait
from coffre.api.auth.registry import APP, BACKEND, Client, User
from coffre.api.auth.scopes import (
    FHIR_USER,
    LAUNCH_PATIENT,
    OFFLINE_ACCESS,
    OPENID,
    Context,
    Role,
    ScopeSet,
    narrow,
    parse_scopes,
)
from coffre.api.auth.signin import error_page, language, sign_in_page
from coffre.api.auth.tokens import (
    ASYMMETRIC_ALGORITHMS,
    ID_TOKEN_ALGORITHM,
    LEEWAY_SECONDS,
    InvalidToken,
    new_token_id,
    peek,
    verify,
)

log = logging.getLogger("coffre.auth")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_MAX_SECONDS = 300
CODE_SECONDS = 60
MAX_FORM_BYTES = 16 * 1024
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")
"""The base64url of a SHA-256 digest, unpadded (RFC 7636 §4.2): what an S256
``code_challenge`` is, and all the token endpoint can compare a verifier's digest with."""
OPENID_CONFIGURATION = "/.well-known/openid-configuration"
"""Under the issuer (``/auth``), where OpenID Connect Discovery looks for it."""
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_AUTHORIZE_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "nonce",
)


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 §5.2): ``error`` is its code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=_NO_STORE)


def _authority(request: Request) -> Authority:
    authority: Authority = request.app.state.authority
    return authority


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form, each parameter once (OAuth forbids repeating one)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise OAuthError(
            400, "invalid_request", "send the form as application/x-www-form-urlencoded"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError(400, "invalid_request", "the form is too large")
    try:
        return _once_each(parse_qsl(body.decode(), keep_blank_values=False))
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "the form is not UTF-8") from None


def _once_each(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Parameters by name, or a refusal where one is repeated (RFC 6749 §3.1: a request's
    parameters MUST NOT be included more than once; which one would be meant?)."""
    named = dict(pairs)
    if len(named) < len(pairs):
        counts = Counter(name for name, _ in pairs)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        raise OAuthError(400, "invalid_request", f"parameters given more than once: {repeated}")
    return named


def supported_scopes() -> list[str]:
    return [
        "system/*.rs",
        "system/*.cruds",
        "user/*.rs",
        "user/*.cruds",
        "patient/*.rs",
        "patient/*.cruds",
        LAUNCH_PATIENT,
        OPENID,
        FHIR_USER,
    ]


ID_TOKEN_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "nonce", "fhirUser"]
"""Every claim an ID token of Coffre's may carry (``nonce`` when the app sent one,
``fhirUser`` with the fhirUser scope)."""


def _server_metadata(request: Request) -> dict[str, Any]:
    """What SMART's and OpenID Connect's discovery documents both say of this server."""
    authority = _authority(request)
    return {
        "issuer": authority.issuer(request),
        "jwks_uri": authority.endpoint(request, "jwks"),
        "authorization_endpoint": authority.endpoint(request, "authorize"),
        "token_endpoint": authority.endpoint(request, "token"),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASYMMETRIC_ALGORITHMS),
        "scopes_supported": supported_scopes(),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }


async def openid_configuration(request: Request) -> Response:
    """OpenID Connect Discovery 1.0, at the issuer's ``/.well-known/openid-configuration``
    (SMART asks it of a server offering sso-openid-connect). Only what holds: no userinfo
    endpoint, no request objects (``request_uri_parameter_supported`` is true when left
    out), the code in the redirect's query."""
    return JSONResponse(
        {
            **_server_metadata(request),
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ID_TOKEN_ALGORITHM],
            "claims_supported": ID_TOKEN_CLAIMS,
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }
    )


async def smart_configuration(request: Request) -> Response:
    return JSONResponse(
        {
            **_server_metadata(request),
            "capabilities": [
                "launch-standalone",
                "client-public",
                "client-confidential-asymmetric",
                "context-standalone-patient",
                "permission-patient",
                "permission-user",
                "permission-v1",
                "permission-v2",
                "sso-openid-connect",
            ],
        }
    )


async def jwks(request: Request) -> Response:
    return JSONResponse(_authority(request).jwks())


# -- token endpoint -------------------------------------------------------------------


async def token(request: Request) -> Response:
    try:
        form = await _form(request)
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            body = _client_credentials(request, form)
        elif grant_type == "authorization_code":
            body = _authorization_code(request, form)
        elif grant_type is None:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        else:
            raise OAuthError(
                400, "unsupported_grant_type", "use client_credentials or authorization_code"
            )
    except OAuthError as error:
        return error.response()
    return JSONResponse(body, headers=_NO_STORE)


def _assertion_client(request: Request, form: dict[str, str]) -> Client:
    """The backend client whose signed assertion this form carries (SMART Backend Services)."""
    authority = _authority(request)
    if form.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError(400, "invalid_request", f"client_assertion_type must be {JWT_BEARER}")
    try:
        unverified = peek(form.get("client_assertion", ""))
    except InvalidToken as error:
        raise OAuthError(401, "invalid_client", str(error)) from None
    client_id = unverified.claims.get("iss")
    client = (
        authority.registry.current().client(client_id, BACKEND)
        if isinstance(client_id, str)
        else None
    )
    if client is None or form.get("client_id", client_id) != client_id:
        raise OAuthError(401, "invalid_client", "no backend client registered under that iss")
    try:
        keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        claims = verify(
            unverified,
            keys,
            ASYMMETRIC_ALGORITHMS,
            {
                "iss": client.client_id,
                "sub": client.client_id,
                "aud": authority.endpoint(request, "token"),
                "jti": None,
            },
        )
    except (InvalidToken, JoseError) as error:
        raise OAuthError(401, "invalid_client", f"client assertion: {error}") from None
    expires = claims["exp"]
    if not isinstance(expires, int | float) or expires > time.time() + ASSERTION_MAX_SECONDS:
        raise OAuthError(401, "invalid_client", "a client assertion expires within 5 minutes")
    if not authority.onetime.first_use(f"{client.client_id}\x1f{claims['jti']}", expires + 60):
        raise OAuthError(401, "invalid_client", "this client assertion's jti was used already")
    return client


def _token_body(
    request: Request, scopes: ScopeSet, claims: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    authority = _authority(request)
    lifetime = authority.settings.token_seconds
    access = authority.signer.sign(
        {
            "iss": authority.issuer(request),
            "aud": authority.fhir_base(request),
            "scope": str(scopes),
            **claims,
        },
        lifetime,
    )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": str(scopes),
        **extra,
    }


def _client_credentials(request: Request, form: dict[str, str]) -> dict[str, Any]:
    client = _assertion_client(request, form)
    requested, unknown = parse_scopes(form.get("scope", ""))
    granted = narrow(requested.in_context(Context.SYSTEM), client.allowed)
    granted = ScopeSet(granted.resources)
    if not granted.resources:
        unread = f"; not understood: {', '.join(map(repr, unknown))}" if unknown else ""
        raise OAuthError(
            400, "invalid_scope", f"none of the scopes asked is allowed this client{unread}"
        )
    claims = {"sub": client.client_id, "client_id": client.client_id, "role": Role.SYSTEM}
    return _token_body(request, granted, claims, {})


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _authorization_code(request: Request, form: dict[str, str]) -> dict[str, Any]:
    authority = _authority(request)
    code, token_id = form.get("code", ""), new_token_id()
    token_expires = time.time() + authority.settings.token_seconds + LEEWAY_SECONDS
    grant = authority.onetime.take_code(code, token_id, token_expires)
    if grant is None:
        if authority.onetime.revoke_spent(code):
            log.warning(
                "an authorisation code was presented again (client_id %r, from %s):"
                " the access token it gave is revoked",
                form.get("client_id", "")[:128],
                request.client.host if request.client else "an unknown address",
            )
            raise OAuthError(
                400,
                "invalid_grant",
                "the code was used already: the access token it gave is revoked",
            )
        raise OAuthError(400, "invalid_grant", "the code is unknown, used or expired")
    client = authority.registry.current().client(form.get("client_id", ""), APP)
    if client is None or client.client_id != grant["client_id"]:
        raise OAuthError(400, "invalid_grant", "the code was issued to another client")
    if form.get("redirect_uri") != grant["redirect_uri"]:
        raise OAuthError(
            400, "invalid_grant", "redirect_uri differs from the authorisation request"
        )
    verifier = form.get("code_verifier", "")
    if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
        _s256(verifier), grant["challenge"]
    ):
        raise OAuthError(400, "invalid_grant", "the code_verifier does not match the challenge")
    scopes, _unknown = parse_scopes(grant["scope"])
    claims = {
        "jti": token_id,
        "sub": grant["username"],
        "client_id": client.client_id,
        "role": grant["role"],
        "fhirUser": grant["fhir_user"],
    }
    extra: dict[str, Any] = {}
    if grant["patient"]:
        claims["patient"] = extra["patient"] = grant["patient"]
    if OPENID in scopes.others:
        id_claims = {
            "iss": authority.issuer(request),
            "aud": client.client_id,
            "sub": grant["username"],
        }
        if FHIR_USER in scopes.others:
            id_claims["fhirUser"] = grant["fhir_user"]
        if grant["nonce"]:
            id_claims["nonce"] = grant["nonce"]
        extra["id_token"] = authority.id_signer.sign(id_claims, authority.settings.token_seconds)
    return _token_body(request, scopes, claims, extra)


# -- authorisation endpoint -----------------------------------------------------------


class _Refusal(Exception):
    """An authorisation request that goes back to the app as ``error`` on its redirect."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _app_and_redirect(request: Request, fields: dict[str, str]) -> tuple[Client, str]:
    """The app and its redirect URI, both registered: else nothing may be redirected."""
    client = _authority(request).registry.current().client(fields.get("client_id", ""), APP)
    if client is None:
        raise ValueError("no app is registered under this client_id")
    redirect_uri = fields.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise ValueError("this redirect_uri is not registered for the app")
    return client, redirect_uri


def _check_request(request: Request, fields: dict[str, str]) -> None:
    if fields.get("response_type") != "code":
        raise _Refusal("unsupported_response_type", "response_type must be code")
    if not fields.get("state"):
        raise _Refusal("invalid_request", "state is required")
    if fields.get("code_challenge_method") != "S256" or not fields.get("code_challenge"):
        raise _Refusal("invalid_request", "PKCE with code_challenge_method S256 is required")
    if not _S256_CHALLENGE.fullmatch(fields["code_challenge"]):
        raise _Refusal(
            "invalid_request",
            "code_challenge is the SHA-256 of the code_verifier in base64url without padding:"
            " 43 characters of A-Z, a-z, 0-9, - and _",
        )
    if fields.get("aud", "").rstrip("/") != _authority(request).fhir_base(request):
        raise _Refusal("invalid_request", "aud must be this server's FHIR base URL")


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if "?" in uri else "?"
    location = uri + separator + urlencode(params)  # a code: kept by no cache
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def granted_to_user(requested: ScopeSet, client: Client, user: User) -> tuple[ScopeSet, str]:
    """What a signed-in user's app gets, and the patient in context ("" if none).

    Users never get system scopes. A patient's ``launch/patient`` puts them in context;
    others have no patient picker yet, so patient scopes and ``launch/patient`` are
    dropped for them. ``offline_access`` is never granted: no refresh tokens yet.
    """
    allowed = narrow(requested, client.allowed)
    patient = ""
    if user.role == Role.PATIENT and LAUNCH_PATIENT in allowed.others:
        patient = user.fhir_user.partition("/")[2]
    resources = frozenset(
        s
        for s in allowed.resources
        if s.context == Context.USER or (s.context == Context.PATIENT and patient)
    )
    others = allowed.others - {OFFLINE_ACCESS} - (set() if patient else {LAUNCH_PATIENT})
    return ScopeSet(resources, frozenset(others)), patient


def _fields(source: dict[str, str]) -> dict[str, str]:
    return {name: source[name] for name in (*_AUTHORIZE_FIELDS, "lang") if source.get(name)}


async def authorize(request: Request) -> Response:
    try:
        if request.method == "GET":
            source = _once_each(request.query_params.multi_items())
        else:
            source = await _form(request)
    except OAuthError as error:
        return error_page(language(request, None), error.description)
    fields = _fields(source)
    lang = language(request, fields.get("lang"))
    try:
        client, redirect_uri = _app_and_redirect(request, fields)
    except ValueError as error:
        return error_page(lang, str(error))
    state = fields.get("state", "")
    try:
        _check_request(request, fields)
    except _Refusal as refusal:
        params = {"error": refusal.error, "error_description": refusal.description}
        return _redirect(redirect_uri, {**params, "state": state} if state else params)
    app_name = client.name or client.client_id
    if request.method == "GET":
        return sign_in_page(lang, app_name, fields, redirect_uri)
    if not _authority(request).posted_here(request):  # another site signing a browser in
        return error_page(lang, "this sign-in form was sent from another site: sign in here")
    try:
        user = await _authority(request).sign_in(
            request, source.get("username", ""), source.get("password", "")
        )
    except SignInWait as wait:
        return sign_in_page(lang, app_name, fields, redirect_uri, wait=wait.seconds)
    if user is None:
        return sign_in_page(lang, app_name, fields, redirect_uri, failed=True)
    requested, _unknown = parse_scopes(fields.get("scope", ""))
    scopes, patient = granted_to_user(requested, client, user)
    if not scopes.resources and not scopes.others:
        return _redirect(redirect_uri, {"error": "invalid_scope", "state": state})
    code = secrets.token_urlsafe(32)
    grant = {
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "challenge": fields["code_challenge"],
        "scope": str(scopes),
        "username": user.username,
        "role": str(user.role),
        "fhir_user": user.fhir_user,
        "patient": patient,
        "nonce": fields.get("nonce", ""),
    }
    _authority(request).onetime.put_code(code, grant, time.time() + CODE_SECONDS)
    return _redirect(redirect_uri, {"code": code, "state": state})


def smart_routes() -> list[Route]:
    """Under the FHIR base, before any /{type} route could take the path."""
    return [Route("/.well-known/smart-configuration", smart_configuration, methods=["GET"])]


def auth_routes() -> list[Route]:
    """Under /auth."""
    return [
        Route(OPENID_CONFIGURATION, openid_configuration, methods=["GET"]),
        Route("/jwks", jwks, methods=["GET"]),
        Route("/token", token, methods=["POST"]),
        Route("/authorize", authorize, methods=["GET", "POST"]),
    ]
