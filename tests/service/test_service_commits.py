"""Group commit (coffre.service.commits): a batch of writes runs in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from coffre.exceptions import StorageError, StorageFullError
from coffre.service.audit import OPERATOR
from coffre.service.commits import GroupCommitter
from coffre.service.records import RecordStore
from coffre.service.writer import Writer
from coffre.storage import SqliteStorage


def _create(writer: Writer) -> str:
    return writer.create({"resourceType": "Patient", "gender": "female"}).stored.id


class _Watching:
    """A ``CommitObserver`` that keeps what it is told."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []
        self.waits: list[float] = []
        self.failures: list[Exception] = []
        self.log: tuple[int, int] = (0, 0)

    def committed(self, waits: Sequence[float], held: float) -> None:
        self.batches.append((len(waits), held))
        self.waits += waits

    def failed(self, error: Exception) -> None:
        self.failures.append(error)

    def followed(self, leaves: int, newest_us: int) -> None:
        self.log = (leaves, newest_us)


def test_a_write_commits_while_every_other_thread_of_the_loop_is_busy(
    records: RecordStore,
) -> None:
    """Bundles are prepared and exports read in the loop's default threads: however many
    wait there, a write does not queue behind them."""
    committer = GroupCommitter(records)
    release = threading.Event()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        busy = ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(busy)
        blocked = loop.run_in_executor(None, release.wait)
        try:
            return await asyncio.wait_for(committer.run(_create, OPERATOR), timeout=10)
        finally:
            release.set()
            await blocked

    written = asyncio.run(main())
    assert records.read("Patient", written).resource()["gender"] == "female"


def _fail_as_the_request_ends(writer: Writer) -> str:
    """Add a leaf where the log has one: SQLite refuses it at once, PostgreSQL (whose
    statements are queued) once the request's savepoint ends, after this returned."""
    writer.txn.append_leaves(0, [b"a leaf where the log has one"])
    return "told saved"


def test_each_request_of_a_batch_gets_its_own_outcome_when_one_fails_as_it_ends(
    records: RecordStore,
) -> None:
    """A request whose statements failed only as its savepoint ended was answered as
    saved, and the next request of its batch got its error: each must get its own."""
    committer = GroupCommitter(records)

    async def main() -> list[object]:
        await committer.run(_create, OPERATOR)  # the log's leaf 0
        batch = asyncio.gather(
            committer.run(_fail_as_the_request_ends, OPERATOR),
            committer.run(_create, OPERATOR),
            return_exceptions=True,
        )
        return await asyncio.wait_for(batch, timeout=30)

    failed, created = asyncio.run(main())
    assert isinstance(failed, StorageError)
    assert isinstance(created, str)
    assert records.read("Patient", created).resource()["gender"] == "female"


def test_what_arrives_while_the_write_lock_is_held_elsewhere_joins_the_next_batch(
    records: RecordStore,
) -> None:
    """The batch is taken once the lock is held: a write that came while the commit thread
    waited for the lock goes with the one it waited for, under one checkpoint; each waited
    for the lock, which the batch held once."""
    watching = _Watching()
    committer = GroupCommitter(records, watching)
    holding, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with records.storage.transaction():
            holding.set()
            release.wait()

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        holder = loop.run_in_executor(None, hold_the_write_lock)
        await loop.run_in_executor(None, holding.wait)
        writes = [asyncio.ensure_future(committer.run(_create, OPERATOR))]
        await asyncio.sleep(0.2)  # the commit thread waits for the lock with the first
        writes += [asyncio.ensure_future(committer.run(_create, OPERATOR)) for _ in range(2)]
        await asyncio.sleep(0.2)
        release.set()
        await holder
        return await asyncio.wait_for(asyncio.gather(*writes), timeout=30)

    before = records.storage.leaf_count()
    written = asyncio.run(main())
    assert len(set(written)) == 3
    after = records.storage.leaf_count()
    # A leaf each, their AuditEvents included; and one for each of their patients' keys.
    assert after - before == 3 + 3
    assert records.storage.checkpoint_at(after) is not None
    assert [records.storage.checkpoint_at(size) for size in range(before + 1, after)] == [None] * 5
    assert [size for size, _ in watching.batches] == [3]
    assert min(watching.waits) > 0 and watching.batches[0][1] > 0
    assert watching.log == (after, records.latest_writes.newest_leaf) and watching.log[1] > 0


def test_a_full_disk_in_one_request_fails_its_whole_batch_and_writes_nothing(
    records: RecordStore,
) -> None:
    """SQLite undoes the whole transaction on a full disk: the next request of the batch,
    its savepoint then beginning a transaction of its own, was committed alone at its
    release, its version stored without its leaf, and answered as failed."""
    storage = records.storage
    if not isinstance(storage, SqliteStorage):
        pytest.skip("SQLite's page limit stands in for a full disk; PostgreSQL has none")
    watching = _Watching()
    committer = GroupCommitter(records, watching)
    holding, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with storage.transaction():
            holding.set()
            release.wait()

    def too_big(writer: Writer) -> None:
        writer.update(
            "Patient",
            "a",
            {"resourceType": "Patient", "id": "a", "name": [{"text": "Côté " * 40_000}]},
        )

    def small(writer: Writer) -> None:
        writer.update("Patient", "b", {"resourceType": "Patient", "id": "b"})

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        holder = loop.run_in_executor(None, hold_the_write_lock)
        await loop.run_in_executor(None, holding.wait)
        writes = [asyncio.ensure_future(committer.run(job, OPERATOR)) for job in (too_big, small)]
        await asyncio.sleep(0.2)
        release.set()
        await holder
        return await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 30)

    before = storage.leaf_count()
    pages = storage._write_db.execute("PRAGMA page_count").fetchone()[0]
    storage._write_db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        outcomes = asyncio.run(main())
    finally:
        storage._write_db.execute("PRAGMA max_page_count = 1073741823")
    assert [type(outcome) for outcome in outcomes] == [StorageFullError, StorageFullError]
    assert [type(failure) for failure in watching.failures] == [StorageFullError]
    assert watching.batches == []
    assert storage.leaf_count() == before
    assert storage.latest(records.keys.location("Patient", "b")) is None
    with records.writer() as writer:  # the vault goes on, its log whole
        writer.update("Patient", "b", {"resourceType": "Patient", "id": "b"})
    assert records.read("Patient", "b").version == 1
