"""Writes first: preparation waits at its safe points while this process writes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from coffre.service import RecordStore
from coffre.service.giveway import GiveWay


def _waiting(wait: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def test_preparation_goes_on_when_nothing_writes() -> None:
    thread = _waiting(GiveWay().patience())
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_preparation_waits_for_the_write_to_end() -> None:
    give_way = GiveWay()
    with give_way.writing():
        thread = _waiting(give_way.patience(seconds=60))
        thread.join(timeout=0.2)
        assert thread.is_alive()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_writing_thread_never_waits_for_itself() -> None:
    """A Bundle prepared under the write lock its own thread holds (an import)."""
    give_way = GiveWay()
    with give_way.writing():
        give_way.patience(seconds=60)()


def test_preparation_runs_out_of_patience_under_writes_without_a_pause() -> None:
    give_way = GiveWay()
    with give_way.writing():
        wait = give_way.patience(seconds=0.05)
        for _ in range(2):  # its patience spent, the next safe point does not wait either
            thread = _waiting(wait)
            thread.join(timeout=10)
            assert not thread.is_alive()


def test_a_record_store_gives_way_while_it_writes(records: RecordStore) -> None:
    with records.writer():
        thread = _waiting(records.give_way.patience(seconds=60))
        thread.join(timeout=0.2)
        assert thread.is_alive()
    thread.join(timeout=10)
    assert not thread.is_alive()
