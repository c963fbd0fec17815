"""Authorised research projects, kept beside the keyring."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.research.cohort import Cohort
from coffre.research.projects import (
    Budget,
    Project,
    ProjectError,
    budget_of,
    ended,
    find,
    load,
    projects_file,
    save,
    spend,
    with_budget,
    with_project,
)
from coffre.research.tables import CONDITION, PERSON, TABLE_OF, tables_of

PROJECT = Project(
    "diabete-2026",
    "CNIL DR-2026-042",
    "Complications of type 2 diabetes",
    ("Condition", "Observation", "Patient"),
    date(2015, 1, 1),
    date(2025, 12, 31),
    ("alice",),
    date(2027, 6, 30),
)


def test_projects_survive_their_file(tmp_path: Path) -> None:
    path = projects_file(tmp_path / "keyring.json")
    assert path == tmp_path / "keyring.research.json"
    assert load(path) == {}
    projects = with_project({}, PROJECT)
    save(path, ended(projects, PROJECT.project_id, date(2026, 12, 6)))
    again = load(path)
    assert again == {PROJECT.project_id: replace(PROJECT, ended=date(2026, 12, 6))}
    assert path.stat().st_mode & 0o077 == 0


def test_an_id_is_never_given_twice_even_once_ended() -> None:
    projects = ended(with_project({}, PROJECT), PROJECT.project_id, date(2026, 1, 1))
    with pytest.raises(ProjectError, match="exists already"):
        with_project(projects, replace(PROJECT, purpose="another"))
    with pytest.raises(ProjectError, match="ended already"):
        ended(projects, PROJECT.project_id, date(2026, 1, 2))
    with pytest.raises(ProjectError, match="no project 'other'"):
        find(projects, "other")


def test_a_project_receives_data_until_it_ends_or_expires() -> None:
    PROJECT.check_open(PROJECT.expires)
    with pytest.raises(ProjectError, match="expired on 2027-06-30"):
        PROJECT.check_open(date(2027, 7, 1))
    with pytest.raises(ProjectError, match="ended on 2026-01-01"):
        replace(PROJECT, ended=date(2026, 1, 1)).check_open(date(2026, 1, 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"project_id": "../x"}, "a project id"),
        ({"authorisation": " "}, "authorisation"),
        ({"types": ("Patient", "AuditEvent")}, "not AuditEvent"),
        ({"types": ()}, "receives some of"),
        ({"data_from": date(2026, 1, 1)}, "ends before it starts"),
        ({"members": ()}, "at least one member"),
    ],
)
def test_a_project_is_refused_when_it_is_not_whole(change: dict[str, object], message: str) -> None:
    with pytest.raises(ProjectError, match=message):
        replace(PROJECT, **change)  # type: ignore[arg-type]


def test_a_damaged_file_is_named_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keyring.research.json"
    path.write_text('{"projects": {"x": {"purpose": "secret"}}}')
    with pytest.raises(ProjectError, match="is damaged: KeyError") as raised:
        load(path)
    assert "secret" not in str(raised.value)


# A file as the projects of a vault were saved before projects had columns and cohorts.
BEFORE_COLUMNS = """{
  "projects": {
    "diabete-2026": {
      "authorisation": "CNIL DR-2026-042",
      "data_from": "2015-01-01",
      "data_to": "2025-12-31",
      "ended": null,
      "expires": "2027-06-30",
      "members": ["alice"],
      "project_id": "diabete-2026",
      "purpose": "Complications of type 2 diabetes",
      "types": ["Condition", "Observation", "Patient"]
    }
  }
}"""


def test_a_file_from_before_columns_and_cohorts_loads_as_all_of_both(tmp_path: Path) -> None:
    path = tmp_path / "keyring.research.json"
    path.write_text(BEFORE_COLUMNS)
    project = load(path)["diabete-2026"]
    assert project == PROJECT
    assert project.columns == () and project.cohort == Cohort()
    assert project.columns_of(CONDITION) == CONDITION.columns


def test_a_project_receives_person_id_and_the_columns_it_names() -> None:
    named = replace(
        PROJECT,
        types=("Condition", "Patient"),
        columns=("condition_occurrence.code", "person.person_id"),
    )
    assert [c.name for c in named.columns_of(CONDITION)] == ["person_id", "code"]
    assert [c.name for c in named.columns_of(PERSON)] == ["person_id"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (("person.name", "condition_occurrence.code"), "no column person.name; theirs are"),
        (("measurement.code", "person.gender"), "no column measurement.code;"),
        (("person.gender",), r"of condition_occurrence too \(condition_occurrence.person_id for"),
    ],
)
def test_a_column_outside_the_projects_tables_is_refused(
    columns: tuple[str, ...], message: str
) -> None:
    """Every valid column is listed; a table the project names no column of is refused."""
    with pytest.raises(ProjectError, match=message) as raised:
        replace(PROJECT, types=("Condition", "Patient"), columns=columns)
    if "theirs are" in message:
        tables = tables_of(("Condition", "Patient"))
        valid = ", ".join(f"{t.name}.{c.name}" for t in tables for c in t.columns)
        assert str(raised.value).endswith(f"theirs are {valid}")


def _columns(types: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
    """Nothing (every column), or some columns of each table of ``types``."""
    some_of_each = st.tuples(
        *(
            st.lists(st.sampled_from([f"{t.name}.{c.name}" for c in t.columns]), min_size=1)
            for t in tables_of(types)
        )
    ).map(lambda lists: tuple(sorted({name for names in lists for name in names})))
    return st.just(()) | some_of_each


_YEAR = st.none() | st.integers(min_value=1800, max_value=2100)
_CODES = st.lists(
    st.tuples(st.text(min_size=1).filter(lambda t: "|" not in t), st.text(min_size=1)).map(
        "|".join
    ),
    max_size=4,
).map(tuple)
_YEARS = st.tuples(_YEAR, _YEAR).map(lambda y: y if None in y else (min(y), max(y)))  # type: ignore[type-var]
_SINCE = st.none() | st.dates(max_value=PROJECT.data_to)
_COHORTS = st.builds(
    lambda codes, years, since: Cohort(codes, *years, since if codes else None),
    _CODES,
    _YEARS,
    _SINCE,
)


def test_a_cohorts_codes_are_looked_for_from_no_later_than_the_period_ends() -> None:
    late = Cohort(("http://snomed.info/sct|44054006",), codes_from=date(2026, 1, 1))
    with pytest.raises(ProjectError, match="from after the period ends"):
        replace(PROJECT, cohort=late)
    with pytest.raises(ProjectError, match="codes_from goes with its codes"):
        Cohort(codes_from=date(2010, 1, 1))


@given(
    st.lists(st.sampled_from(list(TABLE_OF)), min_size=1, unique=True).flatmap(
        lambda types: st.tuples(st.just(tuple(types)), _columns(types))
    ),
    _COHORTS,
)
def test_columns_and_cohort_survive_the_file(
    types_and_columns: tuple[tuple[str, ...], tuple[str, ...]], cohort: Cohort
) -> None:
    types, columns = types_and_columns
    project = replace(PROJECT, types=types, columns=columns, cohort=cohort)
    assert Project.from_json(json.loads(json.dumps(project.as_json()))) == project


def _budgeted(tmp_path: Path, epsilon: str, delta: str = "1e-6") -> Path:
    path = projects_file(tmp_path / "keyring.json")
    budget = Budget(Decimal(epsilon), Decimal(delta))
    save(path, with_project({}, replace(PROJECT, budget=budget)))
    return path


@pytest.mark.parametrize("epsilon", ["0", "1e999999999", "1000001"])
def test_a_budget_out_of_bounds_is_refused(epsilon: str) -> None:
    """A budget of 1e999999999 was taken, and every list of the projects then overflowed
    Decimal's arithmetic (a traceback) until it was changed."""
    with pytest.raises(ProjectError, match="up to 1,000,000"):
        Budget(Decimal(epsilon))


def test_a_file_from_before_budgets_loads_without_one(tmp_path: Path) -> None:
    path = tmp_path / "keyring.research.json"
    fields = {key: value for key, value in PROJECT.as_json().items() if key != "budget"}
    path.write_text(json.dumps({"projects": {PROJECT.project_id: fields}}))
    assert load(path) == {PROJECT.project_id: PROJECT}
    assert PROJECT.budget is None


def test_each_spend_is_written_and_ten_tenths_spend_one_exactly(tmp_path: Path) -> None:
    path = _budgeted(tmp_path, "1", "1e-6")
    for _ in range(10):
        after = spend(path, PROJECT.project_id, Decimal("0.1"), Decimal("1e-8"))
    assert after == Budget(Decimal(1), Decimal("1e-6"), Decimal("1.0"), Decimal("1.0e-7"))
    assert load(path)[PROJECT.project_id].budget == after
    assert after.spent() == "ε 1.0 spent of 1, 0.0 left; δ 1.0E-7 of 0.000001"


def test_a_spend_beyond_the_budget_is_refused_and_spends_nothing(tmp_path: Path) -> None:
    path = _budgeted(tmp_path, "1", "1e-7")
    spend(path, PROJECT.project_id, Decimal("0.75"), Decimal(0))
    before = path.read_bytes()
    for epsilon, delta in (("0.5", "0"), ("0.1", "2e-7")):
        with pytest.raises(ProjectError, match="exceeds the project's privacy budget"):
            spend(path, PROJECT.project_id, Decimal(epsilon), Decimal(delta))
        assert path.read_bytes() == before
    with pytest.raises(ProjectError, match="no privacy budget"):
        budget_of(PROJECT)
    with pytest.raises(ProjectError, match="above 0"):
        spend(path, PROJECT.project_id, Decimal(-1), Decimal(0))


def test_spends_at_once_never_overspend(tmp_path: Path) -> None:
    """Eight threads spend 1 each of a budget of 4: the file's lock lets four through,
    and none of their spends is lost."""
    path = _budgeted(tmp_path, "4")
    barrier = threading.Barrier(8)

    def one() -> bool:
        barrier.wait()
        try:
            spend(path, PROJECT.project_id, Decimal(1), Decimal(0))
        except ProjectError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(lambda _: one(), range(8)))
    assert answered.count(True) == 4
    budget = load(path)[PROJECT.project_id].budget
    assert budget is not None and budget.spent_epsilon == 4


def test_a_budget_is_set_again_keeping_what_was_spent(tmp_path: Path) -> None:
    path = _budgeted(tmp_path, "1")
    spend(path, PROJECT.project_id, Decimal("0.75"), Decimal("1e-8"))
    projects = with_budget(load(path), PROJECT.project_id, Decimal(2), Decimal("1e-5"))
    assert projects[PROJECT.project_id].budget == Budget(
        Decimal(2), Decimal("1e-5"), Decimal("0.75"), Decimal("1e-8")
    )
    with pytest.raises(ProjectError, match="its budget may not be less"):
        with_budget(projects, PROJECT.project_id, Decimal("0.5"), Decimal("1e-5"))
    added = with_budget({PROJECT.project_id: PROJECT}, PROJECT.project_id, Decimal(1), Decimal(0))
    assert added[PROJECT.project_id].budget == Budget(Decimal(1), Decimal(0))
    for epsilon, delta in (("0", "0"), ("1", "1"), ("NaN", "0"), ("1", "-1e-9")):
        with pytest.raises(ProjectError, match="a privacy budget is"):
            Budget(Decimal(epsilon), Decimal(delta))
