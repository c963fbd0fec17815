"""``coffre migrate`` of the whole Synthea vault (../shared/data/synthea): SQLite to
PostgreSQL and back gives the same SQLite tables, row for row; the vault on PostgreSQL
answers the same reads and searches. And a migration killed halfway (``kill -9``, either
way between the backends, on a generated vault) finishes when run again."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import Cluster, HostDatabase
from softhsm import SoftHsm
from starlette.testclient import TestClient
from synthea_vault import synthea_vault_copy
from typer.testing import CliRunner

from coffre.api import create_app
from coffre.cli.main import app
from coffre.cli.migrate import CopyProgress
from coffre.exceptions import StorageFullError
from coffre.service import Vault
from coffre.service.vault import KEYRING_FILE, STORAGE_URL_FILE

KILL_AFTER_RECORDS = 200
PATIENTS = 6
KILL_DEADLINE_SECONDS = 600
runner = CliRunner()


@dataclass
class Synthea:
    vault: Vault
    answers: dict[str, Any]
    """What the vault answered to ``_queries``, before it was migrated."""


def _queries(client: TestClient) -> Iterator[str]:
    """Searches of several kinds, then reads of what they found."""
    yield "/fhir/Patient?_count=40"
    yield "/fhir/Patient?gender=female&_count=20"
    yield "/fhir/Observation?code=http://loinc.org|8302-2&_count=20"
    yield "/fhir/Organization?_count=10"
    patients = client.get("/fhir/Patient?_count=5").json()["entry"]
    for entry in patients:
        ident = entry["resource"]["id"]
        yield f"/fhir/Patient/{ident}"
        yield f"/fhir/Condition?patient=Patient/{ident}"
        yield f"/fhir/Patient/{ident}/_history"


def _answers(vault: Vault) -> dict[str, Any]:
    """Each query's status and what it found (bundle entries and total, or the resource)."""
    records = vault.open()
    try:
        with TestClient(create_app(records)) as client:
            found = {}
            for query in _queries(client):
                response = client.get(query)
                body = response.json()
                if body.get("resourceType") == "Bundle":
                    body = {"total": body.get("total"), "entry": body.get("entry")}
                found[query] = (response.status_code, body)
            return found
    finally:
        records.storage.close()


@pytest.fixture(scope="module")
def synthea(tmp_path_factory: pytest.TempPathFactory) -> Synthea:
    vault, _ = synthea_vault_copy(tmp_path_factory, tmp_path_factory.mktemp("synthea") / "vault")
    return Synthea(vault, _answers(vault))


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _migrate(source: str, destination: str, *options: str) -> str:
    code, output = _run("migrate", "--from", source, "--to", destination, *options)
    assert code == 0, output
    assert "verdict: the copy holds the same content as the source's snapshot" in output
    return output


def _rows(path: Path, table: str) -> Iterator[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        yield from db.execute(f"SELECT * FROM {table} ORDER BY 1, 2")


def _assert_same_sqlite_tables(first: Path, second: Path) -> None:
    """Every table the same, row for row, but the FTS5 index's own: built from the token
    sets, its runs depend on how they were written."""
    with closing(sqlite3.connect(first)) as db:
        tables = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'"
                " AND name NOT LIKE 'token_index%'"
            )
        ]
    for table in tables:
        for mine, theirs in zip_longest(_rows(first, table), _rows(second, table)):
            assert mine == theirs, f"{table} differs"


def _vault_on(url: str, original: Vault, folder: Path) -> Vault:
    """A vault folder for the storage at ``url``, with a copy of the original's keyring and
    checkpoint memory (the same sovereign side)."""
    folder.mkdir()
    for path in (original.keyring, original.checkpoint_memory):
        shutil.copy2(path, folder / path.name)
    (folder / STORAGE_URL_FILE).write_text(url)
    return Vault.at(folder, folder / KEYRING_FILE)


@pytest.mark.shared_data
@pytest.mark.slow
def test_synthea_to_postgresql_and_back_is_the_same_and_serves_the_same(
    synthea: Synthea, postgres: Cluster, tmp_path: Path
) -> None:
    url = postgres.new_storage_url()
    _migrate(str(synthea.vault.folder), url)
    back = tmp_path / "back.sqlite"
    _migrate(url, f"sqlite://{back}")
    _assert_same_sqlite_tables(synthea.vault.storage_path, back)
    moved = _vault_on(url, synthea.vault, tmp_path / "moved")
    assert _answers(moved) == synthea.answers


def _with_tokens(location: str) -> int:
    """How many records have their index tokens in a storage (0 while it has no tables)."""
    try:
        with HostDatabase(location if "://" in location else Path(location)) as db:
            table = "token_sets" if db.sqlite else "(SELECT DISTINCT loc FROM tokens) t"
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except (psycopg.Error, sqlite3.Error):
        return 0


@pytest.mark.slow
def test_a_migration_killed_halfway_finishes_when_run_again(
    vault: Vault, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """To the other backend, in batches of 5 rows, killed once the tokens of 200 records
    are in (in batches of 50, SQLite wrote all 696 records' between two looks)."""
    code, output = _run("synth", str(PATIENTS), "--out", str(tmp_path / "synth"))
    assert code == 0, output
    code, output = _run("import", str(tmp_path / "synth"), "--vault", str(vault.folder))
    assert code == 0, output
    source = vault.storage_url or str(vault.storage_path)
    if backend == "sqlite":
        target = request.getfixturevalue("postgres").new_storage_url()
    else:
        target = str(tmp_path / "copy.sqlite")
    command = ["migrate", "--from", str(vault.folder), "--to", target, "--batch", "5"]
    process = subprocess.Popen([sys.executable, "-m", "coffre", *command])
    try:
        deadline = time.monotonic() + KILL_DEADLINE_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if _with_tokens(target) >= KILL_AFTER_RECORDS:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        assert process.wait() == -signal.SIGKILL, "the migration ended before it was killed"
    assert 0 < _with_tokens(target) < _with_tokens(source)
    output = _migrate(str(vault.folder), target)  # in batches of another size, too
    assert "resumed: the destination already held" in output


@pytest.mark.parametrize("kind", ["empty file", "another application's database"])
def test_a_source_that_is_no_coffre_storage_is_refused_and_left_as_it_was(
    tmp_path: Path, kind: str
) -> None:
    source = tmp_path / "source.db"
    source.touch()
    if kind != "empty file":
        with closing(sqlite3.connect(source)) as other:
            other.execute("CREATE TABLE notes (text)")
            other.commit()
    before = source.read_bytes()
    destination = tmp_path / "copy.sqlite"
    for args in (
        ("migrate", "--from", str(source), "--to", str(destination)),
        ("backup", str(destination), "--vault", str(source)),
    ):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 1 and "is not a Coffre storage" in result.output, result.output
        assert source.read_bytes() == before
        assert sorted(path.name for path in tmp_path.iterdir()) == ["source.db"]


@pytest.mark.parametrize(
    "storage", ["mysql://host/db", "postgresq://coffre@host/db", "sqlite:relative.db"]
)
def test_a_storage_coffre_does_not_know_is_refused_with_the_forms_it_takes(
    tmp_path: Path, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo of a scheme was taken for a file name (``postgresq:/host/db``), and
    ``sqlite:relative.db`` became a file of that name."""
    monkeypatch.chdir(tmp_path)
    for args in (
        ("migrate", "--from", storage, "--to", "copy.sqlite"),
        ("migrate", "--from", "x", "--to", storage),
    ):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 1, result.output
        assert "postgresql://USER@HOST/DATABASE, sqlite:///ABSOLUTE/PATH" in result.output
        assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("mishap", "status", "told"),
    [
        (KeyboardInterrupt(), 130, "interrupted: "),
        (StorageFullError("the disk is full"), 1, "the disk is full. Free some space, then: "),
    ],
)
def test_a_migration_stopped_halfway_says_how_to_carry_on_then_carries_on(
    vault: Vault,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mishap: BaseException,
    status: int,
    told: str,
) -> None:
    """Ctrl-C, or a destination's full disk, ended the command without a word on what the
    destination held and that the copy carries on from there."""
    client = TestClient(create_app(vault.open()))
    for n in range(30):
        client.put(f"/fhir/Patient/p{n}", json={"resourceType": "Patient", "id": f"p{n}"})
    target = str(tmp_path / "copy.sqlite")
    advance = CopyProgress.advance
    calls = 0

    def interrupted(self: CopyProgress, rows: int, data_bytes: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise mishap
        advance(self, rows, data_bytes)

    monkeypatch.setattr(CopyProgress, "advance", interrupted)
    stopped = runner.invoke(
        app, ["migrate", "--from", str(vault.folder), "--to", target, "--batch", "5"]
    )
    assert stopped.exit_code == status, stopped.output
    said = " ".join(stopped.output.split())
    assert f"{told}{target} holds part of the copy" in said and "Traceback" not in said
    monkeypatch.setattr(CopyProgress, "advance", advance)
    assert "resumed: the destination already held" in _migrate(str(vault.folder), target)


def test_a_copy_into_another_vaults_folder_is_refused_and_into_one_with_its_keys_is_not(
    tmp_path: Path,
) -> None:
    """Another vault's folder has keys of its own, with which the copy would not open."""
    assert _run("init", str(tmp_path / "source"))[0] == 0
    assert _run("init", str(tmp_path / "other"))[0] == 0
    before = (tmp_path / "other" / "storage.sqlite").read_bytes()
    for into in ("other", "other/storage.sqlite", "other/copy.sqlite"):  # its folder, or in it
        code, output = _run(
            "migrate", "--from", str(tmp_path / "source"), "--to", str(tmp_path / into)
        )
        assert code == 1 and "is a vault folder with keys of its own" in " ".join(output.split())
    assert (tmp_path / "other" / "storage.sqlite").read_bytes() == before
    assert not (tmp_path / "other" / "copy.sqlite").exists()
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy2(tmp_path / "source" / KEYRING_FILE, shared / KEYRING_FILE)
    _migrate(str(tmp_path / "source"), str(shared))


def test_a_copy_into_the_folder_of_a_vault_on_another_token_is_refused(
    softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With tokens, a vault folder holds no keyring to tell it by: its record does."""
    for name, token in zip(("source", "other"), softhsm.new_tokens(2), strict=True):
        softhsm.use(monkeypatch, token)
        assert _run("init", str(tmp_path / name))[0] == 0
    code, output = _run(
        "migrate", "--from", str(tmp_path / "source"), "--to", str(tmp_path / "other" / "c.sqlite")
    )
    assert code == 1 and "is a vault folder with keys of its own" in " ".join(output.split())
    assert not (tmp_path / "other" / "c.sqlite").exists()
    softhsm.delete_tokens()


def test_a_folder_meant_that_does_not_exist_is_no_file_made(tmp_path: Path) -> None:
    """--to newvault/ made a file named newvault: the slash said a folder was meant."""
    assert _run("init", str(tmp_path / "source"))[0] == 0
    code, output = _run(
        "migrate", "--from", str(tmp_path / "source"), "--to", f"{tmp_path}/newvault/"
    )
    assert code == 1 and "there is no folder" in " ".join(output.split()), output
    assert not (tmp_path / "newvault").exists()
