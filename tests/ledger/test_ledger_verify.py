"""Edge cases of proof verification, and which error each failure raises."""

from __future__ import annotations

import pytest

from coffre.exceptions import CoffreError
from coffre.ledger import (
    EMPTY_ROOT,
    ForkError,
    LedgerError,
    ProofShapeError,
    RootMismatchError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from coffre.ledger.verify import root_from_inclusion_proof

LEAVES = [leaf_hash(bytes([i])) for i in range(11)]
ROOT = merkle_root(LEAVES)
SOME = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _subtree(begin: int, end: int) -> bytes:
    return merkle_root(LEAVES[begin:end])


def test_errors_are_coffre_errors() -> None:
    assert issubclass(ProofShapeError, LedgerError)
    assert issubclass(RootMismatchError, LedgerError)
    assert issubclass(LedgerError, CoffreError)


def test_a_single_leaf_is_its_own_root() -> None:
    leaf = leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    for index, size in ((0, 0), (1, 0), (1, 1), (2, 1)):
        with pytest.raises(ProofShapeError):
            verify_inclusion(leaf, index, size, [], leaf)
    with pytest.raises(RootMismatchError):
        verify_inclusion(leaf, 0, 1, [], EMPTY_ROOT)


def test_the_root_a_proof_leads_to() -> None:
    proof = inclusion_proof(7, 11, _subtree)
    assert root_from_inclusion_proof(LEAVES[7], 7, 11, proof) == ROOT


def test_a_mismatch_names_both_roots() -> None:
    proof = inclusion_proof(3, 11, _subtree)
    with pytest.raises(RootMismatchError) as caught:
        verify_inclusion(LEAVES[4], 3, 11, proof, ROOT)
    assert caught.value.expected == ROOT
    assert caught.value.computed == root_from_inclusion_proof(LEAVES[4], 3, 11, proof)
    assert ROOT.hex() in str(caught.value)


def test_short_and_long_inclusion_proofs_are_misshapen() -> None:
    proof = inclusion_proof(3, 11, _subtree)
    for wrong in (proof[:-1], [*proof, SOME], []):
        with pytest.raises(ProofShapeError):
            verify_inclusion(LEAVES[3], 3, 11, wrong, ROOT)


def test_hashes_of_the_wrong_size_are_misshapen() -> None:
    proof = inclusion_proof(3, 11, _subtree)
    with pytest.raises(ProofShapeError):
        verify_inclusion(b"WrongLeaf", 3, 11, proof, ROOT)
    with pytest.raises(ProofShapeError):
        verify_inclusion(LEAVES[3], 3, 11, proof, ROOT[:31])
    with pytest.raises(ProofShapeError):
        verify_inclusion(LEAVES[3], 3, 11, [*proof[:-1], b""], ROOT)
    with pytest.raises(ProofShapeError):
        verify_consistency(3, 11, consistency_proof(3, 11, _subtree), b"", ROOT)


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2"),
    [
        (0, 0, EMPTY_ROOT, EMPTY_ROOT),
        (0, 1, EMPTY_ROOT, LEAVES[0]),
        (0, 11, EMPTY_ROOT, ROOT),
        (1, 1, LEAVES[0], LEAVES[0]),
        (11, 11, ROOT, ROOT),
    ],
)
def test_trivial_consistency_needs_an_empty_proof(
    size1: int, size2: int, root1: bytes, root2: bytes
) -> None:
    verify_consistency(size1, size2, [], root1, root2)
    with pytest.raises(ProofShapeError):
        verify_consistency(size1, size2, [EMPTY_ROOT], root1, root2)


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2"),
    [
        (0, 0, SOME, SOME),  # the empty tree has one root
        (0, 5, SOME, ROOT),
        (0, 0, EMPTY_ROOT, SOME),
        (1, 1, LEAVES[0], LEAVES[1]),
    ],
)
def test_trivial_consistency_still_checks_the_roots(
    size1: int, size2: int, root1: bytes, root2: bytes
) -> None:
    with pytest.raises(RootMismatchError):
        verify_consistency(size1, size2, [], root1, root2)


@pytest.mark.parametrize(("size1", "size2"), [(1, 0), (2, 1), (-1, 3), (1, 2), (4, 11)])
def test_consistency_needs_sizes_in_order_and_a_proof(size1: int, size2: int) -> None:
    with pytest.raises(ProofShapeError):
        verify_consistency(size1, size2, [], SOME, SOME)


def test_consistency_failures_say_which_root() -> None:
    proof = consistency_proof(3, 11, _subtree)
    old = merkle_root(LEAVES[:3])
    verify_consistency(3, 11, proof, old, ROOT)
    with pytest.raises(RootMismatchError, match="new root"):
        verify_consistency(3, 11, proof, old, SOME)
    with pytest.raises(ForkError, match="old root"):
        verify_consistency(3, 11, proof, SOME, ROOT)
    for wrong in (proof[:-1], [*proof, SOME]):
        with pytest.raises(ProofShapeError):
            verify_consistency(3, 11, wrong, old, ROOT)


def test_only_a_proof_that_leads_to_the_new_root_proves_a_fork() -> None:
    """A proof that leads to the new root is made of the new tree's hashes, so the old root
    it leads to is the true one of its first leaves: another old root is a fork. A proof
    that leads elsewhere (garbled, or under another old root it starts from, as from a
    power of two) proves nothing of the kind, whatever old root it gives."""
    proof = consistency_proof(3, 11, _subtree)
    old = merkle_root(LEAVES[:3])
    with pytest.raises(ForkError):
        verify_consistency(3, 11, proof, SOME, ROOT)
    with pytest.raises(ForkError):
        verify_consistency(5, 5, [], SOME, merkle_root(LEAVES[:5]))
    garbled = [SOME] * len(proof)
    for size, wrong, root in ((3, garbled, old), (4, consistency_proof(4, 11, _subtree), SOME)):
        with pytest.raises(RootMismatchError, match="new root") as raised:
            verify_consistency(size, 11, wrong, root, ROOT)
        assert not isinstance(raised.value, ForkError)
