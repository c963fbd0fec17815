"""A project's pseudonymised extract: who is in it, what it holds, what the log says."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import shared_data_path

from coffre.cli.importer import Importer
from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.research.extract import EXTRACT_TYPE, extract
from coffre.research.folder import MANIFEST
from coffre.research.projects import Project, ProjectError
from coffre.seal.keys import Pseudonyms
from coffre.service import RecordStore
from coffre.service.audit import Access
from coffre.service.consent import record_research_consent
from coffre.service.erasure import erase_patient

TODAY = date(2026, 12, 6)
PROJECT = Project(
    "diabete-2026",
    "CNIL DR-2026-042",
    "Complications of type 2 diabetes",
    ("Condition", "Encounter", "Immunization", "Observation", "Patient"),
    date(2015, 1, 1),
    date(2025, 12, 31),
    ("alice",),
    date(2027, 6, 30),
)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
# What identifies Ana, none of which may reach an extract.
IDENTIFYING = (
    "Bouchard",
    "Aurélie",
    "BOUA84522912",
    "1984-02-29",
    "418 555-0199",
    "Rue Saint-Jean",
    "G1R 1R5",
    "felt dizzy",
    "Dr Tremblay",
)


def _patient(patient_id: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, **more}


ANA = _patient(
    "ana",
    name=[{"family": "Bouchard", "given": ["Aurélie"]}],
    identifier=[{"system": "https://www.ramq.gouv.qc.ca/nam", "value": "BOUA84522912"}],
    birthDate="1984-02-29",
    gender="female",
    telecom=[{"system": "phone", "value": "418 555-0199"}],
    address=[
        {"line": ["12 Rue Saint-Jean"], "city": "Québec", "state": "QC", "postalCode": "G1R 1R5"}
    ],
)


def _observation(patient_id: str, when: str, value: float = 7.2) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "4548-4", "display": "HbA1c"}], "text": "x"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
        "note": [{"text": "felt dizzy"}],
        "performer": [{"display": "Dr Tremblay"}],
    }


def _history(patient_id: str) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{patient_id}"}
    return [
        _observation(patient_id, "2020-03-17T10:15:00+01:00"),
        _observation(patient_id, "2012-05-02"),  # before the period
        {
            "resourceType": "Condition",
            "subject": subject,
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}], "text": "felt dizzy"},
            "onsetDateTime": "2019-11-23",
        },
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "period": {"start": "2021-06-30T23:30:00Z", "end": "2021-07-01T00:30:00Z"},
        },
        {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "208"}]},
            "patient": subject,
            "occurrenceDateTime": "2021-04-09",
        },
        {  # a type the project does not receive
            "resourceType": "AllergyIntolerance",
            "patient": subject,
            "code": {"text": "felt dizzy"},
        },
    ]


def _vault(records: RecordStore) -> None:
    """Ana, Bob (who refuses research use), Carl (erased), Dora (deleted), their histories."""
    with records.writer() as writer:
        for patient in (
            ANA,
            _patient("bob", birthDate="1990-01-01", gender="male"),
            _patient("carl", birthDate="1970-01-01"),
            _patient("dora", birthDate="1960-01-01"),
        ):
            writer.update("Patient", patient["id"], patient)
            for resource in _history(patient["id"]):
                writer.create(resource)
        record_research_consent(writer, "bob", True)
        writer.delete("Patient", "dora")
    erase_patient(records, "carl", Access("test", reason="asked"))


def _tables(folder: Path) -> dict[str, list[dict[str, Any]]]:
    return {path.stem: pq.read_table(path).to_pylist() for path in sorted(folder.glob("*.parquet"))}


def _values(folder: Path) -> str:
    """Every value the files hold, decoded (compressed pages hide a plaintext from a scan
    of their bytes), and every file's bytes as they are (footers, statistics, manifest)."""
    decoded = repr(_tables(folder))
    raw = [path.read_bytes().decode("utf-8", "replace") for path in sorted(folder.iterdir())]
    return decoded + "".join(raw)


def _extract(records: RecordStore, folder: Path, project: Project = PROJECT) -> dict[str, Any]:
    return extract(records, project, folder, "operator", TODAY).manifest


def test_the_extract_holds_the_research_patients_minimised(
    records: RecordStore, tmp_path: Path
) -> None:
    _vault(records)
    manifest = _extract(records, tmp_path / "x")
    tables = _tables(tmp_path / "x")
    ana = Pseudonyms(records.custodian.root_secret(), PROJECT.project_id).of("ana")
    assert manifest["persons"] == 1
    assert tables["person"] == [
        {"person_id": ana, "gender": "female", "year_of_birth": 1984, "region": "QC"}
    ]
    assert tables["measurement"] == [
        {
            "person_id": ana,
            "vocabulary": LOINC,
            "code": "4548-4",
            "month": date(2020, 3, 1),
            "value_as_number": 7.2,
            "unit": "%",
            "value_vocabulary": None,
            "value_code": None,
        }
    ]
    assert tables["condition_occurrence"][0]["start_month"] == date(2019, 11, 1)
    assert tables["visit_occurrence"][0]["start_month"] == date(2021, 6, 1)
    assert tables["visit_occurrence"][0]["visit_class"] == "AMB"
    assert tables["immunization"][0]["code"] == "208"
    assert set(tables) == {
        "person",
        "measurement",
        "condition_occurrence",
        "visit_occurrence",
        "immunization",
    }
    for name, rows in tables.items():
        assert manifest["files"][f"{name}.parquet"]["rows"] == len(rows)
    for path in (tmp_path / "x").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_no_identifier_reaches_the_files(records: RecordStore, tmp_path: Path) -> None:
    _vault(records)
    _extract(records, tmp_path / "x")
    values = _values(tmp_path / "x")
    for needle in (*IDENTIFYING, "ana", "bob", "Patient/", "1984-02", "2020-03-17"):
        assert needle not in values, needle


def test_who_refused_research_is_in_no_table(records: RecordStore, tmp_path: Path) -> None:
    _vault(records)
    with records.writer() as writer:
        record_research_consent(writer, "ana", True)
        record_research_consent(writer, "bob", False)  # Bob withdraws his refusal
    _extract(records, tmp_path / "x")
    pseudonyms = Pseudonyms(records.custodian.root_secret(), PROJECT.project_id)
    for name, rows in _tables(tmp_path / "x").items():
        assert rows, name
        assert {row["person_id"] for row in rows} == {pseudonyms.of("bob")}, name


def test_two_projects_cannot_link_their_patients(records: RecordStore, tmp_path: Path) -> None:
    _vault(records)
    with records.writer() as writer:
        writer.update("Patient", "eve", _patient("eve", birthDate="1984-01-01", gender="female"))
    other = replace(PROJECT, project_id="asthme-2026", types=("Patient",))
    first = _tables(tmp_path / "1") if _extract(records, tmp_path / "1") else {}
    second = _tables(tmp_path / "2") if _extract(records, tmp_path / "2", other) else {}
    again = _tables(tmp_path / "3") if _extract(records, tmp_path / "3") else {}
    ids = [{row["person_id"] for row in tables["person"]} for tables in (first, second, again)]
    assert len(ids[0]) == len(ids[1]) == 2
    assert ids[0].isdisjoint(ids[1])
    assert ids[0] == ids[2]  # stable within a project, from one extract to the next
    assert set(second) == {"person"}


def test_the_log_holds_every_version_handed_out_and_the_manifest(
    records: RecordStore, tmp_path: Path
) -> None:
    _vault(records)
    before = records.storage.leaf_count()
    made = extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert {leaf.kind for leaf in leaves} == {LeafKind.EXPORT}
    assert len(leaves) == 1 + 5  # Ana's Patient, one Observation in the period, 3 events
    last = leaves[-1]
    assert made.leaf == records.storage.leaf_count() - 1
    assert (tmp_path / "x" / "manifest.leaf").read_text() == f"{made.leaf}\n"
    assert last.loc == records.keys.location(EXTRACT_TYPE, made.manifest["extract"])
    assert last.body_hash == hashlib.sha256((tmp_path / "x" / MANIFEST).read_bytes()).digest()
    for name, described in made.manifest["files"].items():
        path = tmp_path / "x" / name
        assert described["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    events = records.access_history("ana")
    research = [e for e in events if e.get("purposeOfEvent", [{}])[0].get("coding")]
    assert research[0]["purposeOfEvent"][0]["coding"][0]["code"] == "HRESCH"
    assert "diabete-2026" in research[0]["purposeOfEvent"][0]["text"]
    assert len(research[0]["entity"]) == 5
    assert all("purposeOfEvent" not in e for e in records.access_history("bob"))


def test_an_extract_needs_an_open_project_and_a_new_folder(
    records: RecordStore, tmp_path: Path
) -> None:
    _vault(records)
    with pytest.raises(ProjectError, match="expired"):
        extract(records, PROJECT, tmp_path / "x", "operator", date(2027, 7, 1))
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        _extract(records, tmp_path / "y")
    assert not list((tmp_path / "x").glob("*.parquet"))


def test_a_failed_extract_leaves_no_file(
    records: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _vault(records)

    def failing(*_: object) -> None:
        raise FhirError(500, "exception", "the storage went away")

    for step in ("_commit", "_log_extract"):
        with monkeypatch.context() as patch:
            patch.setattr(f"coffre.research.extract.{step}", failing)
            with pytest.raises(FhirError):
                _extract(records, tmp_path / step)
        assert list((tmp_path / step).iterdir()) == [], step


@pytest.mark.shared_data
def test_synthea_patients_are_extracted_without_what_names_them(
    records: RecordStore, tmp_path: Path
) -> None:
    bundles = sorted(shared_data_path("synthea", "smart-2019").glob("*.json"))[:3]
    report = Importer(records).run(bundles)
    assert report.failures == []
    patients = [
        entry["resource"]
        for path in bundles
        for entry in json.loads(path.read_bytes())["entry"]
        if entry["resource"]["resourceType"] == "Patient"
    ]
    refusing = records.read("Patient", patients[0]["id"]).id
    with records.writer() as writer:
        record_research_consent(writer, refusing, True)
    project = replace(
        PROJECT,
        types=(
            "Condition",
            "Encounter",
            "Immunization",
            "MedicationRequest",
            "Observation",
            "Patient",
            "Procedure",
        ),
        data_from=date(1900, 1, 1),
    )
    manifest = _extract(records, tmp_path / "x", project)
    tables = _tables(tmp_path / "x")
    assert manifest["persons"] == len(patients) - 1
    assert all(rows for rows in tables.values()), {n: len(r) for n, r in tables.items()}
    pseudonyms = Pseudonyms(records.custodian.root_secret(), project.project_id)
    kept = {pseudonyms.of(patient["id"]) for patient in patients[1:]}
    for rows in tables.values():
        assert {row["person_id"] for row in rows} == kept
    values = _values(tmp_path / "x")
    for patient in patients:
        needles = [patient["id"], patient["birthDate"]]
        needles += [i["value"] for i in patient.get("identifier", [])]
        needles += [n["family"] for n in patient["name"]] + [t["value"] for t in patient["telecom"]]
        needles += [line for a in patient["address"] for line in a["line"]]
        for needle in needles:
            assert needle not in values, needle


def test_an_extract_goes_out_a_batch_at_a_time(
    records: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps memory flat: a batch of patients' rows waits for its leaves, a row group
    of each table for its file; the tables are those of one batch."""
    _vault(records)
    with records.writer() as writer:
        for patient_id in ("eve", "fay"):
            writer.update("Patient", patient_id, _patient(patient_id))
            for resource in _history(patient_id):
                writer.create(resource)
    whole = _tables(tmp_path / "whole") if _extract(records, tmp_path / "whole") else {}
    monkeypatch.setattr("coffre.research.extract.PATIENTS_AT_ONCE", 1)
    monkeypatch.setattr("coffre.research.extract.ROWS_PER_GROUP", 1)
    transactions = []
    writer = records.writer
    monkeypatch.setattr(records, "writer", lambda *a: transactions.append(a) or writer(*a))
    _extract(records, tmp_path / "batched")
    assert _tables(tmp_path / "batched") == whole
    assert len(transactions) == 3 + 1  # one a patient, and the manifest's
    measurements = pq.ParquetFile(tmp_path / "batched" / "measurement.parquet")
    assert measurements.metadata.num_row_groups == len(whole["measurement"]) == 3
