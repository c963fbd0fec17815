"""The auditor: `coffre audit` against a running server, each violation it must name, and
`coffre ledger-key`.

The in-process tests tamper with the storage under a live app, which reads it on every
request; the end-to-end ones run `coffre serve` and tamper while it is stopped, in ways
the gateway's own start check does not catch (or on a copy of the vault)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer, keyring_custody, share_keys, write_organizations
from pg import HostDatabase, copy_storage
from starlette.testclient import TestClient
from typer.testing import CliRunner

from coffre.cli.audit import NoVerdict, Report, audit_log
from coffre.cli.leaves import CHUNK
from coffre.cli.main import app
from coffre.custody.choose import open_custody
from coffre.ledger import (
    Checkpoint,
    VerifierKey,
    consistency_ranges,
    map_extension,
    open_checkpoint,
    sign_checkpoint,
)
from coffre.ledger.note import ALG_ED25519, b64
from coffre.ledger.tiles import TILE_WIDTH
from coffre.seal.signing import Ed25519Signer
from coffre.service import RecordStore, Vault

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _post(base_url: str, count: int) -> None:
    """Writes to a running server, over the network."""
    with httpx.Client(base_url=base_url) as client:
        write_organizations(client, count, path="")


def _alter_leaf(vault: Vault, index: int, alter: Callable[[bytes], bytes]) -> None:
    with HostDatabase.of(vault) as db:
        (data,) = db.execute("SELECT data FROM leaves WHERE idx = ?", (index,)).fetchone()
        db.execute("UPDATE leaves SET data = ? WHERE idx = ?", (alter(bytes(data)), index))


def _other_body_hash(data: bytes) -> bytes:
    """The same leaf about other sealed bytes: it still decodes, but the root changes."""
    return data[:42] + bytes(32) + data[74:]


def _kinds(report: Report) -> list[str]:
    return [violation.kind for violation in report.violations]


def _key(vault: Vault) -> str:
    code, output = _run("ledger-key", "--vault", str(vault.folder))
    assert code == 0, output
    return output.strip()


def _root(server: RunningServer) -> str:
    return server.base_url.removesuffix("/fhir")


# -- in process: each violation ------------------------------------------------------------


def test_a_first_audit_then_a_later_one_hold(client: TestClient, records: RecordStore) -> None:
    key = records.ledger.verifier_key
    write_organizations(client, 3)
    first = audit_log(client, key, None, full=True)
    assert first.consistent and first.checkpoint is not None and first.checkpoint.size == 3
    write_organizations(client, 4)
    second = audit_log(client, key, first.checkpoint, full=True)
    assert second.consistent and second.checkpoint is not None and second.checkpoint.size == 7
    assert (
        "consistent with the checkpoint of size 3 accepted before: its root recomputed from"
        " the leaves" in second.held
    ), "with every leaf, the auditor needs no proof from the server"
    assert "the 7 leaves recompute to the signed root" in second.held
    assert "the latest writes of 7 records give the signed map root" in second.held


def test_full_counts_the_leaves_by_kind_and_reports_integrity_failures(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """A read the gateway refused is logged; the log stays sound, and the auditor says so."""
    for _ in range(2):
        response = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
    key = records.ledger.verifier_key
    clean = audit_log(client, key, None, full=True)
    assert "leaves by kind: 2 create, 2 data_key" in clean.held and clean.findings == []
    patient_id = client.get("/fhir/Patient").json()["entry"][0]["resource"]["id"]
    loc = records.keys.location("Patient", patient_id)
    with HostDatabase.of(vault) as db:
        (body,) = db.execute("SELECT body FROM versions WHERE loc = ?", (loc,)).fetchone()
        db.execute("UPDATE versions SET body = ? WHERE loc = ?", (bytes(body)[::-1], loc))
    assert client.get(f"/fhir/Patient/{patient_id}").status_code == 500
    report = audit_log(client, key, None, full=True)
    assert report.consistent
    assert "leaves by kind: 2 create, 2 search, 1 integrity, 2 data_key" in report.held
    (finding,) = report.findings
    assert "refused 1 request(s)" in finding and "(leaves 6)" in finding


def test_a_checkpoint_under_another_key_is_a_bad_signature(
    client: TestClient, tmp_path: Path
) -> None:
    write_organizations(client, 2)
    other = Vault.at(tmp_path / "other")
    with keyring_custody():
        other.create()
        stranger = other.open()
    report = audit_log(client, stranger.ledger.verifier_key, None)
    stranger.storage.close()
    assert _kinds(report) == ["bad signature"] and report.checkpoint is None


def test_a_forged_checkpoint_in_the_storage_is_a_bad_signature(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    write_organizations(client, 2)
    accepted = audit_log(client, records.ledger.verifier_key, None).checkpoint
    with HostDatabase.of(vault) as db:  # the note of size 2, claiming size 3
        (note,) = db.execute("SELECT note FROM checkpoints WHERE size = 2").fetchone()
        db.execute("INSERT INTO checkpoints VALUES (3, ?)", (note.replace("\n2\n", "\n3\n", 1),))
    report = audit_log(client, records.ledger.verifier_key, accepted)
    assert _kinds(report) == ["bad signature"]
    assert "invalid signature" in report.violations[0].detail


def test_a_checkpoint_older_than_the_log_followed_is_not_published(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The host deletes the newest checkpoints under a running server: it does not publish
    the older one left, which an auditor new to the log would accept; an auditor that had
    accepted a newer one gets no verdict either, and the reason."""
    write_organizations(client, 5)
    accepted = audit_log(client, records.ledger.verifier_key, None).checkpoint
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM checkpoints WHERE size > 3")
    for before in (accepted, None):
        with pytest.raises(NoVerdict, match="rolled back or replaced"):
            audit_log(client, records.ledger.verifier_key, before)


def test_another_history_under_the_same_key_is_inconsistent(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """A split view: the log once showed this auditor a checkpoint of another history.

    The server's proof from size 3 leads to its signed root, and from there to another root
    of 3 leaves: a fork, proven. From a power of two (2, 4) the accepted root is the proof's
    first node, so the proof leads nowhere, as a garbled one would: a bad proof, until
    --full finds the fork on the leaves."""
    write_organizations(client, 3)
    key = records.ledger.verifier_key
    custodian = open_custody(vault.keyring)
    origin = custodian.log_origin()
    for size, without_full in ((3, "inconsistent"), (2, "bad proof"), (4, "bad proof")):
        forked = sign_checkpoint(
            Checkpoint(origin, size, bytes(32)), origin, custodian.log_signer()
        )
        accepted = open_checkpoint(forked.serialize(), key)
        write_organizations(client, 2)
        report = audit_log(client, key, accepted)
        assert _kinds(report) == [without_full], report.violations
        full = audit_log(client, key, accepted, full=True)
        assert _kinds(full) == ["inconsistent"], full.violations
        for found in (report, full):
            assert f"the checkpoint of size {size} accepted before" in found.violations[0].detail


def test_a_fork_of_the_same_size_needs_no_proof_from_the_host(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """Two roots the log signed for one size are the whole evidence: a host that refuses
    the consistency proof (a 500) cannot turn the fork into no verdict."""
    write_organizations(client, 3)
    key = records.ledger.verifier_key
    custodian = open_custody(vault.keyring)
    origin = custodian.log_origin()
    forked = sign_checkpoint(Checkpoint(origin, 3, bytes(32)), origin, custodian.log_signer())
    served = client.get("/ledger/checkpoint").text

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ledger/checkpoint":
            return httpx.Response(200, text=served)
        return httpx.Response(500, json={"resourceType": "OperationOutcome"})

    with httpx.Client(transport=httpx.MockTransport(refusing), base_url="http://log") as mock:
        report = audit_log(mock, key, open_checkpoint(forked.serialize(), key))
        assert _kinds(report) == ["inconsistent"], report.violations
        assert "size 3 with another root" in report.violations[0].detail
        held = audit_log(mock, key, open_checkpoint(served, key))
    assert held.consistent and "consistent with the checkpoint of size 3 accepted before" in (
        held.held
    )


def test_full_recomputes_the_root_and_decodes_every_leaf(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    write_organizations(client, 6)
    key = records.ledger.verifier_key
    assert audit_log(client, key, None, full=True).consistent
    _alter_leaf(vault, 1, _other_body_hash)
    assert audit_log(client, key, None).consistent, "only --full looks at the leaves"
    report = audit_log(client, key, None, full=True)
    assert _kinds(report) == ["root mismatch"]
    with HostDatabase.of(vault) as db:
        db.execute("UPDATE leaves SET data = ? WHERE idx = 4", (b"\x00",))
    report = audit_log(client, key, None, full=True)
    assert _kinds(report) == ["root mismatch", "malformed leaf"]
    assert report.violations[1].detail.startswith("malformed leaf at index 4")
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM leaves WHERE idx = 5")
    report = audit_log(client, key, None, full=True)
    assert "missing leaves" in _kinds(report)


def test_full_recomputes_the_map_of_the_latest_writes(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """A checkpoint whose map root is not that of the leaves it signs (the gateway's key
    misused, or its code wrong) would let map proofs vouch for stale versions."""
    write_organizations(client, 3)
    key = records.ledger.verifier_key
    custodian = open_custody(vault.keyring)
    origin = custodian.log_origin()
    signed = open_checkpoint(client.get("/ledger/checkpoint").text, key)
    assert signed.map_root is not None
    for extensions in ((map_extension(bytes(32)),), ()):
        forged = Checkpoint(origin, signed.size, signed.root, extensions)
        with HostDatabase.of(vault) as db:
            db.execute(
                "UPDATE checkpoints SET note = ? WHERE size = ?",
                (sign_checkpoint(forged, origin, custodian.log_signer()).serialize(), forged.size),
            )
        report = audit_log(client, key, None, full=True)
        if extensions:
            assert _kinds(report) == ["map mismatch"]
            assert "the latest writes of 3 records among the leaves" in report.violations[0].detail
        else:
            assert report.consistent and "the checkpoint signs no map root: none to check" in (
                report.held
            )


def _relayed(
    client: TestClient, alter: Callable[[str, httpx.Response], httpx.Response]
) -> httpx.Client:
    """A client of the live app through a host that alters its answers: ``alter(path, answer)``."""

    def relay(request: httpx.Request) -> httpx.Response:
        answer = client.get(request.url.path, params=request.url.params)
        return alter(request.url.path, httpx.Response(answer.status_code, content=answer.content))

    return httpx.Client(transport=httpx.MockTransport(relay), base_url="http://log")


@pytest.mark.parametrize(
    ("proof", "said"),
    [
        (
            httpx.Response(
                200,
                json={
                    "old": 3,
                    "new": 7,
                    "proof": [b64(bytes(32))] * len(consistency_ranges(3, 7)),
                },
            ),
            "is not the expected",
        ),
        (httpx.Response(503, json={"resourceType": "OperationOutcome"}), "HTTP 503"),
    ],
    ids=["wrong proof", "no proof"],
)
def test_full_checks_consistency_on_the_leaves_not_on_the_proof(
    client: TestClient, records: RecordStore, proof: httpx.Response, said: str
) -> None:
    """The server's proof does not hold, but the leaves that give the signed root give the
    accepted root too: the log is consistent, its stored tree damaged (a finding)."""
    key = records.ledger.verifier_key
    write_organizations(client, 3)
    accepted = audit_log(client, key, None).checkpoint
    write_organizations(client, 4)

    def bad_proof(path: str, answer: httpx.Response) -> httpx.Response:
        return proof if path == "/ledger/proof/consistency" else answer

    with _relayed(client, bad_proof) as host:
        report = audit_log(host, key, accepted, full=True)
    assert report.consistent, report.violations
    assert (
        "consistent with the checkpoint of size 3 accepted before: its root recomputed from"
        " the leaves" in report.held
    )
    (finding,) = report.findings
    assert "stored tree is damaged" in finding and said in finding


def test_full_refuses_a_bundle_served_with_other_leaves_the_second_time(
    client: TestClient, records: RecordStore
) -> None:
    """The accepted size ends inside a bundle, fetched again to recompute the old root: it
    must hold the leaves that gave the signed root, or the old root says nothing of them."""
    key = records.ledger.verifier_key
    write_organizations(client, 3)
    accepted = audit_log(client, key, None).checkpoint
    write_organizations(client, 4)
    served: list[str] = []

    def second_time_altered(path: str, answer: httpx.Response) -> httpx.Response:
        served.append(path)
        if path.startswith("/ledger/tile/entries/") and served.count(path) == 2:
            return httpx.Response(200, content=answer.content[:-1] + b"\x00")
        return answer

    with (
        _relayed(client, second_time_altered) as host,
        pytest.raises(NoVerdict, match="served with other leaves the second time"),
    ):
        audit_log(host, key, accepted, full=True)


def _garbled(proof: list[str]) -> list[str]:
    return [b64(bytes(32))] * len(proof)


def _a_hash_of_31_bytes(proof: list[str]) -> list[str]:
    return [b64(bytes(31)), *proof[1:]]


@pytest.mark.parametrize(
    ("garble", "why"),
    [
        (_garbled, "computed new root"),
        (lambda proof: proof[:-1], "shorter than 3 to 7 needs"),
        (lambda proof: [*proof, proof[0]], "longer than 3 to 7 needs"),
        (lambda proof: proof[::-1], "computed new root"),
        (_a_hash_of_31_bytes, "a hash of 31 bytes"),
        (lambda proof: ["x!", *proof[1:]], "not base64"),
    ],
    ids=["wrong hashes", "one short", "one more", "reversed", "31 bytes", "not base64"],
)
def test_a_garbled_proof_is_a_bad_proof_not_a_fork(
    client: TestClient, records: RecordStore, garble: Callable[[list[str]], list[str]], why: str
) -> None:
    """The host garbles the server's consistency proof between two checkpoints the log
    signed: a violation, as the log cannot show that one extends the other, but not a fork,
    which the proof does not show either (--full tells: here the log holds)."""
    key = records.ledger.verifier_key
    write_organizations(client, 3)
    accepted = audit_log(client, key, None).checkpoint
    write_organizations(client, 4)

    def garbled(path: str, answer: httpx.Response) -> httpx.Response:
        if path != "/ledger/proof/consistency":
            return answer
        proof = answer.json()
        return httpx.Response(200, json={**proof, "proof": garble(proof["proof"])})

    with _relayed(client, garbled) as host:
        report = audit_log(host, key, accepted)
        full = audit_log(host, key, accepted, full=True)
    assert _kinds(report) == ["bad proof"], report.violations
    detail = report.violations[0].detail
    assert "the server signed sizes 3 and 7, and its consistency proof between them does not" in (
        detail
    )
    assert why in detail and "two histories" not in detail
    assert full.consistent and "stored tree is damaged" in full.findings[0]


def test_coffre_audit_exits_1_on_a_bad_proof(tmp_path: Path) -> None:
    """Two checkpoints the log signed, and a proof between them that does not verify."""
    signer, origin = Ed25519Signer.generate(), "log.example/probe"
    key = VerifierKey(origin, ALG_ED25519, signer.public_key)
    state = tmp_path / "state"
    state.write_text(sign_checkpoint(Checkpoint(origin, 3, bytes(32)), origin, signer).serialize())
    note = sign_checkpoint(Checkpoint(origin, 7, bytes(32)), origin, signer).serialize().encode()
    proof = b'{"old": 3, "new": 7, "proof": ["%s"]}' % b64(bytes(32)).encode()

    def answers(path: str) -> tuple[bytes, Iterator[bytes]]:
        body = note if path == "/ledger/checkpoint" else proof
        return _ok(len(body)), iter([body])

    with _host(answers) as url:
        code, output = _run("audit", url, "--key", str(key), "--state", str(state))
    assert code == 1, output
    assert "VIOLATION (bad proof)" in output and "does not verify" in output


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, json={"old": 3, "new": 4}), "proof is not a list of strings"),
        # Arrays nested 50,000 deep: what Python's json gives up on by recursion.
        (httpx.Response(200, content=b"[" * 50_000), "consistency answered something other"),
        (httpx.Response(500, content=b"[" * 50_000), "consistency answered HTTP 500$"),
    ],
    ids=["no proof", "nested", "nested error"],
)
def test_an_answer_that_is_no_proof_gives_no_verdict(
    client: TestClient, records: RecordStore, answer: httpx.Response, message: str
) -> None:
    write_organizations(client, 3)
    accepted = audit_log(client, records.ledger.verifier_key, None).checkpoint
    write_organizations(client, 1)
    checkpoint = client.get("/ledger/checkpoint").text

    def garbled(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ledger/checkpoint":
            return httpx.Response(200, text=checkpoint)
        return answer

    with (
        httpx.Client(transport=httpx.MockTransport(garbled), base_url="http://log") as mock,
        pytest.raises(NoVerdict, match=message),
    ):
        audit_log(mock, records.ledger.verifier_key, accepted)


Answer = Callable[[str], tuple[bytes, Iterator[bytes]]]
"""A host's answer to a path: the status line and headers, then the body's pieces."""


@contextmanager
def _host(answers: Answer) -> Iterator[str]:
    """A host on 127.0.0.1 that answers each request with ``answers`` of its path, the body's
    pieces as they come, and closes; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer(peer: socket.socket) -> None:
        with peer:
            head, body = answers(peer.recv(65536).split(b" ")[1].decode())
            try:
                peer.sendall(head)
                for piece in body:
                    peer.sendall(piece)
            except OSError:  # the auditor hung up
                pass

    def serve() -> None:
        while True:
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(peer,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _trickle(count: int, pause: float = 0.05) -> Iterator[bytes]:
    for _ in range(count):
        time.sleep(pause)
        yield b"A"


def _ok(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()


_BOMB = gzip.compress(bytes(50 << 20))


@pytest.mark.parametrize(
    ("head", "body", "timeout", "message"),
    [
        # the sizes' timeout leaves a loaded machine time to send and decode 64 KiB
        (b"Connection: close\r\n", iter([b"A" * 65536] * 300), 30, "more than 65,536 bytes"),
        (
            f"Content-Encoding: gzip\r\nContent-Length: {len(_BOMB)}\r\n".encode(),
            iter([_BOMB]),
            30,
            "more than 65,536 bytes",
        ),
        (b"Content-Length: 400\r\n", _trickle(400), 0.5, "took over 0.5 s"),
        # a header line that never ends, a byte at a time, each within the read timeout
        (b"X-Slow: A", _trickle(400), 0.5, "took over 0.5 s"),
    ],
    ids=["endless", "gzip bomb", "trickle", "trickled headers"],
)
def test_an_answer_too_long_or_too_slow_gives_no_verdict(
    head: bytes, body: Iterator[bytes], timeout: float, message: str
) -> None:
    """An answer is whole within the client's read timeout and small (decoded), or no
    answer: a host cannot hold the auditor forever, nor fill its memory."""
    key = VerifierKey("log.example/probe", ALG_ED25519, Ed25519Signer.generate().public_key)
    with (
        _host(lambda path: (b"HTTP/1.1 200 OK\r\n" + head + b"\r\n", body)) as url,
        httpx.Client(base_url=url, timeout=timeout) as client,
        pytest.raises(NoVerdict, match=f"GET /ledger/checkpoint .*{message}"),
    ):
        audit_log(client, key, None)


def test_a_bundle_trickled_to_the_pool_of_processes_gives_no_verdict() -> None:
    """A log large enough for the pool: its first bundle comes a byte at a time, each
    within the read timeout; the others are not found."""
    signer, origin = Ed25519Signer.generate(), "log.example/probe"
    key = VerifierKey(origin, ALG_ED25519, signer.public_key)
    size = CHUNK * TILE_WIDTH + 1
    note = sign_checkpoint(Checkpoint(origin, size, bytes(32)), origin, signer).serialize().encode()

    def answers(path: str) -> tuple[bytes, Iterator[bytes]]:
        if path == "/ledger/checkpoint":
            return _ok(len(note)), iter([note])
        if path == "/ledger/tile/entries/000":
            return _ok(100), _trickle(100, 0.2)
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", iter([])

    with (
        _host(answers) as url,
        httpx.Client(base_url=url, timeout=3) as client,
        pytest.raises(NoVerdict, match=f"{CHUNK} bundles not answered within 3 s"),
    ):
        audit_log(client, key, None, full=True, processes=2)


# -- end to end: coffre audit against coffre serve ------------------------------------------


def test_ledger_key_prints_the_vault_s_verifier_key(vault: Vault, records: RecordStore) -> None:
    assert VerifierKey.parse(_key(vault)) == records.ledger.verifier_key


def test_audits_of_a_running_server_then_of_leaves_swapped_while_it_was_down(
    vault: Vault, server: RunningServer, tmp_path: Path
) -> None:
    key, state = _key(vault), tmp_path / "auditor" / "state"
    _post(server.base_url, 3)
    code, output = _run("audit", _root(server), "--key", key, "--state", str(state))
    assert code == 0, output
    assert "CONSISTENT" in output and "no checkpoint accepted before" in output
    assert open_checkpoint(state.read_text(), VerifierKey.parse(key)).size == 3
    # A state the auditor cannot save is no verdict (2), never a violation (1).
    (tmp_path / "a-file").write_text("")
    unsaved = str(tmp_path / "a-file" / "state")
    code, output = _run("audit", _root(server), "--key", key, "--state", unsaved)
    assert code == 2 and "the state cannot be saved" in " ".join(output.split()), output

    _post(server.base_url, 4)
    # Its FHIR base names the root too ("Coffre knows no resource type 'ledger'" before).
    code, output = _run("audit", server.base_url, "--key", key, "--state", str(state), "--full")
    assert code == 0, output
    assert f"auditing the log at its root, {_root(server)}" in output
    assert "consistent with the checkpoint of size 3 accepted before" in output
    assert "the 7 leaves recompute to the signed root" in output
    saved = state.read_text()

    server.stop()
    # The leaves no longer hash to the checkpoint the sovereign side remembers: the
    # gateway refuses to start on them.
    with HostDatabase.of(vault) as db:
        second, third = (
            row[0] for row in db.execute("SELECT data FROM leaves WHERE idx IN (2, 3)")
        )
        db.executemany("UPDATE leaves SET data = ? WHERE idx = ?", [(third, 2), (second, 3)])
    with pytest.raises(RuntimeError, match="rolled back or replaced"):
        RunningServer(vault)
    # Without that memory it still refuses: each leaf's tag binds its place in the log.
    # (The auditor's own root recomputation is tested in process above.)
    vault.checkpoint_memory.unlink()
    with pytest.raises(RuntimeError, match="not written by this gateway"):
        RunningServer(vault)
    assert state.read_text() == saved


def test_a_rolled_back_copy_is_a_shrunk_log_and_its_fork_is_inconsistent(
    vault: Vault, server: RunningServer, tmp_path: Path
) -> None:
    """The host serves an older copy of the storage, with a sovereign side that lost its
    memory of the last checkpoint (otherwise the gateway itself refuses to start)."""
    key, state = _key(vault), tmp_path / "state"
    _post(server.base_url, 3)
    assert _run("audit", _root(server), "--key", key, "--state", str(state))[0] == 0
    older = tmp_path / "older"
    older.mkdir()
    copy_storage(vault, older)
    share_keys(vault, older)
    _post(server.base_url, 3)
    assert _run("audit", _root(server), "--key", key, "--state", str(state))[0] == 0
    saved = state.read_text()

    rolled_back = RunningServer(Vault.at(older))
    try:
        code, output = _run("audit", _root(rolled_back), "--key", key, "--state", str(state))
        assert code == 1, output
        assert "shrunk log" in output and "size 3, below the size 6" in output
        _post(rolled_back.base_url, 5)  # another history, now longer than the real one
        code, output = _run("audit", _root(rolled_back), "--key", key, "--state", str(state))
    finally:
        rolled_back.stop()
    assert code == 1, output
    assert "inconsistent with the checkpoint of size 6" in output
    assert state.read_text() == saved


def test_a_wrong_key_is_a_bad_signature(
    vault: Vault, server: RunningServer, tmp_path: Path
) -> None:
    _post(server.base_url, 1)
    other = Vault.at(tmp_path / "other")
    with keyring_custody():
        other.create()
        other_key = _key(other)
    code, output = _run("audit", _root(server), "--key", other_key, "--state", str(tmp_path / "s"))
    assert code == 1 and "bad signature" in output, output
    assert not (tmp_path / "s").exists()


def test_no_verdict_exits_2(vault: Vault, tmp_path: Path) -> None:
    key, state = _key(vault), str(tmp_path / "s")
    code, output = _run("audit", "http://127.0.0.1:1", "--key", key, "--state", state)
    assert code == 2 and "server unreachable" in output, output
    code, output = _run("audit", "http://127.0.0.1:1", "--key", "not-a-key", "--state", state)
    assert code == 2 and "not a verifier key" in output, output


def test_an_empty_log_has_nothing_to_audit_yet(
    vault: Vault, server: RunningServer, tmp_path: Path
) -> None:
    code, output = _run(
        "audit", _root(server), "--key", _key(vault), "--state", str(tmp_path / "s")
    )
    assert code == 2 and "no checkpoint yet" in output, output
