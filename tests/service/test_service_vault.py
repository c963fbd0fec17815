"""Making a vault is all or nothing: an init that is refused, or fails on the way, leaves
nothing behind (no folder, no keyring, no object in the token, no table in the database),
touches nothing that was there before, and the retry with the cause removed succeeds.

A vault then opens with its own keys only (the custody it was made with, its own keyring
or token, every key-encryption key its storage needs).

On a real PostgreSQL server and real SoftHSM2 tokens, each with the keyring file too."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from pg import schema_of, tables_in
from pgserver import Cluster, free_port, with_schema
from softhsm import SoftHsm

from coffre import config
from coffre.custody import Pkcs11Custodian, create_custody
from coffre.custody.keyring import KeyringCustodian
from coffre.exceptions import CustodyError, StorageError, VaultStateError
from coffre.ledger.errors import LedgerError
from coffre.service import Vault
from coffre.service.rotation import KeyRotation
from coffre.service.vault import CUSTODY_FILE, KEYRING_FILE, STORAGE_URL_FILE
from coffre.storage.postgres import PostgresStorage


@pytest.fixture
def url(postgres: Cluster) -> str:
    """A new empty PostgreSQL database (a schema of the test server) for the vault."""
    return postgres.new_storage_url()


@pytest.fixture(params=["keyring", "pkcs11"])
def custody(request: pytest.FixtureRequest) -> str:
    """The keys in a keyring file, or in a fresh token that the settings choose."""
    if request.param == "pkcs11":
        request.getfixturevalue("pkcs11_token")
    name: str = request.param
    return name


def _made_nothing(vault: Vault, request: pytest.FixtureRequest) -> None:
    """Neither the vault's folder nor its keys: no keyring file, no object in the token."""
    assert not vault.folder.exists()
    assert not vault.keyring.exists()
    if config.CUSTODY.value() == "pkcs11":
        softhsm: SoftHsm = request.getfixturevalue("softhsm")
        assert softhsm.labels(config.PKCS11_TOKEN.value()) == []


def _works(vault: Vault) -> None:
    """The vault opens: its storage and its keys are there and belong together."""
    vault.open().storage.close()


def test_an_existing_keyring_is_refused_before_the_database_is_touched(
    tmp_path: Path, url: str
) -> None:
    keyring = tmp_path / "keyring.json"
    KeyringCustodian.create(keyring)  # another vault's
    before = keyring.read_bytes()
    vault = Vault.at(tmp_path / "v1", keyring)
    with pytest.raises(VaultStateError, match="a keyring already exists"):
        vault.create(url)
    assert tables_in(url) == [] and not vault.folder.exists()
    assert keyring.read_bytes() == before
    keyring.unlink()
    vault.create(url)
    _works(vault)


def test_a_token_holding_a_vaults_keys_is_refused_before_the_database_is_touched(
    pkcs11_token: str,
    softhsm: SoftHsm,
    tmp_path: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_custody(Path("unused"))  # another vault's keys
    labels = softhsm.labels(pkcs11_token)
    root = Pkcs11Custodian.from_settings().root_secret()
    vault = Vault.at(tmp_path / "v1")
    with pytest.raises(VaultStateError, match="already holds a Coffre vault's keys"):
        vault.create(url)
    assert tables_in(url) == [] and not vault.folder.exists()
    assert softhsm.labels(pkcs11_token) == labels
    assert Pkcs11Custodian.from_settings().root_secret() == root
    [fresh] = softhsm.new_tokens()
    softhsm.use(monkeypatch, fresh)
    vault.create(url)
    _works(vault)


@pytest.mark.parametrize(
    ("setting", "advice"),
    [
        (config.PKCS11_PIN_FILE, "is wrong"),
        (config.PKCS11_MODULE, "no PKCS#11 module"),
        (config.PKCS11_TOKEN, "no PKCS#11 token labelled"),
    ],
    ids=["wrong-pin", "no-module", "no-token"],
)
def test_a_token_that_cannot_be_used_is_refused_before_the_database_is_touched(
    pkcs11_token: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    setting: config.Setting,
    advice: str,
) -> None:
    right = setting.value()
    wrong_pin = tmp_path / "wrong-pin"
    wrong_pin.write_text("0000-not-it\n")
    wrong_pin.chmod(0o600)
    wrong = {
        config.PKCS11_PIN_FILE: str(wrong_pin),
        config.PKCS11_MODULE: str(tmp_path / "no-such-module.so"),
        config.PKCS11_TOKEN: "no-such-token",
    }
    monkeypatch.setenv(setting.env, wrong[setting])
    vault = Vault.at(tmp_path / "v1")
    with pytest.raises(CustodyError, match=advice):
        vault.create(url)
    assert tables_in(url) == []
    monkeypatch.setenv(setting.env, right)
    _made_nothing(vault, request)
    vault.create(url)
    _works(vault)


def test_a_database_that_cannot_be_reached_is_refused_before_any_key_is_made(
    custody: str, request: pytest.FixtureRequest, tmp_path: Path, url: str, postgres: Cluster
) -> None:
    vault = Vault.at(tmp_path / "v1", tmp_path / "sovereign" / "keyring.json")
    elsewhere = url.replace(f":{postgres.port}/", f":{free_port()}/")
    with pytest.raises(StorageError, match="cannot connect"):
        vault.create(elsewhere)
    _made_nothing(vault, request)
    assert not (tmp_path / "sovereign").exists()
    vault.create(url)
    _works(vault)


def test_a_database_holding_a_storage_is_refused_before_any_key_is_made(
    custody: str, request: pytest.FixtureRequest, tmp_path: Path, url: str, postgres: Cluster
) -> None:
    PostgresStorage(url, create=True).close()  # another vault's storage
    tables = tables_in(url)
    vault = Vault.at(tmp_path / "v1")
    with pytest.raises(StorageError, match="already holds a Coffre storage"):
        vault.create(url)
    _made_nothing(vault, request)
    assert tables_in(url) == tables
    PostgresStorage(url).close()
    vault.create(postgres.new_storage_url())
    _works(vault)


def test_a_role_that_may_not_create_tables_is_told_what_to_grant_before_any_key_is_made(
    custody: str, request: pytest.FixtureRequest, tmp_path: Path, url: str, postgres: Cluster
) -> None:
    """PostgreSQL 15 and later let only the database's owner create tables in its public
    schema: an operator who made the database as another role meets this first."""
    schema = schema_of(url)
    role = f"reader_{schema}"
    as_role = postgres.as_new_role(url, role)
    vault = Vault.at(tmp_path / "v1")
    with pytest.raises(StorageError) as refused:
        vault.create(as_role)
    assert str(refused.value) == (
        f"the PostgreSQL role {role} may not create tables in the schema {schema}: make it"
        f" the database's owner (createdb -O {role}) or GRANT CREATE ON SCHEMA {schema}"
        f" TO {role}"
    )
    _made_nothing(vault, request)
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"GRANT CREATE ON SCHEMA {schema} TO {role}")
    vault.create(as_role)
    _works(vault)


def test_a_search_path_naming_no_schema_is_refused_before_any_key_is_made(
    tmp_path: Path, postgres: Cluster
) -> None:
    vault = Vault.at(tmp_path / "v1")
    with pytest.raises(StorageError, match="search path names no schema that exists"):
        vault.create(with_schema(postgres.url(), "no_such_schema"))
    assert not vault.folder.exists()
    vault.create(postgres.new_storage_url())
    _works(vault)


def test_the_keys_made_for_a_storage_that_cannot_be_made_are_undone(
    custody: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """/proc/self is a folder in which nobody, not even root, may make a file: the vault's
    record of its custody fails once the keys are made."""
    keyring = tmp_path / "keyring.json"
    with pytest.raises(VaultStateError, match="cannot write /proc/self/custody"):
        Vault.at("/proc/self", keyring).create()
    _made_nothing(Vault.at(tmp_path / "v1", keyring), request)
    vault = Vault.at(tmp_path / "v1", keyring)
    vault.create()
    _works(vault)


def test_a_folder_that_existed_keeps_what_it_held_and_loses_what_the_init_made(
    tmp_path: Path,
) -> None:
    """A folder left where SQLite puts its write-ahead log: SQLite makes the storage's
    file, then fails on it."""
    folder = tmp_path / "v1"
    (folder / "storage.sqlite-wal").mkdir(parents=True)
    (folder / "notes.txt").write_text("the operator's")
    vault = Vault.at(folder)
    with pytest.raises(StorageError, match="cannot open the SQLite storage"):
        vault.create()
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt", "storage.sqlite-wal"]
    assert (folder / "notes.txt").read_text() == "the operator's"
    shutil.rmtree(folder / "storage.sqlite-wal")
    vault.create()
    _works(vault)


def test_the_benchmark_switches_open_only_a_vault_made_for_a_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COFFRE_BENCH_PLAINTEXT=1 left set stored a real vault's health data unencrypted,
    and the vault then failed, with a traceback, to open without it."""
    real = Vault.at(tmp_path / "real")
    real.create()
    for switch in ("COFFRE_BENCH_PLAINTEXT", "COFFRE_BENCH_UNVERIFIED_READS"):
        with monkeypatch.context() as patched:
            patched.setenv(switch, "1")
            with pytest.raises(VaultStateError, match=f"{switch}=1 .*: it opens only"):
                real.open()
    monkeypatch.setenv("COFFRE_BENCH_PLAINTEXT", "1")
    bench = Vault.at(tmp_path / "bench")
    bench.create()
    assert bench.benchmark_mode() == "plaintext"
    bench.open().storage.close()
    monkeypatch.delenv("COFFRE_BENCH_PLAINTEXT")
    with pytest.raises(VaultStateError, match="no vault for real data"):
        bench.open()
    real.open().storage.close()


def _written(vault: Vault) -> None:
    records = vault.open()
    try:
        with records.writer() as writer:
            writer.create({"resourceType": "Patient"})
    finally:
        records.storage.close()


def test_a_keyring_mix_up_is_named_as_one(tmp_path: Path) -> None:
    """Another vault's keyring was reported as leaves 'not written by this gateway' or as a
    rollback, pointing at tampering; a folder given as the keyring got 'chmod 600 it'."""
    ours, theirs = Vault.at(tmp_path / "ours"), Vault.at(tmp_path / "theirs")
    for vault in (ours, theirs):
        vault.create()
        _written(vault)
    with pytest.raises(CustodyError, match="is no file: name the keyring file itself"):
        Vault.at(ours.folder, tmp_path).open()
    with pytest.raises(VaultStateError, match=r"theirs/keyring.json holds the keys of another"):
        Vault.at(ours.folder, theirs.keyring).open()
    (ours.folder / CUSTODY_FILE).unlink()  # a vault made before the records: its log tells
    with closing(sqlite3.connect(ours.storage_path)) as db, db:
        db.execute("DELETE FROM coffre_meta")
    with pytest.raises(
        LedgerError, match=r"does not verify with this keyring.s key.*another vault"
    ):
        Vault.at(ours.folder, theirs.keyring).open()
    ours.checkpoint_memory.write_bytes(b"\xff\xfe not a checkpoint")
    with pytest.raises(LedgerError, match=r"checkpoint memory .* holds no checkpoint of this"):
        ours.open()


# -- a vault opens with its own keys only ---------------------------------------------------
# A setting left over (COFFRE_CUSTODY=pkcs11 in a shell that serves another vault) used to
# open a keyring vault with another vault's token: its writes were wrapped and signed with
# that vault's keys, and a rotation there then destroyed them for good.


def _origin_of(vault: Vault) -> str | None:
    """The log's name that ``init`` recorded in the vault's storage."""
    with closing(vault.open_storage()) as storage:
        return storage.vault_origin()


def _leaf_count(vault: Vault) -> int:
    with closing(vault.open_storage()) as storage:
        return storage.leaf_count()


def test_a_vault_opens_with_the_custody_it_was_made_with_only(
    softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_keyring = Vault.at(tmp_path / "keyring-vault")
    in_keyring.create()
    [token] = softhsm.new_tokens()
    softhsm.use(monkeypatch, token)
    in_token = Vault.at(tmp_path / "token-vault")
    in_token.create()
    _written(in_token)
    assert in_keyring.recorded_custody() == ("keyring", _origin_of(in_keyring))
    assert in_token.recorded_custody() == ("pkcs11", _origin_of(in_token))
    assert _origin_of(in_keyring) != _origin_of(in_token)

    with pytest.raises(VaultStateError, match="keeps its keys in a keyring file") as refused:
        in_keyring.open()  # with the other vault's token, which the settings name
    assert f"set {config.CUSTODY.env}=keyring" in str(refused.value)
    assert _leaf_count(in_keyring) == 0

    monkeypatch.setenv(config.CUSTODY.env, "keyring")
    with pytest.raises(VaultStateError, match="keeps its keys in a PKCS#11 token"):
        in_token.open()
    softhsm.delete_tokens()


def test_another_vaults_keys_are_refused_even_before_its_storage_holds_a_checkpoint(
    tmp_path: Path,
) -> None:
    """An empty storage has no signed checkpoint to tell the keys apart by: the record of
    the log's name does."""
    ours, theirs = Vault.at(tmp_path / "ours"), Vault.at(tmp_path / "theirs")
    ours.create()
    theirs.create()
    with pytest.raises(VaultStateError, match="holds the keys of another vault") as refused:
        Vault.at(ours.folder, theirs.keyring).open()
    assert str(theirs.keyring) in str(refused.value)
    assert _leaf_count(ours) == 0


def test_a_vault_made_before_the_record_gets_it_once_its_log_proves_its_keys(
    tmp_path: Path,
) -> None:
    vault = Vault.at(tmp_path / "v")
    vault.create()
    recorded = vault.recorded_custody()
    (vault.folder / CUSTODY_FILE).unlink()
    vault.open().storage.close()  # no checkpoint yet: nothing proves the keys
    assert vault.recorded_custody() is None
    _written(vault)
    vault.open().storage.close()
    assert vault.recorded_custody() == recorded


def test_a_storage_needing_a_key_the_custody_lacks_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    """A keyring or a token restored from a backup older than a rotation: every read of
    the records under the missing key would fail, and be logged as the host's tampering."""
    vault = Vault.at(tmp_path / "v")
    vault.create()
    _written(vault)
    records = vault.open()
    try:
        KeyRotation(records).rotate()  # kek-2 active; the data keys still under kek-1
    finally:
        records.storage.close()
    content = json.loads(vault.keyring.read_text())
    content["keks"] = [kek for kek in content["keks"] if kek["id"] != "kek-1"]
    vault.keyring.write_text(json.dumps(content))
    leaves = _leaf_count(vault)

    with pytest.raises(CustodyError, match="wrapped by kek-1, which the keyring") as refused:
        vault.open()
    assert "keys list" in str(refused.value)
    assert _leaf_count(vault) == leaves  # no integrity failure logged
    listing = vault.open(every_kek_held=False)
    try:
        uses = {use.kek_id: (use.held, use.data_keys) for use in KeyRotation(listing).keks()}
    finally:
        listing.storage.close()
    assert uses["kek-1"][0] is False and uses["kek-1"][1] > 0


@pytest.mark.parametrize("kept_in", ["sqlite", "postgresql"])
def test_a_folder_put_together_by_hand_refuses_another_vaults_empty_storage(
    tmp_path: Path, request: pytest.FixtureRequest, kept_in: str
) -> None:
    """A keyring copied to a new folder, beside another vault's storage (its file, or its
    database's URL): the storage names the vault whose init made it, even while empty."""
    theirs = Vault.at(tmp_path / "theirs")
    ours = Vault.at(tmp_path / "ours")
    ours.create()
    if kept_in == "postgresql":
        theirs.create(request.getfixturevalue("url"))
    else:
        theirs.create()
    assert _origin_of(theirs) == theirs.recorded_custody()[1]  # type: ignore[index]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy2(ours.keyring, mixed / KEYRING_FILE)
    if kept_in == "postgresql":
        shutil.copy2(theirs.folder / STORAGE_URL_FILE, mixed / STORAGE_URL_FILE)
    else:
        shutil.copy2(theirs.storage_path, mixed / "storage.sqlite")
    with pytest.raises(VaultStateError, match="is another vault's"):
        Vault.at(mixed).open()
    _written(theirs)  # which stays its own vault's
