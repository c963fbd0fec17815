"""``coffre keys``: list, rotate and retire the vault's key-encryption keys, while it serves.

``rotate`` makes a new key-encryption key active and rewraps every data key under it;
if it is interrupted, ``rotate --resume`` finishes the rewrap without making another
key. ``retire`` destroys an old key once no data key needs it (``rotate --retire`` does
it as its last step). See docs/operations.md, "Rotating keys".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coffre import config
from coffre.cli.access import KeyringOption, VaultOption
from coffre.cli.output import console, fail
from coffre.exceptions import CoffreError
from coffre.service import Vault
from coffre.service.rotation import BATCH, KeyRotation

app = typer.Typer(
    help="The vault's key-encryption keys: list, rotate, retire (while it serves).",
    no_args_is_help=True,
)

YesOption = Annotated[
    bool, typer.Option("--yes", help="Do not ask for confirmation (for scripts).")
]


@contextmanager
def _rotation(
    vault: Path, keyring: Path | None, *, every_kek_held: bool = True
) -> Iterator[KeyRotation]:
    """The vault's keys, opened; any refusal of Coffre's ends the command with its message.
    ``every_kek_held=False``: open it even where the custody lacks a key-encryption key
    the storage names (to list what is missing)."""
    try:
        records = Vault.at(vault, keyring).open(every_kek_held=every_kek_held)
    except CoffreError as error:
        raise fail(error) from None
    try:
        yield KeyRotation(records)
    except CoffreError as error:
        raise fail(error) from None
    finally:
        records.storage.close()


@app.command("list")
def list_(vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None) -> None:
    """The key-encryption keys: which is active, and how many data keys each wraps."""
    with _rotation(vault, keyring, every_kek_held=False) as rotation:
        table = Table("key-encryption key", "active", "in the custody", "data keys")
        for use in rotation.keks():
            table.add_row(
                use.kek_id,
                "yes" if use.active else "",
                "yes" if use.held else "no",
                str(use.data_keys),
            )
        Console().print(table)


@app.command()
def rotate(
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish an interrupted rewrap, without making another key."),
    ] = False,
    retire_old: Annotated[
        bool,
        typer.Option(
            "--retire",
            help="Then retire the keys this rewrap left without data keys (not those that"
            " already had none, kept for older backups).",
        ),
    ] = False,
    batch: Annotated[int, typer.Option(min=1, help="Data keys rewrapped per transaction.")] = BATCH,
    yes: YesOption = False,
) -> None:
    """Make a new key-encryption key active, then rewrap every data key under it.

    Records are untouched and the vault keeps serving."""
    with _rotation(vault, keyring) as rotation:
        if not resume:
            old, new = rotation.rotate()
            console.print(f"{new} is the active key-encryption key (it replaces {old})")
        columns = (
            TextColumn("rewrapping"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("data keys"),
            TimeElapsedColumn(),
        )
        in_use = {use.kek_id for use in rotation.keks() if use.data_keys}
        try:
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("rewrap", total=rotation.pending())
                report = rotation.rewrap(lambda count: progress.advance(task, count), batch)
        except KeyboardInterrupt:
            console.print(
                "interrupted: every data key is wrapped by the old key or the new one; finish"
                " with 'coffre keys rotate --resume'"
            )
            raise typer.Exit(code=130) from None
        console.print(
            f"{report.rewrapped} data keys rewrapped; {report.lost} changed meanwhile"
            " (erased or rewrapped by another process) and were left as they were"
        )
        if report.foreign:
            console.print(
                f"[bold red]{report.foreign} data keys in the storage were not the keys the log"
                " recorded for their compartments: put there by its host (a patient's key"
                " copied or moved), they were deleted, not rewrapped. Look into the host.[/]"
            )
        if report.dropped:
            console.print(
                f"[bold red]{report.dropped} data keys of erased patients were in the storage"
                " again, put back by its host (from a backup?): they were deleted, not"
                " rewrapped. Look into how the host's storage got them back.[/]"
            )
        if retire_old:
            for kek_id in rotation.retirable():
                if kek_id in in_use:
                    _retire(rotation, kek_id, yes)
                else:
                    console.print(
                        f"{escape(kek_id)} is kept: it wrapped no data key when this command"
                        " started (a key kept for older backups, or one that an interrupted"
                        " rewrap had emptied already); 'coffre keys retire' destroys it"
                    )


@app.command()
def retire(
    kek_id: Annotated[str, typer.Argument(help="The key-encryption key to destroy.")],
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
    yes: YesOption = False,
) -> None:
    """Destroy an old key-encryption key, once no data key in the storage needs it."""
    with _rotation(vault, keyring) as rotation:
        _retire(rotation, kek_id, yes)


def _retire(rotation: KeyRotation, kek_id: str, yes: bool) -> None:
    if not yes:
        console.print(
            f"Retiring {escape(kek_id)} destroys it for good: a backup of the storage taken"
            " before the rotation needs it, and can no longer be opened once it is gone."
        )
        typed: str = typer.prompt("Type the key's id to confirm", default="", show_default=False)
        if typed.strip() != kek_id:
            console.print("the id typed differs: nothing was retired")
            raise typer.Exit(code=1)
    rotation.retire(kek_id)
    console.print(f"{escape(kek_id)} retired")
