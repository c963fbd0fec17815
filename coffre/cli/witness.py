"""``coffre witness``: run a witness that cosigns the checkpoints of the logs it follows,
only ever along one history (c2sp.org/tlog-witness). See docs/witness.md."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from coffre.api.listening import claim, serve_on
from coffre.api.witness import WitnessFolder, WitnessServer, witness_app
from coffre.cli.arguments import named_folder
from coffre.cli.output import console, fail
from coffre.exceptions import CoffreError
from coffre.ledger import LedgerError, VerifierKey, parse_note

app = typer.Typer(
    help="A witness: cosigns checkpoints of the logs it follows, along one history only.",
    no_args_is_help=True,
)

FolderArgument = Annotated[
    Path,
    typer.Argument(
        help="The witness's folder: its key, its state, its evidence.", parser=named_folder
    ),
]


@app.command()
def init(
    folder: FolderArgument,
    name: Annotated[
        str, typer.Option("--name", help="The witness's name, e.g. witness.example.org/w1.")
    ],
) -> None:
    """Make a new witness: a fresh key (0600) and an empty state.

    Prints its verifier key, which the logs it witnesses and their auditors configure."""
    try:
        key = WitnessFolder(folder).create(name)
    except CoffreError as error:
        raise fail(str(error)) from None
    console.print(
        f"witness {escape(name)} created in {escape(str(folder))}; keep its folder backed up"
    )
    typer.echo(str(key))


@app.command()
def key(folder: FolderArgument) -> None:
    """Print the witness's verifier key."""
    try:
        typer.echo(str(WitnessFolder(folder).key().verifier_key))
    except CoffreError as error:
        raise fail(str(error)) from None


@app.command("accept-rollback")
def accept_rollback(
    folder: FolderArgument,
    log: Annotated[str, typer.Option("--log", help="The log's verifier key (coffre ledger-key).")],
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint", help="The restored log's checkpoint, as its owner gave it (a file)."
        ),
    ],
    to: Annotated[
        int, typer.Option("--to", min=0, help="The restored log's size, as its owner announced.")
    ],
) -> None:
    """Accept that a log went back to an older size, as its owner announced (a restore).

    Only with the witness stopped, and only that exact size.
    The history abandoned is kept in evidence/."""
    try:
        key = VerifierKey.parse(log.strip())
        note = parse_note(checkpoint.read_text())
    except OSError as error:
        raise fail(f"cannot read {checkpoint}: {error.strerror}") from None
    except (LedgerError, UnicodeError) as error:
        raise fail(
            f"--log and --checkpoint take a verifier key and a signed checkpoint: {error}"
        ) from None
    try:
        kept = WitnessFolder(folder).accept_rollback([key], note, to)
    except CoffreError as error:
        raise fail(f"no rollback accepted: {error}") from None
    console.print(
        escape(
            f"rollback of {key.name} to size {to} accepted: the witness cosigns from that"
            f" checkpoint on; the history it abandoned is kept in {kept}"
        )
    )


@app.command()
def serve(
    folder: FolderArgument,
    log: Annotated[
        list[str],
        typer.Option(
            "--log", help="The verifier key of a log to witness (coffre ledger-key); repeatable."
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8090,
) -> None:
    """Serve POST /add-checkpoint for the logs given, in one process."""
    import uvicorn

    witness_folder = WitnessFolder(folder)
    try:
        logs = [VerifierKey.parse(vkey.strip()) for vkey in log]
    except LedgerError as error:
        raise fail(f"--log is not a log's verifier key: {error}") from None
    with ExitStack() as held:
        try:
            held.enter_context(witness_folder.serving())
            server = WitnessServer(witness_folder, logs)
            listening = held.enter_context(claim(host, port))
        except (CoffreError, ValueError) as error:
            raise fail(str(error)) from None
        console.print(
            escape(
                f"witness at http://{host}:{port}/add-checkpoint for {len(logs)} log(s)"
                f" (folder {folder})"
            )
        )
        app = witness_app(server)
        serve_on(uvicorn.Config(app, access_log=False, log_level="warning"), listening)
