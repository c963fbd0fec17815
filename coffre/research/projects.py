"""Authorised research projects, in a file on the sovereign side beside the keyring.

A project names the authorisation it holds (a CNIL decision's number, say), its purpose,
the resource types it may receive, the period of data, its members (users with the
researcher role) and when its authorisation expires. ``coffre research add``, ``list``
and ``end`` edit the file (``keyring.research.json``, 0600); a project ended stays in it,
so that its id, which its pseudonyms' key is derived from, is never given to another.
docs/research.md says why a file and not a record of the vault.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from coffre.exceptions import CoffreError
from coffre.files import replace_file
from coffre.research.tables import TABLE_OF

RESEARCH_SUFFIX = ".research.json"
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ProjectError(CoffreError):
    """A project Coffre refuses, one it does not know or that may no longer receive data,
    or a projects file it cannot read."""


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

    def check_open(self, today: date) -> None:
        """Refuse a project that may no longer receive data: ended, or expired."""
        if self.ended is not None:
            raise ProjectError(f"project {self.project_id} ended on {self.ended}")
        if today > self.expires:
            raise ProjectError(f"project {self.project_id} expired on {self.expires}")

    @property
    def period(self) -> tuple[date, date]:
        return self.data_from, self.data_to

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        for name in ("data_from", "data_to", "expires", "ended"):
            fields[name] = None if fields[name] is None else fields[name].isoformat()
        fields["types"], fields["members"] = list(self.types), list(self.members)
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
            }
        )


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
    except (ValueError, KeyError, TypeError) as error:
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
