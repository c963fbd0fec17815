"""What the authorisation tests share: an app with its authority, registered clients and
users, client assertions and PKCE pairs made the way a SMART client makes them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conftest import id_token_pem
from joserfc import jws, jwt
from joserfc.jwk import ECKey, Key, KeySet, RSAKey
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority, AuthSettings
from coffre.api.auth.onetime import OneTime
from coffre.api.auth.registry import (
    RegistryFile,
    User,
    app_client,
    backend_client,
    load,
    new_user,
    save,
)
from coffre.service import RecordStore

ORIGIN = "http://testserver"
FHIR_BASE = ORIGIN + "/fhir"
TOKEN_URL = ORIGIN + "/auth/token"
REDIRECT = "https://portal.example/callback"
PASSWORD = "un mot de passe assez long"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def authority_at(
    folder: Path, mode: str = "required", signing_jwk: dict[str, Any] | None = None, **settings: Any
) -> Authority:
    """A gateway's authority over the files in ``folder``; those of one vault's processes
    share ``signing_jwk`` (derived from the vault's root), else a new key is made."""
    key = signing_jwk or ECKey.generate_key("P-256", private=True).as_dict(private=True)
    return Authority(
        key,
        id_token_pem(),
        RegistryFile(folder / "keyring.access.json"),
        OneTime(folder / "keyring.auth.sqlite"),
        AuthSettings(mode=mode, **settings),
    )


def client_for(records: RecordStore, authority: Authority) -> TestClient:
    return TestClient(create_app(records, authority=authority), raise_server_exceptions=False)


def register_backend(authority: Authority, client_id: str, key: Key, scopes: str) -> None:
    path = authority.registry.path
    assert path is not None
    registry = load(path)
    public = {**key.as_dict(private=False), "kid": key.thumbprint()}
    client = backend_client(client_id, json.dumps({"keys": [public]}), scopes)
    save(path, replace(registry, clients={**registry.clients, client_id: client}))


def register_app(authority: Authority, client_id: str, scopes: str) -> None:
    path = authority.registry.path
    assert path is not None
    registry = load(path)
    client = app_client(client_id, [REDIRECT], scopes, "Mon portail")
    save(path, replace(registry, clients={**registry.clients, client_id: client}))


def register_user(authority: Authority, username: str, role: str, fhir_user: str) -> None:
    path = authority.registry.path
    assert path is not None
    registry = load(path)
    user = _known_user(username, role, fhir_user)
    save(path, replace(registry, users={**registry.users, username: user}))


@cache
def _known_user(username: str, role: str, fhir_user: str) -> User:
    """A user whose password is PASSWORD, made once per test process: its hash costs a
    third of a second (scrypt, as it should), and the tests register the same users again
    and again."""
    return new_user(username, role, fhir_user, PASSWORD)


def assertion(key: Key, client_id: str, alg: str, **overrides: Any) -> str:
    """A SMART Backend Services client assertion, as a client signs it."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": secrets.token_hex(16),
        **overrides,
    }
    return jwt.encode(
        {"alg": alg, "kid": key.thumbprint(), "typ": "JWT"}, claims, key, algorithms=[alg]
    )


def backend_form(signed: str, scope: str = "system/*.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": signed,
    }


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, private=True)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(
    client_id: str, challenge: str, scope: str, **overrides: str
) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-" + secrets.token_hex(4),
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden inputs of the sign-in form, as a browser would post them back."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def redirected(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    return {name: values[0] for name, values in parse_qs(parts.query).items()}


def sign_in(
    client: TestClient, params: dict[str, str], username: str, password: str = PASSWORD
) -> Any:
    page = client.get("/auth/authorize", params=params)
    assert page.status_code == 200, page.text
    form = {**hidden_fields(page.text), "username": username, "password": password}
    return client.post("/auth/authorize", data=form, follow_redirects=False)


def user_token(
    client: TestClient, client_id: str, username: str, scope: str, **overrides: str
) -> dict[str, Any]:
    """The authorisation code flow with PKCE, end to end: the token response."""
    verifier, challenge = pkce()
    params = authorize_params(client_id, challenge, scope, **overrides)
    answer = sign_in(client, params, username)
    assert answer.status_code == 303, answer.text
    code = redirected(answer.headers["location"])["code"]
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def verified_id_token(
    get_json: Callable[[str], Any], id_token: str, client_id: str, nonce: str
) -> dict[str, Any]:
    """The ID token's claims, checked as an OpenID Connect relying party checks them (Core
    §3.1.3.7), through nothing but what the provider publishes: its discovery document at
    the token's ``iss`` + /.well-known/openid-configuration (SMART App Launch 2.0), whose
    ``issuer`` must be that ``iss``; the key its ``jwks_uri`` lists under the token's kid,
    with an algorithm the document announces; ``iss``, ``aud``, ``nonce`` and ``exp``."""
    signed = jws.extract_compact(id_token.encode())
    issuer = json.loads(signed.payload)["iss"]
    provider = get_json(issuer + "/.well-known/openid-configuration")
    assert provider["issuer"] == issuer
    algorithm = signed.headers()["alg"]
    assert algorithm in provider["id_token_signing_alg_values_supported"]
    keys = KeySet.import_key_set(get_json(provider["jwks_uri"]))
    token = jwt.decode(id_token, keys, algorithms=[algorithm])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        nonce={"essential": True, "value": nonce},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    ).validate(token.claims)
    claims: dict[str, Any] = token.claims
    return claims


# -- an external OpenID Connect issuer ------------------------------------------------

HOSPITAL = "https://idp.hospital.example"


class Jwks:
    """A JWKS served over HTTP on a free loopback port; ``keys`` can be changed live."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps(
                    {
                        "keys": [
                            {**k.as_dict(private=False), "kid": k.thumbprint()} for k in outer.keys
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hospital_token(key: Key, alg: str = "RS256", **claims: Any) -> str:
    """A token the hospital's identity provider (``HOSPITAL``) signs with ``key``: a nurse's,
    unless ``claims`` say otherwise."""
    now = int(time.time())
    base = {
        "iss": HOSPITAL,
        "aud": FHIR_BASE,
        "sub": "nurse-17",
        "azp": "ehr",
        "scp": ["user/Observation.rs", "user/Patient.rs"],
        "fhirUser": "Practitioner/17",
        "purpose_of_use": "TREAT",
        "iat": now,
        "exp": now + 120,
    }
    return jwt.encode(
        {"alg": alg, "kid": key.thumbprint()}, {**base, **claims}, key, algorithms=[alg]
    )
