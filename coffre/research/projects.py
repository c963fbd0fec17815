"""Authorised research projects, in a file on the sovereign side beside the keyring.

A project names the authorisation it holds (a CNIL decision's number, say), its purpose,
the resource types it may receive and the columns of their tables, the period of data,
its cohort, its members (users with the researcher role) and when its authorisation
expires. ``coffre research add``, ``list``
and ``end`` edit the file (``keyring.research.json``, 0600); a project ended stays in it,
so that its id, which its pseudonyms' key is derived from, is never given to another.
docs/research.md says why a file and not a record of the vault.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from coffre.files import replace_file
from coffre.research.cohort import EVERYONE, Cohort
from coffre.research.errors import ProjectError as ProjectError  # where it was first
from coffre.research.tables import PERSON_ID, TABLE_OF, Column, Table, tables_of

RESEARCH_SUFFIX = ".research.json"
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class OverBudget(ProjectError):
    """A differentially private count the project's privacy budget does not cover: it has
    none, or too little is left."""


DELTA_BUDGET = Decimal("1e-6")
"""A project's δ in all, where the operator sets no other."""
MOST_EPSILON = Decimal(10) ** 6
"""Past any ε that protects anybody (a few units already say much), and far below the
exponents where Decimal's arithmetic overflows (a budget of 1e999999999 did)."""


@dataclass(frozen=True, slots=True)
class Budget:
    """The privacy loss a project's differentially private counts may spend in all, and
    what they spent. Decimal, so that ten counts of ε 0.1 spend 1 exactly."""

    epsilon: Decimal
    delta: Decimal = DELTA_BUDGET
    spent_epsilon: Decimal = Decimal(0)
    spent_delta: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        finite = self.epsilon.is_finite() and self.delta.is_finite()
        if not (finite and 0 < self.epsilon <= MOST_EPSILON and 0 <= self.delta < 1):
            raise ProjectError(
                f"a privacy budget is an ε above 0, up to {MOST_EPSILON:,f}, and a δ from 0 to"
                " under 1"
            )
        if self.spent_epsilon > self.epsilon or self.spent_delta > self.delta:
            raise ProjectError(
                f"the project spent ε {self.spent_epsilon} and δ {self.spent_delta} already:"
                " its budget may not be less"
            )

    def spending(self, epsilon: Decimal, delta: Decimal) -> Budget:
        """The budget once a count of ``epsilon`` and ``delta`` is answered; ProjectError
        where what remains is less."""
        if not (epsilon > 0 and delta >= 0):
            raise ProjectError(f"a count spends an ε above 0 and a δ of 0 or more, not {epsilon}")
        spent_epsilon, spent_delta = self.spent_epsilon + epsilon, self.spent_delta + delta
        if spent_epsilon > self.epsilon or spent_delta > self.delta:
            raise OverBudget(
                f"a count of ε {epsilon} and δ {delta} exceeds the project's privacy budget:"
                f" {self.spent()}"
            )
        return replace(self, spent_epsilon=spent_epsilon, spent_delta=spent_delta)

    def spent(self) -> str:
        return (
            f"ε {self.spent_epsilon} spent of {self.epsilon}, {self.epsilon - self.spent_epsilon}"
            f" left; δ {self.spent_delta} of {self.delta}"
        )

    def as_json(self) -> dict[str, str]:
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, fields: dict[str, str]) -> Budget:
        return cls(**{name: Decimal(value) for name, value in fields.items()})


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str
    authorisation: str
    purpose: str
    types: tuple[str, ...]
    data_from: date
    data_to: date
    members: tuple[str, ...]
    """Usernames of researchers (``coffre users``)."""
    expires: date
    """The last day the project may receive data."""
    ended: date | None = None
    columns: tuple[str, ...] = ()
    """``TABLE.COLUMN``s it receives, ``person_id`` always; none: every column of its tables."""
    cohort: Cohort = EVERYONE
    budget: Budget | None = None
    """What its differentially private counts may spend; without one, they are refused."""

    def __post_init__(self) -> None:
        if not _PROJECT_ID.fullmatch(self.project_id):
            raise ProjectError(
                f"a project id is 1 to 64 letters, digits, '.', '_' or '-', not {self.project_id!r}"
            )
        if not self.authorisation.strip() or not self.purpose.strip():
            raise ProjectError("a project needs its authorisation reference and its purpose")
        unknown = sorted(set(self.types) - set(TABLE_OF))
        if unknown or not self.types:
            raise ProjectError(
                f"a project receives some of {', '.join(TABLE_OF)}; not {', '.join(unknown)}"
            )
        if self.data_from > self.data_to:
            raise ProjectError("the period of data ends before it starts")
        if not self.members:
            raise ProjectError("a project needs at least one member")
        _check_columns(self.types, self.columns)
        if self.cohort.codes_from is not None and self.cohort.codes_from > self.data_to:
            raise ProjectError("the cohort's codes are looked for from after the period ends")

    def state(self, today: date) -> str:
        """``open``, ``ended`` for good, or ``expired`` (its authorisation's last day past)."""
        if self.ended is not None:
            return "ended"
        return "expired" if today > self.expires else "open"

    def check_open(self, today: date) -> None:
        """Refuse a project that may no longer receive data: ended, or expired."""
        state = self.state(today)
        if state != "open":
            when = self.ended if state == "ended" else self.expires
            raise ProjectError(f"project {self.project_id} {state} on {when}")

    @property
    def period(self) -> tuple[date, date]:
        return self.data_from, self.data_to

    def columns_of(self, table: Table) -> tuple[Column, ...]:
        """The columns of one of its tables that the project receives."""
        if not self.columns:
            return table.columns
        named = set(self.columns)
        return tuple(
            column
            for column in table.columns
            if column == PERSON_ID or f"{table.name}.{column.name}" in named
        )

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        for name in ("data_from", "data_to", "expires", "ended"):
            fields[name] = None if fields[name] is None else fields[name].isoformat()
        fields["types"], fields["members"] = list(self.types), list(self.members)
        fields["columns"], fields["cohort"] = list(self.columns), self.cohort.as_json()
        fields["budget"] = None if self.budget is None else self.budget.as_json()
        return fields

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Project:
        dates = {
            name: None if fields[name] is None else date.fromisoformat(fields[name])
            for name in ("data_from", "data_to", "expires", "ended")
        }
        return cls(
            **{
                **fields,
                **dates,
                "types": tuple(fields["types"]),
                "members": tuple(fields["members"]),
                # A project added before columns and cohorts receives all of both.
                "columns": tuple(fields.get("columns", ())),
                "cohort": Cohort.from_json(fields["cohort"]) if "cohort" in fields else EVERYONE,
                "budget": _budget(fields.get("budget")),
            }
        )


def _check_columns(types: tuple[str, ...], columns: tuple[str, ...]) -> None:
    """Columns named are of the project's tables, and each table has one (its
    ``person_id`` alone, if need be): no table receives every column by omission."""
    if not columns:
        return
    tables = tables_of(types)
    valid = [f"{table.name}.{column.name}" for table in tables for column in table.columns]
    unknown = sorted(set(columns) - set(valid))
    if unknown:
        raise ProjectError(
            f"the project's tables have no column {', '.join(unknown)}; theirs are"
            f" {', '.join(valid)}"
        )
    unnamed = [t.name for t in tables if not any(c.startswith(f"{t.name}.") for c in columns)]
    if unnamed:
        raise ProjectError(
            f"name the columns of {', '.join(unnamed)} too ({unnamed[0]}.{PERSON_ID.name}"
            " for its pseudonyms alone), or leave its type out"
        )


def _budget(fields: dict[str, str] | None) -> Budget | None:
    """A project's budget as its file holds it: none in a file from before budgets."""
    return None if fields is None else Budget.from_json(fields)


def projects_file(keyring: Path) -> Path:
    """Where a vault's projects are kept: beside its keyring."""
    return keyring.with_name(keyring.stem + RESEARCH_SUFFIX)


def load(path: Path) -> dict[str, Project]:
    """The projects at ``path``, by id; an absent file holds none."""
    try:
        data = json.loads(path.read_text())
        return {key: Project.from_json(fields) for key, fields in data["projects"].items()}
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ProjectError(f"cannot read the projects file {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, InvalidOperation) as error:
        raise ProjectError(f"the projects file {path} is damaged: {type(error).__name__}") from None


def save(path: Path, projects: dict[str, Project]) -> None:
    data = {"projects": {key: projects[key].as_json() for key in sorted(projects)}}
    replace_file(path, json.dumps(data, indent=2, sort_keys=True))


def with_project(projects: dict[str, Project], project: Project) -> dict[str, Project]:
    """The projects and a new one; an id used before, even by an ended project, is refused."""
    if project.project_id in projects:
        raise ProjectError(f"project {project.project_id} exists already: choose another id")
    return {**projects, project.project_id: project}


def find(projects: dict[str, Project], project_id: str) -> Project:
    try:
        return projects[project_id]
    except KeyError:
        raise ProjectError(
            f"no project {project_id!r}: `coffre research list` lists them"
        ) from None


def ended(projects: dict[str, Project], project_id: str, today: date) -> dict[str, Project]:
    """The projects with this one ended today (it receives nothing more)."""
    project = find(projects, project_id)
    if project.ended is not None:
        raise ProjectError(f"project {project_id} ended already, on {project.ended}")
    return {**projects, project_id: replace(project, ended=today)}


def with_budget(
    projects: dict[str, Project], project_id: str, epsilon: Decimal, delta: Decimal
) -> dict[str, Project]:
    """The projects with this one's budget set, what it spent kept."""
    project = find(projects, project_id)
    before = project.budget
    budget = (
        Budget(epsilon, delta) if before is None else replace(before, epsilon=epsilon, delta=delta)
    )
    return {**projects, project_id: replace(project, budget=budget)}


def spending(
    projects: dict[str, Project], project_id: str, epsilon: Decimal, delta: Decimal
) -> dict[str, Project]:
    """The projects once this one answered a count of ``epsilon`` and ``delta``."""
    project = find(projects, project_id)
    budget = budget_of(project).spending(epsilon, delta)
    return {**projects, project_id: replace(project, budget=budget)}


def budget_of(project: Project) -> Budget:
    """The project's privacy budget; ProjectError where it has none."""
    if project.budget is None:
        raise OverBudget(
            f"project {project.project_id} has no privacy budget: the operator sets one with"
            f" `coffre research budget {project.project_id} EPSILON`"
        )
    return project.budget


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock of the projects file, held on a file beside it."""
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def update(
    path: Path, change: Callable[[dict[str, Project]], dict[str, Project]]
) -> dict[str, Project]:
    """Read the projects, change them and write them back, under the file's lock: two
    commands at once do not lose one's change, or spend a budget twice. A change refused
    (ProjectError) writes nothing."""
    with _locked(path):
        projects = change(load(path))
        save(path, projects)
    return projects


def spend(path: Path, project_id: str, epsilon: Decimal, delta: Decimal) -> Budget:
    """Spend a count's ε and δ of the project's budget in its file, durably; the budget
    as it is after. ProjectError, with nothing spent, where what remains is less."""
    projects = update(path, lambda projects: spending(projects, project_id, epsilon, delta))
    return budget_of(projects[project_id])
