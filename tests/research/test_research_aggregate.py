"""Counts over an extract: no cell under 10 ever comes out, and each count is logged."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import RESEARCH_GENDERS, RESEARCH_PROJECT, research_population
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from coffre.cli.audit import audit_log
from coffre.fhir import json
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.research.aggregate import SMALL_CELL, Count, Key, Query, count, suppress
from coffre.research.extract import EXTRACT_TYPE, extract
from coffre.research.privacy import Privacy, calibrated
from coffre.research.projects import Budget, Project, ProjectError, load, projects_file, save
from coffre.service import RecordStore
from coffre.service.consent import record_research_consent

TODAY = date(2026, 12, 6)
PROJECT = RESEARCH_PROJECT


def _lines_hide_none_or_several(published: dict[Key, int | None]) -> None:
    width = len(next(iter(published)))
    for column in range(width):
        lines: dict[Key, list[int | None]] = {}
        for key, persons in published.items():
            lines.setdefault(key[:column] + key[column + 1 :], []).append(persons)
        for line in lines.values():
            assert line.count(None) != 1 or len(line) == 1, line


def test_a_small_cell_hides_the_next_smallest_of_its_line_too() -> None:
    assert suppress({("a",): 50, ("b",): 5, ("c",): 30}, 85) == (
        {("a",): 50, ("b",): None, ("c",): None},
        85,
    )
    assert suppress({("a",): 50, ("b",): 12}, 62) == ({("a",): 50, ("b",): 12}, 62)
    assert suppress({("a",): 5, ("b",): 4}, 9) == ({("a",): None, ("b",): None}, None)


def test_in_two_columns_a_small_cell_hides_a_rectangle() -> None:
    cells = {
        ("f", 1980): 20,
        ("f", 1990): 3,
        ("m", 1980): 15,
        ("m", 1990): 40,
    }
    published, total = suppress(cells, 78)
    assert published == dict.fromkeys(cells)
    assert total == 78
    wider = {**cells, ("f", 2000): 30, ("m", 2000): 50}
    published, _ = suppress(wider, 158)
    assert published == {**dict.fromkeys(cells), ("f", 2000): 30, ("m", 2000): 50}
    _lines_hide_none_or_several(published)


@given(
    st.dictionaries(
        st.tuples(st.sampled_from("abcd"), st.sampled_from([1, 2, 3, None])),
        st.integers(min_value=1, max_value=40),
        min_size=1,
    )
)
def test_no_cell_under_ten_is_published_nor_given_back_by_its_line(
    cells: dict[Key, int],
) -> None:
    total = sum(cells.values())
    published, shown = suppress(cells, total)
    assert all(persons is None or persons >= SMALL_CELL for persons in published.values())
    assert (shown is None) == (total < SMALL_CELL)
    assert all(published[key] in (None, persons) for key, persons in cells.items())
    _lines_hide_none_or_several(published)
    if shown is not None:  # the total is a line of every cell: it gives back a lone one
        assert list(published.values()).count(None) != 1 or len(published) == 1


def test_a_lone_small_cell_is_not_given_back_by_the_total() -> None:
    """Alone in its row and its column, but the total minus the cells shown is itself."""
    published, total = suppress({("a", 1): 5, ("b", 2): 20, ("c", 3): 30}, 55)
    assert total == 55
    assert published == {("a", 1): None, ("b", 2): None, ("c", 3): 30}


def _count(
    records: RecordStore,
    folder: Path,
    *by: str,
    table: str = "person",
    where: tuple[str, ...] = (),
) -> dict[str, object]:
    made = count(records, PROJECT, folder, Query.of(table, by, where), "alice", TODAY)
    return made.as_json()


def _glucose(patient_id: str, value: float) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2020-03-18",
        "valueQuantity": {"value": value},
    }


def test_counts_by_gender_suppress_the_small_cell_and_its_complement(
    records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    answer = _count(records, tmp_path / "x", "gender")
    assert answer["cells"] == [
        {"values": ["female"], "persons": 14},
        {"values": ["male"], "persons": None},
        {"values": ["other"], "persons": None},
    ]
    assert answer["total"] == 28
    by_year = _count(records, tmp_path / "x", "year_of_birth")
    assert {cell["persons"] for cell in by_year["cells"]} == {None}  # one person a year
    joined = _count(records, tmp_path / "x", "code", "gender", table="measurement")
    assert joined["cells"][0] == {"values": ["4548-4", "female"], "persons": 14}


def test_a_refusal_after_the_extract_leaves_the_counts(
    records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    with records.writer() as writer:
        record_research_consent(writer, "p1", True)  # a woman
    answer = _count(records, tmp_path / "x", "gender")
    assert answer["cells"][0] == {"values": ["female"], "persons": 13}
    assert answer["total"] == 27


def test_each_count_is_a_leaf_committing_to_its_answer(
    records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    manifest = extract(records, PROJECT, tmp_path / "x", "operator", TODAY).manifest
    before = records.storage.leaf_count()
    answer = _count(records, tmp_path / "x", "gender")
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert [leaf.kind for leaf in leaves] == [LeafKind.SEARCH]
    assert leaves[0].loc == records.keys.location(EXTRACT_TYPE, manifest["extract"])
    published = json.canonical({"extract": manifest["extract"], **answer})
    assert leaves[0].body_hash == hashlib.sha256(published).digest()


def test_a_distribution_counts_persons_by_bins_of_a_number(
    records: RecordStore, tmp_path: Path
) -> None:
    """Births from 1951 to 1978, a year apart: 9, 10 and 9 persons a decade; every HbA1c
    is 7.2, in the bin from 7.0 to under 7.5."""
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    decades = _count(records, tmp_path / "x", "year_of_birth/10")
    assert decades["cells"] == [
        {"values": [1950], "persons": None},
        {"values": [1960], "persons": 10},
        {"values": [1970], "persons": None},
    ]
    assert decades["total"] == 28
    values = _count(records, tmp_path / "x", "value_as_number/0.5", table="measurement")
    assert values["cells"] == [{"values": [7.0], "persons": 28}]


def test_bins_are_of_the_values_as_written_not_of_their_doubles(
    records: RecordStore, tmp_path: Path
) -> None:
    """As doubles, 28.9 / 0.1 is 288.99999999999994 and 800 * 0.009 is 7.199999999999999:
    28.9 fell in the cell 28.8, and 7.2's cell was named 7.199999999999999."""
    research_population(records)
    with records.writer() as writer:
        for patient_id in ("p1", "p2"):
            writer.create(_glucose(patient_id, 28.9))
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    cells = _count(records, tmp_path / "x", "code", "value_as_number/0.1", table="measurement")
    assert sorted(cell["values"] for cell in cells["cells"]) == [["2345-7", 28.9], ["4548-4", 7.2]]
    named = _count(records, tmp_path / "x", "value_as_number/0.009", table="measurement")
    assert sorted(cell["values"] for cell in named["cells"]) == [[7.2], [28.899]]


def test_bins_are_exact_however_small_their_width(records: RecordStore, tmp_path: Path) -> None:
    """10.2 / 0.000000001 in doubles is 10199999999.999998, which no rounding to nine
    decimals mends: 10.2 fell in the cell 10.199999999. A value below zero is in the bin
    below it."""
    research_population(records)
    with records.writer() as writer:
        for number in range(12):
            writer.create(_glucose(f"p{number}", 10.2 if number % 2 else -0.05))
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    where = ("code=2345-7",)
    for width, cells in (
        ("0.000000001", [[-0.05], [10.2]]),
        ("0.1", [[-0.1], [10.2]]),
        ("0.7", [[-0.7], [9.8]]),
        ("1000000000", [[-1000000000.0], [0.0]]),
    ):
        answer = _count(
            records, tmp_path / "x", f"value_as_number/{width}", table="measurement", where=where
        )
        assert [cell["values"] for cell in answer["cells"]] == cells, width


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query("person", ("person_id",)), "no column 'person_id'"),
        (Query("measurement", ("name",)), "no column 'name'"),
        (Query("drug_exposure", ()), "no table 'drug_exposure'"),
        (Query("visits", ()), "a count is of one of"),
        (Query("person", ("gender", "region", "year_of_birth")), "by 2 columns at most"),
        (Query("person", ("gender/5",)), "gender holds no numbers to make bins of"),
        (Query("person", ("year_of_birth/0",)), "a bin's width is a number from 0.000000001"),
        (Query("person", ("year_of_birth/1e-330",)), "to 1,000,000,000, not '1e-330'"),
        (Query("person", ("year_of_birth/dix",)), "not 'dix'"),
    ],
)
def test_a_count_names_only_what_the_extract_holds(
    records: RecordStore, tmp_path: Path, query: Query, message: str
) -> None:
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    before = records.storage.leaf_count()
    with pytest.raises(ProjectError, match=message):
        count(records, PROJECT, tmp_path / "x", query, "alice", TODAY)
    assert records.storage.leaf_count() == before


def test_a_count_uses_only_the_columns_the_project_receives(
    records: RecordStore, tmp_path: Path
) -> None:
    """Gender is not received: no count by it, nor by it joined, nor filtered on it."""
    research_population(records)
    project = replace(PROJECT, columns=("measurement.code", "person.year_of_birth"))
    extract(records, project, tmp_path / "x", "operator", TODAY)
    for query in (
        Query("person", ("gender",)),
        Query("measurement", ("code", "gender")),
        Query("measurement", ("code",), (("gender", "female"),)),
        Query("measurement", ("unit",)),
    ):
        with pytest.raises(ProjectError, match="no column"):
            count(records, project, tmp_path / "x", query, "alice", TODAY)
    by_code = count(records, project, tmp_path / "x", Query("measurement", ("code",)), "a", TODAY)
    assert by_code.cells == [(("4548-4",), sum(RESEARCH_GENDERS.values()))]


def test_a_count_needs_the_projects_own_unaltered_extract(
    records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    other = replace(PROJECT, project_id="other")
    with pytest.raises(ProjectError, match="no extract of project other"):
        count(records, other, tmp_path / "x", Query("person", ()), "alice", TODAY)
    with pytest.raises(ProjectError, match="expired"):
        count(records, PROJECT, tmp_path / "x", Query("person", ()), "alice", date(2028, 1, 1))
    with (tmp_path / "x" / "person.parquet").open("ab") as file:
        file.write(b"\0")
    with pytest.raises(ProjectError, match="is not the file"):
        count(records, PROJECT, tmp_path / "x", Query("person", ()), "alice", TODAY)
    manifest = (tmp_path / "x" / "manifest.json").read_bytes()
    (tmp_path / "x" / "manifest.json").write_bytes(
        manifest.replace(b'"persons":28', b'"persons":29')
    )
    with pytest.raises(ProjectError, match="holds no extract that the log records"):
        count(records, PROJECT, tmp_path / "x", Query("person", ()), "alice", TODAY)
    (tmp_path / "x" / "manifest.json").write_bytes(manifest)
    leaf = int((tmp_path / "x" / "manifest.leaf").read_text())
    for pointer in (str(leaf - 1), "-1", "many", str(leaf + 100)):
        (tmp_path / "x" / "manifest.leaf").write_text(pointer)
        with pytest.raises(ProjectError, match="holds no extract that the log records"):
            count(records, PROJECT, tmp_path / "x", Query("person", ()), "alice", TODAY)


def test_the_auditor_holds_the_log_after_extracts_and_counts(
    client: TestClient, records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    _count(records, tmp_path / "x", "gender")
    report = audit_log(client, records.ledger.verifier_key, None, full=True)
    assert report.consistent and report.violations == [] and report.findings == []
    # 28 patients: each one's Patient and Observation handed out, and the manifest's leaf
    assert "leaves by kind: 56 create, 1 search, 57 export, 28 data_key" in report.held


def _budgeted(tmp_path: Path, epsilon: str) -> tuple[Project, Path]:
    project = replace(PROJECT, budget=Budget(Decimal(epsilon), Decimal("0.5")))
    path = projects_file(tmp_path / "keyring.json")
    save(path, {project.project_id: project})
    return project, path


def _private(
    records: RecordStore, project: Project, path: Path, query: Query, privacy: Privacy
) -> Count:
    return count(records, project, path.parent / "x", query, "alice", TODAY, (privacy, path))


def test_a_private_count_spends_its_budget_and_small_cells_stay_hidden(
    records: RecordStore, tmp_path: Path
) -> None:
    """Noise of scale 0.02 (ε 100) moves no count but with a chance of 1e-21: the noisy
    cells are the exact ones, and the small one and its complement are suppressed."""
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    project, path = _budgeted(tmp_path, "250")
    privacy = Privacy(Decimal(100), Decimal("0.01"))
    made = _private(records, project, path, Query("person", ("gender",)), privacy)
    answer = made.as_json()
    assert answer["cells"] == [
        {"values": ["female"], "persons": 14},
        {"values": ["male"], "persons": None},
        {"values": ["other"], "persons": None},
    ]
    assert answer["total"] == 28
    assert answer["privacy"]["epsilon"] == "100" and answer["privacy"]["max_cells"] == 1
    assert load(path)[project.project_id].budget == made.budget
    assert made.budget is not None and made.budget.spent_epsilon == 100
    assert made.budget.spent_delta == Decimal("0.01")
    _private(records, project, path, Query("person", ()), Privacy(Decimal(100)))
    before, spent = records.storage.leaf_count(), path.read_bytes()
    with pytest.raises(ProjectError, match="exceeds the project's privacy budget"):
        _private(records, project, path, Query("person", ()), privacy)
    assert (records.storage.leaf_count(), path.read_bytes()) == (before, spent)


def test_a_private_count_is_a_leaf_committing_to_its_epsilon(
    records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    manifest = extract(records, PROJECT, tmp_path / "x", "operator", TODAY).manifest
    project, path = _budgeted(tmp_path, "10")
    before = records.storage.leaf_count()
    privacy = Privacy(Decimal("1.5"), max_cells=2)
    answer = _private(records, project, path, Query("measurement", ("code",)), privacy).as_json()
    assert answer["privacy"] == {
        "epsilon": "1.5",
        "delta": "0.001",  # 1/28² = 0.0013 rounded down: 28 persons are not told
        "max_cells": 2,
        "scale": pytest.approx(2.0),
        "threshold": answer["privacy"]["threshold"],
    }
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert [leaf.kind for leaf in leaves] == [LeafKind.SEARCH]
    published = json.canonical({"extract": manifest["extract"], **answer})
    assert leaves[0].body_hash == hashlib.sha256(published).digest()


def test_a_private_count_needs_a_budget_and_a_bound_where_a_person_is_in_several_cells(
    records: RecordStore, tmp_path: Path
) -> None:
    research_population(records)
    extract(records, PROJECT, tmp_path / "x", "operator", TODAY)
    project, path = _budgeted(tmp_path, "10")
    spent = path.read_bytes()
    by_code = Query("measurement", ("code",))
    with pytest.raises(ProjectError, match="with --max-cells"):
        _private(records, project, path, by_code, Privacy(Decimal(1)))
    with pytest.raises(ProjectError, match="no column 'name'"):
        _private(records, project, path, Query("person", ("name",)), Privacy(Decimal(1)))
    with pytest.raises(ProjectError, match="no privacy budget"):
        _private(records, PROJECT, path, Query("person", ()), Privacy(Decimal(1)))
    assert path.read_bytes() == spent
    # By a column of the person: one cell a person, K is 1.
    by_gender = Query("measurement", ("gender",))
    assert _private(records, project, path, by_gender, Privacy(Decimal(1))).noise == calibrated(
        Privacy(Decimal(1)), Decimal("0.001"), 1
    )
