"""The portal's session: a short-lived cookie signed with the gateway's token key.

The cookie is a JWT for the portal's own audience, so it is never an access token for
/fhir and no access token is ever a session. It is HttpOnly, SameSite=Lax and Secure
whenever the portal is reached over HTTPS; it names the patient and carries the CSRF
token every form of the session must send back. Signing out clears it and revokes it in
the one-time store shared by the gateway's processes, so a copy taken before is refused
too; so is a session whose user was removed from the registry since, or registered again
(a password renewed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.auth import Authority, Principal
from coffre.api.auth.registry import User
from coffre.api.auth.scopes import Role, parse_scopes
from coffre.api.auth.tokens import ACCESS_TOKEN_ALGORITHM, InvalidToken, peek, verify

SESSION_COOKIE = "coffre_portal"
SIGN_IN_COOKIE = "coffre_portal_sign_in"
SESSION_SECONDS = 30 * 60
SIGN_IN_SECONDS = 15 * 60
PORTAL_CLIENT = "portal"
SESSION_TYPE = "coffre-portal-session"
PORTAL_SCOPES = "patient/*.rs patient/Consent.u patient/Appointment.cu launch/patient"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in patient: their user name, their Patient id, the form token."""

    username: str
    patient_id: str
    csrf: str

    @property
    def principal(self) -> Principal:
        """The patient as the audit log names them: ``Patient/<id> (patient, via client portal)``."""
        return Principal(
            subject=self.username,
            client_id=PORTAL_CLIENT,
            scopes=parse_scopes(PORTAL_SCOPES)[0],
            role=Role.PATIENT,
            patient=self.patient_id,
            fhir_user=f"Patient/{self.patient_id}",
        )


def _authority(request: Request) -> Authority:
    authority: Authority = request.app.state.authority
    return authority


def portal_origin(request: Request) -> str:
    """Where the portal is reached."""
    return _authority(request).site(request)


def posted_here(request: Request) -> bool:
    """A form posted from another site is refused (besides the CSRF token)."""
    return _authority(request).posted_here(request)


def _audience(request: Request) -> str:
    return portal_origin(request) + "/portal"


def _issuer(request: Request) -> str:
    return portal_origin(request) + "/auth"


def secure(request: Request) -> bool:
    """Whether the portal is reached over TLS: then its cookies are Secure."""
    return portal_origin(request).startswith("https:")


def set_cookie(request: Request, response: Response, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path="/portal",
        secure=secure(request),
        httponly=True,
        samesite="lax",
    )


def _registration(user: User) -> str:
    """What names the user's registration, their password's: a session opened before the
    user was registered again (a password renewed by ``coffre users remove`` then ``add``)
    ends with it. A digest of the salted hash, which tells nothing of the password."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:32]


def open_session(request: Request, response: Response, user: User, patient_id: str) -> None:
    """Sign the patient in: a new session cookie, with a new CSRF token."""
    authority = _authority(request)
    claims = {
        "iss": _issuer(request),
        "aud": _audience(request),
        "sub": user.username,
        "typ": SESSION_TYPE,
        "patient": patient_id,
        "csrf": secrets.token_urlsafe(24),
        "registration": _registration(user),
    }
    token = authority.signer.sign(claims, SESSION_SECONDS)
    set_cookie(request, response, SESSION_COOKIE, token, SESSION_SECONDS)
    response.delete_cookie(SIGN_IN_COOKIE, path="/portal")


def session_of(request: Request) -> Session | None:
    """The session the request's cookie proves, or None (none, expired, forged, or its
    user no longer registered as that patient)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    authority = _authority(request)
    try:
        claims = verify(
            peek(token),
            authority.signer.public,
            (ACCESS_TOKEN_ALGORITHM,),
            {
                "iss": _issuer(request),
                "aud": _audience(request),
                "typ": SESSION_TYPE,
                "sub": None,
                "patient": None,
                "csrf": None,
                "registration": None,
            },
        )
    except InvalidToken:
        return None
    session = Session(str(claims["sub"]), str(claims["patient"]), str(claims["csrf"]))
    if authority.onetime.seen(_revoked(session)):
        return None
    # A user removed, registered again or pointed at another patient since signing in
    # loses the session now.
    user = authority.registry.current().users.get(session.username)
    if user is None or user.fhir_user != f"Patient/{session.patient_id}":
        return None
    if not hmac.compare_digest(str(claims["registration"]), _registration(user)):
        return None
    return session


def _revoked(session: Session) -> str:
    # The CSRF token is random per session: it names the session in the revocations.
    return f"portal-session\x1f{session.csrf}"


def close_session(request: Request, response: Response, session: Session) -> None:
    """Sign the patient out: the cookie cleared, and the session refused from now on even
    where a copy of the cookie survives."""
    expires = time.time() + SESSION_SECONDS  # the longest the signed cookie can live
    _authority(request).onetime.first_use(_revoked(session), expires)
    response.delete_cookie(SESSION_COOKIE, path="/portal")


def same(expected: str, sent: str | None) -> bool:
    """A form's token compared with the expected one, in constant time; as bytes, since
    either may hold what no token does (``compare_digest`` takes no other text than ASCII)."""
    if not expected or sent is None:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())


def sign_in_token(request: Request) -> str:
    """The token that ties the sign-in form to this browser (against login CSRF)."""
    return request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(24)
