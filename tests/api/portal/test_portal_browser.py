"""The portal in a real browser: headless Chromium (Debian's) drives ``coffre serve`` on
a vault holding a Synthea patient, as the patient would, and keeps a screenshot.

The screenshots go to test-artifacts/ at the repository's root (ignored by git; CI keeps
the folder). Without Chromium or Playwright the test skips, and fails under CI=true:
``make test`` installs both.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, RunningServer, shared_data_path
from portal_kit import CLINICIAN, PASSWORD

from coffre.api.auth.registry import Registry, access_file, new_user, save, with_user
from coffre.cli.importer import Importer
from coffre.ledger.leaf import LeafKind
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
def patient_vault(tmp_path: Path) -> tuple[Vault, str]:
    """A vault with one Synthea patient, their user, and a clinician's earlier read."""
    bundle = shared_data_path(*BUNDLE)
    patient_id = next(
        entry["resource"]["id"]
        for entry in json.loads(bundle.read_text())["entry"]
        if entry["resource"]["resourceType"] == "Patient"
    )
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    records = vault.open()
    try:
        Importer(records).run([bundle])
        with records.writer() as writer, writer.request(CLINICIAN):
            writer.log_access(LeafKind.READ, [records.read("Patient", patient_id)])
    finally:
        records.storage.close()
    user = new_user("malcolm", "patient", f"Patient/{patient_id}", PASSWORD)
    save(access_file(vault.keyring), with_user(Registry(), user))
    return vault, patient_id


@pytest.fixture
def served(patient_vault: tuple[Vault, str]) -> Iterator[tuple[RunningServer, str]]:
    running = RunningServer(patient_vault[0])
    yield running, patient_vault[1]
    running.stop()


def test_a_patient_signs_in_sees_their_record_and_who_opened_it_and_opts_out(
    served: tuple[RunningServer, str],
) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        _missing("Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python")
    server, patient_id = served
    origin = server.base_url.removesuffix("/fhir")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(java_script_enabled=False)
            page.goto(f"{origin}/portal/?lang=en")
            assert page.url.endswith("/portal/sign-in")
            page.get_by_label("User name").fill("malcolm")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            conditions = page.get_by_role("table", name="Conditions")
            assert "Acute viral pharyngitis" in conditions.inner_text()
            page.screenshot(path=ARTIFACTS / "portal-record.png", full_page=True)

            page.get_by_role("link", name="Who accessed my record").click()
            accesses = page.get_by_role("table", name="Who accessed my record")
            assert "Practitioner/dr-roy (clinician, via client ehr)" in accesses.inner_text()

            page.get_by_role("link", name="Research use").click()
            assert "You do not refuse" in page.locator("#research-state").inner_text()
            page.get_by_role("button", name="I refuse research use of my data").click()
            assert "You refuse" in page.locator("#research-state").inner_text()
            page.get_by_role("link", name="Français").click()
            assert page.locator("html").get_attribute("lang") == "fr"
            shot = ARTIFACTS / "portal-research.png"
            page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
    consent = httpx.get(f"{server.base_url}/Patient/{patient_id}/$research-consent").json()
    assert consent["status"] == "active" and consent["provision"]["type"] == "deny"
    print(f"portal screenshots: {ARTIFACTS / 'portal-record.png'}, {shot}")
