"""Property tests of the log's tree: roots against pymerkle, proofs of random trees."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from coffre.ledger import (
    CompactRange,
    LedgerError,
    SignedTree,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    merkle_root,
    node_hash,
    root_of,
    subtree_from_nodes,
    verified_consistency_proof,
    verified_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from coffre.ledger.proofs import SubtreeHash, perfect_ranges

entries = st.lists(st.binary(max_size=40), max_size=70)
leaf_lists = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70, unique=True)


def _subtree(leaves: list[bytes]) -> SubtreeHash:
    return lambda begin, end: merkle_root(leaves[begin:end])


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every perfect subtree, by level: what a storage-backed tree keeps."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


def _flip(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    changed = bytearray(proof[element])
    changed[bit // 8] ^= 1 << (bit % 8)
    return [bytes(changed) if i == element else h for i, h in enumerate(proof)]


@given(entries)
def test_roots_agree_with_pymerkle(data: list[bytes]) -> None:
    reference = InmemoryTree.init_from_entries(data, algorithm="sha256")
    leaves = [leaf_hash(d) for d in data]
    assert merkle_root(leaves) == reference.get_root()
    assert root_of(leaves) == reference.get_root()
    for size in range(1, len(data) + 1):
        assert merkle_root(leaves[:size]) == reference.get_root(size)


@given(leaf_lists)
def test_the_compact_range_has_the_root_at_every_size(leaves: list[bytes]) -> None:
    compact = CompactRange()
    for size, leaf in enumerate(leaves, start=1):
        compact.append(leaf)
        assert compact.size == size
        assert len(compact.hashes) == size.bit_count()
        assert compact.root() == merkle_root(leaves[:size])
    resumed = CompactRange(compact.size, compact.hashes)
    resumed.append(leaves[0])
    compact.append(leaves[0])
    assert resumed.root() == compact.root()


@given(leaf_lists, st.lists(st.integers(1, 20)), st.sampled_from([1, 2, 4]))
def test_a_compact_range_extended_in_batches_gives_the_perfect_subtrees_of_every_stride(
    leaves: list[bytes], batches: list[int], stride: int
) -> None:
    """The nodes an integrator stores, a batch at a time: each perfect subtree above the
    leaves at a multiple of ``stride`` levels, once, on a copy that leaves the original
    as it was."""
    compact, start = CompactRange(), 0
    stored: dict[tuple[int, int], bytes] = {}
    for size in [*batches, len(leaves)]:
        end = min(start + size, len(leaves))
        before = compact.copy()
        nodes = compact.extend_with_nodes(leaves[start:end], stride)
        assert before.size == start and compact.size == end
        assert all((level, index) not in stored for level, index, _ in nodes)
        stored.update(((level, index), h) for level, index, h in nodes)
        assert compact.root() == merkle_root(leaves[:end])
        start = end
    expected = {
        (level, index): h
        for level, hashes in enumerate(_levels(leaves))
        if level and not level % stride
        for index, h in enumerate(hashes)
    }
    assert stored == expected


@given(leaf_lists)
def test_every_inclusion_proof_verifies(leaves: list[bytes]) -> None:
    size, root = len(leaves), merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        proof = inclusion_proof(index, size, _subtree(leaves))
        verify_inclusion(leaf, index, size, proof, root)


@given(leaf_lists, st.data())
def test_every_consistency_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    size2 = data.draw(st.integers(0, len(leaves)), label="size2")
    size1 = data.draw(st.integers(0, size2), label="size1")
    proof = consistency_proof(size1, size2, _subtree(leaves))
    root1, root2 = merkle_root(leaves[:size1]), merkle_root(leaves[:size2])
    verify_consistency(size1, size2, proof, root1, root2)


@given(leaf_lists, st.data())
def test_any_flipped_bit_fails_inclusion(leaves: list[bytes], data: st.DataObject) -> None:
    size, root = len(leaves), merkle_root(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(index, size, _subtree(leaves))
    bit = data.draw(st.integers(0, 255), label="bit")
    element = data.draw(st.integers(-2, len(proof) - 1), label="element")
    leaf = leaves[index]
    if element == -2:
        leaf = _flip([leaf], 0, bit)[0]
    elif element == -1:
        root = _flip([root], 0, bit)[0]
    else:
        proof = _flip(proof, element, bit)
    with pytest.raises(LedgerError):
        verify_inclusion(leaf, index, size, proof, root)


@given(leaf_lists, st.data())
def test_any_flipped_bit_fails_consistency(leaves: list[bytes], data: st.DataObject) -> None:
    size2 = data.draw(st.integers(2, len(leaves) + 2), label="size2")
    leaves = (leaves * 3)[:size2]
    size1 = data.draw(st.integers(1, size2 - 1), label="size1")
    proof = consistency_proof(size1, size2, _subtree(leaves))
    hashes = [merkle_root(leaves[:size1]), merkle_root(leaves), *proof]
    which = data.draw(st.integers(0, len(hashes) - 1), label="which")
    hashes = _flip(hashes, which, data.draw(st.integers(0, 255), label="bit"))
    with pytest.raises(LedgerError):
        verify_consistency(size1, size2, hashes[2:], hashes[0], hashes[1])


@given(leaf_lists, st.data())
def test_a_proof_binds_its_index(leaves: list[bytes], data: st.DataObject) -> None:
    # Not its size: leaf 0 has the same path in trees of 5 to 8 leaves, so a proof in a
    # tree of 5 checks for a tree of 6 with the same root. The checkpoint signs the size
    # with the root, which is what pins it.
    size, root = len(leaves), merkle_root(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    other = data.draw(st.integers(-1, size + 1).filter(lambda i: i != index), label="other")
    proof = inclusion_proof(index, size, _subtree(leaves))
    with pytest.raises(LedgerError):
        verify_inclusion(leaves[index], other, size, proof, root)


@given(leaf_lists, st.data())
def test_subtrees_from_perfect_nodes(leaves: list[bytes], data: st.DataObject) -> None:
    levels = _levels(leaves)
    subtree = subtree_from_nodes(lambda level, index: levels[level][index])
    size2 = data.draw(st.integers(1, len(leaves)), label="size2")
    size1 = data.draw(st.integers(0, size2), label="size1")
    index = data.draw(st.integers(0, size2 - 1), label="index")
    for begin, end in [*inclusion_ranges(index, size2), *consistency_ranges(size1, size2)]:
        assert subtree(begin, end) == merkle_root(leaves[begin:end])
        assert sum(e - b for b, e in perfect_ranges(begin, end)) == end - begin


@given(leaf_lists, st.data())
def test_a_verified_proof_is_the_true_one_whatever_node_is_altered(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """A store that alters one perfect subtree (a host's ``tree_nodes`` row, or a leaf's
    hash) makes the verified proofs fail, or leaves them as they are: it never gets a
    wrong one handed out."""
    levels = _levels(leaves)
    level = data.draw(st.integers(0, len(levels) - 1), label="level")
    altered = (level, data.draw(st.integers(0, len(levels[level]) - 1), label="node"))
    wrong = subtree_from_nodes(
        lambda level, index: (
            _flip([levels[level][index]], 0, 7)[0]
            if (level, index) == altered
            else levels[level][index]
        )
    )
    size2 = data.draw(st.integers(1, len(leaves)), label="size2")
    size1 = data.draw(st.integers(0, size2), label="size1")
    index = data.draw(st.integers(0, size2 - 1), label="index")
    signed, true = SignedTree(len(leaves), merkle_root(leaves)), _subtree(leaves)
    proofs: list[tuple[Callable[[SubtreeHash], list[bytes]], list[bytes]]] = [
        (
            lambda subtree: verified_inclusion_proof(index, size2, subtree, signed),
            inclusion_proof(index, size2, true),
        ),
        (
            lambda subtree: verified_consistency_proof(size1, size2, subtree, signed),
            consistency_proof(size1, size2, true),
        ),
    ]
    for prove, expected in proofs:
        assert prove(true) == expected
        with contextlib.suppress(LedgerError):  # refused: that is fine too
            assert prove(wrong) == expected


def test_ranges_refuse_what_no_tree_has() -> None:
    for index, size in ((0, 0), (3, 3), (-1, 4)):
        with pytest.raises(ValueError):
            inclusion_ranges(index, size)
    for size1, size2 in ((3, 2), (-1, 2)):
        with pytest.raises(ValueError):
            consistency_ranges(size1, size2)
    for begin, end in ((1, 3), (4, 4), (2, 5)):
        with pytest.raises(ValueError):
            perfect_ranges(begin, end)


def test_compact_range_refuses_a_frontier_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, [bytes(32)])
    with pytest.raises(ValueError):
        CompactRange(1, [bytes(31)])
    with pytest.raises(ValueError):
        CompactRange().append(b"short")
