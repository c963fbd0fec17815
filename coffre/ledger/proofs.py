"""Which subtrees an inclusion or consistency proof needs, and the proofs themselves.

The index maths knows no hashes and no storage, as in transparency-dev/merkle's
``proof/proof.go``: a proof is a list of leaf ranges ``[begin, end)``, each the RFC 9162
subtree MTH(D[begin:end]). A tree serves a proof by handing in a ``SubtreeHash`` that
returns those subtree hashes, from memory or from storage.

Ranges and proofs are ordered as RFC 9162 §2.1.3.1 and §2.1.4.1 emit them: from the leaf
(or the old tree) up to the root.

A log whose subtrees another party stores (the host's ``tree_nodes``) hands out a proof
only once it leads to a root the log signed: ``verified_inclusion_proof`` and
``verified_consistency_proof``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from coffre.ledger.hashing import EMPTY_ROOT, node_hash, split_point
from coffre.ledger.verify import verify_consistency, verify_inclusion

Range = tuple[int, int]
SubtreeHash = Callable[[int, int], bytes]
"""``subtree(begin, end)`` -> MTH(D[begin:end]), for the ranges a proof asks for."""
NodeHash = Callable[[int, int], bytes]
"""``node(level, index)`` -> the hash of the perfect subtree of leaves
``[index * 2**level, (index + 1) * 2**level)``, as a storage-backed tree keeps them."""


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees of PATH(index, D[size]), RFC 9162 §2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    ranges: list[Range] = []
    begin, end = 0, size
    while end - begin > 1:
        mid = begin + split_point(end - begin)
        if index < mid:
            ranges.append((mid, end))
            end = mid
        else:
            ranges.append((begin, mid))
            begin = mid
    ranges.reverse()
    return ranges


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The subtrees of PROOF(size1, D[size2]), RFC 9162 §2.1.4.1, old-tree side first.

    Empty when there is nothing to prove: an empty old tree, or equal sizes.
    """
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 in (0, size2):
        return []
    ranges: list[Range] = []
    begin, end = 0, size2
    whole = True  # SUBPROOF's flag b: is [begin, begin + size1) the whole old tree so far
    while end != size1:
        mid = begin + split_point(end - begin)
        if size1 <= mid:
            ranges.append((mid, end))
            end = mid
        else:
            ranges.append((begin, mid))
            begin = mid
            whole = False
    if not whole:
        ranges.append((begin, end))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
    return [subtree(begin, end) for begin, end in inclusion_ranges(index, size)]


def consistency_proof(size1: int, size2: int, subtree: SubtreeHash) -> list[bytes]:
    """The proof that the tree of ``size2`` leaves extends the tree of ``size1`` leaves."""
    return [subtree(begin, end) for begin, end in consistency_ranges(size1, size2)]


def perfect_ranges(begin: int, end: int) -> list[Range]:
    """The perfect subtrees that make up the RFC 9162 subtree ``[begin, end)``, largest first.

    Such a subtree's ``begin`` is a multiple of the power of two at or above its size (every
    range a proof asks for is), so the binary digits of ``end - begin`` cut it into aligned
    perfect subtrees, and its hash folds theirs from the right.
    """
    size = end - begin
    if size < 1 or begin % (1 << (size - 1).bit_length()):
        raise ValueError(f"[{begin}, {end}) is not a subtree of an RFC 9162 tree")
    ranges: list[Range] = []
    while begin < end:
        width = 1 << ((end - begin).bit_length() - 1)
        ranges.append((begin, begin + width))
        begin += width
    return ranges


def subtree_from_nodes(node: NodeHash) -> SubtreeHash:
    """A ``SubtreeHash`` over a store that keeps only perfect subtrees (levels, tiles)."""

    def subtree(begin: int, end: int) -> bytes:
        hashes = [
            node((e - b).bit_length() - 1, b // (e - b)) for b, e in perfect_ranges(begin, end)
        ]
        root = hashes.pop()
        while hashes:
            root = node_hash(hashes.pop(), root)
        return root

    return subtree


class SignedTree(NamedTuple):
    """A tree size and the root the log signed for it: where a proof handed out must lead."""

    size: int
    root: bytes


def verified_root(size: int, subtree: SubtreeHash, signed: SignedTree) -> bytes:
    """MTH(D[size]) as ``subtree`` gives it, once the consistency proof from it to the
    signed tree, cut from the same subtrees, leads to the signed root: every hash that
    proof folds, the old root among them, then is the true one. LedgerError if not."""
    if size == signed.size:
        return signed.root
    claimed = EMPTY_ROOT if size == 0 else subtree(0, size)
    proof = consistency_proof(size, signed.size, subtree)
    verify_consistency(size, signed.size, proof, claimed, signed.root)
    return claimed


def verified_inclusion_proof(
    index: int, size: int, subtree: SubtreeHash, signed: SignedTree
) -> list[bytes]:
    """``inclusion_proof``, once it leads from the leaf to the root of ``size`` leaves
    that the signed tree vouches for; LedgerError if not."""
    proof = inclusion_proof(index, size, subtree)
    root = verified_root(size, subtree, signed)
    verify_inclusion(subtree(index, index + 1), index, size, proof, root)
    return proof


def verified_consistency_proof(
    size1: int, size2: int, subtree: SubtreeHash, signed: SignedTree
) -> list[bytes]:
    """``consistency_proof``, once it leads to the root of ``size2`` leaves that the
    signed tree vouches for (the old root it also leads to is then the true one, whatever
    ``subtree`` claims for it); LedgerError if not."""
    proof = consistency_proof(size1, size2, subtree)
    if size1 in (0, size2):
        return proof  # empty: nothing to prove, no subtree to trust
    root2 = verified_root(size2, subtree, signed)
    root1 = subtree(0, size1)
    verify_consistency(size1, size2, proof, root1, root2)
    return proof
