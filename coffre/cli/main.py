"""The ``coffre`` command line."""

from __future__ import annotations

import ipaddress
import os
import random
import threading
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from coffre import config
from coffre.api import tls
from coffre.api.auth import AuthSettings
from coffre.api.auth.authority import REQUIRED
from coffre.cli import audit, erase, migrate, repair, research, witness
from coffre.cli.access import clients_app, users_app
from coffre.cli.arguments import named_folder
from coffre.cli.importer import Importer
from coffre.cli.keys import app as keys_app
from coffre.cli.output import console, fail
from coffre.cli.sources import empty_folders, files_under
from coffre.exceptions import CoffreError
from coffre.fhir.json import dumps
from coffre.service import Vault
from coffre.service.stored import now_us
from coffre.service.tokenkey import id_token_key
from coffre.service.witnessing import witnesses_from_settings
from coffre.storage.postgres import reached_in_clear
from coffre.synth import generate_bundles, generate_shared_bundle
from coffre.synth.campaign import TURNS_A_DAY, VENUES, campaign_bundles

app = typer.Typer(
    help="Coffre: a FHIR R4 health record whose host only ever sees sealed data.",
    no_args_is_help=True,
)
MAX_PORT = 65535


@app.callback()
def _check_settings() -> None:
    # Before any command: a mistyped setting (COFFRE_SQLITE_SYNCHRONOUS=FULLL, which
    # SQLite reads as NORMAL) is refused, not taken for another value or left to crash
    # the server's workers one after the other.
    try:
        config.check_all()
    except CoffreError as error:
        raise fail(error) from None


VaultOption = Annotated[
    Path, typer.Option("--vault", envvar=config.VAULT.env, help=config.VAULT.help)
]
KeyringOption = Annotated[
    Path | None, typer.Option("--keyring", envvar=config.KEYRING.env, help=config.KEYRING.help)
]


def _columns(verb: str, unit: str) -> tuple[ProgressColumn, ...]:
    rate = TextColumn(f"{{task.fields[rate]}} {unit}/s")
    return (TextColumn(verb), BarColumn(), MofNCompleteColumn(), rate, TimeElapsedColumn())


def _advance(progress: Progress, task: TaskID, count: int) -> None:
    progress.advance(task, count)
    done = next(t for t in progress.tasks if t.id == task)
    progress.update(task, rate=f"{done.completed / done.elapsed:,.0f}" if done.elapsed else "-")


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Folder of the new vault.", parser=named_folder)],
    keyring: KeyringOption = None,
    storage: Annotated[
        str, typer.Option(envvar=config.STORAGE_URL.env, help=config.STORAGE_URL.help)
    ] = config.STORAGE_URL.default,
) -> None:
    """Create a new vault: an empty storage and a keyring file apart from it.

    The storage: an SQLite file in the folder, or a PostgreSQL database (--storage).
    The keyring file is readable by its owner only (0600)."""
    vault = Vault.at(folder, keyring)
    try:
        vault.create(storage)
    except (CoffreError, OSError) as error:
        raise fail(error) from None
    keys = (
        f"keys in the PKCS#11 token '{config.PKCS11_TOKEN.value()}'"
        if config.CUSTODY.value() == "pkcs11"
        else f"keyring at {vault.keyring} — keep a copy of it apart from the storage"
    )
    console.print(f"vault created in {escape(str(vault.folder))}; {escape(keys)}")


WORKER_START_SECONDS = 120
"""How long a worker process may take to start before uvicorn gives up on it."""
APPLICATION = "coffre.api.server:app_from_settings"


def public_url_warning(auth: AuthSettings, host: str) -> str | None:
    """What to tell an operator who requires tokens on an address others reach, without
    saying at which URL: the tokens' issuer and audience then follow each request's Host
    header, which a client chooses (an assertion made for another deployment would pass)."""
    if auth.mode != REQUIRED or auth.public_url or _loopback(host):
        return None
    return (
        f"{config.PUBLIC_URL.env} is not set: the tokens' issuer and audience follow each"
        " request's Host header, which a client chooses; set it to the URL clients reach"
        " Coffre at"
    )


def storage_in_clear_warning(vault: Vault) -> str | None:
    """What to tell an operator whose PostgreSQL is reached over a network without TLS that
    checks the server (COFFRE_STORAGE_REQUIRE_TLS refuses such a URL; this only warns)."""
    url = vault.storage_url
    if url is None or not reached_in_clear(url):
        return None
    return (
        "the PostgreSQL storage is reached over the network without sslmode=verify-full:"
        " its tokens, locations and log cross it unprotected, and a machine on the path"
        " could pose as the database (docs/operations.md, PostgreSQL over TLS)"
    )


def sovereign_files_warning(vault: Vault) -> str | None:
    """What to tell an operator whose token vault keeps its rollback memory and its access
    registry beside its SQLite storage, where whoever writes the storage can put both back."""
    if not vault.sovereign_files_beside_storage():
        return None
    return (
        f"the last checkpoint signed and the access registry are kept in {vault.folder},"
        f" beside the storage: set {config.KEYRING.env} to a path on the sovereign side"
        " (docs/operations.md, A vault)"
    )


def clock_behind_warning(newest_write_us: int, now: int) -> str | None:
    """What to tell an operator whose clock reads earlier than the vault's newest write
    (both in µs since the epoch): writes are then dated after that write, not by the clock."""
    behind = (newest_write_us - now) / 1_000_000
    if behind < 1:
        return None
    return (
        f"this machine's clock reads {behind:,.0f} s earlier than the vault's newest write:"
        " new writes are dated just after that write until the clock catches up, so that"
        " no client misses a change; set the clock right (NTP)"
    )


def _loopback(host: str) -> bool:
    """Whether only this machine reaches ``host``."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command()
def serve(
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
    host: Annotated[
        str, typer.Option(envvar=config.HOST.env, help=config.HOST.help)
    ] = config.HOST.default,
    port: Annotated[
        int, typer.Option(envvar=config.PORT.env, help=config.PORT.help, min=1, max=MAX_PORT)
    ] = int(config.PORT.default),
    workers: Annotated[
        int, typer.Option(envvar=config.WORKERS.env, help=config.WORKERS.help, min=1)
    ] = int(config.WORKERS.default),
    tls_cert: Annotated[
        str, typer.Option(envvar=config.TLS_CERT.env, help=config.TLS_CERT.help)
    ] = config.TLS_CERT.default,
    tls_key: Annotated[
        str, typer.Option(envvar=config.TLS_KEY.env, help=config.TLS_KEY.help)
    ] = config.TLS_KEY.default,
) -> None:
    """Serve the FHIR API of a vault, over HTTPS when given a certificate."""
    import uvicorn

    from coffre.api.http_protocol import FhirHttpToolsProtocol
    from coffre.api.listening import PortPerProcess, claim, serve_on
    from coffre.api.scraping import ScrapeAccess
    from coffre.api.workers import MetricsFolder, Supervisor

    os.environ[config.VAULT.env] = str(vault)
    if keyring:
        os.environ[config.KEYRING.env] = str(keyring)
    served = Vault.from_settings()
    try:
        records = served.open()
        id_token_key(records)  # made here once, not by each worker at the same moment
        records.storage.close()
        witnesses_from_settings()
        auth = AuthSettings.from_settings()
        ScrapeAccess.from_settings(auth.mode == REQUIRED)
        https = tls.uvicorn_options(tls_cert, tls_key)
        listening = PortPerProcess.bind_to(host, port) if workers > 1 else claim(host, port)
        metrics = MetricsFolder.for_this_run() if workers > 1 else None
    except CoffreError as error:
        raise fail(error) from None
    scheme = "https" if https else "http"
    console.print(escape(f"Coffre is starting on vault {vault}…"))
    serving = f"Coffre serves FHIR R4 at {scheme}://{host}:{port}/fhir"
    threading.Thread(target=_say_when_listening, args=(host, port, serving), daemon=True).start()
    warnings = (
        public_url_warning(auth, host),
        sovereign_files_warning(served),
        storage_in_clear_warning(served),
        clock_behind_warning(records.latest_writes.newest_write, now_us()),
    )
    for warning in warnings:
        if warning:
            console.print(f"[yellow]{escape(warning)}[/yellow]")
    options = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http=FhirHttpToolsProtocol,
        # No browser may read an answer as another type than it says (a FHIR string
        # holding markup, served as JSON, never runs as a page).
        headers=[("X-Content-Type-Options", "nosniff")] + ([tls.STRICT_TRANSPORT] if https else []),
        # A worker answers the supervisor's pings from a thread, which cannot run while
        # the generated schema module compiles (no cached bytecode: the GIL is held for
        # seconds); with uvicorn's 5 s a loaded machine kills and restarts it forever.
        timeout_worker_healthcheck=WORKER_START_SECONDS,
        # A client trickling its body would otherwise hold a stop (a rolling restart) open
        # for as long as it likes.
        timeout_graceful_shutdown=int(config.STOP_SECONDS.value()) or None,
        **https,
    )
    server = uvicorn.Config(APPLICATION, **options)
    if metrics is None:
        serve_on(server, listening)
        return
    try:
        Supervisor(server, sockets=[listening]).run()
    finally:
        metrics.remove()


def _say_when_listening(host: str, port: int, serving: str) -> None:
    """Say that the server serves once it does, so that the first request is not refused."""
    from coffre.api.listening import wait_until_listening

    if wait_until_listening(host, port, WORKER_START_SECONDS):
        console.print(escape(serving))


_CARRY_ON = (
    "each Bundle whole or not at all; run the same command again to load the rest (what"
    " is loaded already is not written twice)"
)

MAX_SYNTH_PATIENTS = 9_999_999
"""As many as ``patient-NNNNNNN.json`` numbers in order."""
SYNTH_YEARS = (1900, 2999)
"""The years a generated history may run up to (a century of it fits in Python's dates),
and a generated campaign open in."""


@app.command()
def synth(
    count: Annotated[int, typer.Argument(min=1, max=MAX_SYNTH_PATIENTS, help="How many patients.")],
    out: Annotated[
        Path, typer.Option(help="Folder to write the Bundles to.", parser=named_folder)
    ] = Path("synth"),
    seed: Annotated[
        int, typer.Option(help="The same seed gives the same patients, with the same --as-of.")
    ] = 0,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="The day the histories run up to (YYYY-MM-DD); today by default.",
        ),
    ] = None,
) -> None:
    """Write generated French and Quebec patients as transaction Bundles, for `coffre import`.

    `shared.json` holds the organisations and physicians the patients' bundles refer to.
    Each `patient-N.json` holds one patient and their history.
    """
    if as_of is not None and not SYNTH_YEARS[0] <= as_of.year <= SYNTH_YEARS[1]:
        first, last = SYNTH_YEARS
        raise fail(f"--as-of is a day from {first} to {last}: histories span a century before it")
    now = None if as_of is None else as_of.replace(hour=12, tzinfo=UTC)
    shared = generate_shared_bundle(random.Random(f"coffre-synth:{seed}:shared"))
    resources = 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "shared.json").write_bytes(dumps(shared))
        with Progress(*_columns("generating", "resources"), console=console) as progress:
            task = progress.add_task("synth", total=count, rate="-")
            for index, bundle in enumerate(generate_bundles(count, seed, now=now), start=1):
                (out / f"patient-{index:07d}.json").write_bytes(dumps(bundle))
                resources += len(bundle["entry"])
                _advance(progress, task, 1)
    except OSError as error:
        raise fail(error) from None
    shared_count = len(shared["entry"])
    console.print(
        f"{count} patients, {resources} resources, and {shared_count} shared ones"
        f" (organisations, practitioners and their roles), written to {escape(str(out))}"
    )


MAX_CAMPAIGN_DAYS, MAX_CAMPAIGN_SEATS = 366, 999
"""A year of days at most; a centre's day of seats is one Bundle, held in memory."""


@app.command("synth-campaign")
def synth_campaign(
    sites: Annotated[
        int,
        typer.Option(
            min=1, max=len(VENUES), help="How many vaccination centres, Quebec's and France's."
        ),
    ] = 3,
    days: Annotated[int, typer.Option(min=1, max=MAX_CAMPAIGN_DAYS, help="Days in a row.")] = 2,
    seats: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_CAMPAIGN_SEATS, help="Vaccinators a centre: a Slot each a turn."
        ),
    ] = 3,
    opens: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="The first day (YYYY-MM-DD); tomorrow by default."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder to write the Bundles to.", parser=named_folder)
    ] = Path("campaign"),
) -> None:
    """Write a vaccination campaign as transaction Bundles, for `coffre import`.

    Each centre is a Location with a Schedule, its seats free Slots of 5 minutes (8:00-20:00).
    Each `campaign-SITE-DAY.json` holds a centre's day; importing it twice writes nothing new.
    """
    first = date.today() + timedelta(days=1) if opens is None else opens.date()
    if not SYNTH_YEARS[0] <= first.year <= SYNTH_YEARS[1]:
        raise fail(f"--opens is a day from {SYNTH_YEARS[0]} to {SYNTH_YEARS[1]}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with Progress(*_columns("generating", "bundles"), console=console) as progress:
            task = progress.add_task("campaign", total=sites * days, rate="-")
            for name, bundle in campaign_bundles(sites, days, seats, first):
                (out / f"{name}.json").write_bytes(dumps(bundle))
                _advance(progress, task, 1)
    except OSError as error:
        raise fail(error) from None
    last = first + timedelta(days=days - 1)
    slots = sites * days * seats * TURNS_A_DAY
    console.print(
        f"a campaign from {first} to {last}: {sites} centres, {seats} seats a centre,"
        f" {TURNS_A_DAY} turns a day: {slots:,} free Slots in {sites * days} Bundles, written to"
        f" {escape(str(out))}"
    )


@app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Bundles, NDJSON files, resources, or folders of them.",
            readable=False,  # one that cannot be read is reported, and the others load
        ),
    ],
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Load FHIR files into a vault; running it again on the same files changes nothing."""
    place = Vault.at(vault, keyring)
    files = files_under(paths, leave_out=(place.folder, place.keyring))
    try:
        records = place.open()
    except CoffreError as error:
        raise fail(error) from None
    with Progress(*_columns("importing", "resources"), console=console) as progress:
        task = progress.add_task("import", total=None, rate="-")
        advance = partial(_advance, progress, task)
        before = records.storage.last_seq()
        try:
            report = Importer(records, advance).run(files)
        except KeyboardInterrupt:
            progress.stop()
            kept = records.storage.last_seq() - before
            console.print(f"interrupted: {kept} new versions were kept, {_CARRY_ON}")
            raise typer.Exit(code=130) from None
        except (CoffreError, OSError) as error:  # the vault's, not a file's
            progress.stop()
            raise fail(f"the vault failed, and the import stopped: {error}; {_CARRY_ON}") from None
    report.failures[:0] = [
        f"{folder}: no .json or .ndjson file in it"
        for folder in empty_folders(paths, leave_out=(place.folder, place.keyring))
    ]
    for conflict in report.conflicts:
        typer.echo(f"conflict: {conflict}", err=True)
    for failure in report.failures:  # every one: the operator needs to know which
        typer.echo(f"failed: {failure}", err=True)
    console.print(
        f"{report.resources} resources from {len(files)} files;"
        f" {report.versions_written} new versions written; {len(report.failures)} failures;"
        f" {len(report.conflicts)} conflicts with what is stored"
    )
    if report.failures or report.conflicts:
        raise typer.Exit(code=1)


app.command("audit")(audit.audit)
app.command("ledger-key")(audit.ledger_key)
app.command("erase")(erase.erase)
app.command("repair-index")(repair.repair_index)
for command in (migrate.migrate, migrate.backup, migrate.restore):
    app.command()(command)
app.add_typer(witness.app, name="witness")
app.add_typer(clients_app, name="clients")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(research.app, name="research")


def main() -> None:
    app()
