"""Building the log's tree: incrementally as leaves arrive, or all at once for an audit.

A ``CompactRange`` (after transparency-dev/merkle's ``compact`` package) holds only the
roots of the perfect subtrees that cover leaves ``[0, size)``, one per set bit of
``size``: O(log n) hashes, enough to append and to give the root at the current size.
It is also what an integrator persists between batches, beside the tree size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from coffre.ledger.hashing import EMPTY_ROOT, HASH_SIZE, node_hash

Node = tuple[int, int, bytes]
"""A perfect subtree: its level (0 for a leaf), its index at that level, and its hash."""
_NODE_PREFIX = b"\x01"  # RFC 9162's, as in ``hashing``


class CompactRange:
    """The frontier of an append-only RFC 9162 tree."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Resume at ``size`` from its perfect-subtree roots, largest (leftmost) first."""
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} frontier hashes")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"frontier hashes are {HASH_SIZE} bytes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        self._add((leaf_hash,), None, 0)

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        self._add(list(leaf_hashes), None, 0)

    def extend_with_nodes(self, leaf_hashes: Sequence[bytes], stride: int = 1) -> list[Node]:
        """Append leaves, and return the perfect subtrees above the leaves they complete at
        every ``stride`` levels (a power of two), as ``(level, index, hash)``: what a store
        keeps to serve proofs and tiles."""
        if stride < 1 or stride & (stride - 1):
            raise ValueError("the stride is a power of two")
        nodes: list[Node] = []
        self._add(leaf_hashes, nodes, stride - 1)
        return nodes

    def _add(self, leaf_hashes: Sequence[bytes], nodes: list[Node] | None, skipped: int) -> None:
        """Append leaves like a binary counter: each trailing 1 bit of the size is a subtree
        to merge. The subtrees merged at levels that are multiples of ``skipped + 1`` go
        into ``nodes``, if given."""
        if any(len(h) != HASH_SIZE for h in leaf_hashes):
            raise ValueError(f"leaf hashes are {HASH_SIZE} bytes")
        sha256 = hashlib.sha256  # node_hash, inline: this loop runs once per leaf
        hashes, size = self._hashes, self._size
        for current in leaf_hashes:
            carry, level = size, 0
            while carry & 1:
                current = sha256(_NODE_PREFIX + hashes.pop() + current).digest()
                carry >>= 1
                level += 1
                if nodes is not None and not level & skipped:
                    nodes.append((level, carry, current))
            hashes.append(current)
            size += 1
        self._size = size

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def root(self) -> bytes:
        """MTH of the leaves so far: the subtree roots folded from the right."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            root = node_hash(h, root)
        return root


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The RFC 9162 root of ``leaf_hashes``, level by level (~1 s for a million leaves).

    Pairing nodes left to right and carrying an odd last node up unchanged gives exactly
    the tree RFC 9162 §2.1.1 defines by splitting at the largest power of two.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    primed = hashlib.sha256(b"\x01")  # node_hash, inlined: this loop is the whole cost
    level = list(leaf_hashes)
    while len(level) > 1:
        pairs = iter(level)
        parents = []
        for left, right in zip(pairs, pairs, strict=False):
            h = primed.copy()
            h.update(left)
            h.update(right)
            parents.append(h.digest())
        if len(level) & 1:
            parents.append(level[-1])
        level = parents
    return level[0]
