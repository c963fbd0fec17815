"""The verifiable map: a sparse Merkle tree of 256-bit keys (record locations) to 32-byte
values (the hash of the record's latest log leaf).

Its root, signed in the checkpoint, lets anyone check that a value is the latest for its
key, or that a key has none, with a proof of at most 256 hashes, usually about log2(n).

Shape (the single-leaf shortcut of Diem's Jellyfish tree and of Dahlberg, Pulls and
Peeters, "Efficient Sparse Merkle Trees", 2016):

- an empty subtree hashes to ``EMPTY``, the default hash, at every depth;
- a subtree holding exactly one key hashes to that key's leaf,
  SHA-256(0x00 || key || value); the key in the hash pins the leaf to its path;
- any other subtree hashes as an RFC 9162 node, SHA-256(0x01 || left || right).

The classic tree, with every leaf at depth 256, costs 256 hashes per update and keeps
~240 nodes per key; with the shortcut an update costs about log2(n) hashes (~60 µs in a
map of 100,000 keys) and the store keeps fewer than three nodes per key.

Nodes are kept by ``(depth, prefix)``, the prefix being the key's first ``depth`` bits,
behind ``NodeStore`` so that a storage-backed map can follow the in-memory one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from coffre.ledger.errors import ProofShapeError, RootMismatchError
from coffre.ledger.hashing import HASH_SIZE, leaf_hash, node_hash

KEY_BYTES = 32
DEPTH = 8 * KEY_BYTES
EMPTY = bytes(HASH_SIZE)
"""The hash of an empty subtree, and so the root of the empty map."""


def map_leaf_hash(key: bytes, value: bytes) -> bytes:
    """SHA-256(0x00 || key || value)."""
    return leaf_hash(key + value)


class MapNode(NamedTuple):
    """A stored node: its hash, and the (key, value) of its subtree's only leaf, if one.

    A named tuple rather than a dataclass: an update makes one per level, and a tuple is
    the cheapest object Python builds.
    """

    hash: bytes
    leaf: tuple[bytes, bytes] | None = None


class NodeStore(Protocol):
    """Where the map keeps its nodes."""

    def get(self, depth: int, prefix: int) -> MapNode | None: ...

    def put(self, depth: int, prefix: int, node: MapNode) -> None: ...


class MemoryNodeStore:
    """Nodes in one dict per depth."""

    def __init__(self) -> None:
        self._levels: list[dict[int, MapNode]] = [{} for _ in range(DEPTH + 1)]

    def get(self, depth: int, prefix: int) -> MapNode | None:
        return self._levels[depth].get(prefix)

    def put(self, depth: int, prefix: int, node: MapNode) -> None:
        self._levels[depth][prefix] = node

    def update(self, nodes: Mapping[tuple[int, int], MapNode]) -> None:
        """Put many nodes, keyed by ``(depth, prefix)``: what another store wrote."""
        for (depth, prefix), node in nodes.items():
            self._levels[depth][prefix] = node

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)


@dataclass(frozen=True, slots=True)
class MapProof:
    """The siblings along a key's path, from depth 1 down to ``depth``.

    ``bitmap`` has bit ``d - 1`` (most significant first) set when the sibling at depth
    ``d`` is not ``EMPTY``; only those siblings are listed. ``neighbour`` is the other
    key's leaf where the path ends, when that shows the key absent.
    """

    depth: int
    bitmap: bytes
    siblings: tuple[bytes, ...]
    neighbour: tuple[bytes, bytes] | None = None


class SparseMerkleMap:
    """The verifiable map over a ``NodeStore`` (in memory by default)."""

    def __init__(self, store: NodeStore | None = None) -> None:
        self._store: NodeStore = MemoryNodeStore() if store is None else store

    @property
    def root(self) -> bytes:
        node = self._store.get(0, 0)
        return EMPTY if node is None else node.hash

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        node, _, _ = self._descend(key)
        if node is not None and node.leaf is not None and node.leaf[0] == key:
            return node.leaf[1]
        return None

    def prove(self, key: bytes) -> MapProof:
        """A proof of the value of ``key``, or of its absence."""
        node, depth, path = self._descend(key)
        bitmap = 0
        siblings = []
        for d, sibling in enumerate(path, start=1):
            if sibling is not None:
                bitmap |= 1 << (DEPTH - d)
                siblings.append(sibling.hash)
        neighbour = None
        if node is not None and node.leaf is not None and node.leaf[0] != key:
            neighbour = node.leaf
        return MapProof(depth, bitmap.to_bytes(KEY_BYTES, "big"), tuple(siblings), neighbour)

    def update(self, updates: Mapping[bytes, bytes]) -> bytes:
        """Set each key to its value in one pass, and return the new root.

        Every node above the changed leaves is hashed once, however many of them share it.
        """
        items = sorted((_key(key), _value(value)) for key, value in updates.items())
        if items:
            self._update(0, 0, self._store.get(0, 0), items)
        return self.root

    def _descend(self, key: bytes) -> tuple[MapNode | None, int, list[MapNode | None]]:
        """The node where ``key``'s path ends, its depth, and the siblings on the way."""
        k = _key(key)
        node = self._store.get(0, 0)
        depth = 0
        path: list[MapNode | None] = []
        while node is not None and node.leaf is None:
            child = k >> (DEPTH - 1 - depth)
            path.append(self._store.get(depth + 1, child ^ 1))
            node = self._store.get(depth + 1, child)
            depth += 1
        return node, depth, path

    def _update(
        self, depth: int, prefix: int, node: MapNode | None, items: list[tuple[int, bytes]]
    ) -> MapNode:
        """Write ``items`` (sorted, non-empty, all under this node) and return the new node."""
        if len(items) == 1:
            return self._update_one(depth, prefix, node, *items[0])
        leaf = None if node is None else node.leaf
        if node is None or leaf is not None:
            if leaf is not None:
                items = _merge_leaf(items, leaf)
            if len(items) == 1:
                key, value = items[0][0].to_bytes(KEY_BYTES, "big"), items[0][1]
                return self._put(depth, prefix, MapNode(map_leaf_hash(key, value), (key, value)))
            left = right = None
        else:
            left = self._store.get(depth + 1, 2 * prefix)
            right = self._store.get(depth + 1, 2 * prefix + 1)
        # A 1-tuple sorts before any item with the same key: the first item right of the split.
        half = bisect_left(items, ((2 * prefix + 1) << (DEPTH - 1 - depth),))
        if half:
            left = self._update(depth + 1, 2 * prefix, left, items[:half])
        if half < len(items):
            right = self._update(depth + 1, 2 * prefix + 1, right, items[half:])
        return self._put(depth, prefix, MapNode(node_hash(_hash(left), _hash(right))))

    def _update_one(
        self, depth: int, prefix: int, node: MapNode | None, k: int, value: bytes
    ) -> MapNode:
        """``_update`` of a single key, in a loop: below the levels a batch shares, each
        key goes down a path of its own, where recursing and splitting lists cost more
        than the hashes."""
        get, put = self._store.get, self._store.put
        path: list[tuple[int, int, bytes, int]] = []
        while node is not None and node.leaf is None:
            bit = k >> (DEPTH - 1 - depth) & 1
            child = 2 * prefix + bit
            path.append((depth, prefix, _hash(get(depth + 1, child ^ 1)), bit))
            node = get(depth + 1, child)
            depth, prefix = depth + 1, child
        key = k.to_bytes(KEY_BYTES, "big")
        top = MapNode(map_leaf_hash(key, value), (key, value))
        if node is None or node.leaf is None or node.leaf[0] == key:
            put(depth, prefix, top)
        else:
            top = self._split(depth, k, top, node)
        h = top.hash
        for d, p, sibling, bit in reversed(path):
            h = node_hash(sibling, h) if bit else node_hash(h, sibling)
            top = MapNode(h)
            put(d, p, top)
        return top

    def _split(self, depth: int, k: int, mine: MapNode, other: MapNode) -> MapNode:
        """Put the leaf ``mine`` (key ``k``) and the lone leaf ``other`` it meets at
        ``depth`` where their keys part, with the nodes above them up to ``depth``."""
        assert other.leaf is not None
        put = self._store.put
        n = int.from_bytes(other.leaf[0], "big")
        below = DEPTH - (k ^ n).bit_length() + 1  # the depth of the first differing bit, + 1
        put(below, k >> (DEPTH - below), mine)
        put(below, n >> (DEPTH - below), other)
        right = k >> (DEPTH - below) & 1
        h = node_hash(other.hash, mine.hash) if right else node_hash(mine.hash, other.hash)
        for d in range(below - 1, depth - 1, -1):
            if d < below - 1:
                h = node_hash(EMPTY, h) if k >> (DEPTH - 1 - d) & 1 else node_hash(h, EMPTY)
            put(d, k >> (DEPTH - d), MapNode(h))
        return MapNode(h)

    def _put(self, depth: int, prefix: int, node: MapNode) -> MapNode:
        self._store.put(depth, prefix, node)
        return node


def verify_map_proof(root: bytes, key: bytes, value: bytes | None, proof: MapProof) -> None:
    """Check that ``key`` maps to ``value`` (None: to nothing) in the map with ``root``.

    Raises ``ProofShapeError`` for a malformed proof, ``RootMismatchError`` otherwise.
    """
    k = _key(key)
    bits = _check_shape(proof)
    if value is not None:
        if proof.neighbour is not None:
            raise ProofShapeError("a proof of a value ends at the key's own leaf")
        h = map_leaf_hash(key, _value(value))
    elif proof.neighbour is not None:
        other, other_value = proof.neighbour
        n = _key(other)
        if n == k or (n ^ k) >> (DEPTH - proof.depth):
            raise ProofShapeError("the neighbour's leaf does not sit on the key's path")
        h = map_leaf_hash(other, _value(other_value))
    else:
        h = EMPTY
    siblings = list(proof.siblings)
    for d in range(proof.depth, 0, -1):
        sibling = siblings.pop() if bits >> (DEPTH - d) & 1 else EMPTY
        h = node_hash(sibling, h) if k >> (DEPTH - d) & 1 else node_hash(h, sibling)
    if h != root:
        raise RootMismatchError(root, h, "map root")


def _check_shape(proof: MapProof) -> int:
    if not 0 <= proof.depth <= DEPTH or len(proof.bitmap) != KEY_BYTES:
        raise ProofShapeError("a map proof is at most 256 deep, with a 32-byte bitmap")
    bits = int.from_bytes(proof.bitmap, "big")
    if bits & ((1 << (DEPTH - proof.depth)) - 1):
        raise ProofShapeError("the bitmap marks siblings below the proof's depth")
    if bits.bit_count() != len(proof.siblings):
        raise ProofShapeError("the bitmap and the siblings do not agree")
    if any(len(s) != HASH_SIZE for s in proof.siblings):
        raise ProofShapeError(f"a sibling hash is {HASH_SIZE} bytes")
    return bits


def _key(key: bytes) -> int:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a map key is {KEY_BYTES} bytes")
    return int.from_bytes(key, "big")


def _value(value: bytes) -> bytes:
    if len(value) != HASH_SIZE:
        raise ValueError(f"a map value is {HASH_SIZE} bytes")
    return value


def _merge_leaf(
    items: list[tuple[int, bytes]], leaf: tuple[bytes, bytes]
) -> list[tuple[int, bytes]]:
    """``items`` with the subtree's lone leaf, which moves down beside them unless updated."""
    k = int.from_bytes(leaf[0], "big")
    at = bisect_left(items, (k,))
    if at < len(items) and items[at][0] == k:
        return items
    return [*items[:at], (k, leaf[1]), *items[at:]]


def _hash(node: MapNode | None) -> bytes:
    return EMPTY if node is None else node.hash
