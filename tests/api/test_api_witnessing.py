"""The log's side of witnessing, in process: the settings, a round of submissions to two
witnesses, what is published when one is down, and the endpoints that serve it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import write_organizations
from pg import copy_storage
from starlette.responses import Response
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from coffre.api import create_app
from coffre.api.server import with_witnessing
from coffre.api.witness import WitnessFolder, WitnessServer, witness_app
from coffre.cli.migrate import accept_rollback
from coffre.exceptions import CoffreError, StorageError
from coffre.ledger import VerifierKey, open_checkpoint, parse_note
from coffre.ledger.witness import LogState
from coffre.service import RecordStore, Vault
from coffre.service.witnessing import (
    COSIGNED_FILE,
    WitnessConfigError,
    WitnessEndpoint,
    Witnessing,
    parse_witnesses,
    witnesses_from_settings,
)


class Witnesses(httpx.AsyncBaseTransport):
    """In-process witnesses by host name; any of them can be taken down."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = apps
        self.down: set[str] = set()
        self.posts: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.posts[host] += 1
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await httpx.ASGITransport(app=self.apps[host]).handle_async_request(request)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, WitnessFolder]:
    made = {}
    for host in ("w1", "w2"):
        made[host] = WitnessFolder(tmp_path / host)
        made[host].create(f"witness.example.org/{host}")
    return made


def _endpoints(folders: dict[str, WitnessFolder]) -> list[WitnessEndpoint]:
    return [WitnessEndpoint(f"http://{h}", f.key().verifier_key) for h, f in folders.items()]


@pytest.fixture
def transport(folders: dict[str, WitnessFolder], records: RecordStore) -> Witnesses:
    log_key = records.ledger.verifier_key
    apps = {h: witness_app(WitnessServer(f, [log_key])) for h, f in folders.items()}
    return Witnesses(apps)


@dataclass
class WitnessedLog:
    """A vault's log, written through ``client``, and two in-process witnesses."""

    client: TestClient
    records: RecordStore
    vault: Vault
    folders: dict[str, WitnessFolder]
    transport: Witnesses

    def witnessing(self, quorum: int = 2) -> Witnessing:
        return Witnessing(self.records, _endpoints(self.folders), quorum, self.vault.folder)

    def round(self, witnessing: Witnessing, timeout: float = 5.0) -> None:
        async def once() -> None:
            async with httpx.AsyncClient(transport=self.transport, timeout=timeout) as client:
                await witnessing.round(client)

        asyncio.run(asyncio.wait_for(once(), 60))  # a round that hangs fails the test

    def write(self, count: int) -> None:
        write_organizations(self.client, count)

    def cosigned_size(self, note: str | None, quorum: int = 2) -> int:
        assert note is not None
        keys = [f.key().verifier_key for f in self.folders.values()]
        return open_checkpoint(note, self.records.ledger.verifier_key, keys, quorum).size


@pytest.fixture
def log(
    client: TestClient,
    records: RecordStore,
    vault: Vault,
    folders: dict[str, WitnessFolder],
    transport: Witnesses,
) -> WitnessedLog:
    return WitnessedLog(client, records, vault, folders, transport)


# -- the settings ----------------------------------------------------------------------------


def test_witnesses_are_url_and_key_pairs(folders: dict[str, WitnessFolder]) -> None:
    w1, w2 = (str(f.key().verifier_key) for f in folders.values())
    parsed = parse_witnesses(f" http://w1:8090/ {w1}\n https://w2 {w2} ")
    assert [w.url for w in parsed] == ["http://w1:8090", "https://w2"]
    assert [str(w.key) for w in parsed] == [w1, w2]
    assert parse_witnesses("") == []
    log_key = "example.org/log+58c3c9d2+AeUwyqIhsh9sBN9dJ/FBhgT0Xfm2xyXqoQO9O8T2Xtyi"
    for wrong, why in (
        (f"http://w1 {w1} http://w2", "pairs"),
        (f"w1:8090 {w1}", "http:// or https://"),
        (f"http://w1 {log_key}", "not a witness"),
        (f"http://w1 {w1} http://w2 {w1}", "twice"),
    ):
        with pytest.raises(WitnessConfigError, match=why):
            parse_witnesses(wrong)


def test_the_quorum_defaults_to_every_witness(
    folders: dict[str, WitnessFolder], monkeypatch: pytest.MonkeyPatch
) -> None:
    w1, w2 = (str(f.key().verifier_key) for f in folders.values())
    monkeypatch.setenv("COFFRE_WITNESSES", f"http://w1 {w1} http://w2 {w2}")
    assert witnesses_from_settings()[1] == 2
    monkeypatch.setenv("COFFRE_WITNESS_QUORUM", "1")
    assert witnesses_from_settings()[1] == 1
    for wrong in ("3", "0", "two"):
        monkeypatch.setenv("COFFRE_WITNESS_QUORUM", wrong)
        with pytest.raises(CoffreError, match="COFFRE_WITNESS_QUORUM"):
            witnesses_from_settings()


# -- rounds ----------------------------------------------------------------------------------


def test_each_new_checkpoint_is_cosigned_by_both_and_published(log: WitnessedLog) -> None:
    witnessing = log.witnessing()
    log.round(witnessing)
    assert witnessing.published() is None, "nothing to cosign before the first write"
    log.write(3)
    log.round(witnessing)
    assert log.cosigned_size(witnessing.published()) == 3
    assert (log.vault.folder / COSIGNED_FILE).read_text() == witnessing.published()
    log.write(4)
    log.round(witnessing)
    assert log.cosigned_size(witnessing.published()) == 7
    origin = log.records.ledger.origin
    assert [f.load_state().get(origin).size for f in log.folders.values()] == [7, 7]
    log.round(witnessing)
    assert log.transport.posts == {"w1": 2, "w2": 2}, "a checkpoint cosigned is not sent again"


def test_a_log_that_restarts_learns_each_witness_s_size_from_its_409(log: WitnessedLog) -> None:
    log.write(5)
    log.round(log.witnessing())
    log.write(2)
    restarted = log.witnessing()
    log.round(restarted)
    assert log.cosigned_size(restarted.published()) == 7
    assert log.transport.posts == {"w1": 3, "w2": 3}, "old 0, a 409 saying 5, then old 5"


def test_with_a_witness_down_the_last_quorum_stays_published(log: WitnessedLog) -> None:
    witnessing = log.witnessing()
    log.write(2)
    log.round(witnessing)
    log.transport.down.add("w2")
    log.write(2)
    log.round(witnessing)
    assert log.cosigned_size(witnessing.published()) == 2
    log.round(witnessing)
    assert log.transport.posts["w2"] == 2, "a witness that failed is tried again later"
    one_will_do = log.witnessing(quorum=1)
    log.round(one_will_do)
    assert log.cosigned_size(one_will_do.published(), quorum=1) == 4


def test_a_witness_ahead_of_the_log_is_not_followed(
    log: WitnessedLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A witness that cosigned a bigger tree of this log than the storage holds: the
    storage was put back. The log does not submit an older tree to it."""
    witnessing = log.witnessing()
    log.write(4)
    log.round(witnessing)
    w1, origin = log.folders["w1"], log.records.ledger.origin
    w1.save_state(w1.load_state().with_log(origin, LogState(9, bytes(32))))
    log_key = log.records.ledger.verifier_key
    log.transport.apps["w1"] = witness_app(WitnessServer(w1, [log_key]))
    log.write(1)
    log.round(log.witnessing())
    assert "is at size 9, beyond this log's 5" in caplog.text
    assert log.cosigned_size(witnessing.published()) == 4


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        (httpx.Response(200, text="garbage\n"), "answered no valid cosignature"),
        (httpx.Response(409, text="size 2 was cosigned with another root\n"), "HTTP 409"),
        (httpx.Response(422, text="inconsistent\n"), "refused size 2: HTTP 422"),
        (httpx.Response(409, text="7\n", headers={"Content-Type": "text/x.tlog.size"}), "beyond"),
        # A size that is no number int() reads: a digit of another script, 5,000 digits.
        (httpx.Response(409, text="²\n", headers={"Content-Type": "text/x.tlog.size"}), "HTTP 409"),
        (
            httpx.Response(
                409, text="9" * 5000 + "\n", headers={"Content-Type": "text/x.tlog.size"}
            ),
            "refused size 2: HTTP 409",
        ),
    ],
)
def test_a_witness_s_refusal_or_nonsense_is_logged_and_never_published(
    log: WitnessedLog, caplog: pytest.LogCaptureFixture, answer: httpx.Response, logged: str
) -> None:
    async def answering(scope: Scope, receive: Receive, send: Send) -> None:
        await Response(answer.content, answer.status_code, dict(answer.headers))(
            scope, receive, send
        )

    log.transport.apps["w1"] = answering
    witnessing = log.witnessing(quorum=1)
    log.write(2)
    log.round(witnessing)
    assert "witness.example.org/w1" in caplog.text and logged in caplog.text
    assert log.cosigned_size(witnessing.published(), quorum=1) == 2, "w2 alone is a quorum of 1"
    assert witnessing.published() is not None
    assert "witness.example.org/w1" not in witnessing.published()


async def _endless(scope: Scope, receive: Receive, send: Send) -> None:
    """A witness that starts a cosignature line and never finishes it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        await send({"type": "http.response.body", "body": b"-", "more_body": True})
        await asyncio.sleep(0.05)


async def _huge(scope: Scope, receive: Receive, send: Send) -> None:
    await Response(b"\n" * (10 << 20), 200)(scope, receive, send)


@pytest.mark.parametrize(
    ("app", "logged"),
    [(_endless, "did not answer whole within 0.5 s"), (_huge, "answered more than 65,536 bytes")],
    ids=["endless", "huge"],
)
def test_a_witness_s_endless_or_huge_answer_is_given_up_on(
    log: WitnessedLog, caplog: pytest.LogCaptureFixture, app: ASGIApp, logged: str
) -> None:
    """Its answer is whole within the client's read timeout, and small, or it is no answer:
    the round goes on with the other witnesses."""
    log.transport.apps["w1"] = app
    witnessing = log.witnessing(quorum=1)
    log.write(2)
    log.round(witnessing, timeout=0.5)
    assert f"witness.example.org/w1 {logged}" in caplog.text
    assert log.cosigned_size(witnessing.published(), quorum=1) == 2


def test_the_background_task_survives_a_failing_round(
    log: WitnessedLog, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    witnessing = Witnessing(
        log.records, _endpoints(log.folders), 2, log.vault.folder, log.transport
    )
    real, rounds = witnessing.round, []

    async def flaky(client: httpx.AsyncClient) -> None:
        rounds.append(client)
        if len(rounds) == 1:
            raise RuntimeError("the first round fails")
        await real(client)

    monkeypatch.setattr(witnessing, "round", flaky)
    log.write(2)

    async def serve_until_published() -> None:
        async with witnessing.running():
            while witnessing.published() is None:
                await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(serve_until_published(), 20))
    assert "RuntimeError: the first round fails" in caplog.text
    assert log.cosigned_size(witnessing.published()) == 2


# -- the endpoints and the background task --------------------------------------------------------


def test_the_endpoints_serve_what_was_cosigned(log: WitnessedLog, records: RecordStore) -> None:
    witnessing = log.witnessing()
    with TestClient(with_witnessing(create_app(records), witnessing)) as client:
        assert client.get("/ledger/checkpoint/cosigned").status_code == 404
        write_organizations(client, 2)
        log.round(witnessing)
        cosigned = client.get("/ledger/checkpoint/cosigned")
        assert cosigned.status_code == 200 and cosigned.headers["cache-control"] == "no-cache"
        assert cosigned.text == witnessing.published()
        assert client.get("/ledger/checkpoint").text == cosigned.text, "cosigned once idle"
        write_organizations(client, 1)
        newest = client.get("/ledger/checkpoint").text
        assert newest != cosigned.text and newest == records.storage.latest_checkpoint()
        assert client.get("/ledger/checkpoint/cosigned").text == cosigned.text


def test_an_older_cosigned_file_put_back_or_a_deleted_one_is_not_served(
    log: WitnessedLog, records: RecordStore
) -> None:
    """``checkpoint.cosigned`` is the host's: a witnessed auditor that had accepted the
    newer one would report a shrunk log, or find none. A server that starts reads it."""
    witnessing = log.witnessing()
    log.write(2)
    log.round(witnessing)
    older = (log.vault.folder / COSIGNED_FILE).read_text()
    log.write(2)
    log.round(witnessing)
    newer = witnessing.published()
    reader = log.witnessing()  # another process of the server, which only reads the file
    with TestClient(with_witnessing(create_app(records), reader)) as client:
        assert client.get("/ledger/checkpoint/cosigned").text == newer
        for change in ("put back", "garbled", "deleted"):
            if change == "deleted":
                (log.vault.folder / COSIGNED_FILE).unlink()
            else:
                (log.vault.folder / COSIGNED_FILE).write_text(
                    older if change == "put back" else "x"
                )
            assert client.get("/ledger/checkpoint/cosigned").text == newer, change
            assert witnessing.published() == newer, change
    assert log.cosigned_size(newer) == 4


def test_a_storage_error_while_reading_the_cosigned_checkpoint_leaves_it_to_read_again(
    log: WitnessedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose storage failed once as it checked the file's checkpoint against the
    log served no cosigned checkpoint from then on, until the file changed."""
    witnessing = log.witnessing()
    log.write(2)
    log.round(witnessing)
    cosigned = witnessing.published()
    reader = log.witnessing()  # another process of the server, which only reads the file
    failures = iter([StorageError("the connection to the database was lost")])
    held = log.records.storage.checkpoint_at

    def once_failing(size: int) -> str | None:
        for failure in failures:
            raise failure
        return held(size)

    monkeypatch.setattr(log.records.storage, "checkpoint_at", once_failing)
    with pytest.raises(StorageError):
        reader.published()
    assert reader.published() == cosigned is not None


def test_after_an_accepted_rollback_the_witnesses_cosign_again_once_their_operators_accept_it(
    log: WitnessedLog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A restore that went back kept serving the abandoned history's cosigned checkpoint,
    and its witnesses could only be retired: a witness ahead of the log was never asked
    again, and no command let its operator accept the restored log."""
    witnessing = log.witnessing()
    log.write(2)
    log.round(witnessing)
    backup = tmp_path / "backup"
    backup.mkdir()
    copy_storage(log.vault, backup)
    log.write(2)
    log.round(witnessing)
    copy_storage(Vault.at(backup), log.vault.folder)  # restored from the backup, then
    accept_rollback(log.vault)  # as coffre restore --accept-rollback-to 2 does
    memory = log.vault.checkpoint_memory
    restored_checkpoint = parse_note(memory.with_name(memory.name + ".restored-2").read_text())
    assert (log.vault.folder / (COSIGNED_FILE + ".before-restore")).exists()
    (log.vault.folder / COSIGNED_FILE).write_text(witnessing.published() or "")  # put back
    records = log.vault.open()
    try:
        restarted = Witnessing(records, _endpoints(log.folders), 2, log.vault.folder)
        assert restarted.published() is None, "the abandoned history's is not served"
        assert "(size 4) this log does not hold" in caplog.text
        with TestClient(create_app(records)) as client:
            write_organizations(client, 1)
            log.round(restarted)
            assert "is at size 4, beyond this log's 3" in caplog.text
            assert restarted.published() is None
            log_key = records.ledger.verifier_key
            for host, folder in log.folders.items():  # each operator, the witness stopped
                folder.accept_rollback([log_key], restored_checkpoint, 2)
                log.transport.apps[host] = witness_app(WitnessServer(folder, [log_key]))
            later = time.monotonic() + 60  # past the wait before a refusing witness is retried
            monkeypatch.setattr(time, "monotonic", lambda: later)
            log.round(restarted)
            assert log.cosigned_size(restarted.published()) == 3
    finally:
        records.storage.close()


def test_a_log_without_witnesses_has_no_cosigned_checkpoint(client: TestClient) -> None:
    write_organizations(client, 1)
    answer = client.get("/ledger/checkpoint/cosigned")
    assert answer.status_code == 404, answer.text
    # Not "no checkpoint is cosigned yet": another server of the vault may gather them.
    assert "started without COFFRE_WITNESSES" in answer.text


@pytest.fixture
def serving(
    records: RecordStore, vault: Vault, folders: dict[str, WitnessFolder], transport: Witnesses
) -> Iterator[TestClient]:
    witnessing = Witnessing(records, _endpoints(folders), 2, vault.folder, transport)
    with TestClient(with_witnessing(create_app(records), witnessing)) as client:
        yield client


def _wait_for(client: TestClient, size: int) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = client.get("/ledger/checkpoint/cosigned")
        if answer.status_code == 200 and f"\n{size}\n" in answer.text:
            return answer.text
        time.sleep(0.1)
    raise AssertionError(f"no cosigned checkpoint of size {size} within 10 s")


def test_the_server_witnesses_in_the_background(serving: TestClient, log: WitnessedLog) -> None:
    write_organizations(serving, 3)
    assert log.cosigned_size(_wait_for(serving, 3)) == 3
    write_organizations(serving, 2)
    assert log.cosigned_size(_wait_for(serving, 5)) == 5


def test_witnesses_down_never_stop_the_server(
    serving: TestClient, records: RecordStore, transport: Witnesses
) -> None:
    transport.down.update({"w1", "w2"})
    write_organizations(serving, 3)
    time.sleep(1.5)
    assert serving.get("/fhir/Patient").status_code == 200
    assert serving.get("/ledger/checkpoint/cosigned").status_code == 404
    assert transport.posts["w1"] >= 1
    assert VerifierKey.parse(serving.get("/ledger/key").text.strip()) == records.ledger.verifier_key
