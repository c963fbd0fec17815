"""The portal in a real browser: headless Chromium (Debian's) drives ``coffre serve`` on
a vault holding a Synthea patient, as the patient would, and keeps a screenshot.

The screenshots go to test-artifacts/ at the repository's root (ignored by git; CI keeps
the folder). Without Chromium or Playwright the test skips, and fails under CI=true:
``make test`` installs both.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from conftest import FHIR_JSON, ROOT, RunningServer, shared_data_path
from portal_kit import CENTRE, PASSWORD, centre_opening, tomorrow

from coffre.api.auth.registry import (
    Registry,
    access_file,
    app_client,
    load,
    new_user,
    save,
    with_user,
)
from coffre.api.auth.tokens import TokenSigner
from coffre.cli.importer import Importer
from coffre.custody import open_custody
from coffre.seal.tokenkey import access_token_jwk
from coffre.service import Vault

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
BUNDLE = ("synthea", "smart-2019", "Malcolm_Dach_281f4a03-57e9-4b22-a322-68890ff22172.json")
ARTIFACTS = ROOT / "test-artifacts"


def _missing(what: str) -> None:
    message = f"{what} is missing: 'make packages' and 'make test' install it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; closed after the test."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        _missing("Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass(frozen=True)
class Served:
    server: RunningServer
    patient: str
    practitioner: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``coffre serve`` on a vault with one Synthea patient and their user."""
    bundle = shared_data_path(*BUNDLE)
    entries = [entry["resource"] for entry in json.loads(bundle.read_text())["entry"]]
    patient = next(r["id"] for r in entries if r["resourceType"] == "Patient")
    practitioner = next(r["id"] for r in entries if r["resourceType"] == "Practitioner")
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    records = vault.open()
    try:
        Importer(records).run([bundle])
    finally:
        records.storage.close()
    user = new_user("malcolm", "patient", f"Patient/{patient}", PASSWORD)
    save(access_file(vault.keyring), with_user(Registry(), user))
    running = RunningServer(vault)
    yield Served(running, patient, f"Practitioner/{practitioner}")
    running.stop()


def _clinician_reads(served: Served, times: int) -> None:
    """The patient's physician (an Encounter names them) reads the record ``times`` through
    the API, with a token as Coffre's authorisation server issues it."""
    origin = served.server.base_url.removesuffix("/fhir")
    claims = {
        "iss": f"{origin}/auth",
        "aud": served.server.base_url,
        "sub": "dr-dach",
        "client_id": "ehr",
        "role": "clinician",
        "fhirUser": served.practitioner,
        "scope": "user/*.rs",
    }
    key = access_token_jwk(open_custody(served.server.vault.keyring).root_secret())
    token = TokenSigner.for_access_tokens(key).sign(claims, 300)
    url = f"{served.server.base_url}/Patient/{served.patient}"
    for _ in range(times):
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


def test_a_patient_signs_in_sees_their_record_and_who_opened_it_and_opts_out(
    served: Served, browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _clinician_reads(served, 55)  # more than a page of the access list
    origin = served.server.base_url.removesuffix("/fhir")
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(java_script_enabled=False)
    page.goto(f"{origin}/portal/access?lang=en")
    assert page.url.endswith("/portal/sign-in?next=%2Fportal%2Faccess%3Flang%3Den")
    page.get_by_label("User name").fill("malcolm")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/portal/access?lang=en")  # the page asked for
    page.get_by_role("link", name="My record", exact=True).click()
    conditions = page.get_by_role("table", name="Conditions")
    assert "Acute viral pharyngitis" in conditions.inner_text()
    page.screenshot(path=ARTIFACTS / "portal-record.png", full_page=True)

    page.get_by_role("link", name="Who accessed my record").click()
    accesses = page.get_by_role("table", name="Who accessed my record")
    assert f"({served.practitioner}) — through the application ehr" in accesses.inner_text()
    page.screenshot(path=ARTIFACTS / "portal-access.png", full_page=True)
    assert page.get_by_text("Accesses 1 to 50 of").is_visible()
    page.get_by_role("link", name="Older accesses").click()
    assert page.get_by_text("Accesses 51 to").is_visible()
    page.get_by_role("link", name="Newer accesses").click()
    assert page.get_by_text("Accesses 1 to 50 of").is_visible()

    page.get_by_role("link", name="Notices").click()
    notices = page.get_by_role("table", name="Notices").inner_text()
    assert "opened your record for the first time" in notices
    assert served.practitioner in notices

    page.get_by_role("link", name="Research use").click()
    assert "You do not refuse" in page.locator("#research-state").inner_text()
    page.get_by_role("button", name="I refuse research use of my data").click()
    assert "You refuse" in page.locator("#research-state").inner_text()
    page.get_by_role("link", name="Français").click()
    assert page.locator("html").get_attribute("lang") == "fr"
    shot = ARTIFACTS / "portal-research.png"
    page.screenshot(path=shot, full_page=True)
    consent_url = f"{served.server.base_url}/Patient/{served.patient}/$research-consent"
    consent = httpx.get(consent_url).json()
    assert consent["status"] == "active" and consent["provision"]["type"] == "deny"
    with capsys.disabled():  # shown even when pytest captures the output
        shots = ", ".join(str(path) for path in sorted(ARTIFACTS.glob("portal-*.png")))
        print(f"\nportal screenshots: {shots}")


def test_a_long_unbroken_name_wraps_within_a_phones_width(served: Served, browser: Any) -> None:
    """A 500-character word in a record pushed the page to 4,964 px on a 390 px screen,
    the date and status off it."""
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{served.patient}"},
        "code": {"text": "x" * 500},
        "clinicalStatus": {"coding": [{"code": "active"}]},
    }
    written = httpx.post(f"{served.server.base_url}/Condition", json=condition)
    assert written.status_code == 201, written.text
    origin = served.server.base_url.removesuffix("/fhir")
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(f"{origin}/portal/?lang=en")
    page.get_by_label("User name").fill("malcolm")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert "x" * 500 in page.get_by_role("table", name="Conditions").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


class _Callback(http.server.BaseHTTPRequestHandler):
    """An app's redirect URI, on an origin of its own: says it was reached."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>app</title><p>signed in"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


_APP_SCRIPT = """async ([tokenUrl, recordUrl, code, redirectUri, verifier]) => {
    const form = new URLSearchParams({grant_type: "authorization_code", code,
        redirect_uri: redirectUri, client_id: "app-elsewhere", code_verifier: verifier});
    const token = await (await fetch(tokenUrl, {method: "POST", body: form})).json();
    const read = await fetch(recordUrl, {headers: {
        Authorization: "Bearer " + token.access_token, Accept: "application/fhir+json"}});
    return {patient: token.patient, status: read.status, etag: read.headers.get("ETag"),
        id: (await read.json()).id};
}"""
"""What a SMART app's page does with its code: exchange it at the token endpoint and read
the patient's record, both from its own origin (cross-origin requests, CORS)."""


def test_an_apps_sign_in_brings_the_browser_back_to_the_app_which_reads_the_record(
    served: Served, browser: Any
) -> None:
    """The authorisation endpoint's form posts to Coffre, whose answer redirects to the
    app on another origin: the page's Content-Security-Policy must let the browser follow
    (``form-action`` holds a form's redirects too; with only 'self' Chromium stopped).
    The app's page then gets its token and reads the record from its own origin, which
    the browser allows only because Coffre names that origin (the app's redirect URI's)."""
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    redirect = f"http://127.0.0.1:{app.server_address[1]}/callback"
    path = access_file(served.server.vault.keyring)
    registry = load(path)
    client = app_client("app-elsewhere", [redirect], "patient/*.rs launch/patient", "Mon app")
    save(path, replace(registry, clients={**registry.clients, "app-elsewhere": client}))
    origin = served.server.base_url.removesuffix("/fhir")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 50).digest()).rstrip(b"=")
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "app-elsewhere",
            "redirect_uri": redirect,
            "scope": "patient/*.rs launch/patient",
            "state": "st-browser",
            "aud": served.server.base_url,
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
            "lang": "en",
        }
    )
    try:
        page = browser.new_page(java_script_enabled=False)
        page.goto(f"{origin}/auth/authorize?{query}")
        page.get_by_label("User name").fill("malcolm")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{redirect}?**", timeout=20_000)
        assert page.get_by_text("signed in").is_visible()
        reached = parse_qs(urlsplit(page.url).query)
        assert reached["state"] == ["st-browser"] and reached["code"][0]
        app_page = browser.new_page()  # the app's own page runs its script
        app_page.goto(page.url)
        record_url = f"{served.server.base_url}/Patient/{served.patient}"
        arguments = [f"{origin}/auth/token", record_url, reached["code"][0]]
        read = app_page.evaluate(_APP_SCRIPT, [*arguments, redirect, "v" * 50])
        assert read == {
            "patient": served.patient,
            "status": 200,
            "etag": 'W/"1"',
            "id": served.patient,
        }
    finally:
        app.shutdown()


def test_a_patient_books_a_vaccination_and_cancels_it(served: Served, browser: Any) -> None:
    base = served.server.base_url
    place, schedule, *seats = centre_opening()
    laval = {**place, "id": "laval", "name": "Centre Laval", "address": {"city": "Laval"}}
    actor = {"reference": "Location/laval", "display": "Centre Laval"}
    elsewhere = {**schedule, "id": "laval", "actor": [actor]}
    for resource in (place, schedule, *seats, laval, elsewhere):
        url = f"{base}/{resource['resourceType']}/{resource['id']}"
        assert httpx.put(url, json=resource, headers=FHIR_JSON).status_code in (200, 201)
    origin = base.removesuffix("/fhir")
    page = browser.new_page(java_script_enabled=False)
    page.goto(f"{origin}/portal/booking?lang=en")
    page.get_by_label("User name").fill("malcolm")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("No appointment to come.").is_visible()
    centres = page.get_by_label("Vaccination centre")
    assert centres.locator("option").all_inner_texts() == ["Centre Laval", CENTRE]
    page.get_by_label("Town, postal code or name of the centre").fill("montréal")
    page.get_by_role("button", name="Find the centres").click()
    assert centres.locator("option").all_inner_texts() == [CENTRE]
    centres.select_option(label=CENTRE)
    page.get_by_label("Day").fill(tomorrow().isoformat())
    page.get_by_role("button", name="Show the free times").click()
    times = page.get_by_role("form", name=f"Free times on {tomorrow()} at {CENTRE}")
    assert times.get_by_role("button").all_inner_texts() == ["09:00", "19:30"]
    times.get_by_role("button", name="19:30").click()
    assert page.get_by_role("status").inner_text() == "Your appointment is booked."
    to_come = page.get_by_role("list", name="My appointments to come").inner_text()
    assert f"{tomorrow()} 19:30 UTC-05:00" in to_come and CENTRE in to_come
    page.screenshot(path=ARTIFACTS / "portal-booking.png", full_page=True)
    page.get_by_role("button", name=f"Cancel the appointment of {tomorrow()} 19:30").click()
    assert "is cancelled" in page.get_by_role("status").inner_text()
    assert page.get_by_text("No appointment to come.").is_visible()
    evening = httpx.get(f"{base}/Slot?schedule=Schedule/stade&status=free").json()
    assert evening["total"] == 5  # every seat free again
