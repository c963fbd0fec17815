"""The records a search reads: what its blind look-ups find on the host, in location order,
a page at a time, so that a page of results reads only as far as it needs.

Each criterion is a :class:`Lookup`. The one expected to find the fewest records drives
(its locations are read from the storage page by page); every other criterion, and the
driver's own conjunctions of several tokens, are checked on the index tokens each driven
location carries (read in one query a page, and checked against the log too). The storage
is never asked to intersect, so no look-up reads through a token that many records carry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from coffre.storage.base import TOKEN_BYTES, StorageReader

# A stream reads this many locations first (unless told how many the reader needs), twice
# as many each page after, up to PAGE_MAX.
FIRST_PAGE = 32
PAGE_MAX = 4096
# A look-up of at most this many tokens narrows another's page in the storage; one of more
# (an open date range) is checked on the tokens of the records read.
PROBE_TOKENS_MAX = 8
_TOKENS = struct.Struct(f"{TOKEN_BYTES}s")
"""A record's joined tokens, one by one."""
# How much of a location the density estimate reads (locations are keyed hashes: uniform).
_ESTIMATE_BYTES = 8


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one criterion looks up: the records that carry every token of any one of
    ``conjunctions``, or for ``_id`` the locations ``locs`` themselves."""

    conjunctions: tuple[frozenset[bytes], ...] = ()
    locs: frozenset[bytes] | None = None
    _singles: frozenset[bytes] = field(init=False, repr=False, compare=False)
    _several: tuple[frozenset[bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        singles = frozenset(token for c in self.conjunctions if len(c) == 1 for token in c)
        object.__setattr__(self, "_singles", singles)
        object.__setattr__(self, "_several", tuple(c for c in self.conjunctions if len(c) > 1))

    def admits(self, loc: bytes, joined: bytes) -> bool:
        """Whether a record at ``loc`` whose tokens, joined, are ``joined`` may be among
        what this finds (a token found across two others' boundary lets a record through
        that the exact test then turns away). A look-up of many tokens (an open date range:
        a hundred) checks them against the record's tokens as a set: searching the joined
        bytes once per token cost some 90 µs a record."""
        if self.locs is not None:
            return loc in self.locs
        if len(self.conjunctions) > PROBE_TOKENS_MAX and not len(joined) % TOKEN_BYTES:
            held = {token for (token,) in _TOKENS.iter_unpack(joined)}
            return not self._singles.isdisjoint(held) or any(c <= held for c in self._several)
        return any(all(token in joined for token in c) for c in self.conjunctions)

    @property
    def leading(self) -> list[bytes]:
        """One token of each conjunction: the records carrying any of them are a superset."""
        return sorted({min(conjunction) for conjunction in self.conjunctions if conjunction})

    @property
    def exact(self) -> bool:
        """Whether what the leading tokens find is exactly what this finds."""
        return self.locs is not None or all(len(c) <= 1 for c in self.conjunctions)


@dataclass(frozen=True, slots=True)
class Batch:
    """Candidate locations in order, and their joined tokens when they were read."""

    locs: list[bytes]
    tokens: dict[bytes, bytes] | None = None


class Stream:
    """The locations one look-up finds, in order, read a page at a time (named locations
    too: a resolved chain can name thousands, and a page needs a few)."""

    def __init__(self, reader: StorageReader, lookup: Lookup, first_page: int | None) -> None:
        self.lookup = lookup
        self._reader = reader
        self._page = min(first_page or FIRST_PAGE, PAGE_MAX)
        self._tokens = lookup.leading
        self._named = sorted(lookup.locs) if lookup.locs is not None else None
        self._after = b""
        self.buffered: list[bytes] = []
        self.done = False

    def read(self) -> None:
        """Buffer the next page (``done`` once there is no more)."""
        if self._named is not None:
            page = self._named[: self._page]
            del self._named[: self._page]
        elif self._tokens:
            page = self._reader.find(self._tokens, self._after, self._page)
        else:
            page = []
        if page:
            self._after = page[-1]
        self.buffered += page
        self.done = len(page) < self._page or self._named == []
        self._page = min(self._page * 2, PAGE_MAX)

    def estimate(self) -> float:
        """How many locations it will find in all: exact for named ones and once ``done``,
        otherwise from how far into the space of locations its first page reached."""
        if self.lookup.locs is not None:
            return len(self.lookup.locs)
        if self.done or not self.buffered:
            return len(self.buffered)
        reached = int.from_bytes(self.buffered[-1][:_ESTIMATE_BYTES].ljust(_ESTIMATE_BYTES, b"\0"))
        space: int = 2 ** (8 * _ESTIMATE_BYTES)
        return len(self.buffered) * space / max(reached, 1)

    def pages(self) -> Iterator[list[bytes]]:
        while True:
            if not self.buffered and not self.done:
                self.read()
            if not self.buffered:
                return
            page, self.buffered = self.buffered, []
            yield page


def batches(
    reader: StorageReader, lookups: Sequence[Lookup], first_page: int | None = None
) -> Iterator[Batch]:
    """The locations every look-up finds, in location order, a batch at a time;
    ``first_page``: how many the reader expects to need, if it knows."""
    streams = [Stream(reader, lookup, first_page) for lookup in lookups]
    driver = _driver(streams) if len(streams) > 1 else streams[0]
    checked = [s.lookup for s in streams if s is not driver or not s.lookup.exact]
    narrowing = [s.lookup for s in streams if s is not driver]
    for page in driver.pages():
        if not checked:
            yield Batch(page)
            continue
        page = _narrowed(reader, page, narrowing)
        tokens = reader.joined_tokens(page) if page else {}
        kept = [
            loc
            for loc in page
            if all(lookup.admits(loc, tokens.get(loc, b"")) for lookup in checked)
        ]
        if kept:
            yield Batch(kept, tokens)


def _driver(streams: list[Stream]) -> Stream:
    """The stream expected to find the fewest records, from a first page of each: the
    cheapest to read first (named locations, then by token count), and none further once
    one holds all it finds in that page, nor one of many tokens once one read expects no
    more records than those tokens: an open date range (a hundred tokens, a millisecond
    or two to look up) is not read for a rare code beside it, nor for one patient's
    records, which cost less to check one by one (some 7 µs a record, against 5 µs a
    token to look up)."""
    read: list[Stream] = []
    for stream in sorted(streams, key=_probe_cost):
        cost = _probe_cost(stream)
        if read and cost > PROBE_TOKENS_MAX and min(map(Stream.estimate, read)) <= cost:
            break
        if not stream.done:
            stream.read()
        read.append(stream)
        if stream.done:
            break
    return min(read, key=Stream.estimate)


def _probe_cost(stream: Stream) -> int:
    return 0 if stream.lookup.locs is not None else len(stream.lookup.leading)


def _narrowed(reader: StorageReader, page: list[bytes], lookups: list[Lookup]) -> list[bytes]:
    """The driver's page without the locations another look-up of few tokens cannot find:
    the storage tells which carry one of its leading tokens, so that the tokens of a
    patient's hundred observations are not all read to find the five with one code."""
    for lookup in lookups:
        if not page:
            break
        if lookup.locs is not None:
            page = [loc for loc in page if loc in lookup.locs]
        elif len(lookup.leading) <= PROBE_TOKENS_MAX:
            carrying = reader.carrying(lookup.leading, page)
            page = [loc for loc in page if loc in carrying]
    return page
