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
~240 nodes per key; with the shortcut an update costs about log2(n) hashes and the store
keeps fewer than three nodes per key.

Nodes are kept in flat dicts keyed by the node's id, ``1 << depth | prefix`` (the prefix
being the key's first ``depth`` bits; the root is 1, a node's children are ``2 * id`` and
``2 * id + 1``), with hashes and key-value pairs as plain bytes: a map of a million keys
is a few million objects the garbage collector need not visit.

A batch of keys is written in two passes (``SparseMerkleMap.changes``): first where each
key's leaf goes, which follows from the keys' common prefixes with their neighbours in
the batch and with the stored keys; then the hashes, each key alone up its own path to
where it meets another key of the batch, and the shared nodes above level by level, so
each node is hashed once per batch however many keys lie below it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from coffre.ledger.errors import ProofShapeError, RootMismatchError
from coffre.ledger.hashing import HASH_SIZE, leaf_hash, node_hash

KEY_BYTES = 32
DEPTH = 8 * KEY_BYTES
EMPTY = bytes(HASH_SIZE)
"""The hash of an empty subtree, and so the root of the empty map."""
ROOT = 1
"""The root's node id."""
_LEAF_PREFIX, _NODE_PREFIX = b"\x00", b"\x01"  # RFC 9162's, as in ``hashing``
_MARK = 1 << DEPTH
"""Set above a key's bits so that ``(_MARK | key) >> (DEPTH - depth)`` is the id of the
key's node at ``depth``."""


def map_leaf_hash(key: bytes, value: bytes) -> bytes:
    """SHA-256(0x00 || key || value)."""
    return leaf_hash(key + value)


@dataclass(slots=True)
class MapChanges:
    """What a batch writes: node hashes and lone leaves (``key || value``) by node id, the
    ids of former lone leaves that now have keys below them, and the map's new root."""

    root: bytes
    hashes: dict[int, bytes] = field(default_factory=dict)
    leaves: dict[int, bytes] = field(default_factory=dict)
    unleafed: set[int] = field(default_factory=set)


class MemoryNodeStore:
    """The non-empty nodes: their hashes, and ``key || value`` of those that are a lone
    leaf, each by node id."""

    def __init__(self) -> None:
        self.hashes: dict[int, bytes] = {}
        self.leaves: dict[int, bytes] = {}

    def apply(self, changes: MapChanges) -> None:
        self.hashes.update(changes.hashes)
        for node in changes.unleafed:
            del self.leaves[node]
        self.leaves.update(changes.leaves)

    def __len__(self) -> int:
        return len(self.hashes)


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
    """The verifiable map over a ``MemoryNodeStore`` (a new one by default)."""

    def __init__(self, store: MemoryNodeStore | None = None) -> None:
        self._store = MemoryNodeStore() if store is None else store

    @property
    def root(self) -> bytes:
        return self._store.hashes.get(ROOT, EMPTY)

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        _, node = _path_end(self._store, _MARK | _key(key), 0)
        stored = self._store.leaves.get(node)
        if stored is not None and stored[:KEY_BYTES] == key:
            return stored[KEY_BYTES:]
        return None

    def prove(self, key: bytes) -> MapProof:
        """A proof of the value of ``key``, or of its absence."""
        marked = _MARK | _key(key)
        depth, node = _path_end(self._store, marked, 0)
        hashes = self._store.hashes
        bitmap = 0
        siblings = []
        for d in range(1, depth + 1):
            sibling = hashes.get((marked >> (DEPTH - d)) ^ 1)
            if sibling is not None:
                bitmap |= 1 << (DEPTH - d)
                siblings.append(sibling)
        neighbour = None
        stored = self._store.leaves.get(node)
        if stored is not None and stored[:KEY_BYTES] != key:
            neighbour = (stored[:KEY_BYTES], stored[KEY_BYTES:])
        return MapProof(depth, bitmap.to_bytes(KEY_BYTES, "big"), tuple(siblings), neighbour)

    def update(self, updates: Mapping[bytes, bytes]) -> bytes:
        """Set each key to its value in one pass, and return the new root."""
        changes = self.changes(updates)
        self._store.apply(changes)
        return changes.root

    def apply(self, changes: MapChanges) -> None:
        """Take over what ``changes`` computed (on this map as it still is)."""
        self._store.apply(changes)

    def changes(self, updates: Mapping[bytes, bytes]) -> MapChanges:
        """What setting each key to its value writes, leaving the map as it is.

        Every node above the changed leaves is hashed once, however many of them share it.
        """
        if not updates:
            return MapChanges(self.root)
        floors, unleafed = self._floors(updates)
        changes = MapChanges(EMPTY, unleafed=unleafed)
        changes.root = self._hash_batch(floors, changes)
        changes.unleafed.difference_update(changes.leaves)
        return changes

    def _floors(self, updates: Mapping[bytes, bytes]) -> tuple[dict[int, _Floor], set[int]]:
        """The leaves a batch writes: each updated key, and each stored lone leaf an
        updated key pushes down (unless the batch updates its key too), with the depth
        its leaf cannot sit above (where its path ends in the stored tree: the other
        stored keys share less with it); and the ids of those stored leaves."""
        store = self._store
        guess = max(len(store.leaves).bit_length() - 1, 0)  # about where paths end
        floors: dict[int, _Floor] = {}
        unleafed: set[int] = set()
        for key, value in updates.items():
            if len(key) != KEY_BYTES or len(value) != HASH_SIZE:
                _key(key)  # checked inline above, at no call per key: now raise what is wrong
                _value(value)
            k = int.from_bytes(key, "big")
            depth, node = _path_end(store, _MARK | k, guess)
            floors[k] = (key + value, depth, None)
            stored = store.leaves.get(node)
            if stored is not None:
                unleafed.add(node)
                other = stored[:KEY_BYTES]
                if other != key and other not in updates:
                    floors[int.from_bytes(other, "big")] = (stored, depth, store.hashes[node])
        return floors, unleafed

    def _hash_batch(self, floors: dict[int, _Floor], changes: MapChanges) -> bytes:
        """Put the batch's leaves and hash their paths; return the root.

        A leaf sits one below the longest prefix its key shares with another: a stored key
        (its floor) or one of the batch, the batch's keys sharing most with their
        neighbours in key order. Leaves are taken in that order; each one's path is hashed
        up to just below where it meets the next key's, and waits there on a stack for the
        next leaves' paths, which take it as their left sibling on the way up. Every other
        sibling on the way holds no key of the batch, and is read from the store.
        """
        stored = self._store.hashes
        written, leaves = changes.hashes, changes.leaves
        sha256 = hashlib.sha256  # the hashes of ``hashing``, inline: a call costs as much
        waiting = [0]  # node ids (0 is none's), and below their hashes
        waiting_hashes = [EMPTY]
        order = sorted(floors)
        last = len(order) - 1
        before = -1  # the prefix the key shares with the previous one (bits)
        for i, k in enumerate(order):
            after = DEPTH - (k ^ order[i + 1]).bit_length() if i < last else -1
            pair, depth, h = floors[k]  # from its floor, down below its neighbours' prefixes
            if depth <= before:
                depth = before + 1
            if depth <= after:
                depth = after + 1
            node = (_MARK | k) >> (DEPTH - depth)
            leaves[node] = pair
            if h is None:
                h = sha256(_LEAF_PREFIX + pair).digest()
            written[node] = h
            for _ in range(depth - after - 1):
                sibling = node ^ 1
                if sibling == waiting[-1]:
                    waiting.pop()
                    h = sha256(_NODE_PREFIX + waiting_hashes.pop() + h).digest()
                elif node & 1:
                    h = sha256(_NODE_PREFIX + stored.get(sibling, EMPTY) + h).digest()
                else:
                    h = sha256(_NODE_PREFIX + h + stored.get(sibling, EMPTY)).digest()
                node >>= 1
                written[node] = h
            waiting.append(node)
            waiting_hashes.append(h)
            before = after
        return waiting_hashes[-1]  # the last path went up to the root


_Floor = tuple[bytes, int, bytes | None]
"""A leaf of a batch: ``key || value``, its floor, and its hash if it is a stored one."""


def _path_end(store: MemoryNodeStore, marked: int, guess: int) -> tuple[int, int]:
    """The depth and id of the first node on a key's path (``marked``: ``_MARK | key``)
    that is absent or a lone leaf, looked for from ``guess`` down or up: a node's
    ancestors are all present."""
    hashes, leaves = store.hashes, store.leaves
    depth = guess
    node = marked >> (DEPTH - depth)
    if node in hashes:
        while node not in leaves:
            depth += 1
            node = marked >> (DEPTH - depth)
            if node not in hashes:
                break
        return depth, node
    while depth:
        parent = node >> 1
        if parent in hashes:
            return (depth - 1, parent) if parent in leaves else (depth, node)
        depth, node = depth - 1, parent
    return 0, node


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
