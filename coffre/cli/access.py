"""``coffre clients ...`` and ``coffre users ...``: who may ask the built-in authorisation
server for a token, kept beside the keyring (never in the storage)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from coffre import config
from coffre.api.auth.registry import (
    Registry,
    RegistryError,
    access_file,
    app_client,
    backend_client,
    load,
    new_user,
    save,
    with_client,
    with_user,
    without_client,
    without_user,
)
from coffre.cli.output import console, fail
from coffre.service import Vault

clients_app = typer.Typer(
    help="Apps and backend services that may ask for tokens.", no_args_is_help=True
)
users_app = typer.Typer(
    help="People who may sign in: patients, clinicians, researchers, admins.", no_args_is_help=True
)

VaultOption = Annotated[
    Path, typer.Option("--vault", envvar=config.VAULT.env, help=config.VAULT.help)
]
KeyringOption = Annotated[
    Path | None, typer.Option("--keyring", envvar=config.KEYRING.env, help=config.KEYRING.help)
]
ScopeOption = Annotated[
    str, typer.Option("--scope", help='The most it may be granted, e.g. "system/*.rs".')
]
NameOption = Annotated[str, typer.Option("--name", help="A name people recognise.")]
READABLE_FILE: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}


def _path(vault: Path, keyring: Path | None) -> Path:
    return access_file(Vault.at(vault, keyring).keyring)


def _load(path: Path) -> Registry:
    """The registry at ``path``; a folder that is not there is a mistyped vault, not a
    vault without clients or users."""
    if not path.parent.is_dir():
        raise fail(
            f"no folder {path.parent}: name the vault with --vault (or its keyring with --keyring)"
        )
    try:
        return load(path)
    except RegistryError as error:
        raise fail(error) from None


def _update(
    vault: Path, keyring: Path | None, change: Callable[[Registry], Registry], done: str
) -> None:
    """Read the registry, change it, write it back; a refused change writes nothing."""
    path = _path(vault, keyring)
    try:
        updated = change(_load(path))
    except RegistryError as error:
        raise fail(error) from None
    try:
        save(path, updated)
    except OSError as error:
        raise fail(RegistryError(f"cannot write {path}: {error.strerror}")) from None
    console.print(done)


@clients_app.command("add-backend")
def add_backend(
    client_id: Annotated[str, typer.Argument(help="The client's id (its assertions' iss).")],
    key: Annotated[
        Path,
        typer.Option("--key", help="Its public key: a JWKS, a JWK or a PEM file.", **READABLE_FILE),
    ],
    scope: ScopeOption = "system/*.rs",
    name: NameOption = "",
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Register a backend service (SMART Backend Services, private_key_jwt)."""
    _update(
        vault,
        keyring,
        lambda registry: with_client(
            registry, backend_client(client_id, _text_of(key, "key"), scope, name)
        ),
        f"backend client {client_id} registered",
    )


@clients_app.command("add-app")
def add_app(
    client_id: Annotated[str, typer.Argument(help="The app's client_id.")],
    redirect_uri: Annotated[
        list[str], typer.Option("--redirect-uri", help="Where codes may go; repeat for several.")
    ],
    scope: ScopeOption = "launch/patient openid fhirUser patient/*.rs user/*.rs",
    name: NameOption = "",
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Register an app: a public client, authorisation code with PKCE (S256)."""
    _update(
        vault,
        keyring,
        lambda registry: with_client(registry, app_client(client_id, redirect_uri, scope, name)),
        f"app {client_id} registered",
    )


@clients_app.command("list")
def list_clients(
    vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """One line per client: id, kind, scopes, redirect URIs."""
    for client in _load(_path(vault, keyring)).clients.values():
        uris = " ".join(client.redirect_uris)
        typer.echo(f"{client.client_id}\t{client.kind}\t{client.scopes}\t{uris}".rstrip())


@clients_app.command("remove")
def remove_client(
    client_id: str, vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """Remove a client: it gets no new token (those it holds expire within minutes)."""
    _update(
        vault,
        keyring,
        lambda registry: without_client(registry, client_id),
        f"client {client_id} removed",
    )


def _text_of(path: Path, what: str) -> str:
    """A file given on the command line, as UTF-8 text; one line naming it otherwise
    (never a byte of what it holds: it may be a password)."""
    try:
        return path.read_bytes().decode()
    except OSError as error:
        raise fail(f"cannot read the {what} file {path}: {error.strerror}") from None
    except UnicodeError:
        raise fail(f"the {what} file {path} is not UTF-8 text") from None


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        return _text_of(password_file, "password").rstrip("\n")
    password: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
def add_user(
    username: str,
    role: Annotated[str, typer.Option("--role", help="patient, clinician, researcher or admin.")],
    fhir_user: Annotated[
        str, typer.Option("--fhir-user", help="Their FHIR resource: Patient/123, Practitioner/abc.")
    ],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the password from this file; else a prompt.",
            **READABLE_FILE,
        ),
    ] = None,
    vault: VaultOption = Path(config.VAULT.default),
    keyring: KeyringOption = None,
) -> None:
    """Add a user; the password is kept only as a scrypt hash."""
    if username in _load(_path(vault, keyring)).users:  # before asking for a password
        raise fail(RegistryError(f"{username} exists already: remove them first"))
    _update(
        vault,
        keyring,
        lambda registry: with_user(
            registry, new_user(username, role, fhir_user, _password(password_file))
        ),
        f"user {username} added ({role}, {fhir_user})",
    )


@users_app.command("list")
def list_users(
    vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """One line per user: name, role, fhirUser (never anything of the password)."""
    for user in _load(_path(vault, keyring)).users.values():
        typer.echo(f"{user.username}\t{user.role}\t{user.fhir_user}")


@users_app.command("remove")
def remove_user(
    username: str, vault: VaultOption = Path(config.VAULT.default), keyring: KeyringOption = None
) -> None:
    """Remove a user: they can no longer sign in."""
    _update(
        vault,
        keyring,
        lambda registry: without_user(registry, username),
        f"user {username} removed",
    )
