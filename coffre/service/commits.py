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

What it tells of itself (jobs per commit, the waits for the write lock, the time it is
held, the commits that failed, the log as followed) goes to a ``CommitObserver``: the
server's metrics, which the service knows nothing more of.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from coffre.exceptions import StorageFullError, TransactionUndoneError
from coffre.service.audit import Access
from coffre.service.records import RecordStore
from coffre.service.writer import Writer

T = TypeVar("T")
Job = Callable[[Writer], Any]
Queued = tuple[Job, Access, "asyncio.Future[Any]", float]
"""A job, whom for, its caller's future, and when it was queued (``time.perf_counter``)."""
Outcome = tuple["asyncio.Future[Any]", bool, Any]
MAX_BATCH = 512


class CommitObserver(Protocol):
    def committed(self, waits: Sequence[float], held: float) -> None:
        """A batch committed: each job's wait for the write lock from when it was queued,
        and how long the lock was held (to the commit durable and the checkpoint kept),
        in seconds."""

    def failed(self, error: Exception) -> None:
        """A batch failed whole, for ``error``: nothing of it stands."""

    def followed(self, leaves: int, newest_us: int) -> None:
        """The log as this process followed it: its size, and the time of its newest leaf,
        which the newest checkpoint covers (each commit signs one)."""


class _Unobserved:
    """A group commit nobody watches (the command line's, the tests')."""

    def committed(self, waits: Sequence[float], held: float) -> None:
        pass

    def failed(self, error: Exception) -> None:
        pass

    def followed(self, leaves: int, newest_us: int) -> None:
        pass


UNOBSERVED = _Unobserved()


class GroupCommitter:
    def __init__(self, records: RecordStore, observer: CommitObserver = UNOBSERVED) -> None:
        self._records = records
        self._observer = observer
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
        self._queue.append((job, access, future, time.perf_counter()))
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
        locked = 0.0
        try:
            with self._records.writer() as writer:
                locked = time.perf_counter()
                taken = _take(queue)
                for job, access, future, _ in taken:
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
            self._observer.failed(error)
            return [(future, False, error) for _, _, future, _ in taken or _take(queue)]
        self._observer.committed(
            [locked - queued for *_, queued in taken], time.perf_counter() - locked
        )
        latest = self._records.latest_writes
        self._observer.followed(latest.known, latest.newest_leaf)
        return outcomes


def _take(queue: deque[Queued]) -> list[Queued]:
    return [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
