"""Group commit: the writes of concurrent requests share one transaction and one disk sync.

Each write is a job run inside its own savepoint, audited as the request's (see
``Writer.request``), so one that fails fails alone; the
transaction commits once for the whole batch, and only then is each caller answered, so
every acknowledged write is durable. The batch runs in a thread of its own: the event
loop keeps serving reads while the disk syncs, and no other work handed to threads (a
Bundle being prepared, an export) can hold a batch in a queue while the write lock is
free. A batch takes whatever has arrived by the time it holds the write lock: the
requests that came while another process (or the previous batch) held it go with it, so
there is no timer and no added latency when idle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from coffre.exceptions import StorageFullError, TransactionUndoneError
from coffre.service.audit import Access
from coffre.service.records import RecordStore
from coffre.service.writer import Writer

T = TypeVar("T")
Job = Callable[[Writer], Any]
Queued = tuple[Job, Access, "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", bool, Any]
MAX_BATCH = 512


class GroupCommitter:
    def __init__(self, records: RecordStore) -> None:
        self._records = records
        self._loop: asyncio.AbstractEventLoop | None = None
        # Appended to by the event loop, taken from by the commit thread.
        self._queue: deque[Queued] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coffre-commit")

    async def run(self, job: Callable[[Writer], T], access: Access) -> T:
        """Run ``job`` for ``access`` in the next committed batch and return what it
        returned (or raise)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a restarted server, a test client)
            self._loop, self._queue, self._wake = loop, deque(), asyncio.Event()
            self._task = None
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((job, access, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        self._wake.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                outcomes = await loop.run_in_executor(self._thread, self._commit, self._queue)
                for future, succeeded, value in outcomes:
                    if future.done():
                        continue
                    if succeeded:
                        future.set_result(value)
                    else:
                        future.set_exception(value)

    def _commit(self, queue: deque[Queued]) -> list[Outcome]:
        """Commit a batch of the jobs ``queue`` holds once the write lock is taken; a
        commit that fails fails them all (nothing of the batch is durable)."""
        taken: list[Queued] = []
        outcomes: list[Outcome] = []
        try:
            with self._records.writer() as writer:
                taken = _take(queue)
                for job, access, future in taken:
                    # A request has succeeded once its savepoint ended: on PostgreSQL its
                    # statements may fail only then, after the job returned.
                    try:
                        with writer.request(access):
                            value = job(writer)
                    except (StorageFullError, TransactionUndoneError):
                        raise  # the transaction itself is lost: nothing of the batch stands
                    except Exception as error:
                        outcomes.append((future, False, error))
                    else:
                        outcomes.append((future, True, value))
        except Exception as error:
            return [(future, False, error) for _, _, future in taken or _take(queue)]
        return outcomes


def _take(queue: deque[Queued]) -> list[Queued]:
    return [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
