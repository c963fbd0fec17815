"""Counts over a project's extract that disclose no small cell (the SNDS rule).

A count is of distinct persons, by one or two columns of a table (or of ``person``, joined
on the pseudonym), with equality filters, computed by DuckDB over the extract's Parquet
files once the log's leaf vouches for the manifest and the manifest for each file. A cell
of fewer than 10 persons is suppressed, and so is the total under 10; then, along each
line of the table (the cells that differ in one column only, and all the cells together,
whose sum the total publishes), a line with exactly one suppressed cell has its smallest
other cell suppressed too, so that no line's sum or the total gives a suppressed cell
back. Patients who refused research use since the extract was made are
left out of every count. ``private_count`` makes the counts differentially private
(``privacy``), each person's cells bounded, its ε and δ spent of the project's budget
before the noise is drawn; suppression then applies to the noisy counts. Each count
answered is a ``SEARCH`` leaf of the log whose body hash is the SHA-256 of the query and
its published answer (with its ε, δ and K). docs/research.md.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from decimal import Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from coffre.fhir import json
from coffre.ledger.errors import LedgerError
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.research.extract import (
    EXTRACT_TYPE,
    LEAF,
    file_digest,
    research_access,
)
from coffre.research.folder import MANIFEST
from coffre.research.privacy import Key, Noise, Privacy, bounded, calibrated
from coffre.research.projects import Budget, Project, ProjectError, budget_of, spend
from coffre.research.tables import PERSON, PERSON_ID, TABLE_OF
from coffre.seal.keys import Pseudonyms
from coffre.service.audit import Access
from coffre.service.consent import research_refusals
from coffre.service.ledger import authentic_leaf
from coffre.service.records import RecordStore
from coffre.service.stored import now_us
from coffre.service.writer import Writer

SMALL_CELL = 10
"""The smallest number of persons a published cell may count."""
MAX_BY = 2
_PERSONS_AT_ONCE = 10_000
DELTA_SHARE = 100
"""A count's δ is at most the project's δ in all over this, where it is not asked."""
_TABLES = frozenset(table.name for table, _ in TABLE_OF.values())


class ExtractAltered(ProjectError):
    """An extract the log does not vouch for: not recorded, another project's, or a file
    changed since it was made."""


@dataclass(frozen=True, slots=True)
class Query:
    table: str
    by: tuple[str, ...]
    where: tuple[tuple[str, str], ...] = ()
    """Column and value pairs, each compared as text (``year_of_birth=1984``)."""

    @classmethod
    def of(cls, table: str, by: Iterable[str], where: Iterable[str]) -> Query:
        """A query from its words: each of ``where`` is ``COLUMN=VALUE``."""
        pairs = []
        for text in where:
            name, equals, value = text.partition("=")
            if not equals:
                raise ProjectError(f"a filter is COLUMN=VALUE, not {text!r}")
            pairs.append((name, value))
        return cls(table, tuple(by), tuple(pairs))


@dataclass(frozen=True, slots=True)
class Count:
    """A published count: each cell's persons, None where suppressed."""

    query: Query
    cells: list[tuple[Key, int | None]]
    total: int | None
    noise: Noise | None = None
    """How the answer was made differentially private; None where it is exact."""
    budget: Budget | None = None
    """The project's privacy budget once this count was spent of it."""

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "table": self.query.table,
            "by": list(self.query.by),
            "where": [list(pair) for pair in self.query.where],
            "cells": [
                {"values": [_text(value) for value in key], "persons": persons}
                for key, persons in self.cells
            ],
            "total": self.total,
            "suppressed_below": SMALL_CELL,
        }
        if self.noise is not None:
            answer["privacy"] = self.noise.as_json()
        return answer


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def checked_manifest(records: RecordStore, folder: Path, project: Project) -> dict[str, Any]:
    """The extract's manifest, once the log's leaf commits to it (``LEAF`` names the
    leaf), it is the project's, and every file is as it says."""
    try:
        body = (folder / MANIFEST).read_bytes()
        index = int((folder / LEAF).read_text())
        manifest: dict[str, Any] = json.loads(body)
        data = records.storage.leaves(index, index + 1) if index >= 0 else []
        leaf = authentic_leaf(records.keys, index, data[0]) if data else None
    except (OSError, ValueError, LedgerError):
        leaf = None
    if (
        leaf is None
        or leaf.kind is not LeafKind.EXPORT
        or leaf.body_hash != hashlib.sha256(body).digest()
        or leaf.loc != records.keys.location(EXTRACT_TYPE, manifest["extract"])
    ):
        raise ExtractAltered(f"{folder} holds no extract that the log records")
    if manifest["project"]["project_id"] != project.project_id:
        raise ExtractAltered(f"{folder} holds no extract of project {project.project_id}")
    for name, described in manifest["files"].items():
        path = folder / name
        if not path.is_file() or file_digest(path) != described["sha256"]:
            raise ExtractAltered(f"{path} is not the file the extract's manifest describes")
    return manifest


def suppress(cells: dict[Key, int], total: int) -> tuple[dict[Key, int | None], int | None]:
    """The cells and total as they may be published: under ``SMALL_CELL`` suppressed,
    then complementary cells until no line holds exactly one suppressed cell."""
    if total < SMALL_CELL:
        return dict.fromkeys(cells), None
    hidden = {key for key, persons in cells.items() if persons < SMALL_CELL}
    width = len(next(iter(cells), ()))
    # The total is published: every cell together is a line too.
    lines = [line for column in range(width) for line in _lines(cells, column)] + [list(cells)]
    changed = True
    while changed:
        changed = False
        for line in lines:
            suppressed = [key for key in line if key in hidden]
            shown = [key for key in line if key not in hidden]
            if len(suppressed) == 1 and shown:
                hidden.add(min(shown, key=lambda key: (cells[key], _order(key))))
                changed = True
    return {key: None if key in hidden else persons for key, persons in cells.items()}, total


def _lines(cells: Iterable[Key], column: int) -> list[list[Key]]:
    """The cells grouped by every value but that of ``column``."""
    lines: dict[Key, list[Key]] = defaultdict(list)
    for key in cells:
        lines[key[:column] + key[column + 1 :]].append(key)
    return list(lines.values())


def _order(key: Key) -> tuple[tuple[bool, str], ...]:
    """A total order of keys that may hold None."""
    return tuple((value is None, str(value)) for value in key)


class _Extract:
    """An extract's files as DuckDB views, and the persons who refused since it was made."""

    def __init__(self, folder: Path, manifest: dict[str, Any], refused: list[str]) -> None:
        self.connection = duckdb.connect()
        self.columns: dict[str, list[str]] = {}
        self.numbers: dict[str, bool] = {}
        """``table.column`` of the columns that hold numbers (bins can be made of them), and
        whether they are whole numbers."""
        for name in manifest["files"]:
            table = Path(name).stem
            path = str(folder / name).replace("'", "''")
            self.connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
            schema = pq.read_schema(folder / name)
            self.columns[table] = schema.names
            self.numbers |= {
                f"{table}.{field.name}": pa.types.is_integer(field.type)
                for field in schema
                if pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
            }
        self.connection.register("refused", pa.table({"person_id": pa.array(refused, pa.string())}))
        self._binned: dict[tuple[str, str, Decimal], str] = {}

    def _column(self, query: Query, name: str) -> str:
        """A column as SQL: the table's, else the person's; ProjectError for any other."""
        if name != PERSON_ID.name and name in self.columns[query.table]:
            return f't."{name}"'
        if name != PERSON_ID.name and name in self.columns.get(PERSON.name, ()):
            return f'p."{name}"'
        raise ProjectError(f"{query.table} has no column {name!r} to count by")

    def _by(self, query: Query, text: str) -> str:
        """A column to count by as SQL: ``COLUMN``, or ``COLUMN/WIDTH``, a number's bins of
        that width, each cell named by its lower bound (``value_as_number/0.5``: 7.0 holds
        the values from 7.0 to under 7.5)."""
        name, slash, raw_width = text.partition("/")
        column = self._column(query, name)
        if not slash:
            return column
        table = query.table if column.startswith("t.") else PERSON.name
        whole = self.numbers.get(f"{table}.{name}")
        if whole is None:
            raise ProjectError(f"{name} holds no numbers to make bins of")
        width = _bin_width(raw_width)
        bins = self._bins(table, name, whole, width)
        binned = f"(SELECT b.lower FROM {bins} b WHERE b.value = {column})"
        if whole and width == width.to_integral_value():  # whole numbers' bins stay whole
            return f"CAST({binned} AS BIGINT)"
        return binned

    def _bins(self, table: str, name: str, whole: bool, width: Decimal) -> str:
        """The name of a table of each value of ``table.name`` and the lower bound of its
        bin of ``width`` (``bin_floor``), for DuckDB to look the bins up in: DuckDB's
        arithmetic is the doubles', and its Python functions want numpy."""
        key = (table, name, width)
        if key not in self._binned:
            found = self.connection.sql(
                f'SELECT DISTINCT "{name}" FROM {table} WHERE "{name}" IS NOT NULL'
            ).fetchall()
            values = [value for (value,) in found]
            bins = pa.table(
                {
                    "value": pa.array(values, pa.int64() if whole else pa.float64()),
                    "lower": pa.array([bin_floor(v, width) for v in values], pa.float64()),
                }
            )
            self._binned[key] = f"bins_{len(self._binned)}"
            self.connection.register(self._binned[key], bins)
        return self._binned[key]

    def _source(self, query: Query) -> tuple[list[str], str, list[str]]:
        """The query's columns to count by, its FROM and WHERE clauses, and their values."""
        if query.table not in self.columns:
            raise ProjectError(f"the extract has no table {query.table!r}")
        by = [self._by(query, text) for text in query.by]
        conditions = ["t.person_id NOT IN (SELECT person_id FROM refused)"]
        conditions += [
            f"CAST({self._column(query, name)} AS VARCHAR) = ?" for name, _ in query.where
        ]
        values = [value for _, value in query.where]
        join = " LEFT JOIN person p USING (person_id)" if PERSON.name in self.columns else ""
        return by, f"FROM {query.table} t{join} WHERE {' AND '.join(conditions)}", values

    def count(self, query: Query) -> tuple[dict[Key, int], int]:
        """Distinct persons of each cell, and in all."""
        by, source, values = self._source(query)
        persons = "count(DISTINCT t.person_id)"
        total_row = self.connection.execute(f"SELECT {persons} {source}", values).fetchone()
        total = int(total_row[0]) if total_row else 0
        if not by:
            return {(): total}, total
        grouped = ", ".join(by)
        rows = self.connection.execute(
            f"SELECT {grouped}, {persons} {source} GROUP BY {grouped}", values
        ).fetchall()
        return {tuple(row[:-1]): int(row[-1]) for row in rows}, total

    def cells_of_persons(self, query: Query) -> Iterator[list[Key]]:
        """Each person's distinct cells, a person at a time (the query is by columns)."""
        by, source, values = self._source(query)
        result = self.connection.execute(
            f"SELECT list(DISTINCT row({', '.join(by)})) {source} GROUP BY t.person_id", values
        )
        while rows := result.fetchmany(_PERSONS_AT_ONCE):
            for (cells,) in rows:
                yield [tuple(cell) for cell in cells]

    def one_cell_each(self, query: Query) -> bool:
        """Whether a person is in one cell at most: every column is of ``person``, one
        row a person."""
        names = [text.partition("/")[0] for text in query.by]
        return all(self._column(query, name).startswith("p.") for name in names) or (
            query.table == PERSON.name
        )


MOST_BIN_WIDTH = Decimal(10) ** 9
LEAST_BIN_WIDTH = Decimal(10) ** -9
_EXACT = Context(prec=1000)
"""Digits enough for any double's quotient by a width of ``LEAST_BIN_WIDTH`` at least
(some 320), and for its bin's lower bound."""


def bin_floor(value: float, width: Decimal) -> float:
    """The lower bound of ``value``'s bin of ``width``, computed in decimals, exactly, on the
    value as written (the shortest decimal that reads as its double: 10.2, not the double's
    10.199999999999999289...). In doubles, 28.9 / 0.1 is 288.99999999999994, and
    10.2 / 0.000000001 is 10199999999.999998: each fell in the bin below its own."""
    with localcontext(_EXACT):
        bins, rest = divmod(Decimal(repr(value)), width)  # rounded towards zero
        if rest < 0:
            bins -= 1
        return float(bins * width)


def _bin_width(text: str) -> Decimal:
    """The width of a number's bins, as written after ``/``; ProjectError for another."""
    try:
        width = Decimal(text)
    except InvalidOperation:
        width = Decimal(0)
    if not (width.is_finite() and LEAST_BIN_WIDTH <= width <= MOST_BIN_WIDTH):
        raise ProjectError(
            f"a bin's width is a number from {LEAST_BIN_WIDTH:f} to {MOST_BIN_WIDTH:,f},"
            f" not {text!r}"
        )
    return width


def _opened(
    records: RecordStore, project: Project, folder: Path, query: Query, today: date
) -> tuple[dict[str, Any], _Extract]:
    """The extract's manifest and files, once the project may count and the query is of
    a table counts are of."""
    project.check_open(today)
    if query.table not in _TABLES or len(query.by) > MAX_BY:
        raise ProjectError(
            f"a count is of one of {', '.join(sorted(_TABLES))}, by {MAX_BY} columns at most"
        )
    manifest = checked_manifest(records, folder, project)
    pseudonyms = Pseudonyms(records.custodian.root_secret(), project.project_id)
    refused = [pseudonyms.of(patient_id) for patient_id in research_refusals(records)]
    return manifest, _Extract(folder, manifest, refused)


Privately = tuple[Privacy, Path]
"""A differentially private count as asked, and the projects file its budget is spent in."""


def answer(
    records: RecordStore,
    project: Project,
    folder: Path,
    query: Query,
    today: date,
    privately: Privately | None = None,
) -> tuple[Count, str]:
    """The published count of ``query`` over the project's extract in ``folder``, exact or
    ``privately``, and the extract's id; ProjectError for a project closed, an extract not
    its own or altered, or a query that names what the extract does not hold. Nothing is
    logged: the caller logs the answer (``log_count``) before it shows it."""
    manifest, extract = _opened(records, project, folder, query, today)
    if privately is None:
        cells, total = extract.count(query)
        return _suppressed(Count(query, [], None), cells, total), manifest["extract"]
    return _private(project, manifest, extract, query, *privately), manifest["extract"]


def _private(
    project: Project,
    manifest: dict[str, Any],
    extract: _Extract,
    query: Query,
    privacy: Privacy,
    projects: Path,
) -> Count:
    """The count, differentially private: its ε and δ spent of the project's budget in
    the ``projects`` file before the noise is drawn. ProjectError, with nothing spent,
    for a count the budget does not cover, or one by columns a person may be in several
    cells of whose ``privacy`` says no K."""
    persons = max(int(manifest["persons"]), 1)
    delta = privacy.delta
    if delta is None:
        delta = min(_power_of_ten_below(persons), budget_of(project).delta / DELTA_SHARE)
    if not query.by:
        noise = calibrated(privacy, delta, None)
        cells, total = extract.count(query)
    else:
        if privacy.max_cells is None and not extract.one_cell_each(query):
            raise ProjectError(
                f"a person may be in several cells of {query.table} by {', '.join(query.by)}:"
                " say in how many at most they count, with --max-cells (docs/research.md)"
            )
        noise = calibrated(privacy, delta, privacy.max_cells or 1)
        cells, total = bounded(extract.cells_of_persons(query), noise.max_cells)
    budget = spend(projects, project.project_id, noise.epsilon, noise.delta)
    noisy, noisy_total = noise.release(cells, total)
    if not query.by:
        noisy = {(): noisy_total}
    return _suppressed(Count(query, [], None, noise, budget), noisy, noisy_total)


def _suppressed(asked: Count, cells: dict[Key, int], total: int) -> Count:
    """``asked`` with the cells and total as they may be published."""
    published, shown_total = suppress(cells, total)
    ordered = sorted(published.items(), key=lambda cell: _order(cell[0]))
    return replace(asked, cells=ordered, total=shown_total)


def count(
    records: RecordStore,
    project: Project,
    folder: Path,
    query: Query,
    who: str,
    today: date,
    privately: Privately | None = None,
) -> Count:
    """``answer``, logged as ``who``'s."""
    result, extract = answer(records, project, folder, query, today, privately)
    with records.writer(count_access(who, project, result)) as writer:
        log_count(writer, extract, result)
    return result


def _power_of_ten_below(persons: int) -> Decimal:
    """1 / persons², rounded down to a power of ten: the δ a count publishes tells a
    researcher the extract's size within a factor of about three, not to the person (a
    budgeted project's researchers are given no exact count)."""
    return Decimal(1).scaleb((Decimal(1) / persons**2).adjusted())


def count_access(who: str, project: Project, result: Count) -> Access:
    """Who asks a count, for its AuditEvent: the project, the table, its columns and
    filters (an auditor looks for differencing), and a private count's ε, δ and K."""
    query = result.query
    what = f"research count of {query.table} by {', '.join(query.by) or 'nothing'}"
    if query.where:
        what += " where " + " and ".join(f"{column}={value}" for column, value in query.where)
    if result.noise is not None:
        noise = result.noise
        what += (
            f", differentially private (ε {noise.epsilon}, δ {noise.delta}, K {noise.max_cells})"
        )
    return research_access(who, project, what)


def log_count(writer: Writer, extract_id: str, result: Count) -> None:
    """The count's leaf: the extract's location, the hash of what was published (with a
    private count's ε, δ and K)."""
    answer = json.canonical({"extract": extract_id, **result.as_json()})
    loc = writer.records.keys.location(EXTRACT_TYPE, extract_id)
    leaf = Leaf(LeafKind.SEARCH, loc, 0, hashlib.sha256(answer).digest(), now_us())
    writer.log_to_gateway([leaf], f"{EXTRACT_TYPE}/{extract_id}")
