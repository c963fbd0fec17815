"""A project's pseudonymised extract: who is in it, what it holds, what the log says."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import shared_data_path

from coffre.cli.importer import Importer
from coffre.exceptions import CoffreError, FhirError
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.research import extract as extract_module
from coffre.research.cohort import Cohort
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


def _sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in the order of their values, column by column (None last)."""
    return sorted(rows, key=lambda row: [(value is None, value) for value in row.values()])


def test_row_order_links_no_patient_across_projects(records: RecordStore, tmp_path: Path) -> None:
    """In storage order, row i of two projects' files was one patient: each project's rows
    are in the order of its own pseudonyms, then of the row's other columns."""
    patient_ids = [f"p{number}" for number in range(10)]
    with records.writer() as writer:
        for patient_id in patient_ids:
            writer.update("Patient", patient_id, _patient(patient_id, gender="other"))
            for value in (9.1, 6.3, 8.0):
                writer.create(_observation(patient_id, "2020-03-17", value))
    orders = []
    for project_id in ("diabete-2026", "asthme-2026"):
        project = replace(PROJECT, project_id=project_id, types=("Observation", "Patient"))
        _extract(records, tmp_path / project_id, project)
        pseudonyms = Pseudonyms(records.custodian.root_secret(), project_id)
        patients = {pseudonyms.of(patient_id): patient_id for patient_id in patient_ids}
        tables = _tables(tmp_path / project_id)
        assert not list((tmp_path / project_id).glob(".*"))  # the unsorted files are gone
        for name, rows in tables.items():
            assert rows == _sorted_rows(rows), name
        orders.append([patients[row["person_id"]] for row in tables["person"]])
    assert sorted(orders[0]) == sorted(orders[1]) == patient_ids
    assert orders[0] != orders[1]  # two orders of ten alike by chance: 1 in 3,628,800


def test_a_sort_duckdb_cannot_finish_is_one_line_and_leaves_no_file(
    records: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory, DuckDB's error was a traceback from the command line."""
    _vault(records)
    monkeypatch.setattr(extract_module, "SORT_MEMORY", "1KB")
    with pytest.raises(CoffreError, match=r"could not put the .* table's rows in order"):
        _extract(records, tmp_path / "x")
    assert not list((tmp_path / "x").iterdir())


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


def _with_eve_and_fay(records: RecordStore) -> None:
    """Beside ``_vault``'s: Eve, born in 1950, her HbA1c before the period; Fay, no birth
    date, Ana's history."""
    _vault(records)
    with records.writer() as writer:
        writer.update("Patient", "eve", _patient("eve", birthDate="1950-06-01"))
        writer.create(_observation("eve", "2012-05-02"))
        writer.update("Patient", "fay", _patient("fay"))
        for resource in _history("fay"):
            writer.create(resource)


def _persons(records: RecordStore, folder: Path) -> dict[str, set[str]]:
    """The patients (their ids) each table of an extract holds."""
    pseudonyms = Pseudonyms(records.custodian.root_secret(), PROJECT.project_id)
    patients = {pseudonyms.of(p): p for p in ("ana", "bob", "carl", "dora", "eve", "fay")}
    return {
        name: {patients[row["person_id"]] for row in rows} for name, rows in _tables(folder).items()
    }


def _research_events(records: RecordStore, patient_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of a patient's compartment that name a research project."""
    return [
        event
        for event in records.access_history(patient_id)
        if "research project" in event.get("purposeOfEvent", [{}])[0].get("text", "")
    ]


def _entities(event: dict[str, Any]) -> list[str]:
    """The types of the records an AuditEvent says went out."""
    return sorted(entity["what"]["reference"].split("/")[0] for entity in event["entity"])


def test_a_cohort_by_code_holds_who_carries_it_in_the_period(
    records: RecordStore, tmp_path: Path
) -> None:
    """HbA1c in the period: Ana and Fay; Eve's is before it. Observation is not a type the
    project receives: the record that puts a patient in goes out in the log, not the files."""
    _with_eve_and_fay(records)
    project = replace(
        PROJECT, types=("Immunization", "Patient"), cohort=Cohort((f"{LOINC}|4548-4",))
    )
    before = records.storage.leaf_count()
    manifest = _extract(records, tmp_path / "x", project)
    assert manifest["persons"] == 2
    assert manifest["project"]["cohort"] == {
        "codes": [f"{LOINC}|4548-4"],
        "born_from": None,
        "born_to": None,
        "codes_from": None,
    }
    assert _persons(records, tmp_path / "x") == {
        "person": {"ana", "fay"},
        "immunization": {"ana", "fay"},
    }
    leaves = records.storage.leaf_count() - before
    assert leaves == 2 * 3 + 1  # Patient, Immunization, the Observation of 2020 each; manifest
    for patient_id in ("ana", "fay"):
        (event,) = _research_events(records, patient_id)
        assert _entities(event) == ["Immunization", "Observation", "Patient"]
    assert _research_events(records, "eve") == []


def test_a_cohort_code_may_count_from_before_the_period_whose_data_goes_out(
    records: RecordStore, tmp_path: Path
) -> None:
    """From 2010, Eve's HbA1c of 2012 puts her in; it goes out in the log, not in the files
    (the data's period starts in 2015), and so do Ana's and Fay's of 2012."""
    _with_eve_and_fay(records)
    since = Cohort((f"{LOINC}|4548-4",), codes_from=date(2010, 1, 1))
    project = replace(PROJECT, types=("Observation", "Patient"), cohort=since)
    manifest = _extract(records, tmp_path / "x", project)
    assert manifest["persons"] == 3
    assert manifest["project"]["cohort"]["codes_from"] == "2010-01-01"
    assert _persons(records, tmp_path / "x") == {
        "person": {"ana", "eve", "fay"},
        "measurement": {"ana", "fay"},
    }
    months = {row["month"] for row in _tables(tmp_path / "x")["measurement"]}
    assert months == {date(2020, 3, 1)}
    (event,) = _research_events(records, "eve")
    assert _entities(event) == ["Observation", "Patient"]
    (event,) = _research_events(records, "ana")
    assert _entities(event) == ["Observation", "Observation", "Patient"]


def test_a_cohort_by_years_of_birth_holds_who_was_born_in_them(
    records: RecordStore, tmp_path: Path
) -> None:
    """Ana 1984, Eve 1950, Fay without a birth date (in no range)."""
    _with_eve_and_fay(records)
    for number, (born_from, born_to, expected) in enumerate(
        [(1980, 1990, {"ana"}), (1950, 1984, {"ana", "eve"}), (None, 1950, {"eve"})]
    ):
        cohort = Cohort(born_from=born_from, born_to=born_to)
        project = replace(PROJECT, types=("Patient",), cohort=cohort)
        manifest = _extract(records, tmp_path / str(number), project)
        assert manifest["persons"] == len(expected)
        assert _persons(records, tmp_path / str(number)) == {"person": expected}
        assert manifest["project"]["cohort"]["born_to"] == born_to
    assert _research_events(records, "fay") == []
    # Without the person table, Ana's being in the extract still tells her decade of birth.
    project = replace(PROJECT, types=("Immunization",), cohort=Cohort(born_from=1980))
    _extract(records, tmp_path / "immunization", project)
    assert ["Immunization", "Patient"] in map(_entities, _research_events(records, "ana"))


def test_a_cohort_of_nobody_gives_empty_tables_and_no_leaf_but_the_manifests(
    records: RecordStore, tmp_path: Path
) -> None:
    _with_eve_and_fay(records)
    project = replace(PROJECT, cohort=Cohort((f"{SNOMED}|0",)))
    before = records.storage.leaf_count()
    manifest = _extract(records, tmp_path / "x", project)
    assert manifest["persons"] == 0
    assert records.storage.leaf_count() == before + 1
    files = sorted((tmp_path / "x").glob("*.parquet"))
    assert len(files) == len(manifest["files"]) == 5
    for path in files:
        assert pq.read_table(path).num_rows == manifest["files"][path.name]["rows"] == 0
    for patient_id in ("ana", "eve", "fay"):
        assert _research_events(records, patient_id) == []


def test_an_extract_holds_only_the_columns_its_project_receives(
    records: RecordStore, tmp_path: Path
) -> None:
    _vault(records)
    columns = ("measurement.code", "measurement.value_as_number", "person.year_of_birth")
    project = replace(PROJECT, types=("Observation", "Patient"), columns=columns)
    manifest = _extract(records, tmp_path / "x", project)
    received = {
        path.stem: pq.read_schema(path).names for path in (tmp_path / "x").glob("*.parquet")
    }
    assert received == {
        "measurement": ["person_id", "code", "value_as_number"],
        "person": ["person_id", "year_of_birth"],
    }
    assert {name: f["columns"] for name, f in manifest["files"].items()} == {
        f"{name}.parquet": names for name, names in received.items()
    }
    assert manifest["project"]["columns"] == list(columns)
    assert _tables(tmp_path / "x")["measurement"][0]["value_as_number"] == 7.2
    values = _values(tmp_path / "x")
    for dropped in ("female", "QC", LOINC, "datetime.date", "value_vocabulary", "region"):
        assert dropped not in values, dropped


# Where a Synthea record carries the code its table reads (the first coding with a code).
CODED_ELEMENTS = {
    "Condition": "code",
    "Observation": "code",
    "MedicationRequest": "medicationCodeableConcept",
    "Procedure": "code",
    "Immunization": "vaccineCode",
}
SINUSITIS = "444814009"


def _first_code(concept: dict[str, Any] | None) -> tuple[str, str] | None:
    codings = [c for c in (concept or {}).get("coding", []) if "code" in c]
    return (codings[0].get("system"), codings[0]["code"]) if codings else None


def _codes_of(resource: dict[str, Any]) -> set[tuple[str, str] | None]:
    """The codes a resource carries where the extract's tables read them."""
    kind = resource["resourceType"]
    if kind == "Encounter":
        return {_first_code(next(iter(resource.get("type", [])), None))}
    concepts = [resource.get(CODED_ELEMENTS.get(kind, ""))]
    concepts += [component.get("code") for component in resource.get("component", [])]
    return {_first_code(concept) for concept in concepts}


def _synthea_patients(bundles: list[Path]) -> dict[str, tuple[int, set[tuple[str, str] | None]]]:
    """Each patient of the bundles (one a bundle), read with plain json: their year of
    birth and every code their records carry."""
    patients = {}
    for path in bundles:
        resources = [entry["resource"] for entry in json.loads(path.read_bytes())["entry"]]
        (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
        codes = set().union(*(_codes_of(resource) for resource in resources))
        patients[patient["id"]] = (int(patient["birthDate"][:4]), codes)
    return patients


@pytest.mark.shared_data
def test_a_cohort_holds_the_synthea_patients_with_its_code_and_years(
    records: RecordStore, tmp_path: Path
) -> None:
    """Checked against the bundles themselves: who has had a viral sinusitis (a Condition,
    not a type the project receives), who was born in 1940 to 1970, who both."""
    bundles = sorted(shared_data_path("synthea", "smart-2019").glob("*.json"))[:6]
    assert Importer(records).run(bundles).failures == []
    patients = _synthea_patients(bundles)
    sinusitis = {p for p, (_, codes) in patients.items() if (SNOMED, SINUSITIS) in codes}
    born = {p for p, (year, _) in patients.items() if 1940 <= year <= 1970}
    assert 0 < len(sinusitis & born) < len(sinusitis) < len(patients)
    assert len(sinusitis & born) < len(born) < len(patients)
    pseudonyms = Pseudonyms(records.custodian.root_secret(), PROJECT.project_id)
    code = (f"{SNOMED}|{SINUSITIS}",)
    for cohort, expected in (
        (Cohort(code), sinusitis),
        (Cohort(born_from=1940, born_to=1970), born),
        (Cohort(code, 1940, 1970), sinusitis & born),
    ):
        folder = tmp_path / cohort.summary()
        project = replace(
            PROJECT, types=("Observation", "Patient"), data_from=date(1900, 1, 1), cohort=cohort
        )
        manifest = _extract(records, folder, project)
        assert manifest["persons"] == len(expected), cohort
        for rows in _tables(folder).values():
            assert {row["person_id"] for row in rows} == {pseudonyms.of(p) for p in expected}
    for patient_id in patients:
        events = _research_events(records, patient_id)
        assert len(events) == (patient_id in sinusitis) + (patient_id in born) + (
            patient_id in sinusitis & born
        )
