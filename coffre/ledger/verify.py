"""Verification of inclusion and consistency proofs, RFC 9162 §2.1.3.2 and §2.1.4.2.

Each verifier returns nothing and raises on failure: ``ProofShapeError`` when the proof
cannot be a proof for these sizes (wrong length, impossible index, hash of the wrong size),
``RootMismatchError`` when it is well formed but leads elsewhere, ``ForkError`` when a
consistency proof leads to the new root and shows the old one is not its tree's.
"""

from __future__ import annotations

from collections.abc import Sequence

from coffre.ledger.errors import ForkError, ProofShapeError, RootMismatchError
from coffre.ledger.hashing import EMPTY_ROOT, HASH_SIZE, node_hash


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` leads to from leaf ``index`` of a tree of ``size`` leaves."""
    _check_hashes(leaf_hash, *proof)
    if not 0 <= index < size:
        raise ProofShapeError(f"no leaf {index} in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofShapeError(f"inclusion proof longer than a tree of size {size} needs")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofShapeError(f"inclusion proof shorter than a tree of size {size} needs")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``."""
    _check_hashes(root)
    _expect(root, root_from_inclusion_proof(leaf_hash, index, size, proof), "root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` leaves with ``root2`` extends the one of ``size1``.

    Sizes 0 and equal sizes need an empty proof; the empty tree's root is known, so it is
    checked too. The new root is checked first: only a proof that leads to it says what
    the old root must be, and one that says another is a ``ForkError``, as are two roots
    of one size.
    """
    _check_hashes(root1, root2, *proof)
    if not 0 <= size1 <= size2:
        raise ProofShapeError(f"no consistency proof from size {size1} to size {size2}")
    if size1 in (0, size2):
        if proof:
            raise ProofShapeError(f"a consistency proof from {size1} to {size2} is empty")
        if size1 == 0:
            _expect(EMPTY_ROOT, root1, "old root")
        if size1 == size2:
            _expect(root2, root1, "old root", ForkError)
        return
    if not proof:
        raise ProofShapeError(f"a consistency proof from {size1} to {size2} is not empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofShapeError(f"consistency proof longer than {size1} to {size2} needs")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofShapeError(f"consistency proof shorter than {size1} to {size2} needs")
    _expect(root2, sr, "new root")
    _expect(root1, fr, "old root", ForkError)


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofShapeError(f"a hash of {len(h)} bytes where {HASH_SIZE} are due")


def _expect(
    expected: bytes,
    computed: bytes,
    what: str,
    mismatch: type[RootMismatchError] = RootMismatchError,
) -> None:
    if computed != expected:
        raise mismatch(expected, computed, what)
