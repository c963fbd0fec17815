"""`coffre witness` for real: init, key, a served witness over HTTP on a loopback port, and
a Coffre witnessed by two of them, audited with a quorum, whose fork they refuse."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, free_port, share_keys
from pg import copy_storage
from test_cli_audit import _post, _root, _run

from coffre.api.witness import STATE_FILE, WitnessFolder
from coffre.ledger import Checkpoint, Note, VerifierKey, open_checkpoint, sign_checkpoint
from coffre.ledger.note import ALG_ED25519
from coffre.ledger.witness import LogState, Submission, WitnessState
from coffre.seal.signing import Ed25519Signer
from coffre.service import Vault

READY_SECONDS = 120
"""Start-up imports all of Coffre: slow when the tests share the cores with other work."""
WAIT_SECONDS = 60
"""A round every second, and a witness that failed is tried again after 2, 4, 8... s."""


def _init(folder: Path, name: str) -> str:
    code, output = _run("witness", "init", str(folder), "--name", name)
    assert code == 0, output
    return output.strip().splitlines()[-1]


class RunningWitness:
    """``coffre witness serve`` in a subprocess, on a free loopback port."""

    def __init__(self, folder: Path, logs: list[str]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        options = [arg for key in logs for arg in ("--log", key)]
        port = self.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "coffre", "witness", "serve", str(folder), *options]
        self.process = subprocess.Popen(
            [*command, "--port", port], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"coffre witness serve exited: {output}")
            try:
                if self.post(b"").status_code == 400:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"coffre witness serve did not answer within {READY_SECONDS} s")

    def post(self, body: bytes | str) -> httpx.Response:
        return httpx.post(f"{self.url}/add-checkpoint", content=body, timeout=5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# -- init, key, serve ------------------------------------------------------------------------------


def test_init_prints_the_key_that_key_prints_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    vkey = _init(folder, "witness.example.org/w1")
    parsed = VerifierKey.parse(vkey)
    assert parsed.name == "witness.example.org/w1"
    assert _run("witness", "key", str(folder)) == (0, vkey + "\n")
    assert (folder / "witness.key").stat().st_mode & 0o077 == 0
    code, output = _run("witness", "init", str(folder), "--name", "witness.example.org/w2")
    assert code == 1 and "already exists" in output
    assert _run("witness", "key", str(folder))[1] == vkey + "\n"
    code, output = _run("witness", "key", str(tmp_path / "nothing"))
    assert code == 1 and "no witness key" in output
    (tmp_path / "a-file").write_text("")  # a traceback (FileExistsError) before
    code, output = _run("witness", "init", str(tmp_path / "a-file"), "--name", "w.example/w3")
    assert code == 1 and "is a file, not a folder" in " ".join(output.split()), output
    under_a_file = str(tmp_path / "a-file" / "w")  # a traceback (NotADirectoryError) before
    code, output = _run("witness", "init", under_a_file, "--name", "w.example/w4")
    assert code == 1 and "cannot make the witness in" in " ".join(output.split()), output


def test_serve_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    witness_key = _init(folder, "witness.example.org/w1")
    code, output = _run("witness", "serve", str(folder), "--log", "nonsense")
    assert code == 1 and "not a log's verifier key" in output
    log_key = VerifierKey("example.org/log", ALG_ED25519, bytes(32))
    code, output = _run("witness", "serve", str(tmp_path / "none"), "--log", str(log_key))
    assert code == 1 and "no witness folder at" in " ".join(output.split()), output
    code, output = _run("witness", "serve", str(folder), "--log", witness_key)
    assert code == 1 and "not an Ed25519 log key" in output
    with socket.socket() as taken:  # another program's port: said, not claimed as served
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, output = _run("witness", "serve", str(folder), "--log", str(log_key), "--port", port)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in output
    assert "witness at" not in output
    (folder / STATE_FILE).unlink()
    code, output = _run("witness", "serve", str(folder), "--log", str(log_key))
    assert code == 1 and "must be retired" in output


def test_a_served_witness_answers_over_http_and_remembers_across_restarts(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "w"
    _init(folder, "witness.example.org/w1")
    signer = Ed25519Signer(bytes(range(32)))
    log_key = VerifierKey("example.org/log", ALG_ED25519, signer.public_key)

    def body(old: int, size: int) -> str:
        checkpoint = Checkpoint("example.org/log", size, bytes([size]) * 32)
        return Submission(old, (), sign_checkpoint(checkpoint, log_key.name, signer)).serialize()

    witness = RunningWitness(folder, [str(log_key)])
    try:
        answer = witness.post(body(0, 0))
        assert answer.status_code == 409, "size 0 with a root other than the empty tree's"
        assert witness.post(body(0, 4)).status_code == 200
        code, output = _run("witness", "serve", str(folder), "--log", str(log_key))
        assert code == 1 and "another witness process" in output
    finally:
        witness.stop()
    witness = RunningWitness(folder, [str(log_key)])
    try:
        conflict = witness.post(body(0, 6))
        assert (conflict.status_code, conflict.text) == (409, "4\n")
        assert conflict.headers["content-type"] == "text/x.tlog.size"
        assert witness.post(body(4, 4)).status_code == 200
    finally:
        witness.stop()


def test_a_rollback_its_owner_announced_is_accepted_with_the_witness_stopped(
    tmp_path: Path,
) -> None:
    """A witness's operator had no way to follow a log restored from an older backup, but
    to retire the witness: its state refused the smaller log for good."""
    folder = WitnessFolder(tmp_path / "w")
    _init(folder.path, "witness.example.org/w1")
    signer = Ed25519Signer(bytes(range(32)))
    log_key = VerifierKey("example.org/log", ALG_ED25519, signer.public_key)

    def note(size: int) -> Note:
        checkpoint = Checkpoint(log_key.name, size, bytes([size]) * 32)
        return sign_checkpoint(checkpoint, log_key.name, signer)

    abandoned = LogState(9, bytes([9]) * 32, note(9).serialize())
    folder.save_state(WitnessState().with_log(log_key.name, abandoned))
    restored = tmp_path / "restored.checkpoint"
    restored.write_text(note(4).serialize())
    command = ["witness", "accept-rollback", str(folder.path), "--log", str(log_key)]
    command += ["--checkpoint", str(restored)]
    with folder.serving():
        code, output = _run(*command, "--to", "4")
    assert code == 1 and "another witness process serves" in " ".join(output.split()), output
    code, output = _run(*command, "--to", "5")
    assert code == 1 and "of size 4, not 5" in " ".join(output.split()), output
    assert folder.load_state().get(log_key.name) == abandoned
    code, output = _run(*command, "--to", "4")
    assert code == 0 and "rollback of example.org/log to size 4 accepted" in output, output
    assert folder.load_state().get(log_key.name).size == 4
    (kept,) = (folder.path / "evidence").iterdir()
    assert kept.name.startswith("rollback-") and note(9).serialize() in kept.read_text()


def test_audit_refuses_witness_options_it_cannot_use(tmp_path: Path) -> None:
    w1, w2 = (_init(tmp_path / name, f"witness.example.org/{name}") for name in ("w1", "w2"))
    log_key = str(VerifierKey("example.org/log", ALG_ED25519, bytes(32)))
    base = ["audit", "http://127.0.0.1:1", "--key", log_key, "--state", str(tmp_path / "s")]
    for options in (
        ["--witness", log_key],
        ["--witness", w1, "--witness", w2, "--quorum", "3"],
        ["--quorum", "1"],
    ):
        code, output = _run(*base, *options)
        assert code == 2 and "--witness or --quorum" in output, output


# -- end to end: a witnessed Coffre ----------------------------------------------------------------


def _wait_cosigned(server: RunningServer, size: int) -> str:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        answer = httpx.get(f"{_root(server)}/ledger/checkpoint/cosigned")
        if answer.status_code == 200 and f"\n{size}\n" in answer.text:
            return answer.text
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of size {size} cosigned within {WAIT_SECONDS} s")


def _wait_evidence(folder: Path, count: int) -> list[Path]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        kept = sorted((folder / "evidence").glob("*.txt"))
        if len(kept) >= count:
            return kept
        time.sleep(0.2)
    raise AssertionError(f"the witness at {folder} kept no evidence within {WAIT_SECONDS} s")


@pytest.fixture
def witnesses(tmp_path: Path, vault: Vault) -> Iterator[list[tuple[Path, str, RunningWitness]]]:
    log_key = _run("ledger-key", "--vault", str(vault.folder))[1].strip()
    running = []
    try:
        for name in ("w1", "w2"):
            folder = tmp_path / name
            vkey = _init(folder, f"witness.example.org/{name}")
            running.append((folder, vkey, RunningWitness(folder, [log_key])))
        yield running
    finally:
        for _, _, witness in running:
            witness.stop()


def test_a_coffre_witnessed_by_two_is_audited_with_a_quorum_and_its_fork_is_refused(
    vault: Vault,
    witnesses: list[tuple[Path, str, RunningWitness]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log_key = _run("ledger-key", "--vault", str(vault.folder))[1].strip()
    keys = [vkey for _, vkey, _ in witnesses]
    setting = " ".join(f"{w.url} {vkey}" for _, vkey, w in witnesses)
    monkeypatch.setenv("COFFRE_WITNESSES", setting)
    state = tmp_path / "auditor.checkpoint"
    options = ["--key", log_key, "--state", str(state), "--quorum", "2"]
    options += [arg for vkey in keys for arg in ("--witness", vkey)]

    def audit(server: RunningServer) -> tuple[int, str]:
        return _run("audit", _root(server), *options)

    honest = RunningServer(vault, workers=2)  # one process submits, both serve
    try:
        _post(honest.base_url, 3)
        cosigned = _wait_cosigned(honest, 3)
        witness_keys = [VerifierKey.parse(k) for k in keys]
        assert open_checkpoint(cosigned, VerifierKey.parse(log_key), witness_keys, 2).size == 3
        served = httpx.get(f"{_root(honest)}/ledger/checkpoint").text
        assert served == cosigned, "once idle, the latest checkpoint carries both cosignatures"
        code, output = audit(honest)
        assert code == 0, output
        assert "cosigned by at least 2 of the 2 witnesses given" in output

        # The host keeps a copy of the storage at size 3 (and the vault's keys): later, it
        # serves that copy extended with another history, a fork of the log.
        older = tmp_path / "older"
        older.mkdir()
        copy_storage(vault, older)
        share_keys(vault, older)
        _post(honest.base_url, 3)
        honest_note = _wait_cosigned(honest, 6)
        code, output = audit(honest)
        assert code == 0 and "consistent with the checkpoint of size 3" in output, output
    finally:
        honest.stop()
    accepted = state.read_text()

    fork = RunningServer(Vault.at(older))
    try:
        _post(fork.base_url, 5)  # size 8, from the copy at size 3: not the log they cosigned
        cosigned_body = honest_note.split("\n\n")[0]
        for folder, _, _ in witnesses:
            evidence = _wait_evidence(folder, 1)[0].read_text()
            assert evidence.startswith("refused submission:\nold 6\n")
            assert f"cosigned before:\n{cosigned_body}\n" in evidence
        code, output = audit(fork)
        assert code == 2 and "no checkpoint of this log is cosigned yet" in output, output

        # A host that serves its fork as cosigned, with or without the witnesses' lines of
        # the real checkpoint: the auditor requiring the quorum refuses it either way.
        forked_note = httpx.get(f"{_root(fork)}/ledger/checkpoint").text
        stolen = "".join(line + "\n" for line in honest_note.splitlines()[-2:])
        for published in (forked_note, forked_note + stolen):
            (older / "checkpoint.cosigned").write_text(published)
            code, output = audit(fork)
            assert code == 1 and "unwitnessed" in output, output
    finally:
        fork.stop()
    assert state.read_text() == accepted
    origin = VerifierKey.parse(log_key).name
    assert [WitnessFolder(f).load_state().get(origin).size for f, _, _ in witnesses] == [6, 6]
