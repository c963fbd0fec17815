"""Group commit (coffre.service.commits): a batch of writes runs in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

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
