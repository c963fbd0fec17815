"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, SHA-256.

The 0x00 and 0x01 prefixes keep a leaf from ever passing for an interior node (a second
preimage), so any RFC 6962 or RFC 9162 verifier can check Coffre's proofs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the tree with no leaves: SHA-256 of nothing."""

_LEAF = hashlib.sha256(b"\x00")
_NODE = hashlib.sha256(b"\x01")


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    h = _LEAF.copy()
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    # Copying a primed hash object is ~30% faster than hashing a concatenation.
    h = _NODE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1, written as the definition reads.

    ``coffre.ledger.tree.root_of`` computes the same root level by level, faster.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def _subtree_root(leaf_hashes: Sequence[bytes], begin: int, end: int) -> bytes:
    if end - begin == 1:
        return leaf_hashes[begin]
    mid = begin + split_point(end - begin)
    return node_hash(_subtree_root(leaf_hashes, begin, mid), _subtree_root(leaf_hashes, mid, end))
