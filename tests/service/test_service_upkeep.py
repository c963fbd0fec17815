"""The index's upkeep: consolidated once no record is written, a step at a time."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fts5 import index_runs
from pgserver import Cluster

from coffre.service.upkeep import consolidate_when_quiet, due
from coffre.storage import SqliteStorage, postgres
from coffre.storage.base import TOKEN_BYTES, SealedVersion
from coffre.storage.postgres import PostgresStorage

WAIT_SECONDS = 30.0
"""How long the test waits for what should take milliseconds (a bound, not a timing)."""


def _version(loc: bytes) -> SealedVersion:
    return SealedVersion(loc, 1, b"k", b"c" * 32, 1, False, b"sealed")


def _written(storage: SqliteStorage, first: int, count: int) -> None:
    """Records written a transaction each: the index in several runs."""
    for n in range(first, first + count):
        loc = hashlib.sha256(b"%d" % n).digest()
        with storage.transaction() as txn:
            txn.append(_version(loc), [(b"t%d" % (n % 5)).ljust(TOKEN_BYTES, b".")])


async def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def test_a_quiet_storage_s_index_is_consolidated_and_again_after_new_writes(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.sqlite", create=True)
    _written(storage, 0, 40)
    assert index_runs(storage.path) == 2

    async def scenario() -> None:
        upkeep = asyncio.create_task(consolidate_when_quiet(storage, quiet=0.05, pages=1))
        try:
            await _until(lambda: index_runs(storage.path) == 1, "consolidated once quiet")
            await asyncio.to_thread(_written, storage, 40, 3)  # new runs: consolidated again
            await _until(lambda: index_runs(storage.path) == 1, "consolidated after writes")
        finally:
            upkeep.cancel()

    asyncio.run(scenario())
    storage.close()


def test_the_index_is_due_again_once_a_sixteenth_more_was_written() -> None:
    assert due(0, None) and due(5_000, None)  # once at start, whatever the storage
    assert not due(1_000, 1_000) and not due(1_061, 1_000)
    assert due(1_062, 1_000)  # 1,000 // 16 = 62 more
    assert not due(41, 40) and due(42, 40)
    assert due(1, 0) and due(16, 15)  # a small storage: after any write


def _upkeep_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "coffre.upkeep"]


def test_a_storage_gone_is_one_warning_not_one_every_round(
    own_postgres: Cluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "POOL_WAIT_SECONDS", 0.1)  # a round fails in 0.1 s, not 5
    storage = PostgresStorage(own_postgres.new_storage_url(), create=True)
    own_postgres.stop_server()

    async def rounds() -> None:
        upkeep = asyncio.create_task(consolidate_when_quiet(storage, quiet=0.01))
        try:
            await _until(lambda: bool(_upkeep_lines(caplog)), "the outage is logged")
            await asyncio.sleep(1.0)  # some eight rounds more, failing alike
        finally:
            upkeep.cancel()

    with caplog.at_level(logging.WARNING, logger="coffre.upkeep"):
        asyncio.run(rounds())
    assert [line[:32] for line in _upkeep_lines(caplog)] == ["the index was not consolidated: "]
    storage.close()
