"""The gateway's authorisation state: its signing key, the registry, one-time codes, the
sign-in throttle, the external issuer it trusts, and the settings that join them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, Key, KeySet, RSAKey
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from coffre import config
from coffre.api.auth.external import ExternalIssuer, IssuerUnavailable, JwksCache
from coffre.api.auth.onetime import OneTime, sessions_file
from coffre.api.auth.registry import RegistryFile, User, access_file
from coffre.api.auth.scopes import Principal, Role
from coffre.api.auth.throttle import Attempt, SignInThrottle
from coffre.api.auth.tokens import (
    ACCESS_TOKEN_ALGORITHM,
    ASYMMETRIC_ALGORITHMS,
    LEEWAY_SECONDS,
    InvalidToken,
    TokenSigner,
    peek,
    principal_of,
    verify,
)
from coffre.exceptions import CoffreError

VERIFIED_TOKENS_KEPT = 4096
_Verified = tuple[Principal, float, str | None]
REQUIRED = "required"
OFF = "off"
FHIR_BASE_PATH = "/fhir"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    mode: str = OFF
    public_url: str = ""
    token_seconds: int = 300
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = ""

    @classmethod
    def from_settings(cls) -> AuthSettings:
        mode = config.AUTH.value().lower()  # off or required: the setting takes no other
        issuer, jwks_url = config.OIDC_ISSUER.value(), config.OIDC_JWKS_URL.value()
        if bool(issuer) != bool(jwks_url):
            raise CoffreError(
                f"set both {config.OIDC_ISSUER.env} and {config.OIDC_JWKS_URL.env}, or neither"
            )
        seconds = int(config.ACCESS_TOKEN_SECONDS.value())  # a whole number, the setting says
        if not 30 <= seconds <= 3600:
            raise CoffreError(f"{config.ACCESS_TOKEN_SECONDS.env} is 30 to 3600 seconds")
        return cls(
            mode=mode,
            public_url=config.PUBLIC_URL.value().rstrip("/"),
            token_seconds=seconds,
            oidc_issuer=issuer,
            oidc_jwks_url=jwks_url,
            oidc_audience=config.OIDC_AUDIENCE.value(),
        )


class SignInWait(CoffreError):
    """Too many failed sign-ins for this name or address: try again in ``seconds``."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {seconds} s")
        self.seconds = seconds


def _origin_parts(request: Request) -> tuple[Any, ...]:
    """What ``origin`` depends on, without building the URL (this runs on every request):
    a token verified for one origin is not taken as verified for another."""
    scope = request.scope
    host = request.headers.get("host", "")
    server = scope.get("server")
    return scope.get("scheme"), host, tuple(server) if server else None, scope.get("root_path", "")


@cache
def _ephemeral_id_token_key() -> bytes:
    """An RSA key made once per process for its ephemeral authorities: each would take a
    fifth of a second to make its own, and with nobody registered none signs an ID token."""
    return RSAKey.generate_key(2048, private=True).as_pem(private=True)


class Authority:
    def __init__(
        self,
        signing_jwk: Mapping[str, Any],
        id_token_pem: bytes,
        registry: RegistryFile,
        onetime: OneTime,
        settings: AuthSettings | None = None,
        external: ExternalIssuer | None = None,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self.signer = TokenSigner.for_access_tokens(signing_jwk)
        self.id_signer = TokenSigner.for_id_tokens(id_token_pem)
        self.registry = registry
        self.onetime = onetime
        self.throttle = throttle or SignInThrottle(":memory:")
        self.settings = settings or AuthSettings()
        self.external = external
        self._verified: dict[tuple[Any, ...], _Verified] = {}

    @classmethod
    def for_keyring(
        cls,
        keyring: Path,
        signing_jwk: Mapping[str, Any],
        id_token_pem: bytes,
        settings: AuthSettings,
    ) -> Authority:
        """The authority of a vault whose keyring is at ``keyring``: its registry and
        one-time store beside it."""
        external = None
        if settings.oidc_issuer:
            external = ExternalIssuer(
                settings.oidc_issuer, JwksCache(settings.oidc_jwks_url), settings.oidc_audience
            )
        return cls(
            signing_jwk,
            id_token_pem,
            RegistryFile(access_file(keyring)),
            OneTime(sessions_file(keyring)),
            settings,
            external,
            SignInThrottle(sessions_file(keyring)),
        )

    @classmethod
    def ephemeral(cls) -> Authority:
        """A random signing key, nobody registered, tokens optional: for an app made
        without a vault's settings (tests, embedding)."""
        key = ECKey.generate_key("P-256", private=True).as_dict(private=True)
        return cls(key, _ephemeral_id_token_key(), RegistryFile(None), OneTime(":memory:"))

    def jwks(self) -> dict[str, Any]:
        """The public keys that check the tokens this authority signs: access and ID."""
        return {"keys": [self.signer.public_jwk(), self.id_signer.public_jwk()]}

    async def sign_in(self, request: Request, username: str, password: str) -> User | None:
        """The user whose password this is, or None; :class:`SignInWait`, without checking
        the password, while the name or the client's address has failed too often."""
        attempt = Attempt(username, request.client.host if request.client else None)
        now = time.time()
        seconds = self.throttle.admit(attempt, now)  # counted as failed until it is not
        if seconds:
            raise SignInWait(seconds)
        # scrypt takes tens of milliseconds: not on the event loop.
        user = await run_in_threadpool(self.registry.current().sign_in, username, password)
        if user is not None:
            self.throttle.succeeded(attempt)
        return user

    @property
    def required(self) -> bool:
        return self.settings.mode == REQUIRED

    def origin(self, request: Request) -> str:
        return self.settings.public_url or str(request.base_url).rstrip("/")

    def site(self, request: Request) -> str:
        """Where clients reach this server: the public URL when set, else the request's
        own scheme and host (not ``base_url``, which under a mount ends with its path)."""
        return self.settings.public_url or f"{request.url.scheme}://{request.url.netloc}"

    def posted_here(self, request: Request) -> bool:
        """Whether a form came from a page of this server, as its ``Origin`` says: a
        browser sends one with every POST (``null`` where it hides it); a client without
        one is no browser another site drives."""
        origin = request.headers.get("origin")
        return origin is None or origin.rstrip("/") == self.site(request)

    def fhir_base(self, request: Request) -> str:
        return self.origin(request) + FHIR_BASE_PATH

    def issuer(self, request: Request) -> str:
        return self.origin(request) + "/auth"

    def endpoint(self, request: Request, name: str) -> str:
        return f"{self.issuer(request)}/{name}"

    async def authenticate(self, token: str, request: Request) -> Principal:
        """The principal of a bearer token; raises InvalidToken (401) or IssuerUnavailable.

        A token verified once is remembered until it expires: a client sends the same
        token with every request, and checking its signature again would cost more than
        serving a read. Whether one of Coffre's own that came from an authorisation code
        was revoked since is asked each time (any gateway process may have revoked it)."""
        key = (token, *_origin_parts(request))
        remembered = self._verified.get(key)
        if remembered is None or time.time() >= remembered[1]:
            remembered = await self._verify(token, request)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._forget_expired()
            self._verified[key] = remembered
        principal, _expires, token_id = remembered
        if token_id is not None and self.onetime.revoked(token_id):
            raise InvalidToken("the token was revoked: the code it came from was used again")
        return principal

    def _forget_expired(self) -> None:
        now = time.time()
        for key in [k for k, (_, expires, _) in self._verified.items() if expires <= now]:
            del self._verified[key]
        while len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]  # the oldest

    async def _verify(self, token: str, request: Request) -> _Verified:
        """The token's principal, until when it holds, and its id if it is one Coffre
        issued for an authorisation code, the only kind a replay revokes (a backend
        service's, the only one with the system role, is never asked about)."""
        unverified = peek(token)
        issuer = unverified.claims.get("iss")
        own = self.issuer(request)
        if issuer == own:
            keys: Key | KeySet = self.signer.public
            algorithms: tuple[str, ...] = (ACCESS_TOKEN_ALGORITHM,)
            audience = self.fhir_base(request)
        elif self.external is not None and issuer == self.external.issuer:
            keys = await self.external.keys_for(unverified.header)
            algorithms = ASYMMETRIC_ALGORITHMS
            audience = self.external.audience or self.fhir_base(request)
        else:
            raise InvalidToken("the token's issuer is not one Coffre trusts")
        claims = verify(unverified, keys, algorithms, {"iss": issuer, "aud": audience, "sub": None})
        principal = principal_of(claims, issuer)
        revocable = issuer == own and principal.role is not Role.SYSTEM
        token_id = claims.get("jti") if revocable else None
        return (
            principal,
            float(claims["exp"]) + LEEWAY_SECONDS,
            token_id if isinstance(token_id, str) else None,
        )


__all__ = ["AuthSettings", "Authority", "IssuerUnavailable"]
