"""``coffre backup`` while the vault is written to, and ``coffre restore`` of it: the backup
is one consistent moment, the restore is refused as a rollback until the operator accepts
going back to the backup's log size, and then the vault opens and its log audits."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import FHIR_JSON, share_keys
from pg import Cluster
from starlette.testclient import TestClient
from typer.testing import CliRunner

from coffre.api import create_app
from coffre.cli.audit import audit_log
from coffre.cli.main import app
from coffre.cli.migrate import CopyProgress, accept_rollback
from coffre.exceptions import CoffreError, VaultStateError
from coffre.service import RecordStore, Vault
from coffre.service.vault import KEYRING_FILE, STORAGE_URL_FILE

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


class _Writer(threading.Thread):
    """Creates patients until told to stop."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self._client = client
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        while not self.stop.is_set():
            response = self._client.post(
                "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON
            )
            assert response.status_code == 201, response.text
            self.written += 1


def _backup_while_writing(client: TestClient, vault: Vault, backup: Path) -> int:
    """A backup taken while a writer runs; how many writes happened during it."""
    writer = _Writer(client)
    writer.start()
    try:
        while writer.written < 20:  # enough rows that the backup takes a while
            writer.stop.wait(0.01)
        before = writer.written
        code, output = _run("backup", str(backup), "--vault", str(vault.folder), "--batch", "2")
        during = writer.written - before
    finally:
        writer.stop.set()
        writer.join()
    assert code == 0, output
    assert "verdict: the copy holds the same content" in output and backup.exists()
    return during


def _backed_up(client: TestClient, vault: Vault, tmp_path: Path) -> Path:
    """A backup of the vault holding one patient."""
    client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    backup = tmp_path / "backup.sqlite"
    assert _run("backup", str(backup), "--vault", str(vault.folder))[0] == 0
    return backup


def _new_vault(vault: Vault, folder: Path, backend: str, request: pytest.FixtureRequest) -> Vault:
    """A folder with the vault's keys (and its checkpoint memory) and an empty storage."""
    folder.mkdir()
    share_keys(vault, folder)
    shutil.copy2(vault.checkpoint_memory, folder / vault.checkpoint_memory.name)
    if backend == "postgresql":
        cluster: Cluster = request.getfixturevalue("postgres")
        (folder / STORAGE_URL_FILE).write_text(cluster.new_storage_url())
    return Vault.at(folder, folder / KEYRING_FILE)


def test_a_backup_taken_while_writing_restores_once_its_rollback_is_accepted(
    client: TestClient,
    records: RecordStore,
    vault: Vault,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    backup = tmp_path / "backup.sqlite"
    assert _backup_while_writing(client, vault, backup) > 0
    latest = audit_log(client, records.ledger.verifier_key, None).checkpoint
    assert latest is not None
    restored = _new_vault(vault, tmp_path / "restored", backend, request)

    code, output = _run("restore", str(backup), "--vault", str(restored.folder))
    assert code == 1 and "rolled back" in output, output
    size = int(output.split("--accept-rollback-to ")[1].split(".")[0])
    assert 0 < size < latest.size
    code, output = _run(
        "restore", str(backup), "--vault", str(restored.folder), "--accept-rollback-to", "1"
    )
    assert code == 1, "the storage is restored, the rollback still refused"
    assert "--accept-rollback-to 1 is not that size" in output, output
    code, output = _run(
        "restore", str(backup), "--vault", str(restored.folder), "--accept-rollback-to", str(size)
    )
    assert code == 0 and "resumed" in output and "rollback accepted" in output, output
    assert (restored.folder / "keyring.checkpoint.before-restore").exists()

    opened = restored.open()
    try:
        with TestClient(create_app(opened), raise_server_exceptions=False) as there:
            fresh = audit_log(there, opened.ledger.verifier_key, None, full=True)
            assert fresh.consistent and fresh.checkpoint is not None
            assert fresh.checkpoint.size >= size
            # An auditor who saw the log before the rollback sees it shrink: it is told.
            told = audit_log(there, opened.ledger.verifier_key, latest)
            assert [v.kind for v in told.violations] == ["shrunk log"]
            created = there.post(
                "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON
            )
            assert created.status_code == 201
    finally:
        opened.storage.close()


def test_a_restore_of_a_backup_at_the_last_signed_checkpoint_opens_as_it_is(
    client: TestClient,
    vault: Vault,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    backup = tmp_path / "backup.sqlite"
    code, output = _run("backup", str(backup), "--vault", str(vault.folder))
    assert code == 0, output
    restored = _new_vault(vault, tmp_path / "restored", backend, request)
    code, output = _run("restore", str(backup), "--vault", str(restored.folder))
    assert code == 0 and "restored; the vault opens" in output, output
    code, output = _run("backup", str(backup), "--vault", str(vault.folder))
    assert code == 1 and "exists already" in output


def test_a_backup_holding_records_but_no_log_is_refused_with_no_rollback_offered(
    client: TestClient,
    vault: Vault,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """It was taken for a rollback: the restore offered --accept-rollback-to 0, which then
    moved the checkpoint memory aside and ended in a traceback."""
    backup = _backed_up(client, vault, tmp_path)
    with sqlite3.connect(backup) as db:
        for table in ("leaves", "tree_nodes", "checkpoints"):
            db.execute(f"DELETE FROM {table}")
    restored = _new_vault(vault, tmp_path / "restored", backend, request)
    for extra in ((), ("--accept-rollback-to", "0")):
        result = runner.invoke(
            app, ["restore", str(backup), "--vault", str(restored.folder), *extra]
        )
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "holds records but no log" in result.output, result.output
        assert "--accept-rollback-to" not in result.output
        assert restored.checkpoint_memory.exists()


@pytest.mark.parametrize("memory", ["with", "without"])
def test_a_restore_stopped_halfway_opens_no_vault_and_finishes_when_run_again(
    client: TestClient,
    vault: Vault,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    memory: str,
) -> None:
    """A restore stopped before it copied the log opened as a vault all the same (without
    the checkpoint memory, as after a disaster that took the keyring's memory too): it
    signed a new log over records the log did not cover, each read failed its integrity
    check, and the restore refused the storage it had left as no partial copy."""
    for n in range(10):
        patient = {"resourceType": "Patient", "id": f"p{n}"}
        client.put(f"/fhir/Patient/p{n}", json=patient, headers=FHIR_JSON)
    backup = tmp_path / "backup.sqlite"
    assert _run("backup", str(backup), "--vault", str(vault.folder))[0] == 0
    restored = _new_vault(vault, tmp_path / "restored", backend, request)
    if memory == "without":
        restored.checkpoint_memory.unlink()
    advance, calls = CopyProgress.advance, 0

    def stopped(self: CopyProgress, rows: int, data_bytes: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # the tables before the log's
            raise KeyboardInterrupt
        advance(self, rows, data_bytes)

    monkeypatch.setattr(CopyProgress, "advance", stopped)
    command = ("restore", str(backup), "--vault", str(restored.folder), "--batch", "5")
    assert _run(*command)[0] == 130
    with pytest.raises(VaultStateError) as refused:
        restored.open()
    said = " ".join(str(refused.value).split())
    assert "is an unfinished copy of" in said, said
    assert f"coffre restore {backup} --vault {restored.folder}" in said
    monkeypatch.setattr(CopyProgress, "advance", advance)
    code, output = _run(*command)
    assert code == 0 and "resumed" in output and "restored; the vault opens" in output, output
    opened = restored.open()
    try:
        with TestClient(create_app(opened), raise_server_exceptions=False) as there:
            assert there.get("/fhir/Patient/p9").status_code == 200
    finally:
        opened.storage.close()


def test_a_restore_over_a_vault_says_to_move_its_storage_aside_and_leaves_it_serving(
    client: TestClient, vault: Vault, tmp_path: Path
) -> None:
    """It said "give an empty destination", where operations.md says to move the vault's
    storage aside."""
    backup = _backed_up(client, vault, tmp_path)
    client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    code, output = _run("restore", str(backup), "--vault", str(vault.folder))
    said = " ".join(output.split())
    assert code == 1 and "is not a partial copy" in said, output
    assert f"To restore over the vault at {vault.folder}, move its storage (" in said
    vault.open().storage.close()


def test_a_restore_stopped_before_it_made_the_tables_opens_no_vault(
    client: TestClient, vault: Vault, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Killed between making the SQLite file and its tables: the empty file opened as a
    new, empty vault, which signed a log of its own."""
    if vault.storage_url is not None:
        pytest.skip("a PostgreSQL database without the tables is no storage already")
    backup = _backed_up(client, vault, tmp_path)
    restored = _new_vault(vault, tmp_path / "restored", "sqlite", request)
    restored.storage_path.touch()
    with pytest.raises(VaultStateError, match=r"holds no Coffre storage .* Run the restore again"):
        restored.open()
    code, output = _run("restore", str(backup), "--vault", str(restored.folder))
    assert code == 0 and "restored; the vault opens" in output, output


@pytest.mark.parametrize("vault", ["keyring"], indirect=True)  # a token needs no file
def test_a_restore_into_a_folder_without_its_keyring_says_so_and_offers_no_rollback(
    client: TestClient, vault: Vault, tmp_path: Path
) -> None:
    backup = _backed_up(client, vault, tmp_path)
    keyring = tmp_path / "elsewhere" / KEYRING_FILE
    code, output = _run(
        "restore", str(backup), "--vault", str(tmp_path / "new"), "--keyring", str(keyring)
    )
    said = " ".join(output.split())
    assert code == 1 and f"cannot restore: no keyring at {keyring}" in said, output
    assert "Nothing was restored" in said and not (tmp_path / "new").exists()
    assert "--accept-rollback-to" not in output and "rolled back" not in output


def test_a_restore_needing_a_retired_key_names_it_and_restores_nothing(
    client: TestClient,
    vault: Vault,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Rotating and retiring the key-encryption key leaves older backups to the keyring
    kept with them: a restore with today's keyring would give a vault whose every read
    fails its integrity check, as if the host had tampered with it."""
    backup = _backed_up(client, vault, tmp_path)
    where = ("--vault", str(vault.folder))
    code, output = _run("keys", "rotate", "--retire", "--yes", *where)
    assert code == 0, output
    restored = _new_vault(vault, tmp_path / "restored", backend, request)
    code, output = _run("restore", str(backup), "--vault", str(restored.folder))
    said = " ".join(output.split())
    assert code == 1 and "the backup's data keys are wrapped by" in said, output
    assert "kek-1" in said and "Nothing was restored" in said
    # What holds the keys, as it is: a token has no keyring file to point to.
    held_in = "the PKCS#11 token" if vault.recorded_custody()[0] == "pkcs11" else "the keyring"  # type: ignore[index]
    assert f"which {held_in}" in said, said
    with pytest.raises(CoffreError, match=r"no vault at|holds no Coffre storage"):
        restored.open_storage()  # nothing was made


def test_a_backup_into_a_folder_that_does_not_exist_says_so(vault: Vault, tmp_path: Path) -> None:
    code, output = _run("backup", str(tmp_path / "no" / "b.sqlite"), "--vault", str(vault.folder))
    assert code == 1 and f"there is no folder {tmp_path / 'no'}" in " ".join(output.split())
    for folder in (f"{tmp_path}/bk/", str(tmp_path)):  # a file named bk was made
        code, output = _run("backup", folder, "--vault", str(vault.folder))
        assert code == 1 and "is a folder: name the backup's file in it" in output, output
    assert not (tmp_path / "bk").exists()


def test_a_backup_or_migration_of_a_damaged_storage_file_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    """Its end of the snapshot failed too, and that second error's traceback hid the
    first (a review's finding)."""
    damaged = Vault.at(tmp_path / "v")
    damaged.create()
    records = damaged.open()
    with records.writer() as writer:
        for number in range(300):
            writer.create({"resourceType": "Organization", "name": f"Clinique {number}"})
    records.storage.close()
    with damaged.storage_path.open("r+b") as file:  # pages 4 to 6 overwritten
        file.seek(3 * 4096)
        file.write(bytes(range(256)) * 48)
    for command in (
        ("backup", str(tmp_path / "b.sqlite"), "--vault", str(damaged.folder)),
        ("migrate", "--from", str(damaged.folder), "--to", str(tmp_path / "m.sqlite")),
    ):
        code, output = _run(*command)
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert code == 1 and "Traceback" not in output, output
        assert errors == ["error: SQLite read failed: database disk image is malformed"], output


def test_the_storage_and_its_backups_are_readable_by_their_owner_alone(
    vault: Vault, tmp_path: Path
) -> None:
    """Ciphertext, but not for the host's other accounts: 0600 whatever the umask, as
    the keyring is (SQLite gives their WAL files the same)."""
    if vault.storage_url is not None:
        pytest.skip("PostgreSQL's files are its server's; SQLite's, the vault's")
    backup = tmp_path / "b.sqlite"
    assert _run("backup", str(backup), "--vault", str(vault.folder))[0] == 0
    copied = tmp_path / "m.sqlite"
    assert _run("migrate", "--from", str(vault.folder), "--to", f"sqlite:///{copied}")[0] == 0
    for path in (vault.storage_path, backup, copied):
        assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.parametrize("vault", ["keyring"], indirect=True)  # another vault's keyring file
def test_a_restore_with_another_vault_s_keyring_is_refused_before_copying(
    client: TestClient, vault: Vault, tmp_path: Path
) -> None:
    """Every vault's first key-encryption key is kek-1: the backup was copied whole, then
    refused as a log 'not written by this gateway', the folder left full and unusable."""
    backup = _backed_up(client, vault, tmp_path)
    other = Vault.at(tmp_path / "other")
    other.create()
    target = tmp_path / "restored"
    code, output = _run(
        "restore", str(backup), "--vault", str(target), "--keyring", str(other.keyring)
    )
    said = " ".join(output.split())
    assert code == 1 and "signed by another vault's key than the keyring" in said, output
    assert "Nothing was restored" in said and not target.exists()


def test_a_restore_of_no_backup_makes_nothing(tmp_path: Path) -> None:
    code, output = _run("restore", str(tmp_path / "nope.sqlite"), "--vault", str(tmp_path / "new"))
    assert code == 1 and "no backup at" in output and "nothing was restored" in output
    assert not (tmp_path / "new").exists()


def test_a_backup_that_cannot_carry_on_names_the_partial_file_to_delete(
    client: TestClient, vault: Vault, tmp_path: Path
) -> None:
    """An interrupted backup, then writes: its partial file is no copy of the vault any
    more, and the operator, who never named that file, is told which one to delete."""
    client.put(
        "/fhir/Patient/ana", json={"resourceType": "Patient", "id": "ana"}, headers=FHIR_JSON
    )
    backup = tmp_path / "backup.sqlite"
    partial = tmp_path / "backup.sqlite.partial"
    assert _run("backup", str(partial), "--vault", str(vault.folder))[0] == 0
    update = {"resourceType": "Patient", "id": "ana", "gender": "female"}
    client.put("/fhir/Patient/ana", json=update, headers=FHIR_JSON)
    code, output = _run("backup", str(backup), "--vault", str(vault.folder))
    assert code == 1 and "not a partial copy" in output
    assert f"delete {partial}" in " ".join(output.split()), output
    partial.unlink()
    assert _run("backup", str(backup), "--vault", str(vault.folder))[0] == 0


def test_each_accepted_rollback_keeps_its_evidence(
    client: TestClient, vault: Vault, records: RecordStore
) -> None:
    """A second accepted rollback put its memory where the first one's was kept."""
    client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    memory = vault.checkpoint_memory
    first = memory.with_name(memory.name + ".before-restore")
    first.write_text("the first restore's evidence")
    remembered = memory.read_text()
    accept_rollback(vault)
    assert first.read_text() == "the first restore's evidence"
    assert memory.with_name(memory.name + ".before-restore.2").read_text() == remembered
