"""JSON Web Tokens through joserfc: the gateway's access tokens, and checking any JWT.

Coffre signs its access tokens with ES256 under a key derived from the vault's root, and
its ID tokens with RS256 under an RSA key the storage keeps sealed under that root
(``coffre/seal/tokenkey.py``); it checks tokens and client assertions with an explicit
list of algorithms per issuer, never ``none`` nor a shared-secret HMAC.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from coffre.api.auth.scopes import Context, Principal, Role, parse_scopes
from coffre.fhir._definitions_r4 import RESOURCE_TYPES

ACCESS_TOKEN_ALGORITHM = "ES256"
ID_TOKEN_ALGORITHM = "RS256"  # OpenID Connect Core §15.1: what every relying party checks
# What Coffre accepts from others: SMART requires RS384 and ES384 of servers.
ASYMMETRIC_ALGORITHMS = ("RS384", "ES384", "RS256", "ES256", "RS512", "ES512", "PS256", "PS384")
LEEWAY_SECONDS = 30


class InvalidToken(Exception):
    """A token that does not authenticate its bearer; the message is safe to send back."""


@dataclass(frozen=True, slots=True)
class Unverified:
    """A compact JWS parsed, its signature not yet checked."""

    signed: Any
    header: dict[str, Any]
    claims: dict[str, Any]


def peek(token: str) -> Unverified:
    """Parse ``token`` without trusting it, to learn who claims to have issued it."""
    try:
        signed = jws.extract_compact(token.encode("ascii"))
        claims = json.loads(signed.payload)
    except (JoseError, ValueError, UnicodeError, RecursionError) as error:  # nested too deep
        raise InvalidToken("the token is not a well-formed JWT") from error
    if not isinstance(claims, dict):
        raise InvalidToken("the token's payload is not a JSON object")
    return Unverified(signed, dict(signed.headers()), claims)


def verify(
    token: Unverified,
    keys: Key | KeySet,
    algorithms: tuple[str, ...],
    required: dict[str, str | None],
) -> dict[str, Any]:
    """The claims of ``token`` once its signature and ``required`` claims hold: each
    name maps to the value it must have, or None for present at all; ``exp`` is always
    required."""
    try:
        if not jws.validate_compact(token.signed, keys, algorithms):
            raise InvalidToken("the token's signature does not verify")
    except BadSignatureError:
        raise InvalidToken("the token's signature does not verify") from None
    except JoseError as error:
        raise InvalidToken(f"the token's signature cannot be checked ({error.error})") from None
    options: dict[str, Any] = {"exp": {"essential": True}}
    for name, value in required.items():
        options[name] = (
            {"essential": True} if value is None else {"essential": True, "value": value}
        )
    try:
        jwt.JWTClaimsRegistry(leeway=LEEWAY_SECONDS, **options).validate(token.claims)
    except ExpiredTokenError:
        raise InvalidToken("the token has expired") from None
    except MissingClaimError as error:
        raise InvalidToken(f"the token lacks the claims {error.description}") from None
    except InvalidClaimError as error:
        raise InvalidToken(f"the token's claim {error.claim} is not valid here") from None
    return token.claims


def new_token_id() -> str:
    return secrets.token_urlsafe(16)


class TokenSigner:
    """One of the gateway's keys and the algorithm it signs with: signs tokens, publishes
    its public half."""

    def __init__(self, key: ECKey | RSAKey, algorithm: str) -> None:
        self._key = key
        self.algorithm = algorithm
        self.kid = key.thumbprint()
        self.public = type(key).import_key(key.as_dict(private=False))

    @classmethod
    def for_access_tokens(cls, private_jwk: Mapping[str, Any]) -> TokenSigner:
        """ES256 under a private EC P-256 JWK."""
        fields: dict[str, str | list[str]] = {name: value for name, value in private_jwk.items()}
        return cls(ECKey.import_key(fields), ACCESS_TOKEN_ALGORITHM)

    @classmethod
    def for_id_tokens(cls, private_pem: bytes) -> TokenSigner:
        """RS256 under a private RSA key in PEM."""
        return cls(RSAKey.import_key(private_pem), ID_TOKEN_ALGORITHM)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWKS lists it."""
        public = self._key.as_dict(private=False)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], lifetime: int) -> str:
        """``claims`` with iat, exp and a jti (a fresh one unless ``claims`` has it), signed."""
        now = int(time.time())
        full = {"jti": new_token_id(), **claims, "iat": now, "exp": now + lifetime}
        header = {"alg": self.algorithm, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, full, self._key, algorithms=[self.algorithm])


def _fhir_user(claims: dict[str, Any]) -> str | None:
    """The ``fhirUser`` claim as a reference, ``Type/id``: SMART writes it as a URL, and
    an issuer may write it absolute (``https://ehr.example/fhir/Practitioner/17``)."""
    text = _text(claims, "fhirUser")
    if text is None:
        return None
    parts = text.rstrip("/").split("/")
    if len(parts) > 2 and parts[-2] in RESOURCE_TYPES:
        return f"{parts[-2]}/{parts[-1]}"
    return text


PEOPLE = frozenset({Role.PATIENT, Role.CLINICIAN, Role.RESEARCHER})
"""Roles of a person, whose token an identity provider may still give system/ scopes (a
default client scope): confined as a person's, never unconfined as a backend's."""


def _role(claims: dict[str, Any], fhir_user: str | None) -> Role | None:
    named = claims.get("role")
    if isinstance(named, str) and named in Role.__members__.values():
        return Role(named)
    kind = (fhir_user or "").partition("/")[0]
    if kind == "Patient":
        return Role.PATIENT
    if kind in ("Practitioner", "PractitionerRole"):
        return Role.CLINICIAN
    return None


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def principal_of(claims: dict[str, Any], issuer: str) -> Principal:
    """The principal a verified token speaks for. Scopes come from ``scope`` (a string)
    or ``scp`` (a list, as some identity providers write them)."""
    raw = claims.get("scope", claims.get("scp", ""))
    text = " ".join(raw) if isinstance(raw, list) else raw if isinstance(raw, str) else ""
    scopes, _unknown = parse_scopes(text)
    fhir_user = _fhir_user(claims)
    client_id = _text(claims, "client_id") or _text(claims, "azp") or ""
    role = _role(claims, fhir_user)
    if role in PEOPLE:  # system/ scopes are a backend service's: a person's reach no further
        scopes = scopes.without(Context.SYSTEM)
    return Principal(
        subject=_text(claims, "sub") or "",
        client_id=client_id,
        scopes=scopes,
        role=role,
        patient=_text(claims, "patient"),
        fhir_user=fhir_user,
        purpose=_text(claims, "purpose_of_use"),
        issuer=issuer,
    )
