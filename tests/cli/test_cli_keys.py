"""`coffre keys`: list, rotate (and resume), retire, with a confirmation; and a rotation
while `coffre serve` runs, which keeps serving and takes up the new key without restart."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer
from pg import HostDatabase
from softhsm import BOTH_CUSTODIES
from typer.testing import CliRunner

from coffre.cli.main import app
from coffre.service import Vault

runner = CliRunner()


def _run(*args: str, given: str | None = None) -> tuple[int, str]:
    """The exit code and the output, box-drawing of tables and line breaks made spaces."""
    result = runner.invoke(app, list(args), input=given)
    return result.exit_code, " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())


def _kek_counts(vault: Vault) -> dict[str, int]:
    with HostDatabase.of(vault) as db:
        rows = db.execute("SELECT kek_id, count(*) FROM data_keys GROUP BY kek_id").fetchall()
    return {str(kek): int(count) for kek, count in rows}


def _patient(http: httpx.Client) -> str:
    response = http.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.headers["Location"]).split("/_history")[0]


def _with_patients(vault: Vault, count: int) -> None:
    records = vault.open()
    try:
        with records.writer() as writer:
            for _ in range(count):
                writer.create({"resourceType": "Patient"})
    finally:
        records.storage.close()


def _kek_ids(vault: Vault) -> list[str]:
    """The custody's key-encryption keys, as it names them (``kek-1``, ``pkcs11:kek-1``)."""
    records = vault.open()
    try:
        return records.custodian.kek_ids()
    finally:
        records.storage.close()


def test_rotate_then_retire_with_a_confirmation(vault: Vault) -> None:
    _with_patients(vault, 3)
    [old] = _kek_ids(vault)
    where = ("--vault", str(vault.folder))
    code, output = _run("keys", "rotate", *where, "--batch", "2")
    assert code == 0, output
    [new] = [kek for kek in _kek_ids(vault) if kek != old]
    assert f"{new} is the active key-encryption key (it replaces {old})" in output
    assert "4 data keys rewrapped; 0 changed meanwhile" in output  # 3 patients', the gateway's
    code, output = _run("keys", "list", *where)
    assert code == 0 and f"{old} yes 0" in output and f"{new} yes yes 4" in output, output
    code, output = _run("keys", "retire", old, *where, given=f"{new}\n")
    assert code == 1 and "nothing was retired" in output
    assert "backup of the storage taken before the rotation needs it" in output
    code, output = _run("keys", "retire", old, *where, given=f"{old}\n")
    assert code == 0 and f"{old} retired" in output, output
    code, output = _run("keys", "list", *where)
    assert old not in output and f"{new} yes yes 4" in output


def test_retire_refuses_while_data_keys_need_the_key(vault: Vault) -> None:
    _with_patients(vault, 2)
    [old] = _kek_ids(vault)
    where = ("--vault", str(vault.folder))
    records = vault.open()
    try:
        new = records.custodian.add_kek()  # a rotation interrupted before any rewrap
    finally:
        records.storage.close()
    code, output = _run("keys", "retire", old, *where, "--yes")
    assert code == 1
    # The 2 patients' data keys, and the gateway's, made for the AuditEvents of their leaves.
    assert f"3 data keys are still wrapped by {old}" in output and "rotate --resume" in output
    code, output = _run("keys", "rotate", *where)
    assert code == 1 and "a previous rotation is unfinished" in output
    code, output = _run("keys", "rotate", "--resume", "--retire", "--yes", *where)
    assert code == 0 and "3 data keys rewrapped" in output and f"{old} retired" in output, output
    assert _kek_counts(vault) == {new: 3}  # + the gateway's own compartment


def test_rotate_retire_destroys_only_the_keys_its_rewrap_emptied(vault: Vault) -> None:
    """A key left idle on purpose, for backups taken before an earlier rotation, is kept:
    a --retire in a scheduled job used to destroy every idle key, and those backups too."""
    _with_patients(vault, 2)
    where = ("--vault", str(vault.folder))
    [first] = _kek_ids(vault)
    assert _run("keys", "rotate", *where)[0] == 0  # first is kept for the older backups
    [second] = [kek for kek in _kek_ids(vault) if kek != first]
    code, output = _run("keys", "rotate", "--retire", "--yes", *where)
    assert code == 0, output
    assert f"{second} retired" in output and f"{first} is kept" in output
    assert first in _kek_ids(vault) and second not in _kek_ids(vault)


def test_an_interrupted_rotation_says_how_to_finish_it(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_patients(vault, 2)

    def interrupted(*args: object, **options: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("coffre.service.rotation.KeyRotation.rewrap", interrupted)
    code, output = _run("keys", "rotate", "--vault", str(vault.folder))
    assert code == 130 and "finish with 'coffre keys rotate --resume'" in output, output


@pytest.mark.slow
@BOTH_CUSTODIES
def test_a_server_serves_through_a_rotation_and_wraps_new_patients_under_the_new_key(
    vault: Vault, tmp_path: Path
) -> None:
    server = RunningServer(vault)
    stop, failures, made = threading.Event(), [], []

    def traffic() -> None:
        with httpx.Client(base_url=server.base_url) as http:
            while not stop.is_set():
                location = _patient(http)
                made.append(location)
                read = http.get(location, headers=FHIR_JSON)
                if read.status_code != 200:
                    failures.append(read.text)

    try:
        with httpx.Client(base_url=server.base_url) as http:
            for _ in range(8):
                made.append(_patient(http))
            old = next(iter(_kek_counts(vault)))
            thread = threading.Thread(target=traffic)
            thread.start()
            try:
                code, output = _run(
                    "keys",
                    "rotate",
                    "--vault",
                    str(vault.folder),
                    "--batch",
                    "1",
                    "--retire",
                    "--yes",
                )
            finally:
                stop.set()
                thread.join()
            assert code == 0, output
            assert f"{old} retired" in output and not failures
            made.append(_patient(http))  # a new compartment, after the old key is gone
            for location in made:
                assert http.get(location, headers=FHIR_JSON).status_code == 200
        assert server.process.poll() is None  # the same process throughout
        [(new, count)] = _kek_counts(vault).items()
        assert new != old and count == len(made) + 1  # + the gateway's own compartment
        code, key = _run("ledger-key", "--vault", str(vault.folder))
        root = server.base_url.removesuffix("/fhir")
        state = str(tmp_path / "auditor")
        code, output = _run("audit", root, "--key", key, "--state", state, "--full")
        assert code == 0, output
    finally:
        server.stop()
