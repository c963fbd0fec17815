"""A project's pseudonymised extract: OMOP-like Parquet tables of the patients of its cohort
who did not refuse research use, only of the project's types, columns and period.

Made on the sovereign side, with the vault's keys, a batch of patients at a time, so that
memory stays flat however large the vault. Each version handed out is an ``EXPORT`` leaf
of the log, committed before its rows are written, with an AuditEvent in the patient's
compartment that names the project (their access history shows it); the extract ends
with one more ``EXPORT`` leaf, in the gateway's compartment, whose body hash is the
SHA-256 of the manifest, itself holding each file's SHA-256. docs/research.md.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from coffre.exceptions import CoffreError
from coffre.fhir import json
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.research.folder import MANIFEST
from coffre.research.projects import Project
from coffre.research.tables import Column, Row, Table, rows_of, tables_of, year_of
from coffre.seal.keys import Pseudonyms
from coffre.service.audit import Access
from coffre.service.consent import RESEARCH_PURPOSE, research_opt_out
from coffre.service.export import Export, ExportJob
from coffre.service.records import RecordStore
from coffre.service.stored import Stored, instant, now_us
from coffre.storage.base import SealedVersion

EXTRACT_TYPE = "$research-extract"
"""The pseudo-type of an extract's location in the log: never a FHIR type."""
LEAF = "manifest.leaf"
"""Where an extract says which leaf of the log commits to its manifest."""
PATIENTS_AT_ONCE = 100
"""Patients whose rows wait together for their leaves to commit."""
ROWS_PER_GROUP = 50_000
"""Rows a table holds in memory before they go to its file as a Parquet row group."""
SORT_MEMORY = "128MB"
"""What DuckDB may hold while it puts a table's rows in order; it spills the rest to disk."""
LOCS_AT_ONCE = 500
"""Records looked up in one query (SQLite bounds the values a statement takes)."""
_ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int32(),
    "float": pa.float64(),
    "month": pa.date32(),
}
_HASH_CHUNK = 1 << 20
PSEUDONYMS = "HMAC-SHA256 of the patient id under the project's own key, 128 bits in hexadecimal"
DATES = "a birth as its year; an event as the first day of its month, in its own time zone"


def research_access(who: str, project: Project, what: str) -> Access:
    """Who acts on a project's behalf, for the AuditEvents: the purpose is research."""
    reason = f"{what}{_FOR_PROJECT}{project.project_id} (authorisation {project.authorisation})"
    return Access(who, purpose=RESEARCH_PURPOSE, reason=reason)


_FOR_PROJECT = " for research project "


def project_events(events: list[dict[str, Any]], project_id: str) -> list[tuple[str, str, str]]:
    """What ``events`` (AuditEvents) say was done for a project, as ``research_access``
    wrote it: when, who, and what (a count with its filters, an extract), in their order.
    The project is the one named last: a filter's value, the researcher's own text, may
    hold the phrase too. Control characters come out escaped, so that a value cannot
    make a line of its own."""
    done = []
    for event in events:
        for purpose in event.get("purposeOfEvent", []):
            codes = {coding.get("code") for coding in purpose.get("coding", [])}
            what, said, rest = str(purpose.get("text", "")).rpartition(_FOR_PROJECT)
            if RESEARCH_PURPOSE in codes and said and rest.startswith(f"{project_id} ("):
                who = str(event["agent"][0]["who"].get("display", ""))
                done.append((str(event.get("recorded", "")), _shown(who), _shown(what)))
    return done


def _shown(text: str) -> str:
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def schema_of(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([(column.name, _ARROW_TYPES[column.kind]) for column in columns])


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _own_file(path: Path) -> Path:
    """``path``, made empty and readable by its owner only (0600), whatever the folder's mode."""
    path.touch(mode=0o600)
    return path


class _TableFiles:
    """A Parquet file per table of a project, each of the columns it receives: the rows go
    to an unsorted file a row group at a time, then to the table's file in order
    (``in_order``)."""

    def __init__(self, folder: Path, project: Project) -> None:
        tables = tables_of(project.types)
        self.paths = {table.name: folder / f"{table.name}.parquet" for table in tables}
        self.unsorted = {name: folder / f".{name}.unsorted" for name in self.paths}
        self.spilled = folder / ".sorting"
        """Where DuckDB spills what it sorts beyond ``SORT_MEMORY``."""
        self.rows = dict.fromkeys(self.paths, 0)
        self.columns = {table.name: project.columns_of(table) for table in tables}
        self._schemas = {name: schema_of(columns) for name, columns in self.columns.items()}
        self._waiting: dict[str, list[Row]] = {name: [] for name in self.paths}
        self._writers = {
            name: pq.ParquetWriter(_own_file(self.unsorted[name]), self._schemas[name])
            for name in self.paths
        }

    def add(self, table: Table, row: Row) -> None:
        waiting = self._waiting[table.name]
        waiting.append({column.name: row[column.name] for column in self.columns[table.name]})
        self.rows[table.name] += 1
        if len(waiting) >= ROWS_PER_GROUP:
            self._flush(table.name)

    def _flush(self, name: str) -> None:
        waiting = self._waiting[name]
        if waiting:
            batch = pa.Table.from_pylist(waiting, schema=self._schemas[name])
            self._writers[name].write_table(batch)
            waiting.clear()

    def close(self) -> None:
        for name, writer in self._writers.items():
            self._flush(name)
            writer.close()

    def in_order(self) -> None:
        """Write each table's rows to its file in the order of their values, the pseudonym
        first, then each other column: in the order the vault stores patients and records,
        the same for every project, row i of two projects' files would be one patient.
        DuckDB sorts within ``SORT_MEMORY``, spilling the rest beside the files, on one
        thread: each thread of its own takes a share of the memory, and on eight cores 128
        MB ran out for a million rows instead of spilling."""
        self.close()
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": SORT_MEMORY,
            "temp_directory": str(self.spilled),
            "threads": 1,
            "preserve_insertion_order": False,
        }
        with duckdb.connect(config=config) as connection:
            for name, path in self.paths.items():
                try:
                    self._sorted(connection, name, path)
                except duckdb.Error as error:  # its message may quote a value: not shown
                    raise CoffreError(
                        f"DuckDB could not put the {name} table's rows in order"
                        f" ({type(error).__name__}): the extract was not made"
                    ) from None

    def _sorted(self, connection: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
        rows = connection.sql(
            "SELECT * FROM read_parquet($path) ORDER BY ALL",
            params={"path": str(self.unsorted[name])},
        )
        schema = self._schemas[name]
        with pq.ParquetWriter(_own_file(path), schema) as writer:
            for batch in rows.to_arrow_reader(ROWS_PER_GROUP):
                writer.write_batch(batch.cast(schema))
        self.unsorted[name].unlink()

    def remove(self) -> None:
        """Every file written, as a failed extract leaves none."""
        self.close()
        for path in [*self.paths.values(), *self.unsorted.values()]:
            path.unlink(missing_ok=True)
        shutil.rmtree(self.spilled, ignore_errors=True)


@dataclass(slots=True)
class _Batch:
    """The versions a batch of patients hands out, the rows they give, and how many
    patients of the cohort it holds."""

    persons: int = 0
    handed_out: list[Stored] = field(default_factory=list)
    rows: list[tuple[Table, Row]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Extract:
    manifest: dict[str, Any]
    leaf: int
    """The index of the log leaf that commits to the manifest."""


def confirmed_patients(records: RecordStore) -> Iterator[Stored]:
    """The vault's Patients as they are now, each as the log has it, deleted and erased ones
    left out. Read a page of the storage at a time, as an export reads it: a cursor held
    open across the extract's own commits would keep SQLite's reading connection on its
    first snapshot, and the log would look shorter than the gateway followed."""
    job = ExportJob("patient", records.storage.last_seq(), now_us(), "", types=("Patient",))
    for sealed in Export(records, job).versions("Patient"):
        stored = records.open_found(sealed)
        if stored.resource_type == "Patient":
            yield stored


def _confirmed(records: RecordStore, sealed: SealedVersion) -> SealedVersion | None:
    """``sealed`` if the log has it as its record's latest write, else the latest that the
    log confirms (None: deleted meanwhile); SealError if the storage altered it."""
    if records.is_logged_version(sealed.loc, sealed):
        latest: SealedVersion | None = sealed
    else:
        latest = records.checked_latest(sealed.loc)
    return None if latest is None or latest.deleted else latest


def research_patients(records: RecordStore) -> Iterator[Stored]:
    """The current Patients who did not refuse research use, each asked of the log-checked
    Consent (``research_opt_out``): a host cannot hide a refusal."""
    for patient in confirmed_patients(records):
        if not research_opt_out(records, patient.id):
            yield patient


def _compartment(records: RecordStore, patient: Stored, types: frozenset[str]) -> Iterator[Stored]:
    """The patient's current records of ``types``, each confirmed by the log."""
    storage, comp = records.storage, patient.comp
    kinds = {records.keys.kind(t) for t in types}
    locs = sorted(storage.records_of(comp))
    for start in range(0, len(locs), LOCS_AT_ONCE):
        found = storage.latest_each(locs[start : start + LOCS_AT_ONCE])
        for sealed in found.values():
            if sealed.kind not in kinds or sealed.comp != comp or sealed.deleted:
                continue
            checked = _confirmed(records, sealed)
            if checked is not None and checked.comp == comp:
                stored = records.open_found(checked)
                if stored.resource_type in types:
                    yield stored


def _patient_rows(
    records: RecordStore, project: Project, patient: Stored, person_id: str, batch: _Batch
) -> None:
    """Add to ``batch`` what one patient hands out, if the project's cohort holds them: each
    version that gives rows of its types, and those that put the patient in its cohort (their
    being in the extract discloses them). Every compartment is listed alike, in the cohort
    or not (docs/research.md, what the host learns)."""
    types, cohort = frozenset(project.types), project.cohort
    born_in = cohort.born_in(year_of(patient.resource().get("birthDate")))
    read = (types | cohort.types) - {"Patient"} if born_in else frozenset()
    candidates = [patient, *_compartment(records, patient, read)]
    if not born_in:
        return
    handed_out, rows, coded = [], [], not cohort.codes
    looked_in = cohort.period(project.period)
    for stored in candidates:
        given = list(rows_of(stored.resource(), person_id, project.period))
        if looked_in != project.period:  # a code may count from before the data's period
            looked = list(rows_of(stored.resource(), person_id, looked_in))
        else:
            looked = given
        decides = any(cohort.holds(row) for _, row in looked)
        coded = coded or decides
        received = given if stored.resource_type in types else []
        if received or decides or (stored is patient and cohort.by_birth):
            handed_out.append(stored)
            rows.extend(received)
    if not coded:
        return
    batch.persons += 1
    if rows:
        batch.handed_out.extend(handed_out)
        batch.rows.extend(rows)


def _commit(records: RecordStore, access: Access, batch: _Batch, files: _TableFiles) -> None:
    """Log what the batch hands out, durably, then write its rows."""
    if batch.handed_out:
        with records.writer(access) as writer:
            writer.log_access(LeafKind.EXPORT, batch.handed_out)
    for table, row in batch.rows:
        files.add(table, row)


def extract(records: RecordStore, project: Project, out: Path, who: str, today: date) -> Extract:
    """Write the project's extract into ``out`` (a new or empty folder), its manifest last,
    and log it as ``who``'s; ProjectError for a project ended or expired. A failure leaves
    no file behind."""
    project.check_open(today)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: an extract goes to a new folder")
    access = research_access(who, project, "research extract")
    pseudonyms = Pseudonyms(records.custodian.root_secret(), project.project_id)
    files = _TableFiles(out, project)
    try:
        persons = _write_tables(records, project, pseudonyms, access, files)
        manifest = _manifest(project, persons, files)
        body = json.canonical(manifest)
        _own_file(out / MANIFEST).write_bytes(body)
        leaf = _log_extract(records, access, manifest["extract"], body)
        _own_file(out / LEAF).write_text(f"{leaf}\n")
    except BaseException:
        files.remove()
        for path in (out / MANIFEST, out / LEAF):
            path.unlink(missing_ok=True)
        raise
    return Extract(manifest, leaf)


def _manifest(project: Project, persons: int, files: _TableFiles) -> dict[str, Any]:
    """What the extract is: its id, the project as it stands, its files and their rows."""
    return {
        "extract": uuid.uuid4().hex,
        "created": instant(now_us()),
        "project": project.as_json(),
        "persons": persons,
        "pseudonyms": PSEUDONYMS,
        "dates": DATES,
        "files": {
            path.name: {
                "sha256": file_digest(path),
                "rows": files.rows[name],
                "columns": [column.name for column in files.columns[name]],
            }
            for name, path in files.paths.items()
        },
    }


def _write_tables(
    records: RecordStore,
    project: Project,
    pseudonyms: Pseudonyms,
    access: Access,
    files: _TableFiles,
) -> int:
    """The rows of every research patient of the cohort, a batch of them at a time; how many
    there were."""
    persons = 0
    batch = _Batch()
    for patient in research_patients(records):
        _patient_rows(records, project, patient, pseudonyms.of(patient.id), batch)
        if batch.persons == PATIENTS_AT_ONCE:
            persons += batch.persons
            _commit(records, access, batch, files)
            batch = _Batch()
    persons += batch.persons
    _commit(records, access, batch, files)
    files.in_order()
    return persons


def _log_extract(records: RecordStore, access: Access, extract_id: str, manifest: bytes) -> int:
    """The extract's own leaf: its location the extract's, its body hash the manifest's."""
    loc = records.keys.location(EXTRACT_TYPE, extract_id)
    leaf = Leaf(LeafKind.EXPORT, loc, 0, hashlib.sha256(manifest).digest(), now_us())
    with records.writer(access) as writer:
        index = writer.txn.leaf_count()
        writer.log_to_gateway([leaf], f"{EXTRACT_TYPE}/{extract_id}")
    return index
