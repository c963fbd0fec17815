"""Against `coffre serve` with two worker processes and tokens required: a backend service
and fhirclient (which finds the OAuth endpoints through the CapabilityStatement) get
tokens and use them; what is single-use stays so across processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from conftest import RunningServer
from fhirclient import client as fhirclient
from joserfc.jwk import ECKey
from smart import PASSWORD, REDIRECT, backend_form, hidden_fields
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
