"""The witness server in process: its folder, the spec's answers over HTTP, the state on
disk before the cosignature leaves, and one decision at a time."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from coffre.api.witness import (
    MAX_BODY_BYTES,
    WitnessFolder,
    WitnessFolderError,
    WitnessServer,
    witness_app,
)
from coffre.ledger import (
    Checkpoint,
    Note,
    VerifierKey,
    consistency_proof,
    merkle_root,
    parse_note,
    sign_checkpoint,
    verify_note,
)
from coffre.ledger.note import ALG_ED25519
from coffre.ledger.witness import Submission, WitnessState
from coffre.seal.signing import Ed25519Signer

ORIGIN = "example.org/log"
SIGNER = Ed25519Signer(bytes(range(32)))
LOG_KEY = VerifierKey(ORIGIN, ALG_ED25519, SIGNER.public_key)
LEAVES = [hashlib.sha256(str(i).encode()).digest() for i in range(20)]


def _note(size: int, leaves: list[bytes] = LEAVES) -> Note:
    return sign_checkpoint(Checkpoint(ORIGIN, size, merkle_root(leaves[:size])), ORIGIN, SIGNER)


def _body(old: int, new: int, leaves: list[bytes] = LEAVES) -> str:
    proof = consistency_proof(old, new, lambda b, e: merkle_root(leaves[b:e]))
    return Submission(old, tuple(proof), _note(new, leaves)).serialize()


@pytest.fixture
def folder(tmp_path: Path) -> WitnessFolder:
    made = WitnessFolder(tmp_path / "witness")
    made.create("witness.example.org/w1")
    return made


def _client(folder: WitnessFolder) -> TestClient:
    return TestClient(witness_app(WitnessServer(folder, [LOG_KEY])))


def _post(client: TestClient, body: str | bytes) -> httpx.Response:
    return client.post("/add-checkpoint", content=body)


# -- the folder ------------------------------------------------------------------------------


def test_a_new_witness_has_a_private_key_and_an_empty_state(folder: WitnessFolder) -> None:
    assert stat.S_IMODE(folder.key_file.stat().st_mode) == 0o600
    assert folder.key().verifier_key.name == "witness.example.org/w1"
    assert folder.load_state() == WitnessState()
    with pytest.raises(WitnessFolderError, match="already exists"):
        folder.create("witness.example.org/w1")
    folder.state_file.unlink()
    with pytest.raises(WitnessFolderError, match="key already exists"):
        folder.create("witness.example.org/w1")
    with pytest.raises(WitnessFolderError, match="not a witness name"):
        WitnessFolder(folder.path.parent / "other").create("two words")


def test_a_key_readable_by_others_or_a_lost_state_is_refused(folder: WitnessFolder) -> None:
    folder.key_file.chmod(0o640)
    with pytest.raises(WitnessFolderError, match="readable by others"):
        folder.key()
    folder.key_file.chmod(0o600)
    folder.state_file.unlink()
    with pytest.raises(WitnessFolderError, match="must be retired"):
        WitnessServer(folder, [LOG_KEY])


def test_one_process_serves_a_folder_until_it_stops(folder: WitnessFolder) -> None:
    other = WitnessFolder(folder.path)
    with folder.serving(), pytest.raises(WitnessFolderError, match="another witness process"):
        other.serving().__enter__()
    with pytest.raises(WitnessFolderError, match="must be retired"), folder.serving():
        folder.state_file.unlink()
        WitnessServer(folder, [LOG_KEY])
    with WitnessFolder(folder.path).serving():
        pass


# -- add-checkpoint over HTTP -------------------------------------------------------------------


def test_a_cosignature_line_then_the_state_on_disk(folder: WitnessFolder) -> None:
    with _client(folder) as client:
        answer = _post(client, _body(0, 5))
    assert answer.status_code == 200, answer.text
    assert answer.text.startswith("\u2014 witness.example.org/w1 ") and answer.text.count("\n") == 1
    cosigned = parse_note(_note(5).serialize() + answer.text)
    assert verify_note(cosigned, [folder.key().verifier_key])
    assert folder.load_state().get(ORIGIN).size == 5


def test_the_spec_s_statuses(folder: WitnessFolder) -> None:
    other = sign_checkpoint(Checkpoint("x.org/y", 1, LEAVES[0]), "x.org/y", SIGNER)
    forged = sign_checkpoint(Checkpoint(ORIGIN, 1, LEAVES[0]), ORIGIN, Ed25519Signer(bytes(32)))
    with _client(folder) as client:
        assert _post(client, _body(0, 5)).status_code == 200
        assert _post(client, "old 0\n\nnot a note").status_code == 400
        assert _post(client, Submission(0, (), other).serialize()).status_code == 404
        assert _post(client, Submission(0, (), forged).serialize()).status_code == 403
        conflict = _post(client, _body(3, 8))
        assert conflict.status_code == 409 and conflict.text == "5\n"
        assert conflict.headers["content-type"] == "text/x.tlog.size"
        bad_proof = Submission(5, (bytes(32),) * 3, _note(8)).serialize()
        assert _post(client, bad_proof).status_code == 422
        assert _post(client, "x" * (MAX_BODY_BYTES + 1)).status_code == 413
        assert client.get("/add-checkpoint").status_code == 405
    assert folder.load_state().get(ORIGIN).size == 5


def test_a_fork_is_refused_and_kept_as_evidence_once(folder: WitnessFolder) -> None:
    """Anyone can send a checkpoint the log signed, with any proof: each is kept once, so
    that sending it again and again with other proofs fills no disk."""
    fork = LEAVES[:3] + [bytes(32)] * 5
    with _client(folder) as client:
        assert _post(client, _body(0, 5)).status_code == 200
        assert _post(client, _body(5, 5, fork)).status_code == 409
        assert _post(client, _body(5, 8, fork)).status_code == 422
        for garbage in range(1, 4):
            replayed = Submission(5, (bytes([garbage]) * 32,) * 3, _note(8, fork))
            assert _post(client, replayed.serialize()).status_code == 422
    kept = [path.read_text() for path in (folder.path / "evidence").iterdir()]
    assert len(kept) == 2
    assert all(_note(5).serialize() in text for text in kept)
    assert sum(_note(8, fork).serialize() in text for text in kept) == 1


def test_a_restarted_witness_remembers_what_it_cosigned(folder: WitnessFolder) -> None:
    with _client(folder) as client:
        assert _post(client, _body(0, 7)).status_code == 200
    with _client(folder) as client:
        assert _post(client, _body(0, 9)).text == "7\n"
        assert _post(client, _body(7, 9)).status_code == 200


def test_no_cosignature_leaves_unless_the_state_is_on_disk(
    folder: WitnessFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(state: WitnessState) -> None:
        raise OSError(28, "No space left on device")

    server = WitnessServer(folder, [LOG_KEY])
    monkeypatch.setattr(folder, "save_state", full_disk)
    with TestClient(witness_app(server)) as client:
        answer = _post(client, _body(0, 5))
        assert answer.status_code == 503 and "\u2014" not in answer.text
        monkeypatch.undo()
        assert _post(client, _body(0, 4)).status_code == 200, "the state did not move"


def test_concurrent_requests_are_decided_one_at_a_time(
    folder: WitnessFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the spec warns of: two requests from the same old size, a slow disk. Both
    see size 0 unless the check and the update are one step; then one rolls the other back."""
    save = folder.save_state

    def slow(state: WitnessState) -> None:
        time.sleep(0.05)
        save(state)

    monkeypatch.setattr(folder, "save_state", slow)
    app = witness_app(WitnessServer(folder, [LOG_KEY]))

    async def submit_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            posts = [client.post("/add-checkpoint", content=_body(0, n)) for n in (5, 9, 3, 12)]
            return await asyncio.gather(*posts)

    answers = asyncio.run(submit_all())
    winners = [a for a in answers if a.status_code == 200]
    assert len(winners) == 1
    won = folder.load_state().get(ORIGIN).size
    assert sorted(a.text for a in answers if a.status_code == 409) == [f"{won}\n"] * 3


def test_a_client_gone_mid_body_is_answered_without_an_error_logged(
    folder: WitnessFolder, caplog: pytest.LogCaptureFixture
) -> None:
    """It logged a 43-line traceback for each such client, and anyone may be one."""
    app = witness_app(WitnessServer(folder, [LOG_KEY]))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/add-checkpoint",
        "raw_path": b"/add-checkpoint",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", b"1000")],
        "client": ("127.0.0.1", 40000),
        "server": ("witness.example.org", 80),
    }
    with caplog.at_level(logging.DEBUG):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert not [record for record in caplog.records if record.exc_info]
    assert folder.load_state().get(ORIGIN).size == 0  # nothing was cosigned
