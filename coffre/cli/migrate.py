"""``coffre migrate``, ``coffre backup`` and ``coffre restore``: a storage copied to another
backend as the host holds it, never decrypted (coffre.storage.copy does the copying).

Each ends by proving the copy: per table the rows and a digest over them in key order,
and the log's size and tree root, on both sides; a difference exits with status 1.
"""

from __future__ import annotations

import re
import shutil
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable

from coffre import config
from coffre.cli.output import console, fail
from coffre.exceptions import CoffreError, RolledBackError, StorageFullError
from coffre.ledger import VerifierKey, leaf_hash, open_checkpoint, parse_note
from coffre.ledger.errors import LedgerError
from coffre.ledger.note import b64
from coffre.ledger.tree import CompactRange
from coffre.service import Vault
from coffre.service.vault import KEYRING_FILE, STORAGE_FILE
from coffre.service.witnessing import COSIGNED_FILE
from coffre.storage.copy import (
    DEFAULT_BATCH,
    TABLES,
    CopyReport,
    NotACopy,
    copy_tables,
    open_endpoint,
)
from coffre.storage.postgres import is_url

EXIT_MISMATCH = 1
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C
PARTIAL_SUFFIX = ".partial"

out = Console(highlight=False, soft_wrap=True)

BatchOption = Annotated[
    int, typer.Option("--batch", min=1, help="Rows per read and per destination transaction.")
]
VaultOption = Annotated[
    Path, typer.Option("--vault", envvar=config.VAULT.env, help=config.VAULT.help)
]


class TreeRoot:
    """The log's RFC 9162 tree root, folded from its leaves in index order."""

    def __init__(self) -> None:
        self._tree = CompactRange()

    def add(self, data: bytes) -> None:
        self._tree.append(leaf_hash(data))

    def result(self) -> bytes:
        return self._tree.root()


class CopyProgress:
    """The rows copied out of the source's total, and the megabytes written per second."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._bytes = 0

    def start(self, rows: int) -> None:
        self._task = self._progress.add_task("copy", total=rows, rate="-")

    def advance(self, rows: int, data_bytes: int) -> None:
        assert self._task is not None
        self._bytes += data_bytes
        self._progress.advance(self._task, rows)
        elapsed = self._progress.tasks[0].elapsed
        rate = f"{self._bytes / elapsed / 1e6:,.1f}" if elapsed else "-"
        self._progress.update(self._task, rate=rate)


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
STORAGE_FORMS = (
    "postgresql://USER@HOST/DATABASE, sqlite:///ABSOLUTE/PATH, the path of an SQLite file,"
    " or a vault folder"
)


def location(text: str) -> str:
    """A storage to copy: a PostgreSQL URL, ``sqlite:///path``, an SQLite file, or a vault
    folder (the storage its ``storage.url`` names, else its ``storage.sqlite``)."""
    if is_url(text):
        return text
    scheme = _SCHEME.match(text)
    if scheme and not text.startswith("sqlite://"):
        raise fail(f"{text!r} is no storage Coffre knows ({scheme[1]}:): give {STORAGE_FORMS}")
    path = Path(text.removeprefix("sqlite://")).resolve()
    if text.endswith("/") and not path.is_dir():  # a folder meant, which resolve() hides
        raise fail(f"there is no folder {path}: create it, or name a file")
    if path.is_dir():
        return Vault.at(path).storage_url or str(path / STORAGE_FILE)
    return str(path)


def run_copy(source: str, destination: str, batch: int, not_a_copy: str = "") -> CopyReport:
    """Copy with a progress bar, print the verdict; typer.Exit(1) when the sides differ.
    ``not_a_copy``: what to add when the destination holds something else."""
    columns = (
        TextColumn("copying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows  {task.fields[rate]} MB/s"),
        TimeElapsedColumn(),
    )
    try:
        with (
            closing(open_endpoint(source)) as reader,
            closing(open_endpoint(destination, copy_of=source)) as writer,
            Progress(*columns, console=console) as progress,
        ):
            report = copy_tables(
                reader, writer, batch=batch, progress=CopyProgress(progress), leaf_fold=TreeRoot
            )
    except StorageFullError as error:
        raise fail(f"{error}. Free some space, then: {_carry_on(destination)}") from None
    except NotACopy as error:
        raise fail(f"{error}{not_a_copy}") from None
    except CoffreError as error:
        raise fail(error) from None
    except KeyboardInterrupt:
        console.print(escape(f"interrupted: {_carry_on(destination)}"))
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    _print_verdict(report)
    if report.mismatched:
        raise typer.Exit(code=EXIT_MISMATCH)
    return report


def _carry_on(destination: str) -> str:
    return (
        f"{destination} holds part of the copy. Run the same command again to carry on from"
        " where it stopped (if the source was written to since, it says so: then empty the"
        " destination and start again)."
    )


def _print_verdict(report: CopyReport) -> None:
    held = sum(report.resumed.values())
    if held:
        out.print(f"resumed: the destination already held {held:,} rows of a previous run")
    table = RichTable("table", "source rows", "copy rows", "digest (SHA-256, key order)", "")
    for spec in TABLES:
        source, copy = report.source.tables[spec.name], report.destination.tables[spec.name]
        same = (source.rows, source.digest) == (copy.rows, copy.digest)
        digest = source.digest[:16] if same else f"{source.digest[:16]} ≠ {copy.digest[:16]}"
        table.add_row(
            spec.name, f"{source.rows:,}", f"{copy.rows:,}", digest, "same" if same else "DIFFERENT"
        )
    out.print(table)
    for name, side in (("source", report.source), ("copy", report.destination)):
        assert side.leaves is not None
        root = b64(side.leaves.result())
        out.print(f"log of the {name}: {side.tables['leaves'].rows:,} leaves, root {root}")
    if report.mismatched:
        out.print(f"verdict: the copy DIFFERS from the source ({', '.join(report.mismatched)})")
    else:
        out.print("verdict: the copy holds the same content as the source's snapshot")


def migrate(
    source: Annotated[
        str,
        typer.Option("--from", help="postgresql://…, sqlite:///path, a file or a vault folder."),
    ],
    destination: Annotated[
        str,
        typer.Option("--to", help="Where to copy: empty, or a partial copy of the same source."),
    ],
    batch: BatchOption = DEFAULT_BATCH,
) -> None:
    """Copy a vault's storage to another backend, sealed as it is (no keys needed).

    Run it again after an interruption to carry on.
    Stop the servers first: writes made during the copy are not in it."""
    _refuse_foreign_keys(Path(source), Path(destination))
    source_location, destination_location = location(source), location(destination)
    if source_location == destination_location:
        raise fail("the source and the destination are the same storage")
    run_copy(source_location, destination_location, batch)


def _refuse_foreign_keys(source: Path, destination: Path) -> None:
    """Refuse to copy into a vault folder whose keys are not the source's: the records
    would not open with its keys, and the folder would hold a vault that serves nothing."""
    folder = destination if destination.is_dir() else destination.parent  # or its storage file
    if _same_keys(source if source.is_dir() else source.parent, folder):
        return
    raise fail(
        f"{folder} is a vault folder with keys of its own (a keyring or a token of its own):"
        " the source's records would not open with them. Copy to a new SQLite file or"
        " PostgreSQL database, then name it in the folder that holds the source's keys."
    )


def _same_keys(ours: Path, folder: Path) -> bool:
    """Whether ``folder`` holds no vault's keys, or the same as the folder ``ours``: by
    their records of custody and log, else (folders made before that record, or one
    given a copy of the keyring) by their keyring files."""
    theirs_recorded, ours_recorded = (
        Vault.at(folder).recorded_custody(),
        Vault.at(ours).recorded_custody(),
    )
    if theirs_recorded is not None and ours_recorded is not None:
        return theirs_recorded == ours_recorded
    theirs, keyring = folder / KEYRING_FILE, ours / KEYRING_FILE
    if theirs.exists():
        return keyring.exists() and keyring.read_bytes() == theirs.read_bytes()
    return theirs_recorded is None


def backup(
    destination: Annotated[
        str, typer.Argument(help="A new SQLite file (or an empty postgresql:// database).")
    ],
    vault: VaultOption = Path(config.VAULT.default),
    batch: BatchOption = DEFAULT_BATCH,
) -> None:
    """A consistent copy of a vault's storage, from one read snapshot, while it serves.

    An SQLite backup is written beside its name (``.partial``) and renamed once proven.
    """
    source = location(str(vault))
    if is_url(destination):
        run_copy(source, destination, batch)
        return
    final = Path(destination.removeprefix("sqlite://"))
    if destination.endswith("/") or final.is_dir():
        raise fail(f"{destination} is a folder: name the backup's file in it")
    if final.exists():
        raise fail(f"{final} exists already")
    if not final.parent.is_dir():
        raise fail(f"there is no folder {final.parent} to write the backup in: create it first")
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    try:
        run_copy(source, str(partial), batch)
    except typer.Exit:
        if partial.exists():
            console.print(
                escape(
                    f"what this backup copied is in {partial}: run the command again to carry"
                    f" on; if the vault was written to since, delete {partial} and start again"
                )
            )
        raise
    partial.replace(final)
    out.print(escape(f"backup written to {final}"))


def restore(
    backup_location: Annotated[
        str,
        typer.Argument(metavar="SOURCE", help="A backup: an SQLite file or a postgresql:// URL."),
    ],
    vault: VaultOption = Path(config.VAULT.default),
    keyring: Annotated[
        Path | None, typer.Option("--keyring", envvar=config.KEYRING.env, help=config.KEYRING.help)
    ] = None,
    accept_rollback_to: Annotated[
        int | None,
        typer.Option(
            "--accept-rollback-to",
            help="The backup's log size: accept that the vault goes back to it, losing the"
            " writes signed after it (see docs/operations.md).",
        ),
    ] = None,
    batch: BatchOption = DEFAULT_BATCH,
) -> None:
    """Restore a backup into a vault's empty storage, then open the vault to prove it serves."""
    target = Vault.at(vault, keyring)
    source = location(backup_location)
    if not is_url(source) and not Path(source).is_file():
        raise fail(f"no backup at {source}: nothing was restored")
    try:  # before any copying: the copy is of no use to a vault without its keys
        held, log_key, holder = target.held_keys()
    except CoffreError as error:
        raise fail(
            f"cannot restore: {error}. A restore needs the keys of the vault the backup was"
            f" taken from: a copy of its keyring at {target.keyring}, or named with"
            " --keyring. Nothing was restored."
        ) from None
    problem = _not_for_these_keys(source, held, log_key, holder)
    if problem:
        raise fail(
            f"cannot restore: {problem}. Restore with the keys kept with this backup: the"
            " keyring of its time (--keyring), or the token's own backup of its time."
            " Nothing was restored."
        )
    target.folder.mkdir(parents=True, exist_ok=True)
    destination = location(str(vault))
    over_a_vault = (
        f". To restore over the vault at {vault}, move its storage ({destination}) aside"
        " first, or name a new database in its storage.url"
    )
    report = run_copy(source, destination, batch, over_a_vault)
    size = report.destination.tables["leaves"].rows
    try:
        target.open().storage.close()
    except RolledBackError as error:
        if accept_rollback_to != size or not target.checkpoint_memory.exists():
            fail(error)
            if accept_rollback_to is not None:
                console.print(
                    escape(f"--accept-rollback-to {accept_rollback_to} is not that size.")
                )
            console.print(
                escape(
                    f"The backup is restored, but its log ends at size {size}, before the last"
                    f" checkpoint this side signed ({target.checkpoint_memory}). If going back"
                    f" to it is what you mean, run this again with --accept-rollback-to {size}."
                )
            )
            raise typer.Exit(code=1) from None
        accept_rollback(target)
    except CoffreError as error:
        raise fail(f"the restored vault does not open: {error}") from None
    out.print(f"restored; the vault opens with a log of {size:,} leaves")


def _not_for_these_keys(
    source: str, held: set[str], log_key: VerifierKey, holder: str
) -> str | None:
    """Why the backup would not open with the keys of ``holder`` (a keyring, a token),
    the key-encryption keys ``held`` and the log's ``log_key``: another vault's, or one
    whose KEK of the backup's time was retired since; None when it would."""
    try:
        with closing(open_endpoint(source)) as backup:
            missing, note = sorted(backup.kek_ids() - held), backup.latest_checkpoint()
    except CoffreError as error:
        raise fail(f"cannot restore: {error}. Nothing was restored.") from None
    if note is not None:
        try:
            open_checkpoint(note, log_key)
        except LedgerError:
            return f"the backup's log is signed by another vault's key than {holder} holds"
    if missing:
        return (
            f"the backup's data keys are wrapped by {', '.join(missing)}, which {holder}"
            " does not hold (retired by a key rotation since the backup was taken?)"
        )
    return None


def accept_rollback(vault: Vault) -> None:
    """Set the memory of the last signed checkpoint aside (kept as evidence) and remember
    the restored log's newest checkpoint instead, once the vault opens with it; keep that
    checkpoint for the witnesses, and set aside the checkpoint they cosigned of the
    history abandoned, which the restored log does not extend."""
    memory = vault.checkpoint_memory
    aside = _aside(memory)
    shutil.move(memory, aside)
    records = vault.open()
    try:
        note, log_key = records.storage.latest_checkpoint(), records.ledger.verifier_key
        if note is not None:
            records.ledger.remember(parse_note(note))
    finally:
        records.storage.close()
    console.print(escape(f"rollback accepted: the previous checkpoint memory is kept at {aside}"))
    cosigned = vault.folder / COSIGNED_FILE
    if cosigned.exists():
        shutil.move(cosigned, _aside(cosigned))
    if note is not None:
        _tell_the_witnesses(memory, note, log_key)


def _tell_the_witnesses(memory: Path, note: str, log_key: VerifierKey) -> None:
    """Keep the restored log's checkpoint beside the memory, and say what the operators
    of the witnesses that cosigned the history abandoned do with it."""
    size = open_checkpoint(note, log_key).size
    restored = memory.with_name(f"{memory.name}.restored-{size}")
    restored.write_text(note)
    console.print(
        escape(
            "Witnesses (if the log has any) that cosigned the history abandoned refuse the"
            " restored log until their operators accept it: give each this checkpoint and"
            " the command"
            f" 'coffre witness accept-rollback FOLDER --log {log_key} --checkpoint"
            f" {restored.name} --to {size}'. Auditors start from a new state file."
        )
    )


def _aside(path: Path) -> Path:
    """Where to set ``path`` aside as what a restore went back from: an earlier restore's
    evidence is kept too."""
    aside, number = path.with_name(path.name + ".before-restore"), 2
    while aside.exists():
        aside, number = path.with_name(f"{path.name}.before-restore.{number}"), number + 1
    return aside
