"""The check of the index searches read (coffre.service.indexcheck): a search that finds
nothing checks it, at most once a second, and a failed check stands as long."""

from __future__ import annotations

import pytest
from pg import HostDatabase

from coffre.exceptions import IndexDamagedError
from coffre.search import Criterion
from coffre.service import Vault, indexcheck

MALE = (Criterion("gender", ("male",)),)


class Clock:
    """``time.monotonic`` as the test sets it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(indexcheck, "time", clock)
    return clock


def test_a_search_that_finds_nothing_checks_the_index_once_a_second(
    backend: str, vault: Vault, clock: Clock
) -> None:
    """The vault checks the index when it opens; a search that finds nothing within the
    second after that is answered from the index as it is (so that searches that find
    nothing, often, cost no check each), one after it checks, and is refused if the
    check fails; so is every search of the next second, when the check runs again and
    takes the repaired index back."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL's searches read the tokens table that reads check")
    records = vault.open()
    try:
        with records.writer() as writer:
            created = writer.create({"resourceType": "Patient", "gender": "male"}).stored.id
        with HostDatabase.of(vault) as db:
            db.execute("UPDATE token_index_data SET block = zeroblob(length(block)) WHERE id = 10")
        clock.now = 0.5
        assert records.find("Patient", MALE) == []
        clock.now = 1.0
        with pytest.raises(IndexDamagedError):
            records.find("Patient", MALE)
        records.storage.rebuild_index()
        clock.now = 1.5
        with pytest.raises(IndexDamagedError):
            records.find("Patient", MALE)
        clock.now = 2.0
        assert [stored.id for stored in records.find("Patient", MALE)] == [created]
    finally:
        records.storage.close()
