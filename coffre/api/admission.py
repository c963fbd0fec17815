"""A waiting room for bookings: when a campaign opens, the crowd is served in order of
arrival, a few requests at a time per server process, instead of piling onto the write
lock until clients time out; when the room is full, a newcomer is told how long to wait
(a 503 with ``Retry-After``) rather than kept hanging."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from coffre.exceptions import FhirError

LONGEST_ADVICE_SECONDS = 60
_SMOOTHING = 0.1  # the weight of the newest request in the mean time a request takes


class ComeBack(FhirError):
    """A 503 saying when to try again (``Retry-After``)."""

    def __init__(self, diagnostics: str, seconds: int) -> None:
        super().__init__(503, "transient", diagnostics)
        self.seconds = seconds


def advised_wait(ahead: int, mean_seconds: float, serving: int) -> int:
    """Seconds for ``ahead`` requests taking ``mean_seconds`` each, ``serving`` at once: one
    at least, a minute at most."""
    return max(1, min(LONGEST_ADVICE_SECONDS, math.ceil(ahead * mean_seconds / serving)))


class RoomObserver(Protocol):
    """Who is told of the room's comings and goings (the server's metrics)."""

    def occupancy(self, waiting: int, serving: int) -> None:
        """The requests waiting and being served now."""

    def turned_away(self) -> None:
        """A request was turned away, the room full."""


class _Unobserved:
    """A room nobody watches (the tests')."""

    def occupancy(self, waiting: int, serving: int) -> None:
        pass

    def turned_away(self) -> None:
        pass


UNOBSERVED = _Unobserved()


class WaitingRoom:
    """At most ``serving`` requests at once; up to ``waiting`` more wait their turn, first
    come first served; the next is turned away with an estimate of the wait."""

    def __init__(self, serving: int, waiting: int, observer: RoomObserver = UNOBSERVED) -> None:
        if serving < 1:
            raise ValueError("a waiting room serves one request at least")
        self.serving, self.waiting = serving, waiting
        self._observer = observer
        self._busy = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self._mean_seconds = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def advice(self) -> int:
        """Seconds until the queue now waiting is likely served."""
        return advised_wait(self.queued + 1, self._mean_seconds, self.serving)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn (or raise ``ComeBack``), and hold it within the block."""
        await self._enter()
        started = time.perf_counter()
        try:
            yield
        finally:
            taken = time.perf_counter() - started
            self._mean_seconds += _SMOOTHING * (taken - self._mean_seconds)
            self._leave()

    async def _enter(self) -> None:
        if self._busy < self.serving and not self._queue:
            self._busy += 1
            self._tell()
            return
        if len(self._queue) >= self.waiting:
            self._observer.turned_away()
            seconds = self.advice()
            raise ComeBack(
                "bookings are served in order of arrival and the waiting room is full:"
                f" try again in {seconds} s",
                seconds,
            )
        called: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(called)
        self._tell()
        try:
            await called  # the turn of a request that left, handed over as it is
        except asyncio.CancelledError:
            if called.done() and not called.cancelled():
                self._leave()  # called just as its client went: the turn goes on
            elif called in self._queue:
                self._queue.remove(called)
                self._tell()
            raise

    def _leave(self) -> None:
        """Hand the turn to the first still waiting, or give it back."""
        try:
            while self._queue:
                called = self._queue.popleft()
                if not called.done():
                    called.set_result(None)
                    return
            self._busy -= 1
        finally:
            self._tell()

    def _tell(self) -> None:
        self._observer.occupancy(len(self._queue), self._busy)
