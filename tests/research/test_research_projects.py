"""Authorised research projects, kept beside the keyring."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from coffre.research.projects import (
    Project,
    ProjectError,
    ended,
    find,
    load,
    projects_file,
    save,
    with_project,
)

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
