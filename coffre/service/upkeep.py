"""Upkeep of the storage while no record is being written: the blind index consolidated a
step at a time, so that searches read it at its cheapest without holding up writes."""

from __future__ import annotations

import asyncio
import logging

from coffre.exceptions import StorageError
from coffre.storage.base import Storage

QUIET_SECONDS = 2.0
"""How long no record must have been written before the index is consolidated."""
PAGES_A_STEP = 256
"""Index pages (about 4 KB each) merged in one write transaction: a write that arrives
meanwhile waits for one step at most."""
GROWTH = 16
"""Consolidated again once the versions written since number a sixteenth of those before:
consolidating rewrites the whole index, so a write costs at most some sixteen times its
own tokens in rewriting, about what FTS5's own merges cost it."""

log = logging.getLogger("coffre.upkeep")


async def consolidate_when_quiet(
    storage: Storage, quiet: float = QUIET_SECONDS, pages: int = PAGES_A_STEP
) -> None:
    """Until cancelled: once no record was written for ``quiet`` seconds, consolidate the
    index by steps until nothing is left to merge or a record is written; then again after
    enough new writes (``GROWTH``). Each server process runs it; their steps queue on the
    write lock like any write, and find nothing to do once another has done it."""
    consolidated_at: int | None = None
    seen = -1
    failure = ""  # the last one logged: a storage gone for an hour is one line, not 1,800
    while True:
        await asyncio.sleep(quiet)
        try:
            now = await asyncio.to_thread(storage.last_seq)
            if (
                now == seen
                and due(now, consolidated_at)
                and await _consolidate(storage, pages, now)
            ):
                consolidated_at = now
            seen, failure = now, ""
        except StorageError as error:  # the storage's own words, never a record's
            if str(error) != failure:
                failure = str(error)
                log.warning("the index was not consolidated: %s", failure)


def due(seq: int, consolidated_at: int | None) -> bool:
    """Whether the index is due for consolidation at version ``seq``, enough having been
    written since the last (None: none yet)."""
    if consolidated_at is None:
        return True
    return seq - consolidated_at >= max(1, consolidated_at // GROWTH)


async def _consolidate(storage: Storage, pages: int, seq: int) -> bool:
    """Steps while there is merging to do and no record is written; whether it finished."""
    while await asyncio.to_thread(storage.consolidate_index, pages):
        if await asyncio.to_thread(storage.last_seq) != seq:
            return False
    return True
