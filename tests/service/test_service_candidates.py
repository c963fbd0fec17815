"""The candidates of a search: what the look-ups find, read from the storage a page at a
time in location order, on both drivers, against the same sets computed in Python."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffre.service import candidates
from coffre.service.candidates import Lookup, Stream, batches
from coffre.storage import SealedVersion, SqliteStorage, Storage
from coffre.storage.postgres import PostgresStorage

TOKENS = [b"token-%04d" % n for n in range(12)]
RECORDS = 150


def _loc(n: int) -> bytes:
    """Locations are keyed hashes, spread evenly like these."""
    return hashlib.sha256(b"%d" % n).digest()


@pytest.fixture(scope="module")
def carried(tmp_path_factory: pytest.TempPathFactory) -> dict[bytes, frozenset[bytes]]:
    """The tokens each record carries: a few of TOKENS, some common and some rare."""
    draw = random.Random(7)
    weights = [2**-n for n in range(len(TOKENS))]
    return {
        _loc(n): frozenset(draw.choices(TOKENS, weights, k=draw.randint(0, 5)))
        for n in range(RECORDS)
    }


@pytest.fixture
def storage(
    tmp_path: Path, storage_url: str, carried: dict[bytes, frozenset[bytes]]
) -> Iterator[Storage]:
    opened: Storage = (
        PostgresStorage(storage_url, create=True)
        if storage_url
        else SqliteStorage(tmp_path / "s.sqlite", create=True)
    )
    with opened.transaction() as txn:
        for loc, tokens in carried.items():
            txn.append(SealedVersion(loc, 1, b"k", b"c", 1, False, b"body"), sorted(tokens))
    yield opened
    opened.close()


def _expected(carried: dict[bytes, frozenset[bytes]], lookups: list[Lookup]) -> list[bytes]:
    """Named locations are candidates whether a record is there or not (reading the
    versions tells); others must carry every token of a conjunction."""

    def admitted(loc: bytes, lookup: Lookup) -> bool:
        if lookup.locs is not None:
            return loc in lookup.locs
        tokens = carried.get(loc, frozenset())
        return any(conjunction <= tokens for conjunction in lookup.conjunctions)

    named = {loc for lookup in lookups for loc in lookup.locs or ()}
    universe = carried.keys() | named
    return sorted(loc for loc in universe if all(admitted(loc, lookup) for lookup in lookups))


def _found(storage: Storage, lookups: list[Lookup], first_page: int | None) -> list[bytes]:
    return [loc for batch in batches(storage, lookups, first_page) for loc in batch.locs]


conjunctions = st.lists(
    st.frozensets(st.sampled_from(TOKENS), min_size=1, max_size=3), min_size=1, max_size=3
) | st.lists(  # many, as an open date range has: checked on a record's tokens as a set
    st.frozensets(st.sampled_from(TOKENS), min_size=1, max_size=2), min_size=9, max_size=14
)
lookup = st.one_of(
    conjunctions.map(lambda found: Lookup(tuple(found))),
    st.frozensets(st.integers(0, RECORDS + 10), max_size=30).map(
        lambda ns: Lookup(locs=frozenset(_loc(n) for n in ns))
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(lookup, min_size=1, max_size=3), st.sampled_from([None, 1, 3]))
def test_the_batches_hold_exactly_what_every_lookup_finds_in_order(
    storage: Storage,
    carried: dict[bytes, frozenset[bytes]],
    lookups: list[Lookup],
    first_page: int | None,
) -> None:
    """Whichever look-up drives, and whatever the page size, nothing is missed, nothing
    repeated, and what another look-up would not find is left out."""
    assert _found(storage, lookups, first_page) == _expected(carried, lookups)


def test_pages_grow_and_a_stream_reads_the_storage_only_as_far_as_asked(
    storage: Storage, carried: dict[bytes, frozenset[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    common = Lookup((frozenset({TOKENS[0]}),))
    monkeypatch.setattr(candidates, "PAGE_MAX", 8)
    pages = Stream(storage, common, 2).pages()
    sizes = [len(next(pages)) for _ in range(5)]
    assert sizes == [2, 4, 8, 8, 8]
    everything = [loc for page in Stream(storage, common, 2).pages() for loc in page]
    assert everything == _expected(carried, [common])
    named = Lookup(locs=frozenset(_loc(n) for n in range(10)))
    assert [len(page) for page in Stream(storage, named, 2).pages()] == [2, 4, 4]


def test_the_lookup_expected_to_find_fewest_drives(storage: Storage) -> None:
    """The estimate from a first page tells the rare token from the common one."""
    common, rare = (Stream(storage, Lookup((frozenset({t}),)), 4) for t in TOKENS[:5:4])
    for stream in (common, rare):
        stream.read()
    assert rare.estimate() < common.estimate()
    assert Stream(storage, Lookup(locs=frozenset({b"a", b"b"})), 4).estimate() == 2


class _Counting:
    """A storage reader that counts the look-ups of each token set."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.finds: list[int] = []

    def find(self, tokens: list[bytes], after: bytes = b"", limit: int | None = None) -> Any:
        self.finds.append(len(tokens))
        return self.storage.find(tokens, after, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def test_a_lookup_of_many_tokens_is_not_read_beside_one_that_found_all_in_a_page(
    storage: Storage, carried: dict[bytes, frozenset[bytes]]
) -> None:
    """A rare code beside an open date range: the code's look-up, cheaper, is read first;
    it finds all its records in one page, so the range's hundred tokens are never looked
    up, and what the search finds is the same."""
    rare = Lookup((frozenset({TOKENS[-1]}),))
    wide = Lookup(tuple(frozenset({t}) for t in TOKENS[:10]))
    reader = _Counting(storage)
    found = [loc for batch in batches(reader, [wide, rare]) for loc in batch.locs]  # type: ignore[arg-type]
    assert found == _expected(carried, [wide, rare])
    assert reader.finds == [1]
    reader.finds.clear()
    common = Lookup((frozenset({TOKENS[0]}),))  # not all in a page: the range is read too
    assert [loc for b in batches(reader, [wide, common]) for loc in b.locs] == _expected(  # type: ignore[arg-type]
        carried, [wide, common]
    )
    assert reader.finds[:2] == [1, 10]


def test_a_lookup_of_many_tokens_is_not_read_beside_one_cheaper_to_drive(
    storage: Storage, carried: dict[bytes, frozenset[bytes]]
) -> None:
    """Observations of one patient in an open date range: the patient's look-up has not
    found all in its first page, but it expects fewer records than the range has tokens
    to look up: driving by it costs less than reading the range's tokens would, so they
    are never looked up (and the range is checked on the candidates' tokens)."""
    wide = Lookup(tuple(frozenset({t}) for t in TOKENS))
    narrow = next(
        lookup
        for token in reversed(TOKENS)
        if 2 < len(_expected(carried, [lookup := Lookup((frozenset({token}),))])) <= 6
    )
    probe = Stream(storage, narrow, 2)
    probe.read()
    assert not probe.done and probe.estimate() <= len(TOKENS)
    reader = _Counting(storage)
    found = [loc for b in batches(reader, [wide, narrow], 2) for loc in b.locs]  # type: ignore[arg-type]
    assert found == _expected(carried, [wide, narrow])
    assert set(reader.finds) == {1}
