"""The batch checks an auditor runs over a million leaves: ``undecodable`` finds exactly the
entries ``Leaf.decode`` refuses, ``map_updates`` gives each record's latest write as the
leaves decoded one by one give it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coffre.ledger import LedgerError
from coffre.ledger.hashing import leaf_hash
from coffre.ledger.leaf import (
    FORMAT,
    SIZE,
    TAG_BYTES,
    Leaf,
    LeafKind,
    in_map,
    kind_bytes,
    map_updates,
    undecodable,
)


def _refused(entry: bytes) -> bool:
    try:
        Leaf.decode(entry)
    except LedgerError:
        return True
    return False


leaves = st.builds(
    lambda kind, loc, version, body, ts, tag: Leaf(kind, loc, version, body, ts).encode() + tag,
    st.sampled_from(LeafKind),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=TAG_BYTES, max_size=TAG_BYTES),
)
damaged = st.one_of(
    st.tuples(leaves, st.integers(0, 255)).map(lambda lf: bytes([lf[1]]) + lf[0][1:]),
    st.tuples(leaves, st.integers(0, 255)).map(lambda lf: lf[0][:1] + bytes([lf[1]]) + lf[0][2:]),
    leaves.map(lambda leaf: leaf[:-1]),
    leaves.map(lambda leaf: leaf + b"\x00"),
    st.binary(max_size=SIZE + 2),
)


@given(st.lists(st.one_of(leaves, leaves, leaves, damaged), max_size=40))
def test_it_finds_what_decode_refuses(entries: list[bytes]) -> None:
    assert undecodable(entries) == [i for i, entry in enumerate(entries) if _refused(entry)]


@given(st.lists(leaves, max_size=40))
def test_leaves_as_written_all_decode(entries: list[bytes]) -> None:
    assert undecodable(entries) == []


def test_a_wrong_format_or_kind_or_size_is_found() -> None:
    good = Leaf(LeafKind.READ, bytes(32), 1, bytes(32), 2).encode() + bytes(TAG_BYTES)
    assert good[0] == FORMAT and len(good) == SIZE
    entries = [good, bytes([FORMAT + 1]) + good[1:], good[:1] + b"\x00" + good[2:], good[:-1]]
    assert undecodable(entries) == [1, 2, 3]


@given(st.lists(st.one_of(leaves, leaves, damaged), max_size=40))
def test_kind_bytes_gives_each_entry_s_kind_byte(entries: list[bytes]) -> None:
    kinds = kind_bytes(entries)
    assert list(kinds) == [entry[1] if len(entry) > 1 else 0 for entry in entries]
    for entry, kind in zip(entries, kinds, strict=True):
        if not _refused(entry):
            assert Leaf.decode(entry).kind == kind


# A few locations and versions 0 and 1, so that records are written several times and a
# compartment's erasure (ERASE of version 0) turns up.
record_leaves = st.builds(
    lambda kind, loc, version, tag: Leaf(kind, loc, version, bytes(32), 1).encode() + tag,
    st.sampled_from(LeafKind),
    st.sampled_from([bytes([n]) * 32 for n in range(4)]),
    st.integers(0, 1),
    st.binary(min_size=TAG_BYTES, max_size=TAG_BYTES),
)


@given(st.lists(st.one_of(record_leaves, record_leaves, leaves, damaged), max_size=40))
def test_map_updates_give_each_record_s_latest_write(entries: list[bytes]) -> None:
    expected: dict[bytes, bytes] = {}
    for entry in entries:
        if not _refused(entry) and in_map((leaf := Leaf.decode(entry)).kind, leaf.version):
            expected[leaf.loc] = leaf_hash(entry)
    assert map_updates(entries) == expected
