"""Against `coffre serve` with two worker processes and tokens required: a backend service
and fhirclient (which finds the OAuth endpoints through the CapabilityStatement) get
tokens and use them; what is single-use stays so across processes; an app's ID token
checks against what every process publishes, and still does after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from conftest import RunningServer
from fhirclient import client as fhirclient
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet
from smart import (
    PASSWORD,
    REDIRECT,
    authorize_params,
    backend_form,
    hidden_fields,
    pkce,
    redirected,
    verified_id_token,
)
from smart import assertion as signed_assertion

from coffre.api.auth.registry import access_file, app_client, backend_client, load, new_user, save
from coffre.service import Vault

KEY = ECKey.generate_key("P-384", private=True)


@pytest.fixture
def server(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    path = access_file(vault.keyring)
    registry = load(path)
    public = {**KEY.as_dict(private=False), "kid": KEY.thumbprint()}
    clients = {
        "lab": backend_client("lab", json.dumps(public), "system/*.cruds"),
        "portal": app_client(
            "portal", [REDIRECT], "launch/patient openid fhirUser patient/*.rs user/*.rs"
        ),
    }
    users = {"alice": new_user("alice", "patient", "Patient/alice", PASSWORD)}
    save(path, replace(registry, clients=clients, users=users))
    monkeypatch.setenv("COFFRE_AUTH", "required")
    running = RunningServer(vault, workers=2)
    yield running
    running.stop()


def _id_token(server: RunningServer, nonce: str) -> str:
    """Alice signs in to the portal, which exchanges its code: the ID token it gets."""
    verifier, challenge = pkce()
    params = authorize_params("portal", challenge, "openid fhirUser launch/patient", nonce=nonce)
    authorize_url = server.base_url.removesuffix("/fhir") + "/auth/authorize"
    page = httpx.get(authorize_url, params={**params, "aud": server.base_url})
    form = {**hidden_fields(page.text), "username": "alice", "password": PASSWORD}
    code = redirected(httpx.post(authorize_url, data=form).headers["location"])["code"]
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "portal",
        "code_verifier": verifier,
    }
    token: str = httpx.post(_token_url(server), data=exchange).json()["id_token"]
    return token


def test_an_id_token_checks_against_every_process_and_after_a_restart(
    server: RunningServer,
) -> None:
    """The ID-token key is the vault's, not a process's: each worker publishes the one the
    first made, and a restarted server the same, so that a token signed by one checks
    against the keys any other hands out."""
    token = _id_token(server, "n-1")
    for _ in range(4):  # whichever worker answers the relying party
        claims = verified_id_token(lambda url: httpx.get(url).json(), token, "portal", "n-1")
        assert claims["fhirUser"] == "Patient/alice"
    server.stop()
    restarted = RunningServer(server.vault, workers=2)  # on another port: another issuer URL
    try:
        again = _id_token(restarted, "n-2")
        claims = verified_id_token(lambda url: httpx.get(url).json(), again, "portal", "n-2")
        assert claims["sub"] == "alice"
        jwks = httpx.get(restarted.base_url.removesuffix("/fhir") + "/auth/jwks").json()
        assert jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
        assert _kid(again) == _kid(token)
    finally:
        restarted.stop()


def _kid(token: str) -> str:
    kid: str = jws.extract_compact(token.encode()).headers()["kid"]
    return kid


def _token_url(server: RunningServer) -> str:
    return server.base_url.removesuffix("/fhir") + "/auth/token"


def test_a_backend_service_gets_a_token_and_writes_with_it(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/Patient").status_code == 401
    claims = {"aud": _token_url(server)}
    form = backend_form(signed_assertion(KEY, "lab", "ES384", **claims), "system/*.cruds")
    answers = [httpx.post(_token_url(server), data=form) for _ in range(4)]
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]  # one use, any worker
    token = next(a for a in answers if a.status_code == 200).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    put = httpx.put(
        f"{server.base_url}/Patient/alice",
        json={"resourceType": "Patient", "id": "alice", "name": [{"family": "Tremblay"}]},
        headers=headers,
    )
    assert put.status_code == 201, put.text
    for _ in range(4):  # every worker derives the same key: the token holds everywhere
        assert httpx.get(f"{server.base_url}/Patient/alice", headers=headers).status_code == 200


def test_fhirclient_signs_a_patient_in_and_reads_their_record(server: RunningServer) -> None:
    lab = backend_form(
        signed_assertion(KEY, "lab", "ES384", aud=_token_url(server)), "system/*.cruds"
    )
    token = httpx.post(_token_url(server), data=lab).json()["access_token"]
    httpx.put(
        f"{server.base_url}/Patient/alice",
        json={"resourceType": "Patient", "id": "alice", "name": [{"family": "Côté"}]},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    ).raise_for_status()

    smart = fhirclient.FHIRClient(
        settings={"app_id": "portal", "api_base": server.base_url + "/", "redirect_uri": REDIRECT}
    )
    assert not smart.prepare()  # it found the OAuth endpoints: it needs a token
    page = httpx.get(smart.authorize_url)
    assert page.status_code == 200
    form = {**hidden_fields(page.text), "username": "alice", "password": PASSWORD}
    answer = httpx.post(smart.authorize_url.split("?")[0], data=form)
    assert answer.status_code == 303
    smart.handle_callback(answer.headers["location"])
    assert smart.ready and smart.patient_id == "alice"
    assert smart.patient.name[0].family == "Côté"
