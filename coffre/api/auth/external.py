"""Tokens from an external OpenID Connect issuer (a hospital's own), checked by its JWKS.

The JWKS is fetched once, kept, and fetched again when it is older than ``max_age`` or
when a token names a key it does not hold, but never more often than once per
``min_interval``: a stream of tokens with made-up key ids cannot make Coffre hammer
the issuer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from coffre.api.auth.tokens import InvalidToken

FETCH_SECONDS = 5.0
Fetch = Callable[[str], Awaitable[dict[str, Any]]]


class IssuerUnavailable(Exception):
    """The issuer's keys could not be fetched and none are cached."""


async def fetch_json(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=FETCH_SECONDS) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        value: dict[str, Any] = response.json()
        return value


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        min_interval: float = 60.0,
        max_age: float = 3600.0,
        fetch: Fetch = fetch_json,
    ) -> None:
        self.url = url
        self.min_interval = min_interval
        self.max_age = max_age
        self._fetch = fetch
        self._keys: KeySet | None = None
        self._fetched = -float("inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _holds(self, kid: str | None) -> bool:
        if self._keys is None:
            return False
        return kid is None or any(key.kid == kid for key in self._keys)

    async def keys(self, kid: str | None) -> KeySet:
        """The issuer's keys, fetched again if stale or missing ``kid`` (within bounds)."""
        async with self._lock:
            age = time.monotonic() - self._fetched
            stale = age > self.max_age or not self._holds(kid)
            if stale and age >= self.min_interval:
                await self._refresh()
            if self._keys is None:
                raise IssuerUnavailable("the external issuer's keys could not be fetched")
            return self._keys

    async def _refresh(self) -> None:
        self._fetched = time.monotonic()
        self.fetches += 1
        try:
            value = await self._fetch(self.url)
            keys = KeySet.import_key_set(value)  # type: ignore[arg-type]
        except (httpx.HTTPError, JoseError, ValueError, TypeError, KeyError):
            return  # keep what was cached; the bound above paces the next attempt
        if any(key.is_private for key in keys):
            return  # an issuer publishing private keys is not one to trust
        self._keys = keys


class ExternalIssuer:
    """An OpenID Connect issuer whose tokens Coffre accepts beside its own."""

    def __init__(self, issuer: str, jwks: JwksCache, audience: str = "") -> None:
        self.issuer = issuer
        self.jwks = jwks
        self.audience = audience

    async def keys_for(self, header: dict[str, Any]) -> KeySet:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("the token's key id is not a string")
        return await self.jwks.keys(kid)
