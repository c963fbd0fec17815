"""`coffre audit --full` over the entry bundles: each bundle's check, and a log large enough
for the pool of processes, against `coffre serve`, with the host editing the leaves under
it (the server reads the storage on every request)."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer
from synthetic_log import append_leaves
from typer.testing import CliRunner

from coffre.cli.audit import Report, audit_log
from coffre.cli.leaves import CHUNK, SHOWN, Connection, Unanswered, check_bundle
from coffre.cli.main import app
from coffre.ledger import VerifierKey
from coffre.ledger.hashing import leaf_hash
from coffre.ledger.leaf import SIZE as LEAF_SIZE
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.ledger.tiles import TILE_WIDTH, TileId, bundle_roots, encode_bundle
from coffre.service import Vault

SIZE = 40_000
"""Three chunks of bundles: the auditor checks them in a pool of processes."""
assert SIZE > 2 * CHUNK * TILE_WIDTH


# -- one bundle ----------------------------------------------------------------------------


def _leaf(number: int, kind: LeafKind = LeafKind.READ) -> bytes:
    fields = Leaf(kind, bytes(32), number, bytes(32), number).encode()
    return fields + bytes(LEAF_SIZE - len(fields))


def test_a_bundle_s_check() -> None:
    leaves = [_leaf(i) for i in range(4)] + [_leaf(4, LeafKind.UPDATE), _leaf(5)]
    check = check_bundle(encode_bundle(leaves), TileId(None, 3, 6))
    counts = {LeafKind.READ: 5, LeafKind.UPDATE: 1}
    # the update is the record's latest write, whose leaf hash the map takes
    latest = {bytes(32): leaf_hash(leaves[4])}
    assert check == (6, bundle_roots(leaves), 0, [], counts, [], latest)


def test_a_bundle_short_of_leaves_has_no_roots() -> None:
    check = check_bundle(encode_bundle([_leaf(0)]), TileId(None, 0, 2))
    assert check.served == 1 and check.roots == []


def test_malformed_leaves_are_counted_and_the_first_described() -> None:
    leaves = [b"\x00", *(_leaf(i) for i in range(3)), *([b"junk"] * (SHOWN + 5))]
    check = check_bundle(encode_bundle(leaves), TileId(None, 2, len(leaves)))
    assert check.malformed == SHOWN + 6
    assert len(check.shown) == SHOWN
    assert check.shown[0].startswith(f"malformed leaf at index {2 * TILE_WIDTH}: ")
    assert check.shown[1].startswith(f"malformed leaf at index {2 * TILE_WIDTH + 4}: ")
    assert check.roots == bundle_roots(leaves)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (encode_bundle([b"a", b"b", b"c"]), "holds 3 leaves, more than asked"),
        (b"\x00\x05abc", "is not an entry bundle"),
        (b"<html>", "is not an entry bundle"),
    ],
)
def test_an_answer_that_is_no_bundle_of_what_was_asked(data: bytes, fragment: str) -> None:
    with pytest.raises(Unanswered, match=fragment):
        check_bundle(data, TileId(None, 0, 2))


# -- a large log, in a pool of processes ----------------------------------------------------


@dataclass
class Large:
    vault: Vault
    key: VerifierKey
    url: str


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Large]:
    vault = Vault.at(tmp_path_factory.mktemp("audit-tiles") / "vault")
    vault.create()
    records = vault.open()
    append_leaves(records, SIZE, seed=4)
    key = records.ledger.verifier_key
    records.storage.close()
    server = RunningServer(vault, workers=2)
    yield Large(vault, key, server.base_url.removesuffix("/fhir"))
    server.stop()


def _audit(large: Large) -> Report:
    with httpx.Client(base_url=large.url, timeout=60) as client:
        return audit_log(client, large.key, None, full=True, processes=2)


@contextmanager
def _leaves_edited(vault: Vault) -> Iterator[sqlite3.Connection]:
    """The host's connection to the storage; the leaves are put back afterwards."""
    with closing(sqlite3.connect(vault.storage_path)) as db:
        saved = db.execute("SELECT idx, data FROM leaves").fetchall()
        try:
            with db:
                yield db
        finally:
            with db:
                db.execute("DELETE FROM leaves")
                db.executemany("INSERT INTO leaves (idx, data) VALUES (?, ?)", saved)


def _kinds(report: Report) -> list[str]:
    return [violation.kind for violation in report.violations]


def test_a_large_log_recomputes_in_processes(large: Large) -> None:
    report = _audit(large)
    assert report.consistent, report.violations
    assert f"the {SIZE} leaves recompute to the signed root" in report.held
    assert "every leaf decodes" in report.held


def test_an_altered_leaf_in_a_later_chunk(large: Large) -> None:
    with _leaves_edited(large.vault) as db:
        (data,) = db.execute("SELECT data FROM leaves WHERE idx = 35000").fetchone()
        changed = data[:10] + bytes([data[10] ^ 1]) + data[11:]
        db.execute("UPDATE leaves SET data = ? WHERE idx = 35000", (changed,))
        db.commit()
        assert _kinds(_audit(large)) == ["root mismatch"]


def test_two_leaves_reordered(large: Large) -> None:
    with _leaves_edited(large.vault) as db:
        first, second = (
            row[0] for row in db.execute("SELECT data FROM leaves WHERE idx IN (20000, 20001)")
        )
        db.executemany(
            "UPDATE leaves SET data = ? WHERE idx = ?", [(second, 20000), (first, 20001)]
        )
        db.commit()
        assert _kinds(_audit(large)) == ["root mismatch"]


def test_a_malformed_leaf(large: Large) -> None:
    with _leaves_edited(large.vault) as db:
        db.execute("UPDATE leaves SET data = X'00' WHERE idx = 39000")
        db.commit()
        report = _audit(large)
    assert _kinds(report) == ["root mismatch", "malformed leaf"]
    assert report.violations[1].detail.startswith("malformed leaf at index 39000")


def test_missing_leaves(large: Large) -> None:
    with _leaves_edited(large.vault) as db:
        db.execute(f"DELETE FROM leaves WHERE idx >= {SIZE - 300}")
        db.commit()
        report = _audit(large)
    assert _kinds(report) == ["missing leaves"]
    assert f"serves no leaf {SIZE - 300}, though its checkpoint covers {SIZE}" in (
        report.violations[0].detail
    )


def test_a_gap_is_missing_leaves(large: Large) -> None:
    """A leaf the host removed in the middle of the log: the server serves its bundle up to
    the gap, and the log signed what it cannot give (it was a 500, and no verdict)."""
    with _leaves_edited(large.vault) as db:
        db.execute("DELETE FROM leaves WHERE idx = 30000")
        db.commit()
        report = _audit(large)
    assert _kinds(report) == ["missing leaves"]
    assert f"serves no leaf 30000, though its checkpoint covers {SIZE}" in (
        report.violations[0].detail
    )


def test_coffre_audit_full_over_tiles(large: Large, tmp_path: Path) -> None:
    args = ["audit", large.url, "--key", str(large.key), "--state", str(tmp_path / "s"), "--full"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"the {SIZE} leaves recompute to the signed root" in result.output
    with _leaves_edited(large.vault) as db:
        db.execute("UPDATE leaves SET data = X'00' WHERE idx = 17000")
        db.commit()
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "malformed leaf at index 17000" in result.output


# -- the pool's HTTP client ------------------------------------------------------------------


class FakeServer:
    """Answers each request on 127.0.0.1 with the next canned answer, closing the
    connection after the answers marked so; counts connections, keeps request heads."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = iter(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with peer:
                head = b""
                while True:
                    while b"\r\n\r\n" not in head:
                        data = peer.recv(4096)
                        if not data:
                            break
                        head += data
                    if b"\r\n\r\n" not in head:
                        break
                    request, _, head = head.partition(b"\r\n\r\n")
                    self.requests.append(request)
                    answer, close = next(self.answers)
                    peer.sendall(answer)
                    if close:
                        break

    def stop(self) -> None:
        self.listener.close()


def _ok(body: bytes, *headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


@contextmanager
def _fake(answers: list[tuple[bytes, bool]]) -> Iterator[FakeServer]:
    server = FakeServer(answers)
    try:
        yield server
    finally:
        server.stop()


def test_keep_alive_content_length_and_chunked() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
    with _fake([(_ok(b"first"), False), (chunked, False), (_ok(b""), False)]) as server:
        connection = Connection(server.url + "/prefix/", 5.0)
        assert connection.get("/ledger/a") == (200, b"first")
        assert connection.get("/ledger/b") == (200, b"abcde")
        assert connection.get("/ledger/c") == (200, b"")
        connection.close()
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /prefix/ledger/a HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_closed_connection_is_opened_again() -> None:
    to_the_end = b"HTTP/1.0 404 Not Found\r\n\r\n{}"
    answers = [(_ok(b"one", "Connection: close"), True), (to_the_end, True), (_ok(b"3"), False)]
    with _fake(answers) as server:
        connection = Connection(server.url, 5.0)
        assert connection.get("/1") == (200, b"one")
        assert connection.get("/2") == (404, b"{}")
        assert connection.get("/3") == (200, b"3")
        connection.close()
    assert server.connections == 3


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", "IncompleteRead"),
        (b"SSH-2.0-OpenSSH\r\n", "BadStatusLine"),
        (b"HTTP/1.1 OK\r\n\r\n", "BadStatusLine"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", "a body of 99999999999"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "HTTPException.*100 headers"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", "LineTooLong"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "IncompleteRead"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", "IncompleteRead"),
        (b"HTTP/1.1 20", "BadStatusLine"),
        (b"", "RemoteDisconnected"),
    ],
)
def test_an_answer_that_is_no_http_answer(answer: bytes, fragment: str) -> None:
    with _fake([(answer, True), (_ok(b"next"), False)]) as server:
        connection = Connection(server.url, 5.0)
        with pytest.raises(Unanswered, match=fragment):
            connection.get("/x")
        assert connection.get("/y") == (200, b"next"), "the next request starts afresh"
        connection.close()


def test_no_server_is_unanswered() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(Unanswered, match="failed: ConnectionRefusedError"):
        Connection(f"http://127.0.0.1:{port}", 5.0).get("/x")
    with pytest.raises(Unanswered, match="no http"):
        Connection("ftp://127.0.0.1", 5.0)
