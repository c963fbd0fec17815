"""``coffre erase Patient/ID``: the confirmation, the refusals, and what it leaves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from conftest import RunningServer
from pg import HostDatabase
from typer.testing import CliRunner

from coffre.cli.main import app
from coffre.exceptions import FhirError
from coffre.research.folder import ResearchFolder
from coffre.service import Vault

runner = CliRunner()


@pytest.fixture
def filled(vault: Vault) -> Vault:
    records = vault.open()
    try:
        with records.writer() as writer:
            for patient_id in ("alice", "bob"):
                writer.update("Patient", patient_id, {"resourceType": "Patient", "id": patient_id})
    finally:
        records.storage.close()
    return vault


def _erase(vault: Vault, *args: str, typed: str | None = None) -> tuple[int, str]:
    command = ["erase", *args, "--vault", str(vault.folder)]
    result = runner.invoke(app, command, input=typed)
    return result.exit_code, result.output


def _status(vault: Vault, patient_id: str) -> int:
    records = vault.open()
    try:
        records.read("Patient", patient_id)
    except FhirError as error:
        return error.status
    finally:
        records.storage.close()
    return 200


def test_erasing_asks_for_the_patient_s_id(filled: Vault) -> None:
    code, output = _erase(filled, "Patient/alice", "--reason", "request 12", typed="bob\n")
    assert code == 1 and "nothing was erased" in output
    assert _status(filled, "alice") == 200
    code, output = _erase(filled, "Patient/alice", "--reason", "request 12", typed="alice\n")
    assert code == 0, output
    assert "Patient/alice erased on" in output and "1 records" in output
    # The last line: an operator whose command was killed while it purged sees it missing.
    assert output.strip().splitlines()[-1].endswith("the erasure is complete")
    assert (_status(filled, "alice"), _status(filled, "bob")) == (410, 200)


def test_the_research_extracts_kept_are_named_as_what_the_erasure_does_not_reach(
    filled: Vault,
) -> None:
    """An extract made before an erasure keeps the patient's pseudonymised rows (research.md
    said so); the erasure said nothing of it to the operator who could delete it."""
    code, output = _erase(filled, "Patient/bob", "--reason", "r", "--yes")
    assert code == 0 and "research extracts" not in output, "none kept: nothing to say"
    folder = ResearchFolder(filled.keyring).new_extract("diabete-2026", datetime(2026, 12, 1))
    folder.mkdir()
    manifest = {"extract": "e1", "created": "2026-12-01T00:00:00Z", "persons": 2, "files": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, output = _erase(filled, "Patient/alice", "--reason", "r", "--yes")
    said = "".join(output.split())
    assert code == 0 and "1researchextractsmadebeforethiserasure" in said, output
    assert "".join(str(folder).split()) in said
    assert output.strip().splitlines()[-1].endswith("the erasure is complete")


def test_a_patient_the_vault_never_held_is_refused_before_the_confirmation(
    filled: Vault,
) -> None:
    """The operator was asked to confirm a typo, which then failed."""
    code, output = _erase(filled, "Patient/alcie", "--reason", "r", typed="alcie\n")
    assert code == 1 and "does not exist: nothing was erased" in output, output
    assert "Type the patient's id" not in output


def test_yes_skips_the_prompt_and_an_erasure_runs_again_harmlessly(filled: Vault) -> None:
    assert _erase(filled, "Patient/alice", "--reason", "r", "--yes")[0] == 0
    code, output = _erase(filled, "Patient/alice", "--reason", "r", "--yes")
    assert code == 0 and "erased by Coffre on" in output


def test_the_operator_and_the_reason_are_logged(filled: Vault) -> None:
    arguments = ("--reason", "Loi 25, demande 7", "--operator", "dpo", "--yes")
    assert _erase(filled, "Patient/alice", *arguments)[0] == 0
    records = filled.open()
    try:
        shared = records.keys.shared_compartment("AuditEvent")
        sealed = records.storage.events_of(shared)[0]
        event = json.loads(records._open_event(sealed, records.committed_key))
    finally:
        records.storage.close()
    assert event["agent"][0]["who"]["display"].startswith("dpo")
    assert event["purposeOfEvent"] == [{"text": "Loi 25, demande 7"}]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("Patient/nobody", "does not exist"),
        ("Observation/alice", "as Patient/ID"),
        # Another server's patient, or a version: it erased this vault's alice.
        ("https://other-hospital.example/fhir/Patient/alice", "as Patient/ID"),
        ("Patient/alice/_history/1", "as Patient/ID"),
    ],
)
def test_only_an_existing_patient_can_be_erased(filled: Vault, target: str, message: str) -> None:
    before = filled.open()
    count = before.storage.leaf_count()
    before.storage.close()
    code, output = _erase(filled, target, "--reason", "r", "--yes")
    assert code == 1 and message in output
    after = filled.open()
    assert after.storage.leaf_count() == count
    after.storage.close()


def test_a_reason_is_required(filled: Vault) -> None:
    code, output = _erase(filled, "Patient/alice", "--yes")
    assert code == 2 and "--reason" in output
    assert _status(filled, "alice") == 200


def test_a_blank_reason_is_refused(filled: Vault) -> None:
    code, output = _erase(filled, "Patient/alice", "--reason", "  ", "--yes")
    assert code == 1 and "--reason" in output and "nothing was erased" in output
    assert _status(filled, "alice") == 200


def test_a_key_the_host_hides_does_not_block_the_erasure(filled: Vault) -> None:
    """The patient's record no longer opens (its key is gone): the command says the
    storage was altered and erases them all the same, with no traceback."""
    records = filled.open()
    comp = records.keys.patient_compartment("alice")
    records.storage.close()
    with HostDatabase.of(filled) as db:
        row = db.execute("SELECT kek_id, wrapped FROM data_keys WHERE comp = ?", (comp,)).fetchone()
        db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
    code, output = _erase(filled, "Patient/alice", "--reason", "r", "--yes")
    assert code == 0, output
    assert "integrity check" in output and "erasure goes on" in output
    assert "Traceback" not in output and "Patient/alice erased on" in output
    with HostDatabase.of(filled) as db:
        db.execute("INSERT INTO data_keys (comp, kek_id, wrapped) VALUES (?, ?, ?)", (comp, *row))
    assert (_status(filled, "alice"), _status(filled, "bob")) == (410, 200)


@pytest.fixture
def two_workers(filled: Vault) -> Iterator[RunningServer]:
    running = RunningServer(filled, workers=2)
    yield running
    running.stop()


def test_a_running_server_serves_the_erased_patient_no_more(
    filled: Vault, two_workers: RunningServer
) -> None:
    """Both worker processes have Alice's data key cached; after the erasure, made by
    another process, neither serves her again."""
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        for _ in range(6):  # connections spread over the two workers
            assert client.get("/Patient/alice", headers={"Connection": "close"}).status_code == 200
        assert _erase(filled, "Patient/alice", "--reason", "r", "--yes")[0] == 0
        for _ in range(6):
            response = client.get("/Patient/alice", headers={"Connection": "close"})
            assert response.status_code == 410 and "erased by Coffre" in response.text
            assert client.get("/Patient/bob", headers={"Connection": "close"}).status_code == 200
