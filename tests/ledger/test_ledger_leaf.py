"""The leaf encoding: fixed-width, versioned, and never ambiguous."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.ledger.errors import LedgerError
from coffre.ledger.leaf import FORMAT, SIZE, TAG_BYTES, Leaf, LeafKind, split_tag

leaves = st.builds(
    Leaf,
    kind=st.sampled_from(LeafKind),
    loc=st.binary(min_size=32, max_size=32),
    version=st.integers(0, 2**64 - 1),
    body_hash=st.binary(min_size=32, max_size=32),
    ts=st.integers(0, 2**64 - 1),
    index_digest=st.binary(min_size=32, max_size=32),
    event_hash=st.binary(min_size=32, max_size=32),
)


@given(leaf=leaves, tag=st.binary(min_size=TAG_BYTES, max_size=TAG_BYTES))
def test_a_stored_leaf_decodes_to_itself_and_splits_off_its_tag(leaf: Leaf, tag: bytes) -> None:
    assert Leaf.decode(leaf.encode() + tag) == leaf
    assert split_tag(leaf.encode() + tag) == (leaf.encode(), tag)


@given(first=leaves, second=leaves)
def test_different_leaves_never_encode_alike(first: Leaf, second: Leaf) -> None:
    assert (first.encode() == second.encode()) == (first == second)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(SIZE),  # format 0
        bytes([FORMAT - 1]) + bytes(SIZE - 1),  # the format before this one
        bytes([FORMAT, 0x63]) + bytes(SIZE - 2),  # unknown kind
        bytes([FORMAT, 0x01]) + bytes(SIZE - 3),  # one byte short
        bytes([FORMAT, 0x01]) + bytes(SIZE - 1),  # one byte too many
    ],
)
def test_a_malformed_leaf_is_refused(data: bytes) -> None:
    with pytest.raises(LedgerError):
        Leaf.decode(data)
