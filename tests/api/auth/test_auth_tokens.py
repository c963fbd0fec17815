"""The authentication middleware: every way a bearer token fails is a 401 with
WWW-Authenticate and an OperationOutcome; what stays open; tokens of an external
OpenID Connect issuer, checked by its JWKS served from a small local server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey
from smart import FHIR_BASE, HOSPITAL, Jwks, authority_at, client_for, hospital_token
from starlette.requests import Request
from starlette.testclient import TestClient

from coffre.api.auth import Authority
from coffre.api.auth import authority as authority_module
from coffre.api.auth.external import ExternalIssuer, IssuerUnavailable, JwksCache, fetch_json
from coffre.api.auth.onetime import OneTime
from coffre.api.auth.tokens import LEEWAY_SECONDS, InvalidToken, peek
from coffre.service import RecordStore

ISSUER = "http://testserver/auth"


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return authority_at(tmp_path)


@pytest.fixture
def client(records: RecordStore, authority: Authority) -> Iterator[TestClient]:
    with client_for(records, authority) as test_client:
        yield test_client


def _token(authority: Authority, lifetime: int = 300, **claims: Any) -> str:
    base = {
        "iss": ISSUER,
        "aud": FHIR_BASE,
        "sub": "alice",
        "client_id": "portal",
        "scope": "patient/*.rs",
        "patient": "alice",
        "fhirUser": "Patient/alice",
    }
    return authority.signer.sign({**base, **claims}, lifetime)


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return ".".join((header, payload, signature[:10] + flipped + signature[11:]))


def _other_issuers_token(authority: Authority) -> str:
    key = ECKey.generate_key("P-256", private=True)
    claims = {
        "iss": "https://evil.example",
        "aud": FHIR_BASE,
        "sub": "x",
        "exp": int(time.time()) + 60,
    }
    return jwt.encode({"alg": "ES256"}, claims, key)


def _forged_payload(authority: Authority) -> str:
    header, _, signature = _token(authority).split(".")
    _, payload, _ = _token(authority, scope="system/*.cruds").split(".")
    return ".".join((header, payload, signature))


CASES = {
    "expired": (lambda a: _token(a, lifetime=-120), "expired", "expired"),
    "tampered signature": (lambda a: _tamper(_token(a)), "signature", "security"),
    "payload swapped": (_forged_payload, "signature", "security"),
    "wrong audience": (lambda a: _token(a, aud="https://other.example/fhir"), "aud", "security"),
    "unknown issuer": (_other_issuers_token, "issuer", "security"),
    "malformed": (lambda a: "not-a-jwt", "well-formed", "security"),
    "no subject": (lambda a: _token(a, sub=None), "sub", "security"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_token_is_a_401_saying_why(
    client: TestClient, authority: Authority, case: str
) -> None:
    make, described, code = CASES[case]
    response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {make(authority)}"})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="coffre", error="invalid_token", error_description="')
    assert described in challenge
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_no_token_is_a_401_without_an_error_code(client: TestClient) -> None:
    response = client.get("/fhir/Patient/alice")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="coffre"'
    assert response.json()["issue"][0]["code"] == "login"


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer   "])
def test_an_authorization_header_that_is_not_a_bearer_token_is_a_401(
    client: TestClient, header: str
) -> None:
    response = client.get("/fhir/Patient", headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_two_authorization_headers_are_a_401_whichever_comes_first(
    client: TestClient, authority: Authority
) -> None:
    """The first was taken: a proxy that adds its own before the client's would have
    had the client's request run with the proxy's rights (RFC 6750 §2: one method)."""
    token = f"Bearer {_token(authority)}"
    headers = [("Authorization", token), ("Authorization", token)]
    response = client.get("/fhir/Patient", headers=headers)
    assert response.status_code == 401
    assert "one Authorization header" in response.json()["issue"][0]["diagnostics"]


def test_a_valid_token_passes(client: TestClient, authority: Authority) -> None:
    response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {_token(authority)}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/fhir/metadata", "/fhir/.well-known/smart-configuration", "/ledger/key", "/auth/jwks"],
)
def test_discovery_and_the_ledger_stay_open(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_a_path_that_merely_starts_like_the_base_is_not_let_through(client: TestClient) -> None:
    assert client.get("/fhir/metadata/../Patient").status_code in (401, 404)
    assert client.get("/fhir/.well-known-not/x").status_code == 401


def test_with_auth_off_no_token_passes_but_a_bad_one_is_refused(
    records: RecordStore, tmp_path: Path
) -> None:
    authority = authority_at(tmp_path, mode="off")
    with client_for(records, authority) as client:
        assert client.get("/fhir/Patient").status_code == 200
        expired = _token(authority, lifetime=-120)
        assert (
            client.get("/fhir/Patient", headers={"Authorization": f"Bearer {expired}"}).status_code
            == 401
        )
        # tokens are not required: fhirclient must take the server for an open one
        assert "security" not in client.get("/fhir/metadata").json()["rest"][0]


def test_peek_refuses_a_payload_that_is_not_an_object() -> None:
    key = ECKey.generate_key("P-256", private=True)
    signed = jws.serialize_compact({"alg": "ES256"}, b"[1, 2]", key)
    with pytest.raises(InvalidToken):
        peek(signed)


@pytest.mark.parametrize(
    "payload", [b"[" * 3000 + b"]" * 3000, b'{"a":' * 3000 + b"1" + b"}" * 3000]
)
def test_a_payload_nested_too_deep_is_no_well_formed_jwt_not_a_500(
    client: TestClient, payload: bytes
) -> None:
    """Anyone could send one, with no key: Python's JSON parser ran out of stack."""
    key = ECKey.generate_key("P-256", private=True)
    signed = jws.serialize_compact({"alg": "ES256"}, payload, key)
    with pytest.raises(InvalidToken):
        peek(signed)
    answer = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {signed}"})
    assert answer.status_code == 401, answer.text


def test_a_lone_surrogate_is_remembered_as_any_other_one_time_value(tmp_path: Path) -> None:
    """A client assertion's jti of "\\ud800x" was a 500 at the token endpoint."""
    seen = OneTime(tmp_path / "seen.sqlite")
    assert seen.first_use("lab\x1f\ud800x", time.time() + 60)
    assert not seen.first_use("lab\x1f\ud800x", time.time() + 60)


# -- an external OpenID Connect issuer ------------------------------------------------


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    yield served
    served.close()


def _with_hospital(
    records: RecordStore, tmp_path: Path, jwks: Jwks, min_interval: float
) -> TestClient:
    authority = authority_at(tmp_path)
    authority.external = ExternalIssuer(HOSPITAL, JwksCache(jwks.url, min_interval=min_interval))
    return client_for(records, authority)


def test_a_token_of_the_trusted_hospital_issuer_is_accepted(
    records: RecordStore, tmp_path: Path, jwks: Jwks
) -> None:
    key = RSAKey.generate_key(2048, private=True)
    jwks.keys = [key]
    with _with_hospital(records, tmp_path, jwks, 60) as client:
        headers = {"Authorization": f"Bearer {hospital_token(key)}"}
        assert client.get("/fhir/Patient", headers=headers).status_code == 200
        assert client.get("/fhir/Patient", headers=headers).status_code == 200
        assert jwks.requests == 1  # cached
        wrong = {"Authorization": f"Bearer {hospital_token(key, aud='https://x.example')}"}
        assert client.get("/fhir/Patient", headers=wrong).status_code == 401
        forged = {
            "Authorization": f"Bearer {hospital_token(RSAKey.generate_key(2048, private=True))}"
        }
        assert client.get("/fhir/Patient", headers=forged).status_code == 401


def test_a_rotated_key_is_fetched_but_never_more_than_the_bound_allows(
    records: RecordStore, tmp_path: Path, jwks: Jwks
) -> None:
    old, new = ECKey.generate_key("P-256", private=True), ECKey.generate_key("P-256", private=True)
    jwks.keys = [old]
    with _with_hospital(records, tmp_path, jwks, 3600) as client:
        assert (
            client.get(
                "/fhir/Patient",
                headers={"Authorization": f"Bearer {hospital_token(old, 'ES256')}"},
            ).status_code
            == 200
        )
        jwks.keys = [new]
        for _ in range(3):
            rotated = {"Authorization": f"Bearer {hospital_token(new, 'ES256')}"}
            assert client.get("/fhir/Patient", headers=rotated).status_code == 401
        assert jwks.requests == 1  # within the bound: no fetch per unknown kid
    (tmp_path / "again").mkdir()
    with _with_hospital(records, tmp_path / "again", jwks, 0) as client:
        assert client.get("/fhir/Patient", headers=rotated).status_code == 200


def _nurse_caring_for_p1(records: RecordStore, jwks: Jwks, patients: list[str]) -> RSAKey:
    """The hospital's signing key, published; ``patients`` written, and an encounter of p1
    with the hospital's nurse, Practitioner/17."""
    key = RSAKey.generate_key(2048, private=True)
    jwks.keys = [key]
    care = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "in-progress",
        "class": {"code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "participant": [{"individual": {"reference": "Practitioner/17"}}],
    }
    with records.writer() as writer:
        for patient in patients:
            writer.update("Patient", patient, {"resourceType": "Patient", "id": patient})
        writer.update("Encounter", "e1", care)
    return key


def test_the_hospitals_token_names_the_nurse_and_purpose_in_the_audit_log(
    records: RecordStore, tmp_path: Path, jwks: Jwks
) -> None:
    key = _nurse_caring_for_p1(records, jwks, ["p1"])
    with _with_hospital(records, tmp_path, jwks, 60) as client:
        headers = {"Authorization": f"Bearer {hospital_token(key)}"}
        assert client.get("/fhir/Patient/p1", headers=headers).status_code == 200
        events = records.access_history("p1")
        event = next(e for e in events if e["agent"][0]["who"].get("reference"))
        assert event["agent"][0]["who"]["display"] == "Practitioner/17 (clinician, via client ehr)"
        assert event["agent"][0]["who"]["reference"] == "Practitioner/17"
        assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"


@pytest.mark.parametrize(
    ("who", "status"),
    [
        # SMART writes fhirUser as a URL: the nurse is a clinician all the same, and
        # reaches the patient she cares for only.
        ({"fhirUser": f"{HOSPITAL}/fhir/Practitioner/17"}, {"p1": 200, "p2": 404}),
        # Neither a role nor a fhirUser that says one: user scopes reach no patient.
        ({"fhirUser": None}, {"p1": 403, "p2": 403}),
        ({"fhirUser": "RelatedPerson/9"}, {"p1": 403, "p2": 403}),
    ],
)
def test_a_hospital_token_without_a_role_it_names_reaches_no_more_than_a_clinician(
    records: RecordStore, tmp_path: Path, jwks: Jwks, who: dict[str, Any], status: dict[str, int]
) -> None:
    key = _nurse_caring_for_p1(records, jwks, list(status))
    token = hospital_token(key, **who)
    with _with_hospital(records, tmp_path, jwks, 60) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for patient, expected in status.items():
            response = client.get(f"/fhir/Patient/{patient}", headers=headers)
            assert response.status_code == expected, response.text


@pytest.mark.parametrize("fhir_user", ["Practitioner/17", "Patient/p1"])
def test_a_persons_token_with_system_scopes_reaches_no_further_than_a_persons(
    records: RecordStore, tmp_path: Path, jwks: Jwks, fhir_user: str
) -> None:
    """An identity provider's default client scope gave a nurse, or a patient, system/*.rs:
    read as a backend service's, it opened every record, care relationship or not."""
    key = _nurse_caring_for_p1(records, jwks, ["p1", "p2"])
    token = hospital_token(key, fhirUser=fhir_user, scp=["system/*.rs"])
    with _with_hospital(records, tmp_path, jwks, 60) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for path in ("Patient/p2", "Patient?_count=1"):
            assert client.get(f"/fhir/{path}", headers=headers).status_code == 403


def test_an_unreachable_issuer_is_a_503_not_a_verdict_on_the_token(
    records: RecordStore, tmp_path: Path
) -> None:
    authority = authority_at(tmp_path)
    authority.external = ExternalIssuer(
        HOSPITAL, JwksCache("http://127.0.0.1:9/jwks", min_interval=0)
    )
    key = RSAKey.generate_key(2048, private=True)
    with client_for(records, authority) as client:
        response = client.get(
            "/fhir/Patient", headers={"Authorization": f"Bearer {hospital_token(key)}"}
        )
        assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_an_issuer_publishing_private_keys_is_not_trusted() -> None:
    key = ECKey.generate_key("P-256", private=True)

    async def fetch(url: str) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=True)]}

    cache = JwksCache("https://idp.example/jwks", min_interval=0, fetch=fetch)
    with pytest.raises(IssuerUnavailable):
        asyncio.run(cache.keys(None))


def test_fetch_json_reads_the_served_jwks(jwks: Jwks) -> None:
    jwks.keys = [ECKey.generate_key("P-256")]
    assert len(asyncio.run(fetch_json(jwks.url))["keys"]) == 1


def _request() -> Request:
    return Request({"type": "http", "headers": [(b"host", b"testserver")], "scheme": "http"})


def test_a_verified_token_is_remembered_until_it_expires(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token(authority, lifetime=60)
    principal = asyncio.run(authority.authenticate(token, _request()))
    assert principal.patient == "alice"

    def never(token: str) -> None:
        raise AssertionError("a remembered token is not parsed again")

    monkeypatch.setattr(authority_module, "peek", never)
    assert asyncio.run(authority.authenticate(token, _request())) == principal
    monkeypatch.undo()
    later = time.time() + 60 + LEEWAY_SECONDS + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        asyncio.run(authority.authenticate(token, _request()))


def test_remembered_tokens_are_bounded(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authority_module, "VERIFIED_TOKENS_KEPT", 3)
    for _ in range(10):
        asyncio.run(authority.authenticate(_token(authority), _request()))
    assert len(authority._verified) < 3 + 1
