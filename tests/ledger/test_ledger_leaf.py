"""The leaf encoding: fixed-width, versioned, and never ambiguous."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.ledger.errors import LedgerError
from coffre.ledger.leaf import Leaf, LeafKind

leaves = st.builds(
    Leaf,
    kind=st.sampled_from(LeafKind),
    loc=st.binary(min_size=32, max_size=32),
    version=st.integers(0, 2**64 - 1),
    body_hash=st.binary(min_size=32, max_size=32),
    ts=st.integers(0, 2**64 - 1),
)


@given(leaf=leaves)
def test_a_leaf_decodes_to_itself(leaf: Leaf) -> None:
    assert Leaf.decode(leaf.encode()) == leaf


@given(first=leaves, second=leaves)
def test_different_leaves_never_encode_alike(first: Leaf, second: Leaf) -> None:
    assert (first.encode() == second.encode()) == (first == second)


@pytest.mark.parametrize("data", [b"", bytes(81), b"\x02" + bytes(81), b"\x01\x63" + bytes(80)])
def test_a_malformed_leaf_is_refused(data: bytes) -> None:
    with pytest.raises(LedgerError):
        Leaf.decode(data)
