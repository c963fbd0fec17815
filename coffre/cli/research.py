"""``coffre research ...``: authorised projects, their extracts and their counts.

The extract and the counts are imported by their own commands only: pyarrow and DuckDB
weigh some 77 MB in every process that loads the command line, each server process
included (402 MB resident after importing it with them, 326 MB without), and OpenDP
some 31 MB more.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape

from coffre import config
from coffre.api.auth.registry import access_file
from coffre.api.auth.registry import load as load_registry
from coffre.api.auth.scopes import Role
from coffre.cli.access import KeyringOption, VaultOption
from coffre.cli.output import console, fail
from coffre.exceptions import CoffreError
from coffre.research.cohort import Cohort
from coffre.research.folder import ResearchFolder
from coffre.research.projects import (
    DELTA_BUDGET,
    Budget,
    Project,
    ProjectError,
    ended,
    find,
    load,
    projects_file,
    update,
    with_budget,
    with_project,
)
from coffre.research.tables import TABLE_OF
from coffre.service import RecordStore, Vault

app = typer.Typer(
    help="Research projects: their pseudonymised extracts and safe counts.", no_args_is_help=True
)
DAY = ["%Y-%m-%d"]
T = TypeVar("T")

OPERATOR = getpass.getuser()
OperatorOption = Annotated[str, typer.Option("--operator", help="Who acts, as the log records it.")]


def _decimal(text: str) -> Decimal:
    """A privacy parameter, kept as written: ten counts of 0.1 spend 1 exactly."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter(f"{text!r} is no number") from None
    if not value.is_finite():
        raise typer.BadParameter(f"{text!r} is no finite number")
    return value


def _today() -> date:
    return datetime.now(UTC).date()


def _file(vault: Path, keyring: Path | None) -> Path:
    path = projects_file(Vault.at(vault, keyring).keyring)
    if not path.parent.is_dir():
        raise fail(
            f"no folder {path.parent}: name the vault with --vault (or its keyring with --keyring)"
        )
    return path


def _projects(vault: Path, keyring: Path | None) -> dict[str, Project]:
    try:
        return load(_file(vault, keyring))
    except ProjectError as error:
        raise fail(error) from None


def _project(vault: Path, keyring: Path | None, project_id: str) -> Project:
    try:
        return find(_projects(vault, keyring), project_id)
    except ProjectError as error:
        raise fail(error) from None


def _update(
    vault: Path,
    keyring: Path | None,
    change: Callable[[dict[str, Project]], dict[str, Project]],
    done: str,
) -> None:
    """Read the projects, change them, write them back; a refused change writes nothing."""
    path = _file(vault, keyring)
    try:
        update(path, change)
    except ProjectError as error:
        raise fail(error) from None
    except OSError as error:
        raise fail(f"cannot write {path}: {error.strerror}") from None
    console.print(escape(done))


def _check_members(vault: Path, keyring: Path | None, members: list[str]) -> None:
    """Every member is a user with the researcher role."""
    try:
        users = load_registry(access_file(Vault.at(vault, keyring).keyring)).users
    except CoffreError as error:
        raise fail(error) from None
    for member in members:
        user = users.get(member)
        if user is None or user.role != Role.RESEARCHER:
            raise fail(
                f"{member} is no researcher: add them first with"
                " `coffre users add NAME --role researcher --fhir-user Practitioner/ID`"
            )


@app.command("add")
def add(
    project_id: Annotated[str, typer.Argument(help="A short id: letters, digits, '.', '_', '-'.")],
    authorisation: Annotated[
        str,
        typer.Option("--authorisation", help="The authorisation's reference (a CNIL decision)."),
    ],
    purpose: Annotated[str, typer.Option("--purpose", help="What the research is for.")],
    types: Annotated[
        list[str],
        typer.Option("--type", help=f"A type it receives; repeat. One of {', '.join(TABLE_OF)}."),
    ],
    data_from: Annotated[
        datetime, typer.Option("--from", formats=DAY, help="The period of data: its first day.")
    ],
    data_to: Annotated[
        datetime, typer.Option("--to", formats=DAY, help="The period of data: its last day.")
    ],
    members: Annotated[
        list[str], typer.Option("--member", help="A researcher's username; repeat.")
    ],
    expires: Annotated[
        datetime, typer.Option("--expires", formats=DAY, help="Its authorisation's last day.")
    ],
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="TABLE.COLUMN it receives; repeat, a column of each of its tables at least"
            " (person_id always goes). None: every column.",
        ),
    ] = None,
    codes: Annotated[
        list[str] | None,
        typer.Option(
            "--cohort-code",
            help="SYSTEM|CODE: only patients with a record of the period carrying one; repeat.",
        ),
    ] = None,
    codes_from: Annotated[
        datetime | None,
        typer.Option(
            "--cohort-codes-from",
            formats=DAY,
            help="A cohort code counts in records from this day on (by default the period's"
            " first): a diagnosis made before the data's period.",
        ),
    ] = None,
    born_from: Annotated[
        int | None, typer.Option("--born-from", help="Only patients born this year or later.")
    ] = None,
    born_to: Annotated[
        int | None, typer.Option("--born-to", help="Only patients born this year or earlier.")
    ] = None,
    budget: Annotated[
        Decimal | None,
        typer.Option(
            "--budget",
            parser=_decimal,
            help="The ε its differentially private counts may spend in all (none: refused).",
        ),
    ] = None,
    budget_delta: Annotated[
        Decimal,
        typer.Option("--budget-delta", parser=_decimal, help="The δ they may spend in all."),
    ] = DELTA_BUDGET,
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Add an authorised project."""
    try:
        project = Project(
            project_id,
            authorisation,
            purpose,
            tuple(sorted(set(types))),
            data_from.date(),
            data_to.date(),
            tuple(sorted(set(members))),
            expires.date(),
            columns=tuple(sorted(set(columns or ()))),
            cohort=Cohort(
                tuple(sorted(set(codes or ()))),
                born_from,
                born_to,
                None if codes_from is None else codes_from.date(),
            ),
            budget=None if budget is None else Budget(budget, budget_delta),
        )
    except ProjectError as error:
        raise fail(error) from None
    _check_members(vault, keyring, list(project.members))
    _update(
        vault,
        keyring,
        lambda projects: with_project(projects, project),
        f"project {project_id} added, open until {project.expires}",
    )


@app.command("budget")
def budget(
    project_id: str,
    epsilon: Annotated[
        Decimal, typer.Argument(parser=_decimal, help="The ε its counts may spend in all.")
    ],
    delta: Annotated[
        Decimal, typer.Option("--delta", parser=_decimal, help="The δ they may spend in all.")
    ] = DELTA_BUDGET,
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Set the privacy budget of a project's differentially private counts.

    What they spent already stays spent."""
    _update(
        vault,
        keyring,
        lambda projects: with_budget(projects, project_id, epsilon, delta),
        f"project {project_id} may spend ε {epsilon} and δ {delta} in all",
    )


@app.command("list")
def list_projects(
    vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """One line per project, its fields tab-separated.

    Id, state, authorisation, types, period, expiry, members, columns, cohort, budget."""
    today = _today()
    for project in _projects(vault, keyring).values():
        state = project.state(today)
        if project.ended is not None:
            state = f"ended {project.ended}"
        typer.echo(
            "\t".join(
                (
                    project.project_id,
                    state,
                    project.authorisation,
                    ",".join(project.types),
                    f"{project.data_from}..{project.data_to}",
                    f"expires {project.expires}",
                    ",".join(project.members),
                    f"columns {','.join(project.columns) or 'all'}",
                    f"cohort {project.cohort.summary()}",
                    "no privacy budget" if project.budget is None else project.budget.spent(),
                )
            )
        )


@app.command("log")
def log(
    project_id: str, vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """What was done for a project, newest first, from the log's AuditEvents.

    One line each, tab-separated: when, who and what.
    What is each extract, and each count with its table, columns, filters and ε.
    Each event is checked against the leaf that commits to it."""
    from coffre.research.extract import project_events  # see the module docstring

    _project(vault, keyring, project_id)
    done = _on_vault(vault, keyring, lambda records: records.gateway_events())
    for when, who, what in project_events(done, project_id):
        typer.echo(f"{when}\t{who}\t{what}")


@app.command("end")
def end(
    project_id: str, vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """End a project: it receives no extract or count from now on (its id stays taken)."""
    _update(
        vault,
        keyring,
        lambda projects: ended(projects, project_id, _today()),
        f"project {project_id} ended",
    )


def _on_vault(vault: Path, keyring: Path | None, job: Callable[[RecordStore], T]) -> T:
    """``job`` on the vault opened, closed after; a failure is the command's one line."""
    try:
        records = Vault.at(vault, keyring).open()
    except CoffreError as error:
        raise fail(error) from None
    try:
        return job(records)
    except (CoffreError, OSError) as error:
        raise fail(error) from None
    finally:
        records.storage.close()


@app.command("extract")
def extract(
    project_id: str,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="A new or empty folder for the files; by default one of its own in the"
            " research folder beside the keyring, where researchers' counts find it.",
        ),
    ] = None,
    operator: OperatorOption = OPERATOR,
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Write the project's pseudonymised extract: Parquet tables and their manifest.

    Only patients who did not refuse research use; every version handed out is logged."""
    from coffre.research.extract import extract as make_extract  # see the module docstring

    project = _project(vault, keyring, project_id)
    who = f"{operator} (coffre research extract)"
    folder = out or ResearchFolder(Vault.at(vault, keyring).keyring).new_extract(
        project_id, datetime.now(UTC)
    )
    made = _on_vault(vault, keyring, lambda r: make_extract(r, project, folder, who, _today()))
    manifest = made.manifest
    console.print(
        escape(
            f"extract {manifest['extract']} of project {project_id}: {manifest['persons']}"
            f" persons, {sum(f['rows'] for f in manifest['files'].values())} rows in"
            f" {len(manifest['files'])} tables, written to {folder}; its manifest is leaf"
            f" {made.leaf} of the log"
        )
    )


def _latest_kept(vault: Path, keyring: Path | None, project_id: str) -> Path:
    try:
        return ResearchFolder(Vault.at(vault, keyring).keyring).find(project_id, None).folder
    except ProjectError as error:
        raise fail(error) from None


@app.command("count")
def count(
    project_id: str,
    table: Annotated[str, typer.Argument(help="The table: person, measurement...")],
    extract: Annotated[
        Path | None,
        typer.Option(
            "--extract",
            help="The folder of one of the project's extracts; by default its latest kept"
            " in the research folder.",
        ),
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="A column to count by, or COLUMN/WIDTH for a number's bins; twice at most.",
        ),
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="COLUMN=VALUE, compared as text; repeat.")
    ] = None,
    epsilon: Annotated[
        Decimal | None,
        typer.Option(
            "--epsilon",
            parser=_decimal,
            help="Differentially private, of this privacy loss, spent of the project's budget.",
        ),
    ] = None,
    delta: Annotated[
        Decimal | None,
        typer.Option(
            "--delta",
            parser=_decimal,
            help="With --by: the chance a cell of few persons shows (default: 1/persons²"
            " rounded down to a power of ten, at most a hundredth of the project's δ).",
        ),
    ] = None,
    max_cells: Annotated[
        int | None,
        typer.Option(
            "--max-cells",
            min=1,
            help="With --by: in how many cells a person counts at most (chosen at random).",
        ),
    ] = None,
    operator: OperatorOption = OPERATOR,
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Count distinct persons of an extract's table, by columns; cells under 10 suppressed.

    A column of the person table may be used with any table.
    With --epsilon the counts are differentially private, spent of the project's budget.
    The count is logged."""
    from coffre.research import aggregate  # see the module docstring
    from coffre.research.privacy import Privacy

    if epsilon is None and (delta is not None or max_cells is not None):
        raise fail("--delta and --max-cells go with --epsilon")
    project = _project(vault, keyring, project_id)
    try:
        query = aggregate.Query.of(table, by or (), where or ())
        privacy = None if epsilon is None else Privacy(epsilon, delta, max_cells)
    except ProjectError as error:
        raise fail(error) from None
    who = f"{operator} (coffre research count)"
    folder = extract or _latest_kept(vault, keyring, project_id)
    privately = None if privacy is None else (privacy, _file(vault, keyring))
    made = _on_vault(
        vault,
        keyring,
        lambda r: aggregate.count(r, project, folder, query, who, _today(), privately),
    )
    hidden = f"<{aggregate.SMALL_CELL}"
    typer.echo("\t".join([*query.by, "persons"]))
    for key, persons in made.cells:
        values = ["" if value is None else str(value) for value in key]
        typer.echo("\t".join([*values, hidden if persons is None else str(persons)]))
    typer.echo(f"total\t{hidden if made.total is None else made.total}")
    if made.noise is not None and made.budget is not None:
        console.print(
            escape(f"{made.noise.describe()}. Project {project_id}: {made.budget.spent()}")
        )
