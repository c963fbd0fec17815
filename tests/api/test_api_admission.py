"""The booking waiting room: first come first served, a few at a time, and a 503 with
the wait once it is full; a client that leaves the queue gives its turn on."""

from __future__ import annotations

import asyncio

import pytest
from starlette.testclient import TestClient

from coffre.api.admission import ComeBack, WaitingRoom, advised_wait
from coffre.api.app import create_app
from coffre.service import RecordStore


async def _visit(room: WaitingRoom, name: str, served: list[str], hold: asyncio.Event) -> None:
    async with room.turn():
        served.append(name)
        await hold.wait()


def test_the_room_serves_in_order_of_arrival_and_turns_away_past_its_size() -> None:
    async def run() -> None:
        room, served, hold = WaitingRoom(serving=2, waiting=3), [], asyncio.Event()
        visits = [asyncio.create_task(_visit(room, f"p{n}", served, hold)) for n in range(5)]
        await asyncio.sleep(0)
        assert served == ["p0", "p1"] and room.queued == 3
        with pytest.raises(ComeBack) as full:
            async with room.turn():
                pass
        assert full.value.status == 503 and full.value.seconds >= 1
        assert "waiting room is full" in full.value.diagnostics
        hold.set()
        await asyncio.gather(*visits)
        assert served == ["p0", "p1", "p2", "p3", "p4"] and room.queued == 0
        async with room.turn(), room.turn():  # every turn was given back
            pass

    asyncio.run(run())


def test_a_client_that_leaves_the_queue_passes_its_turn_on() -> None:
    async def run() -> None:
        room, served, hold = WaitingRoom(serving=1, waiting=5), [], asyncio.Event()
        first = asyncio.create_task(_visit(room, "first", served, hold))
        gone = asyncio.create_task(_visit(room, "gone", served, hold))
        last = asyncio.create_task(_visit(room, "last", served, hold))
        await asyncio.sleep(0)
        gone.cancel()
        hold.set()
        await asyncio.gather(first, last)
        assert served == ["first", "last"]
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert room.queued == 0

    asyncio.run(run())


class _Watching:
    """A ``RoomObserver`` that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []
        self.turned = 0

    def occupancy(self, waiting: int, serving: int) -> None:
        self.seen.append((waiting, serving))

    def turned_away(self) -> None:
        self.turned += 1


def test_the_room_tells_who_waits_who_is_served_and_who_is_turned_away() -> None:
    async def run() -> _Watching:
        watching = _Watching()
        room, served, hold = WaitingRoom(1, 1, watching), [], asyncio.Event()
        visits = [asyncio.create_task(_visit(room, f"p{n}", served, hold)) for n in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ComeBack):
            await _visit(room, "p2", served, hold)
        hold.set()
        await asyncio.gather(*visits)
        return watching

    watching = asyncio.run(run())
    # p0 served, p1 waits, p0's turn handed to p1, p1 gone
    assert watching.seen == [(0, 1), (1, 1), (0, 1), (0, 0)]
    assert watching.turned == 1


def test_the_wait_advised_follows_the_pace_of_the_queue() -> None:
    assert advised_wait(10, 0.5, 2) == 3  # ten ahead at 0.5 s each, two at a time
    assert advised_wait(1, 0.001, 16) == 1  # never "come back now"
    assert advised_wait(100_000, 1.0, 1) == 60  # nor in a day


async def _events() -> tuple[asyncio.Event, asyncio.Event]:
    return asyncio.Event(), asyncio.Event()


async def _hold(room: WaitingRoom, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with room.turn():
        entered.set()
        await release.wait()


def test_a_full_room_answers_a_503_operation_outcome_with_retry_after(
    records: RecordStore,
) -> None:
    room = WaitingRoom(serving=1, waiting=0)
    with TestClient(create_app(records, waiting_room=room)) as client:
        entered, release = client.portal.call(_events)
        client.portal.start_task_soon(_hold, room, entered, release)
        client.portal.call(entered.wait)  # a booking is being served
        response = client.get("/fhir/Appointment/$find")
        client.portal.call(release.set)
        assert client.get("/fhir/Appointment/$find").status_code == 200
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json()["issue"][0]["code"] == "transient"
