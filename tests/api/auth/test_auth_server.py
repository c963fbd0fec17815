"""The built-in authorisation server, end to end: SMART discovery, Backend Services with
real RSA and EC keys, the authorisation code with PKCE through the sign-in form, and
each way a request for a token is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FHIR_JSON
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet
from smart import (
    FHIR_BASE,
    PASSWORD,
    REDIRECT,
    TOKEN_URL,
    assertion,
    authority_at,
    authorize_params,
    backend_form,
    client_for,
    hidden_fields,
    pkce,
    redirected,
    register_app,
    register_backend,
    register_user,
    rsa_key,
    sign_in,
    user_token,
    verified_id_token,
)
from starlette.testclient import TestClient

from coffre.api.auth import Authority
from coffre.api.auth.signin import sign_in_page
from coffre.api.auth.throttle import FIRST_WAIT_SECONDS, FREE_FAILURES_PER_NAME
from coffre.service import RecordStore


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return authority_at(tmp_path)


@pytest.fixture
def client(records: RecordStore, authority: Authority) -> Iterator[TestClient]:
    with client_for(records, authority) as test_client:
        yield test_client


def _claims(authority: Authority, token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, authority.signer.public, algorithms=["ES256"]).claims
    return claims


# -- discovery ------------------------------------------------------------------------


def test_smart_configuration_names_the_endpoints_and_what_they_support(client: TestClient) -> None:
    config = client.get("/fhir/.well-known/smart-configuration").json()
    assert config["issuer"] == "http://testserver/auth"
    assert config["token_endpoint"] == TOKEN_URL
    assert config["authorization_endpoint"] == "http://testserver/auth/authorize"
    assert config["jwks_uri"] == "http://testserver/auth/jwks"
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert "permission-v2" in config["capabilities"]


def test_the_jwks_publishes_the_public_keys_only(client: TestClient, authority: Authority) -> None:
    keys = client.get("/auth/jwks").json()["keys"]
    assert [(key["kid"], key["alg"], key["kty"]) for key in keys] == [
        (authority.signer.kid, "ES256", "EC"),
        (authority.id_signer.kid, "RS256", "RSA"),
    ]
    assert all(private not in key for key in keys for private in ("d", "p", "q", "dp", "qi"))


def test_openid_connect_discovery_is_served_under_the_issuer(client: TestClient) -> None:
    """Discovery 1.0 §4: at the issuer + /.well-known/openid-configuration, with every field
    it requires, RS256 among the ID token's algorithms (§3, Core §15.1), and what SMART's
    document says of the same server."""
    issuer = client.get("/fhir/.well-known/smart-configuration").json()["issuer"]
    answer = client.get(issuer + "/.well-known/openid-configuration")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    config = answer.json()
    assert config["issuer"] == issuer == "http://testserver/auth"
    assert config["authorization_endpoint"] == issuer + "/authorize"
    assert config["token_endpoint"] == TOKEN_URL
    assert config["jwks_uri"] == issuer + "/jwks"
    assert config["response_types_supported"] == ["code"]
    assert config["subject_types_supported"] == ["public"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "openid" in config["scopes_supported"] and "fhirUser" in config["scopes_supported"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert {"sub", "aud", "nonce", "fhirUser"} <= set(config["claims_supported"])
    assert config["request_uri_parameter_supported"] is False  # true when left out
    assert "userinfo_endpoint" not in config  # there is none


def test_the_capability_statement_points_fhirclient_at_the_oauth_endpoints(
    client: TestClient,
) -> None:
    security = client.get("/fhir/metadata").json()["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {"authorize": "http://testserver/auth/authorize", "token": TOKEN_URL}
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["cors"] is True


def test_fhirclient_finds_the_oauth_endpoints(client: TestClient) -> None:
    from fhirclient.server import FHIRServer

    class Session:
        def get(self, url: str, **kwargs: Any) -> Any:
            return client.get(url.replace(FHIR_BASE, "/fhir"), headers=kwargs.get("headers"))

    server = FHIRServer(None, base_uri=FHIR_BASE + "/")
    server.session = Session()
    server.get_capability()
    assert server.auth.auth_type == "oauth2"
    assert server.auth._authorize_uri == "http://testserver/auth/authorize"
    assert server.auth._token_uri == TOKEN_URL


# -- SMART Backend Services -----------------------------------------------------------


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [(rsa_key, "RS384"), (lambda: ECKey.generate_key("P-384", private=True), "ES384")],
)
def test_a_backend_service_gets_a_token_and_uses_it(
    client: TestClient, authority: Authority, make_key: Any, alg: str
) -> None:
    key: Key = make_key()
    register_backend(authority, "lab", key, "system/Patient.rs system/Observation.cruds")
    response = client.post(
        "/auth/token", data=backend_form(assertion(key, "lab", alg), "system/*.rs user/*.rs openid")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/Observation.rs system/Patient.rs"
    assert response.headers["cache-control"] == "no-store"
    claims = _claims(authority, body["access_token"])
    assert claims["aud"] == FHIR_BASE and claims["iss"] == "http://testserver/auth"
    assert claims["sub"] == claims["client_id"] == "lab"
    assert claims["scope"] == body["scope"] and claims["exp"] - claims["iat"] == 300
    assert claims["jti"]
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/fhir/Patient", headers=headers).status_code == 200


def _refused(client: TestClient, form: dict[str, str]) -> tuple[int, str, str]:
    response = client.post("/auth/token", data=form)
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


@pytest.fixture
def lab_key(authority: Authority) -> Key:
    key = rsa_key()
    register_backend(authority, "lab", key, "system/*.rs")
    return key


@pytest.mark.parametrize(
    ("overrides", "described"),
    [
        ({"aud": FHIR_BASE}, "aud"),
        ({"exp": int(time.time()) + 900}, "within 5 minutes"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"sub": "someone-else"}, "sub"),
        ({"iss": "nobody"}, "no backend client"),
        ({"jti": None}, "jti"),
    ],
)
def test_a_client_assertion_that_does_not_hold_is_refused(
    client: TestClient, lab_key: Key, overrides: dict[str, Any], described: str
) -> None:
    signed = assertion(lab_key, "lab", "RS384", **overrides)
    status, error, description = _refused(client, backend_form(signed))
    assert (status, error) == (401, "invalid_client")
    assert described in description


def test_a_client_assertion_is_used_once(client: TestClient, lab_key: Key) -> None:
    form = backend_form(assertion(lab_key, "lab", "RS384"))
    assert client.post("/auth/token", data=form).status_code == 200
    assert _refused(client, form)[:2] == (401, "invalid_client")


def test_an_assertion_signed_by_another_key_is_refused(client: TestClient, lab_key: Key) -> None:
    status, error, description = _refused(
        client, backend_form(assertion(rsa_key(), "lab", "RS384"))
    )
    assert (status, error) == (401, "invalid_client")
    assert "signature" in description


def test_an_assertion_with_a_shared_secret_algorithm_is_refused(
    client: TestClient, lab_key: Key
) -> None:
    from joserfc.jwk import OctKey

    secret = OctKey.generate_key(256)
    claims = {
        "iss": "lab",
        "sub": "lab",
        "aud": TOKEN_URL,
        "exp": int(time.time()) + 60,
        "jti": "x",
    }
    signed = jwt.encode({"alg": "HS256"}, claims, secret)
    assert _refused(client, backend_form(signed))[:2] == (401, "invalid_client")


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"scope": "system/Patient.c"}, 400, "invalid_scope"),
        ({"scope": "patient/*.rs"}, 400, "invalid_scope"),
        ({"client_assertion_type": "password"}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_assertion": "not.a.jwt"}, 401, "invalid_client"),
    ],
)
def test_a_token_request_that_cannot_be_granted_is_refused(
    client: TestClient, lab_key: Key, change: dict[str, str], status: int, error: str
) -> None:
    form = {**backend_form(assertion(lab_key, "lab", "RS384")), **change}
    assert _refused(client, form)[:2] == (status, error)


def test_a_request_without_grant_type_is_an_invalid_request(client: TestClient) -> None:
    """RFC 6749 §5.2: a missing parameter is invalid_request, not an unsupported grant."""
    status, error, description = _refused(client, {"scope": "system/*.rs"})
    assert (status, error) == (400, "invalid_request") and "grant_type" in description


@pytest.mark.parametrize("scope", ["system/*.", "system/Patient.rwx", "\x00"])
def test_a_scope_coffre_cannot_read_is_named_in_the_refusal(
    client: TestClient, lab_key: Key, scope: str
) -> None:
    form = {**backend_form(assertion(lab_key, "lab", "RS384")), "scope": scope}
    status, error, description = _refused(client, form)
    assert (status, error) == (400, "invalid_scope")
    assert f"not understood: {scope!r}" in description


def test_a_repeated_form_parameter_is_refused(client: TestClient) -> None:
    response = client.post(
        "/auth/token",
        content="grant_type=client_credentials&grant_type=authorization_code",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


# -- authorisation code with PKCE -----------------------------------------------------


@pytest.fixture
def portal(authority: Authority) -> str:
    register_app(
        authority, "portal", "launch/patient openid fhirUser offline_access patient/*.rs user/*.rs"
    )
    register_user(authority, "alice", "patient", "Patient/alice")
    register_user(authority, "dr", "clinician", "Practitioner/dr")
    return "portal"


def test_a_patient_signs_in_and_gets_a_token_in_their_own_context(
    client: TestClient, authority: Authority, portal: str
) -> None:
    body = user_token(
        client,
        portal,
        "alice",
        "launch/patient openid fhirUser offline_access patient/*.rs system/*.rs",
    )
    assert body["patient"] == "alice"
    assert body["scope"] == "fhirUser launch/patient openid patient/*.rs"
    claims = _claims(authority, body["access_token"])
    assert (claims["sub"], claims["fhirUser"], claims["patient"], claims["role"]) == (
        "alice",
        "Patient/alice",
        "alice",
        "patient",
    )
    identity = jwt.decode(body["id_token"], authority.id_signer.public, algorithms=["RS256"]).claims
    assert identity["aud"] == portal and identity["fhirUser"] == "Patient/alice"


def test_a_relying_party_checks_the_id_token_with_what_the_server_publishes(
    client: TestClient, portal: str
) -> None:
    """The ID token through the real flow, checked as a relying party would: the key and
    algorithm found through discovery at its issuer, RS256; the access token still ES256,
    under the other key of the same JWKS."""
    body = user_token(
        client, portal, "alice", "openid fhirUser launch/patient patient/*.rs", nonce="n-0S6"
    )
    identity = verified_id_token(
        lambda url: client.get(url).json(), body["id_token"], portal, "n-0S6"
    )
    assert (identity["sub"], identity["fhirUser"]) == ("alice", "Patient/alice")
    assert jws.extract_compact(body["id_token"].encode()).headers()["alg"] == "RS256"
    keys = KeySet.import_key_set(client.get("/auth/jwks").json())
    access = jwt.decode(body["access_token"], keys, algorithms=["ES256"])
    assert access.header["alg"] == "ES256" and access.claims["patient"] == "alice"
    with pytest.raises(JoseError):  # the ID token is no ES256 token
        jwt.decode(body["id_token"], keys, algorithms=["ES256"])
    as_bearer = {"Authorization": f"Bearer {body['id_token']}"}
    assert client.get("/fhir/Patient/alice", headers=as_bearer).status_code == 401


@pytest.mark.parametrize(
    ("origin", "signed_in"),
    [(None, True), ("http://testserver", True), ("https://evil.example", False), ("null", False)],
)
def test_the_sign_in_form_is_taken_from_this_server_only(
    client: TestClient, portal: str, origin: str | None, signed_in: bool
) -> None:
    """Posted from another site, it would sign the browser in as that site chose (the
    attacker's account) and send it on to the app with a code."""
    _verifier, challenge = pkce()
    params = authorize_params(portal, challenge, "launch/patient patient/*.rs")
    page = client.get("/auth/authorize", params=params)
    form = {**hidden_fields(page.text), "username": "alice", "password": PASSWORD}
    headers = {} if origin is None else {"Origin": origin}

    answer = client.post("/auth/authorize", data=form, headers=headers, follow_redirects=False)

    assert (answer.status_code == 303) is signed_in, answer.text
    if not signed_in:
        assert "another site" in answer.text and "location" not in answer.headers


def test_a_clinician_gets_no_patient_context_without_a_picker(
    client: TestClient, authority: Authority, portal: str
) -> None:
    body = user_token(client, portal, "dr", "launch/patient patient/*.rs user/*.rs")
    assert "patient" not in body
    assert body["scope"] == "user/*.rs"
    assert _claims(authority, body["access_token"])["fhirUser"] == "Practitioner/dr"


def test_the_sign_in_page_is_labelled_in_english_and_french(
    client: TestClient, portal: str
) -> None:
    params = authorize_params(portal, pkce()[1], "patient/*.rs")
    english = client.get("/auth/authorize", params=params)
    assert english.status_code == 200
    assert '<html lang="en">' in english.text
    assert '<label for="username">User name</label>' in english.text
    assert '<label for="password">Password</label>' in english.text
    assert "Mon portail" in english.text
    assert "frame-ancestors 'none'" in english.headers["content-security-policy"]
    french = client.get("/auth/authorize", params=params, headers={"Accept-Language": "fr-CA,fr"})
    assert '<html lang="fr">' in french.text
    assert '<label for="password">Mot de passe</label>' in french.text
    assert "Connexion" in client.get("/auth/authorize", params={**params, "lang": "fr"}).text


def test_a_wrong_password_gives_no_code(client: TestClient, portal: str) -> None:
    params = authorize_params(portal, pkce()[1], "patient/*.rs")
    answer = sign_in(client, params, "alice", PASSWORD + "?")
    assert answer.status_code == 401
    assert 'role="alert"' in answer.text and "location" not in answer.headers
    assert hidden_fields(answer.text)["state"] == params["state"]
    assert sign_in(client, params, "nobody").status_code == 401


def _code(client: TestClient, portal: str) -> tuple[str, str]:
    verifier, challenge = pkce()
    answer = sign_in(
        client, authorize_params(portal, challenge, "patient/*.rs launch/patient"), "alice"
    )
    return redirected(answer.headers["location"])["code"], verifier


def _exchange(client: TestClient, **form: str) -> tuple[int, str]:
    response = client.post("/auth/token", data={"grant_type": "authorization_code", **form})
    return response.status_code, response.json().get("error", "")


def test_a_code_is_redeemed_once(client: TestClient, portal: str) -> None:
    code, verifier = _code(client, portal)
    form = {"code": code, "redirect_uri": REDIRECT, "client_id": portal, "code_verifier": verifier}
    assert _exchange(client, **form) == (200, "")
    assert _exchange(client, **form) == (400, "invalid_grant")


def test_a_code_presented_again_revokes_the_token_it_gave_in_every_process(
    records: RecordStore, tmp_path: Path, portal: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6749 §4.1.2: a code used twice was stolen or replayed, and the token it gave
    may be in the wrong hands. Another gateway process (a second authority over the same
    files and key) hears of it too, though it had verified the token before."""
    key = ECKey.generate_key("P-256", private=True).as_dict(private=True)
    first, second = (authority_at(tmp_path, signing_jwk=key) for _ in range(2))
    with client_for(records, first) as client, client_for(records, second) as other:
        code, verifier = _code(client, portal)
        form = {"code": code, "redirect_uri": REDIRECT, "client_id": portal}
        form["code_verifier"] = verifier
        token = client.post("/auth/token", data={"grant_type": "authorization_code", **form})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert client.get("/fhir/Patient/alice", headers=headers).status_code == 404
        assert other.get("/fhir/Patient/alice", headers=headers).status_code == 404

        again = client.post("/auth/token", data={"grant_type": "authorization_code", **form})

        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        assert "revoked" in again.json()["error_description"]
        assert "code was presented again (client_id 'portal'" in caplog.text
        for gateway in (client, other):
            refused = gateway.get("/fhir/Patient/alice", headers=headers)
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]
            assert "revoked" in refused.headers["www-authenticate"]


def test_a_token_stays_good_while_its_code_is_not_presented_again(
    client: TestClient, portal: str
) -> None:
    """Neither a made-up code nor another code's second use revokes this token."""
    code, verifier = _code(client, portal)
    form = {"code": code, "redirect_uri": REDIRECT, "client_id": portal, "code_verifier": verifier}
    token = client.post("/auth/token", data={"grant_type": "authorization_code", **form})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    other_code, other_verifier = _code(client, portal)
    other = {**form, "code": other_code, "code_verifier": other_verifier}
    assert _exchange(client, **other) == (200, "")
    assert _exchange(client, **other) == (400, "invalid_grant")
    assert _exchange(client, **{**form, "code": "made-up"}) == (400, "invalid_grant")
    assert client.get("/fhir/Patient/alice", headers=headers).status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"code_verifier": "x" * 64},
        {"redirect_uri": REDIRECT + "/other"},
        {"client_id": "another"},
    ],
)
def test_a_code_is_bound_to_its_verifier_client_and_redirect(
    client: TestClient, portal: str, change: dict[str, str]
) -> None:
    code, verifier = _code(client, portal)
    form = {"code": code, "redirect_uri": REDIRECT, "client_id": portal, "code_verifier": verifier}
    assert _exchange(client, **{**form, **change}) == (400, "invalid_grant")
    # a misused code is spent: the rightful exchange fails too
    assert _exchange(client, **form) == (400, "invalid_grant")


def test_a_made_up_code_is_refused(client: TestClient, portal: str) -> None:
    form = {
        "code": "made-up",
        "redirect_uri": REDIRECT,
        "client_id": portal,
        "code_verifier": "x" * 64,
    }
    assert _exchange(client, **form) == (400, "invalid_grant")


def test_a_code_expires(client: TestClient, authority: Authority, portal: str) -> None:
    code, verifier = _code(client, portal)
    grant = authority.onetime.take_code(code, "unused", time.time() + 60)
    assert grant is not None
    authority.onetime.put_code(code, grant, time.time() - 1)
    form = {"code": code, "redirect_uri": REDIRECT, "client_id": portal, "code_verifier": verifier}
    assert _exchange(client, **form) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "é" * 43}, "invalid_request"),
        ({"code_challenge": "A" * 42}, "invalid_request"),
        ({"code_challenge": "A" * 44}, "invalid_request"),
        ({"code_challenge": "A" * 42 + "="}, "invalid_request"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_an_authorisation_request_without_pkce_or_for_another_server_goes_back_with_an_error(
    client: TestClient, portal: str, change: dict[str, str], error: str
) -> None:
    params = authorize_params(portal, pkce()[1], "patient/*.rs", **change)
    answer = client.get("/auth/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 303
    assert redirected(answer.headers["location"])["error"] == error
    assert redirected(answer.headers["location"])["state"] == params["state"]


@pytest.mark.parametrize(
    "change", [{"client_id": "unknown"}, {"redirect_uri": "https://attacker.example/cb"}]
)
def test_an_unknown_app_or_redirect_is_never_redirected_to(
    client: TestClient, portal: str, change: dict[str, str]
) -> None:
    params = {**authorize_params(portal, pkce()[1], "patient/*.rs"), **change}
    answer = client.get("/auth/authorize", params=params, follow_redirects=False)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert 'role="alert"' in answer.text


@pytest.mark.parametrize("repeated", ["redirect_uri", "scope", "state"])
def test_an_authorisation_request_repeating_a_parameter_is_refused_without_a_redirect(
    client: TestClient, portal: str, repeated: str
) -> None:
    """RFC 6749 §3.1: no parameter twice; which redirect or scope would be meant?"""
    params = authorize_params(portal, pkce()[1], "patient/*.rs")
    other = {"redirect_uri": "https://attacker.example/cb", "scope": "user/*.cruds"}
    pairs = [*params.items(), (repeated, other.get(repeated, "again"))]
    answer = client.get("/auth/authorize", params=pairs, follow_redirects=False)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "more than once" in answer.text and repeated in answer.text


def test_the_audit_log_names_the_person_behind_the_token(
    client: TestClient, authority: Authority, portal: str
) -> None:
    created = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "id": "alice"}, headers=FHIR_JSON
    )
    assert created.status_code == 401  # tokens are required here
    register_app(authority, "desk", "user/*.cruds")
    register_user(authority, "ops", "admin", "Practitioner/ops")  # no care relationship needed
    body = user_token(client, "desk", "ops", "user/*.cruds")
    headers = {**FHIR_JSON, "Authorization": f"Bearer {body['access_token']}"}
    created = client.put(
        "/fhir/Patient/alice", json={"resourceType": "Patient", "id": "alice"}, headers=headers
    )
    assert created.status_code == 201, created.text
    assert client.get("/fhir/Patient/alice", headers=headers).status_code == 200
    events = client.get("/fhir/Patient/alice/$access-history", headers=headers).json()["entry"]
    agents = {e["resource"]["agent"][0]["who"]["display"] for e in events}
    assert agents == {"Practitioner/ops (admin, via client desk)"}


def test_guessing_a_password_is_slowed_down_even_for_the_right_one(
    client: TestClient, portal: str
) -> None:
    params = authorize_params(portal, pkce()[1], "patient/*.rs")
    for _ in range(FREE_FAILURES_PER_NAME):
        assert sign_in(client, params, "alice", PASSWORD + "?").status_code == 401
    answer = sign_in(client, params, "alice")
    assert answer.status_code == 429 and "location" not in answer.headers
    # the wait counts from the last failure: a slow machine may have used a second of it
    assert 0 < int(answer.headers["retry-after"]) <= FIRST_WAIT_SECONDS
    assert "try again in 1 min" in answer.text and 'role="alert"' in answer.text
    french = sign_in(client, {**params, "lang": "fr"}, "alice")
    assert french.status_code == 429 and "réessayez dans 1 min" in french.text
    assert sign_in(client, params, "dr").status_code == 303  # another name from here: free


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("https://portal.example/callback", " https://portal.example"),
        ("http://127.0.0.1:8765/cb?x=1", " http://127.0.0.1:8765"),
        ("com.example.app:/callback", " com.example.app:"),
        ("https://a.example;script-src *", ""),  # nothing a policy would read as more
        ("https://user@a.example/cb", ""),
    ],
)
def test_the_sign_in_form_may_send_the_browser_on_to_the_app_only(uri: str, allowed: str) -> None:
    """``form-action`` holds the redirect that answers the form: the app's origin, no other."""
    page = sign_in_page("en", "Mon app", {}, uri)

    policy = page.headers["content-security-policy"]
    assert f"form-action 'self'{allowed};" in policy
    assert page.headers["x-frame-options"] == "DENY"


def test_a_damaged_registry_is_a_503_and_a_log_line_naming_it(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Edited by hand into a shape Coffre cannot read, it was a bare 500 whose log line
    said only 'unexpected RegistryError'."""
    (tmp_path / "keyring.access.json").write_text('{"clients": {"lab": {"kind": "x"}}}')
    for path, headers in (
        ("/auth/authorize?client_id=portal", {}),
        ("/fhir/metadata", {"Origin": "https://app.example"}),
    ):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 503, answer.text
        assert "registry of apps and users cannot be read" in answer.text
    assert "keyring.access.json is damaged" in caplog.text
