"""``coffre erase Patient/ID``: crypto-shredding of a patient, after a confirmation."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from coffre import config
from coffre.cli.access import KeyringOption, VaultOption
from coffre.cli.output import console, fail
from coffre.exceptions import CoffreError, FhirError, SealError
from coffre.fhir.references import parse_reference
from coffre.research.folder import ResearchFolder
from coffre.service import RecordStore, Vault
from coffre.service.audit import Access
from coffre.service.erasure import erase_patient


def _patient_id(reference: str) -> str:
    """The id of ``Patient/ID`` exactly: another server's URL or a version names no
    patient of this vault to erase, though it ends as one would."""
    parsed = parse_reference(reference)
    if parsed is None or parsed[0] != "Patient" or reference != f"Patient/{parsed[1]}":
        raise fail(f"name the patient to erase as Patient/ID, not {reference!r}")
    return parsed[1]


def _confirmed(patient_id: str) -> bool:
    console.print(
        f"Erasing Patient/{escape(patient_id)} destroys their data key: every record of"
        " theirs and their access history become unreadable for good, and no backup made"
        " from now on can bring them back."
    )
    typed: str = typer.prompt("Type the patient's id to confirm", default="", show_default=False)
    return typed.strip() == patient_id


def erase(
    patient: Annotated[str, typer.Argument(help="The patient to erase, as Patient/ID.")],
    reason: Annotated[
        str,
        typer.Option(
            "--reason", help="Why (a request's reference, the law): kept in the erasure's log."
        ),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask for confirmation (for scripts).")
    ] = False,
    operator: Annotated[
        str, typer.Option("--operator", help="Who erases, as the log records it.")
    ] = getpass.getuser(),
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Erase a patient by crypto-shredding: their data key is destroyed.

    The erasure is logged; their records then answer 410 Gone.
    Backups and research extracts made before are beyond its reach (docs/operations.md, Erasure)."""
    patient_id = _patient_id(patient)
    if not reason.strip():
        raise fail("say why with --reason: nothing was erased")
    target = Vault.at(vault, keyring)
    try:
        records = target.open()
    except CoffreError as error:
        raise fail(error) from None
    try:
        _check_exists(records, patient_id)  # before asking: no confirming of a typo
        if not yes and not _confirmed(patient_id):
            console.print("the id typed differs: nothing was erased")
            raise typer.Exit(code=1)
        access = Access(f"{operator} (coffre erase)", reason=reason)
        _erase(records, patient_id, access, ResearchFolder(target.keyring))
    finally:
        records.storage.close()


def _check_exists(records: RecordStore, patient_id: str) -> None:
    """Refuse a patient the vault never held; one erased already goes on (harmlessly), and
    so does one whose record or key the storage altered: the erasure cuts it off all the
    same."""
    try:
        records.latest_version("Patient", patient_id)
    except FhirError as error:
        if error.status == 404:
            raise fail(f"{error.diagnostics}: nothing was erased") from None
    except SealError as error:
        console.print(
            f"[yellow]warning:[/yellow] Patient/{escape(patient_id)}: {error}; the storage was"
            " altered, and the erasure goes on regardless"
        )


def _remind_of_extracts(research: ResearchFolder) -> None:
    """Name the research extracts kept beside the keyring: made before the erasure, they
    may hold the patient's pseudonymised rows, which no erasure reaches (docs/research.md)."""
    kept = research.every_kept()
    if not kept:
        return
    console.print(
        f"[yellow]reminder:[/yellow] {len(kept)} research extracts made before this erasure"
        " may hold the patient's pseudonymised rows, which the erasure does not reach: delete"
        " each once a new extract of its project replaces it (docs/operations.md, Erasure):"
    )
    for extract in kept:
        console.print(f"  {escape(str(extract.folder))}  (made {escape(extract.created)})")


def _erase(records: RecordStore, patient_id: str, access: Access, research: ResearchFolder) -> None:
    """Erase, then purge the storage's files; an erasure done before is purged again
    (running the command again finishes a purge that failed)."""
    try:
        erasure = erase_patient(records, patient_id, access)
        console.print(
            f"Patient/{escape(patient_id)} erased on {erasure.when}: {erasure.records} records"
            " and their access history can no longer be opened"
        )
        if erasure.tampered:
            console.print(
                f"[yellow]warning:[/yellow] {erasure.tampered} more records of theirs failed"
                " their integrity check (the storage altered them): their key is destroyed"
                " too, and they answer 410 Gone once the storage holds them as the log does"
            )
        _remind_of_extracts(research)
    except FhirError as error:
        if error.status != 410:
            raise fail(error.diagnostics) from None
        console.print(f"Patient/{escape(patient_id)}: {escape(error.diagnostics)}")
    except CoffreError as error:
        raise fail(f"{error}: nothing was erased") from None
    try:
        records.storage.purge_erased()
    except CoffreError as error:
        console.print(
            f"[yellow]warning:[/yellow] the storage could not purge the deleted key yet"
            f" ({escape(str(error))}): run this command again"
        )
        raise typer.Exit(code=1) from None
    # Last: a command stopped before this line (killed while it purged) did not finish.
    console.print("the storage's files were purged of the deleted key: the erasure is complete")
