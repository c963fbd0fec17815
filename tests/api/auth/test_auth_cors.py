"""Cross-origin requests (coffre/api/auth/cors.py): the registered apps' origins may call the
API and the token endpoint from a page; no other origin may, and nothing else changes.
A real browser does it in tests/api/portal/test_portal_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from smart import authority_at, client_for, register_app
from starlette.testclient import TestClient

from coffre.api.auth import Authority
from coffre.api.auth.registry import origin_of
from coffre.service import RecordStore

APP_ORIGIN = "https://portal.example"  # smart.REDIRECT's


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return authority_at(tmp_path, mode="off")


@pytest.fixture
def client(records: RecordStore, authority: Authority) -> Iterator[TestClient]:
    register_app(authority, "portal", "patient/*.rs launch/patient")
    with client_for(records, authority) as test_client:
        yield test_client


def _preflight(client: TestClient, path: str, origin: str, method: str, headers: str) -> object:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@pytest.mark.parametrize("path", ["/fhir/Patient/p1", "/research/projects", "/auth/token"])
def test_a_registered_apps_origin_may_send_what_a_fhir_client_sends(
    client: TestClient, path: str
) -> None:
    answer = _preflight(client, path, APP_ORIGIN, "PUT", "authorization, content-type, if-match")
    assert answer.status_code == 200  # type: ignore[attr-defined]
    headers = answer.headers  # type: ignore[attr-defined]
    assert headers["access-control-allow-origin"] == APP_ORIGIN
    assert {"PUT", "PATCH"} <= set(headers["access-control-allow-methods"].split(", "))
    assert {"Authorization", "If-Match", "Prefer"} <= set(
        headers["access-control-allow-headers"].split(", ")
    )
    assert "access-control-allow-credentials" not in headers


@pytest.mark.parametrize(
    ("origin", "method", "asked"),
    [
        ("https://evil.example", "GET", "authorization"),
        ("https://portal.example:8443", "GET", "authorization"),
        ("http://portal.example", "GET", "authorization"),
        (APP_ORIGIN, "PROPFIND", "authorization"),
        (APP_ORIGIN, "GET", "x-made-up"),
    ],
)
def test_another_origin_method_or_header_is_not_allowed(
    client: TestClient, origin: str, method: str, asked: str
) -> None:
    answer = _preflight(client, "/fhir/Patient", origin, method, asked)
    headers = answer.headers  # type: ignore[attr-defined]
    assert answer.status_code == 400  # type: ignore[attr-defined]
    assert headers.get("access-control-allow-origin") in (None, APP_ORIGIN)
    if origin != APP_ORIGIN:
        assert "access-control-allow-origin" not in headers


def test_an_answer_to_the_apps_page_names_it_and_shows_the_headers_it_needs(
    client: TestClient,
) -> None:
    created = client.post(
        "/fhir/Patient",
        content=b'{"resourceType": "Patient", "gender": "female"}',
        headers={"Content-Type": "application/fhir+json", "Origin": APP_ORIGIN},
    )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = set(created.headers["access-control-expose-headers"].split(", "))
    assert {"ETag", "Location", "Last-Modified", "WWW-Authenticate"} <= exposed
    assert "Origin" in created.headers["vary"]


def test_an_answer_to_another_origin_names_none(client: TestClient) -> None:
    answer = client.get("/fhir/metadata", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_the_portal_and_requests_without_origin_are_left_as_they_were(
    client: TestClient,
) -> None:
    for path, origin in (("/portal/sign-in", APP_ORIGIN), ("/fhir/metadata", None)):
        headers = {"Origin": origin} if origin else {}
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-expose-headers" not in answer.headers


def test_a_refusal_for_want_of_a_token_reaches_the_apps_page(
    records: RecordStore, tmp_path: Path
) -> None:
    """The app must read the 401 to know its token has expired."""
    authority = authority_at(tmp_path, mode="required")
    register_app(authority, "portal", "patient/*.rs")
    with client_for(records, authority) as client:
        answer = client.get("/fhir/Patient/p1", headers={"Origin": APP_ORIGIN})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN


def test_an_app_registered_while_serving_is_allowed_at_once(
    records: RecordStore, tmp_path: Path
) -> None:
    authority = authority_at(tmp_path)
    with client_for(records, authority) as client:
        before = client.get("/fhir/metadata", headers={"Origin": APP_ORIGIN})
        register_app(authority, "portal", "patient/*.rs")
        after = client.get("/fhir/metadata", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in before.headers
    assert after.headers["access-control-allow-origin"] == APP_ORIGIN


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("https://Portal.Example/callback?x=1", "https://portal.example"),
        ("https://portal.example:443/cb", "https://portal.example"),
        ("https://portal.example:8443/cb", "https://portal.example:8443"),
        ("http://127.0.0.1:5173/cb", "http://127.0.0.1:5173"),
        ("http://localhost/cb", "http://localhost"),
        ("https://[2001:DB8::1]:8443/cb", "https://[2001:db8::1]:8443"),
        ("https://portal.example:99999/cb", ""),
    ],
)
def test_the_origin_of_a_redirect_uri_is_the_one_a_browser_sends(uri: str, origin: str) -> None:
    assert origin_of(uri) == origin
