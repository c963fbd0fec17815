"""What the application holds for its requests, typed: the vault's records and the group
commit that every request's writes (its access log included) go through."""

from __future__ import annotations

from starlette.requests import Request

from coffre.api.admission import WaitingRoom
from coffre.service import RecordStore
from coffre.service.booking import FreeSeats
from coffre.service.commits import GroupCommitter


def records_of(request: Request) -> RecordStore:
    records: RecordStore = request.app.state.records
    return records


def committer_of(request: Request) -> GroupCommitter:
    committer: GroupCommitter = request.app.state.committer
    return committer


def waiting_room_of(request: Request) -> WaitingRoom:
    room: WaitingRoom = request.app.state.waiting_room
    return room


def free_seats_of(request: Request) -> FreeSeats:
    seats: FreeSeats = request.app.state.free_seats
    return seats
