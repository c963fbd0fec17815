"""Whether the index searches read still finds the records the log says it must.

A search reads its candidates from an index that no read checks: SQLite's FTS5 index,
built from the token sets that reads check against the log; PostgreSQL's tokens table,
read by searches and reads alike. A host that empties or breaks it (one write zeroes
FTS5's structure record) would have every search answer nothing, and a clinician see an
empty chart. So a few records the log says carry index tokens, picked at random, must
each hold the tokens their latest write committed to, and be found by one of them.

It runs when the vault opens, and before a search that found nothing is answered, at
most once every ``RECHECK_SECONDS``: a search finds nothing often (a conditional create's,
a type a patient has none of), and a check costs some 80 µs a record on SQLite. A search
is refused while the last check failed; the check runs again once it is that old, so
that a repaired index is taken back without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from coffre.exceptions import CoffreError, IndexDamagedError, SealError
from coffre.storage.base import TOKEN_BYTES

if TYPE_CHECKING:
    from coffre.service.records import RecordStore

SAMPLES = 8
"""Records a check probes: the index emptied fails every one; a share ``f`` of the records
hidden from it is caught with probability ``1 - (1 - f) ** 8``."""
RECHECK_SECONDS = 1.0
"""How old a check's verdict may be before a search that found nothing checks again."""

log = logging.getLogger("coffre.index")

Failure = Callable[[], CoffreError]
"""What a failed check raises, made anew each time."""


class IndexCheck:
    """The verdict of the last check of a vault's index, and when it was reached."""

    def __init__(self, records: RecordStore) -> None:
        self._records = records
        # When the last check ran, and what it failed with (a new error each time it is
        # raised: one raised again would carry every earlier traceback).
        self._verdict: tuple[float, Failure | None] = (-RECHECK_SECONDS, None)
        self._checking = threading.Lock()

    def check(self) -> None:
        """Check now: IndexDamagedError if the index does not find a record whose token set
        the log vouches for, SealError if the storage lost or changed the tokens."""
        with self._checking:
            try:
                failure = _failure(self._records)
            except IndexDamagedError as error:  # the index cannot even be read
                failure = partial(IndexDamagedError, error.detail)
            self._verdict = (time.monotonic(), failure)
        if failure is not None:
            raise failure()

    def check_at_opening(self) -> None:
        """Check, and say in the log what failed: the vault still opens (reads are checked
        one by one), while searches are refused until the index is repaired."""
        try:
            self.check()
        except CoffreError as error:
            log.error("when the vault opened, %s", error)

    def vouch(self, found_nothing: bool) -> None:
        """Before a search is answered: refuse it while the last check failed, and check
        again, if that verdict is old enough, when it failed or the search found nothing."""
        checked_at, failure = self._verdict
        if (failure is not None or found_nothing) and (
            time.monotonic() - checked_at >= RECHECK_SECONDS
        ):
            self.check()
        elif failure is not None:
            raise failure()


def _failure(records: RecordStore) -> Failure | None:
    """What a probe of random records finds wrong, once it holds on a second look (a
    write of a record between the reads of its tokens and of the index explains one)."""
    records.latest_writes.catch_up(records.storage)
    failed = _probe(records, records.latest_writes.carrying_tokens(SAMPLES))
    if not failed:
        return None
    records.latest_writes.catch_up(records.storage)
    again = _probe(records, sorted(failed))
    if any(failure is IndexDamagedError for failure in again.values()):
        return partial(IndexDamagedError, "records whose tokens are intact are not found by them")
    lost = [loc for loc in again if not _erased(records, loc)]
    return SealError if lost else None


def _probe(
    records: RecordStore, locs: list[bytes]
) -> dict[bytes, type[IndexDamagedError] | type[SealError]]:
    """The records whose tokens are not those their latest logged write committed to
    (SealError), or whose first token does not find them (IndexDamagedError)."""
    storage = records.storage
    joined = storage.joined_tokens(locs)
    failed: dict[bytes, type[IndexDamagedError] | type[SealError]] = {}
    for loc in locs:
        held = joined.get(loc, b"")
        if not records.has_logged_tokens(loc, hashlib.sha256(held).digest()):
            failed[loc] = SealError
        elif storage.find([held[:TOKEN_BYTES]], _just_before(loc), 1) != [loc]:
            failed[loc] = IndexDamagedError
    return failed


def _erased(records: RecordStore, loc: bytes) -> bool:
    """Whether a record is in an erased compartment: a record whose latest version the
    log did not confirm got no ERASE leaf, and lost its tokens all the same."""
    sealed = records.storage.latest(loc)
    return sealed is not None and records.is_erased(sealed.comp)


def _just_before(loc: bytes) -> bytes:
    """The location just before ``loc``: what ``find`` is to find from, ``loc`` first."""
    number = int.from_bytes(loc)
    return (number - 1).to_bytes(len(loc)) if number else b""
