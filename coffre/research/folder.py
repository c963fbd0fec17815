"""The research hub's folder on the sovereign side: the projects file, and where each
project's extracts are kept.

``coffre research extract`` writes an extract into ``keyring.research/PROJECT/WHEN/``,
beside the keyring (each folder 0700), unless told another folder; the server's research
endpoints list and count over the extracts kept there, and no others. Reading a folder
needs neither pyarrow nor DuckDB: a server lists extracts without loading them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from coffre.research.projects import Project, ProjectError, load, projects_file

EXTRACTS_SUFFIX = ".research"
MANIFEST = "manifest.json"


class NoExtract(ProjectError):
    """No extract of a project, or none of that id, is kept in the research folder."""


@dataclass(frozen=True, slots=True)
class KeptExtract:
    """An extract kept in the research folder, as its manifest describes it."""

    extract_id: str
    created: str
    persons: int
    rows: dict[str, int]
    """Each table's rows."""
    folder: Path

    @classmethod
    def read(cls, folder: Path) -> KeptExtract | None:
        """The extract in ``folder``; None while it is being written (no manifest yet) or
        when its manifest cannot be read."""
        try:
            manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_bytes())
            return cls(
                str(manifest["extract"]),
                str(manifest["created"]),
                int(manifest["persons"]),
                {Path(name).stem: int(f["rows"]) for name, f in manifest["files"].items()},
                folder,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def as_json(self, exact: bool) -> dict[str, Any]:
        """The extract as its project's researchers see it listed: its persons and each
        table's rows, null where the project answers them no exact count (a privacy
        budget)."""
        return {
            "extract": self.extract_id,
            "created": self.created,
            "persons": self.persons if exact else None,
            "tables": {name: rows if exact else None for name, rows in self.rows.items()},
        }


class ResearchFolder:
    """A vault's research projects and kept extracts, beside its keyring."""

    def __init__(self, keyring: Path) -> None:
        self.projects_file = projects_file(keyring)
        self.extracts = keyring.with_name(keyring.stem + EXTRACTS_SUFFIX)

    def projects(self) -> dict[str, Project]:
        return load(self.projects_file)

    def new_extract(self, project_id: str, now: datetime) -> Path:
        """A folder for a new extract of the project, named after ``now`` (UTC)."""
        project_folder = self.extracts / project_id
        for folder in (self.extracts, project_folder):
            folder.mkdir(mode=0o700, exist_ok=True)
        return project_folder / now.strftime("%Y%m%dT%H%M%S%fZ")

    def kept(self, project_id: str) -> list[KeptExtract]:
        """The project's extracts kept here, oldest first."""
        try:
            folders = [path for path in (self.extracts / project_id).iterdir() if path.is_dir()]
        except OSError:
            return []
        extracts = [extract for path in folders if (extract := KeptExtract.read(path))]
        return sorted(extracts, key=lambda extract: (extract.created, extract.extract_id))

    def every_kept(self) -> list[KeptExtract]:
        """The extracts kept here of every project, ended ones too, oldest first."""
        try:
            projects = [path.name for path in self.extracts.iterdir() if path.is_dir()]
        except OSError:
            return []
        kept = [extract for project in projects for extract in self.kept(project)]
        return sorted(kept, key=lambda extract: (extract.created, extract.extract_id))

    def find(self, project_id: str, extract_id: str | None) -> KeptExtract:
        """The kept extract of that id, or the latest; ProjectError when there is none."""
        kept = self.kept(project_id)
        if extract_id is None and kept:
            return kept[-1]
        for extract in kept:
            if extract.extract_id == extract_id:
                return extract
        which = f"no extract {extract_id}" if extract_id else "no extract"
        raise NoExtract(f"{which} of project {project_id} is kept in the research folder")
