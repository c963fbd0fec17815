"""`coffre clients ...` and `coffre users ...`: the registry beside the keyring, what it
refuses, and what it never writes down (a password, a private key)."""

from __future__ import annotations

import json
import stat
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey
from pg import HostDatabase
from typer.testing import CliRunner

from coffre.api.auth.registry import (
    RegistryError,
    RegistryFile,
    access_file,
    check_password,
    hash_password,
    load,
    public_jwks,
)
from coffre.api.auth.scopes import Role
from coffre.cli.main import app
from coffre.service import Vault
from coffre.service.tokenkey import ID_TOKEN_KEY, id_token_key

runner = CliRunner()


def _weak_rsa() -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RSAKey.generate_key(1024).as_dict(private=False)


PASSWORD = "correct horse battery"
PASSWORDS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    vault = tmp_path / "vault"
    vault.mkdir()
    return vault


def _run(folder: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--vault", str(folder)], input=input)
    return result.exit_code, result.output


def _registry_path(folder: Path) -> Path:
    return access_file(folder / "keyring.json")


def test_a_backend_client_is_registered_with_its_public_key_only(
    folder: Path, tmp_path: Path
) -> None:
    key = RSAKey.generate_key(2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    code, output = _run(
        folder,
        "clients",
        "add-backend",
        "lab",
        "--key",
        str(jwks),
        "--scope",
        "system/Observation.rs",
    )
    assert code == 0, output
    path = _registry_path(folder)
    assert path.name == "keyring.access.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    client = load(path).clients["lab"]
    assert client.kind == "backend" and client.scopes == "system/Observation.rs"
    assert client.jwks["keys"][0]["n"] == key.as_dict(private=False)["n"]
    assert "d" not in client.jwks["keys"][0]
    assert _run(folder, "clients", "list")[1].strip() == "lab\tbackend\tsystem/Observation.rs"
    code, output = _run(folder, "clients", "add-backend", "lab", "--key", str(jwks))
    assert code == 1 and "registered already" in output


def test_a_pem_public_key_is_registered_as_a_jwks(folder: Path, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384")
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.as_pem(private=False))
    assert _run(folder, "clients", "add-backend", "svc", "--key", str(pem))[0] == 0
    assert load(_registry_path(folder)).clients["svc"].jwks["keys"][0]["crv"] == "P-384"


@pytest.mark.parametrize(
    ("key_text", "message"),
    [
        (json.dumps(ECKey.generate_key("P-256").as_dict(private=True)), "private key"),
        ("not a key", "not a public key"),
        (json.dumps({"keys": []}), "No keys"),
        (json.dumps({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}), "private key"),
        (json.dumps(_weak_rsa()), "fewer than 2048 bits is too weak"),  # was registered
    ],
)
def test_what_is_not_a_public_key_is_refused(key_text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        public_jwks(key_text)


def test_a_scope_coffre_does_not_understand_is_refused(folder: Path, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(ECKey.generate_key("P-384").as_dict(private=False)))
    code, output = _run(
        folder, "clients", "add-backend", "x", "--key", str(jwks), "--scope", "system/*.everything"
    )
    assert code == 1 and "system/*.everything" in output
    assert not _registry_path(folder).exists()


def test_an_app_is_registered_with_its_redirect_uris(folder: Path) -> None:
    code, output = _run(
        folder,
        "clients",
        "add-app",
        "portal",
        "--redirect-uri",
        "https://portal.example/callback",
        "--redirect-uri",
        "http://127.0.0.1:9000/cb",
    )
    assert code == 0, output
    client = load(_registry_path(folder)).clients["portal"]
    assert client.redirect_uris == ("https://portal.example/callback", "http://127.0.0.1:9000/cb")
    assert _run(folder, "clients", "remove", "portal")[0] == 0
    assert load(_registry_path(folder)).clients == {}
    assert _run(folder, "clients", "remove", "portal")[0] == 1


@pytest.mark.parametrize(
    "uri",
    [
        "http://portal.example/cb",
        "https://portal.example/cb#x",
        "portal",
        "https://portal.example:99999/cb",
    ],
)
def test_a_redirect_uri_that_could_leak_a_code_is_refused(folder: Path, uri: str) -> None:
    code, output = _run(folder, "clients", "add-app", "portal", "--redirect-uri", uri)
    assert code == 1, output


def test_a_user_is_added_from_a_password_file_and_kept_as_a_hash(
    folder: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    code, output = _run(
        folder,
        "users",
        "add",
        "alice",
        "--role",
        "patient",
        "--fhir-user",
        "Patient/123",
        "--password-file",
        str(secret),
    )
    assert code == 0, output
    text = _registry_path(folder).read_text()
    assert PASSWORD not in text and "scrypt$" in text
    registry = load(_registry_path(folder))
    assert registry.users["alice"].role == Role.PATIENT
    assert registry.sign_in("alice", PASSWORD) == registry.users["alice"]
    assert registry.sign_in("alice", PASSWORD + "!") is None
    assert registry.sign_in("bob", PASSWORD) is None
    listed = _run(folder, "users", "list")[1]
    assert listed.strip() == "alice\tpatient\tPatient/123"
    assert _run(folder, "users", "remove", "alice")[0] == 0
    assert load(_registry_path(folder)).users == {}


def test_a_password_is_asked_twice_without_echo(folder: Path) -> None:
    code, output = _run(
        folder,
        "users",
        "add",
        "dr",
        "--role",
        "clinician",
        "--fhir-user",
        "Practitioner/abc",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert code == 0, output
    assert PASSWORD not in output
    assert load(_registry_path(folder)).sign_in("dr", PASSWORD) is not None
    again = ["users", "add", "dr", "--role", "clinician", "--fhir-user", "Practitioner/abc"]
    code, output = _run(folder, *again)
    assert code == 1 and "exists already" in output and "password" not in output


@pytest.mark.parametrize(
    ("role", "fhir_user", "password", "message"),
    [
        ("nurse", "Practitioner/a", PASSWORD, "not a role"),
        ("system", "Practitioner/a", PASSWORD, "backend clients"),
        ("patient", "Practitioner/a", PASSWORD, "their Patient resource"),
        ("clinician", "Patient/a", PASSWORD, "only a patient's is one"),
        ("clinician", "Observation/1", PASSWORD, "not a reference"),
        ("clinician", "Practitioner/a", "short", "12 characters"),
    ],
)
def test_a_user_coffre_cannot_place_is_refused(
    folder: Path, tmp_path: Path, role: str, fhir_user: str, password: str, message: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text(password)
    code, output = _run(
        folder,
        "users",
        "add",
        "u",
        "--role",
        role,
        "--fhir-user",
        fhir_user,
        "--password-file",
        str(secret),
    )
    assert code == 1 and message in output
    assert not _registry_path(folder).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "add", "u", "--password-file", "absent"), "'--password-file'"),
        (("clients", "add-backend", "lab", "--key", "absent"), "'--key'"),
    ],
)
def test_a_file_that_is_not_there_is_a_usage_error_not_a_traceback(
    folder: Path, args: tuple[str, ...], message: str
) -> None:
    user = ("--role", "admin", "--fhir-user", "Practitioner/a") if args[0] == "users" else ()
    code, output = _run(folder, *args, *user)
    assert code == 2 and message in output and "does not exist" in output, output
    assert not _registry_path(folder).exists()


def test_a_file_that_is_not_utf8_is_named_and_none_of_it_shown(
    folder: Path, tmp_path: Path
) -> None:
    """Each was a UnicodeDecodeError traceback, which quoted a byte of the password file."""
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfepassword\x80")
    user = ("users", "add", "u", "--role", "admin", "--fhir-user", "Practitioner/a")
    for args, what in (
        (("clients", "add-backend", "b1", "--key", str(binary)), "key"),
        ((*user, "--password-file", str(binary)), "password"),
    ):
        code, output = _run(folder, *args)
        said = " ".join(output.split())
        assert code == 1 and f"the {what} file {binary} is not UTF-8 text" in said, output
        assert "Traceback" not in output and "0xff" not in output
    assert not _registry_path(folder).exists()


def test_a_vault_folder_that_is_not_there_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    add = ("users", "add", "u", "--role", "admin", "--fhir-user", "Practitioner/a")
    code, output = _run(tmp_path / "absent", *add, "--password-file", str(secret))
    assert code == 1 and f"no folder {tmp_path / 'absent'}" in output
    for listed in ("clients", "users"):  # not an empty list, as if the vault had nobody
        code, output = _run(tmp_path / "absent", listed, "list")
        assert code == 1 and f"no folder {tmp_path / 'absent'}" in output


def test_a_gateway_reads_the_registry_again_when_it_changes(folder: Path, tmp_path: Path) -> None:
    watched = RegistryFile(_registry_path(folder))
    assert watched.current().users == {}
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    _run(
        folder,
        "users",
        "add",
        "u",
        "--role",
        "admin",
        "--fhir-user",
        "Practitioner/a",
        "--password-file",
        str(secret),
    )
    assert list(watched.current().users) == ["u"]


def test_a_damaged_registry_is_named_not_quoted(folder: Path) -> None:
    _registry_path(folder).write_text('{"users": {"u": {"role": "nurse"}}}')
    code, output = _run(folder, "users", "list")
    assert code == 1 and "damaged" in output and "nurse" not in output


@settings(max_examples=8, deadline=None)
@given(PASSWORDS, PASSWORDS)
def test_a_password_hash_accepts_its_password_only(password: str, other: str) -> None:
    stored = hash_password(password)
    assert check_password(password, stored)
    assert check_password(other, stored) is (other == password)


def test_serve_refuses_to_start_with_a_wrong_auth_setting(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COFFRE_AUTH", "maybe")
    result = runner.invoke(app, ["serve", "--vault", str(vault.folder)])
    assert result.exit_code == 1 and "COFFRE_AUTH" in result.output


def test_serve_refuses_to_start_with_an_id_token_key_the_host_altered(vault: Vault) -> None:
    id_token_key(vault.open())
    with HostDatabase.of(vault) as host:
        host.execute("UPDATE coffre_meta SET value = ? WHERE key = ?", ("AAAA", ID_TOKEN_KEY))
    result = runner.invoke(app, ["serve", "--vault", str(vault.folder)])
    assert result.exit_code == 1 and "the host altered it" in result.output
    assert "Traceback" not in result.output
