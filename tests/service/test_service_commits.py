"""Group commit (coffre.service.commits): a batch of writes runs in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from coffre.exceptions import StorageError
from coffre.service.audit import OPERATOR
from coffre.service.commits import GroupCommitter
from coffre.service.records import RecordStore, Writer


def _create(writer: Writer) -> str:
    return writer.create({"resourceType": "Patient", "gender": "female"}).stored.id


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
    waited for the lock goes with the one it waited for, under one checkpoint."""
    committer = GroupCommitter(records)
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
    assert after - before == 3  # a leaf each, their AuditEvents included
    assert records.storage.checkpoint_at(after) is not None
    assert [records.storage.checkpoint_at(size) for size in range(before + 1, after)] == [
        None,
        None,
    ]
