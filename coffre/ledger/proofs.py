"""Which subtrees an inclusion or consistency proof needs, and the proofs themselves.

The index maths knows no hashes and no storage, as in transparency-dev/merkle's
``proof/proof.go``: a proof is a list of leaf ranges ``[begin, end)``, each the RFC 9162
subtree MTH(D[begin:end]). A tree serves a proof by handing in a ``SubtreeHash`` that
returns those subtree hashes, from memory or from storage.

Ranges and proofs are ordered as RFC 9162 §2.1.3.1 and §2.1.4.1 emit them: from the leaf
(or the old tree) up to the root.
"""

from __future__ import annotations

from collections.abc import Callable

from coffre.ledger.hashing import node_hash, split_point

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
