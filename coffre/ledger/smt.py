"""The verifiable map: a sparse Merkle tree of 256-bit keys (record locations) to 32-byte
values (the hash of the record's latest log leaf).

Its root, signed in the checkpoint, lets anyone check that a value is the latest for its
key, or that a key has none.

Shape: a tree of branching factor 16, a level per 4 bits of the key (64 levels), with the
single-leaf shortcut of Diem's Jellyfish tree and of Dahlberg, Pulls and Peeters,
"Efficient Sparse Merkle Trees", 2016:

- an empty subtree hashes to ``EMPTY``, 32 zero bytes, at every level;
- a subtree holding exactly one key hashes to that key's leaf,
  SHA-256(0x00 || key || value); the key in the hash pins the leaf to its path;
- any other subtree is a branch, SHA-256(0x01 || h0 || h1 || ... || h15), its sixteen
  children's hashes in the order of their 4 bits.

Sixteen children a node rather than two: a batch of writes hashes about a quarter as many
inner nodes (log16 rather than log2 of the map's size per key, each hash of 513 bytes costing
under twice one of 65, whose cost is mostly the call), which is most of what a write
costs the log. A proof lists up to 15 siblings a level instead of one: about 70 hashes
for a million keys instead of about 20, some 2.2 kilobytes.

Branches are kept in a flat dict keyed by the node's id, ``1 << 4 * depth | prefix`` (the
prefix being the key's first ``depth`` nibbles; the root is 1, a node's children are
``16 * id + nibble``), each as the 513 bytes it hashes; lone leaves as ``key || value``:
a map of a million keys is about 1.3 million objects the garbage collector need not visit.

A batch of keys is written in two passes (``SparseMerkleMap.changes``): first where each
key's leaf goes, which follows from the keys' common prefixes with their neighbours in
the batch and with the stored keys; then, the keys in order, the branches on each one's
path, each hashed once, when the next key's path leaves it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from coffre.ledger.errors import ProofShapeError, RootMismatchError
from coffre.ledger.hashing import HASH_SIZE, leaf_hash

KEY_BYTES = 32
BITS = 8 * KEY_BYTES
LEVEL_BITS = 4
FANOUT = 1 << LEVEL_BITS
LEVELS = BITS // LEVEL_BITS
EMPTY = bytes(HASH_SIZE)
"""The hash of an empty subtree, and so the root of the empty map."""
_BITMAP_BITS = LEVELS * FANOUT
BITMAP_BYTES = _BITMAP_BITS // 8
"""A proof's bitmap: a bit per child of each level's branch."""
_LEAF_PREFIX, _BRANCH_PREFIX = b"\x00", b"\x01"  # RFC 9162's, as in ``hashing``
_EMPTY_BRANCH = _BRANCH_PREFIX + EMPTY * FANOUT
_MARK = 1 << BITS
"""Set above a key's bits so that ``(_MARK | key) >> (BITS - 4 * depth)`` is the id of the
key's node at ``depth``."""
_LOW = FANOUT - 1


def map_leaf_hash(key: bytes, value: bytes) -> bytes:
    """SHA-256(0x00 || key || value)."""
    return leaf_hash(key + value)


def branch_hash(children: list[bytes]) -> bytes:
    """SHA-256(0x01 || the 16 children's hashes)."""
    return hashlib.sha256(_BRANCH_PREFIX + b"".join(children)).digest()


@dataclass(slots=True)
class MapChanges:
    """What a batch writes: branches (the bytes each hashes) and lone leaves
    (``key || value``) by node id, the ids of former lone leaves that now have keys below
    them, and the map's new root."""

    root: bytes
    branches: dict[int, bytes] = field(default_factory=dict)
    leaves: dict[int, bytes] = field(default_factory=dict)
    unleafed: set[int] = field(default_factory=set)


class MemoryNodeStore:
    """The non-empty nodes: branches, as the bytes each hashes, and lone leaves, as
    ``key || value``, each by node id; and the root's hash."""

    def __init__(self) -> None:
        self.root = EMPTY
        self.branches: dict[int, bytes] = {}
        self.leaves: dict[int, bytes] = {}

    def apply(self, changes: MapChanges) -> None:
        self.root = changes.root
        self.branches.update(changes.branches)
        for node in changes.unleafed:
            del self.leaves[node]
        self.leaves.update(changes.leaves)

    def __len__(self) -> int:
        return len(self.branches) + len(self.leaves)


@dataclass(frozen=True, slots=True)
class MapProof:
    """The siblings along a key's path, from the root's children down to level ``depth``.

    ``bitmap`` has bit ``16 * (d - 1) + c`` (most significant first) set when child ``c``
    of the branch at level ``d - 1`` on the path is not the path's own and not ``EMPTY``;
    only those children are listed, level by level from the top, each level's in the order
    of ``c``. ``neighbour`` is the other key's leaf where the path ends, when that shows
    the key absent.
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
        return self._store.root

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
        branches = self._store.branches
        bitmap = 0
        siblings = []
        for d in range(depth):
            branch = branches[marked >> (BITS - LEVEL_BITS * d)]
            own = _child(marked, d)
            for child in range(FANOUT):
                sibling = branch[1 + HASH_SIZE * child : 1 + HASH_SIZE * (child + 1)]
                if child != own and sibling != EMPTY:
                    bitmap |= _bit(d, child)
                    siblings.append(sibling)
        neighbour = None
        stored = self._store.leaves.get(node)
        if stored is not None and stored[:KEY_BYTES] != key:
            neighbour = (stored[:KEY_BYTES], stored[KEY_BYTES:])
        return MapProof(depth, bitmap.to_bytes(BITMAP_BYTES, "big"), tuple(siblings), neighbour)

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

        Every branch above the changed leaves is hashed once, however many of them share it.
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
        updated key pushes down (unless the batch updates its key too), with the level
        its leaf cannot sit above (where its path ends in the stored tree: the other
        stored keys share less with it); and the ids of those stored leaves."""
        store = self._store
        guess = max(len(store.leaves).bit_length() - 1, 0) // LEVEL_BITS  # about where paths end
        floors: dict[int, _Floor] = {}
        unleafed: set[int] = set()
        for key, value in updates.items():
            if len(key) != KEY_BYTES or len(value) != HASH_SIZE:
                _key(key)  # checked inline above, at no call per key: now raise what is wrong
                _value(value)
            k = int.from_bytes(key, "big")
            depth, node = _path_end(store, _MARK | k, guess)
            floors[k] = (key + value, depth)
            stored = store.leaves.get(node)
            if stored is not None:
                unleafed.add(node)
                other = stored[:KEY_BYTES]
                if other != key and other not in updates:
                    floors[int.from_bytes(other, "big")] = (stored, depth)
        return floors, unleafed

    def _hash_batch(self, floors: dict[int, _Floor], changes: MapChanges) -> bytes:
        """Put the batch's leaves and hash the branches above them; return the root.

        A leaf sits one level below the longest prefix its key shares with another: a
        stored key (its floor) or one of the batch, the batch's keys sharing most with their
        neighbours in key order. Leaves are taken in that order; the branches on a key's
        path stay open, gathering their changed children, until the next key's path
        leaves them; each is then hashed, from its stored bytes or an empty branch, and
        its hash handed to its parent, still open. Children the batch does not change
        keep their stored hashes.
        """
        stored = self._store.branches
        written, leaves = changes.branches, changes.leaves
        sha256 = hashlib.sha256
        path: list[int] = []  # the open branches' ids, the root's first
        changed: list[list[tuple[int, bytes]]] = []  # each one's changed children
        order = sorted(floors)
        # the levels each key shares with the next one (the last with none)
        shared = [(BITS - (k ^ n).bit_length()) // LEVEL_BITS for k, n in pairwise(order)]
        shared.append(-1)
        before = -1  # the levels the key shares with the previous one
        root = EMPTY
        for k, after in zip(order, shared, strict=True):
            pair, depth = floors[k]  # from its floor, down below its neighbours' prefixes
            if depth <= before:
                depth = before + 1
            if depth <= after:
                depth = after + 1
            marked = _MARK | k
            for d in range(len(path), depth):
                path.append(marked >> (BITS - LEVEL_BITS * d))
                changed.append([])
            node = marked >> (BITS - LEVEL_BITS * depth)
            leaves[node] = pair
            h = sha256(_LEAF_PREFIX + pair).digest()
            if not depth:
                return h  # the only key
            changed[-1].append((node & _LOW, h))
            while len(path) > after + 1:
                node = path.pop()
                branch = stored.get(node, _EMPTY_BRANCH)
                for child, h in changed.pop():
                    at = 1 + HASH_SIZE * child
                    branch = branch[:at] + h + branch[at + HASH_SIZE :]
                written[node] = branch
                h = sha256(branch).digest()
                if path:
                    changed[-1].append((node & _LOW, h))
                else:
                    root = h
            before = after
        return root


_Floor = tuple[bytes, int]
"""A leaf of a batch: ``key || value``, and its floor."""


def _path_end(store: MemoryNodeStore, marked: int, guess: int) -> tuple[int, int]:
    """The level and id of the first node on a key's path (``marked``: ``_MARK | key``)
    that is not a branch (absent, or a lone leaf), looked for from level ``guess`` down or
    up: a branch's ancestors are all branches."""
    branches = store.branches
    depth = guess
    node = marked >> (BITS - LEVEL_BITS * depth)
    if node in branches:
        while node in branches:
            depth += 1
            node = marked >> (BITS - LEVEL_BITS * depth)
        return depth, node
    while depth and node >> LEVEL_BITS not in branches:
        depth, node = depth - 1, node >> LEVEL_BITS
    return depth, node


def verify_map_proof(root: bytes, key: bytes, value: bytes | None, proof: MapProof) -> None:
    """Check that ``key`` maps to ``value`` (None: to nothing) in the map with ``root``.

    Raises ``ProofShapeError`` for a malformed proof, ``RootMismatchError`` otherwise.
    """
    k = _key(key)
    bits = _check_shape(proof, k)
    if value is not None:
        if proof.neighbour is not None:
            raise ProofShapeError("a proof of a value ends at the key's own leaf")
        h = map_leaf_hash(key, _value(value))
    elif proof.neighbour is not None:
        other, other_value = proof.neighbour
        n = _key(other)
        if n == k or (n ^ k) >> (BITS - LEVEL_BITS * proof.depth):
            raise ProofShapeError("the neighbour's leaf does not sit on the key's path")
        h = map_leaf_hash(other, _value(other_value))
    else:
        h = EMPTY
    siblings = list(proof.siblings)
    for d in range(proof.depth - 1, -1, -1):
        own = _child(k, d)
        listed = bits >> (_BITMAP_BITS - FANOUT * (d + 1)) & ((1 << FANOUT) - 1)
        start = len(siblings) - listed.bit_count()  # the level's siblings end the list
        given = iter(siblings[start:])
        del siblings[start:]
        children = [
            h if child == own else next(given) if listed >> (FANOUT - 1 - child) & 1 else EMPTY
            for child in range(FANOUT)
        ]
        h = branch_hash(children)
    if h != root:
        raise RootMismatchError(root, h, "map root")


def _check_shape(proof: MapProof, key: int) -> int:
    if not 0 <= proof.depth <= LEVELS or len(proof.bitmap) != BITMAP_BYTES:
        raise ProofShapeError(
            f"a map proof is at most {LEVELS} levels deep, with a {BITMAP_BYTES}-byte bitmap"
        )
    bits = int.from_bytes(proof.bitmap, "big")
    if bits & ((1 << (_BITMAP_BITS - FANOUT * proof.depth)) - 1):
        raise ProofShapeError("the bitmap marks siblings below the proof's depth")
    for d in range(proof.depth):
        if bits & _bit(d, _child(key, d)):
            raise ProofShapeError("the bitmap marks the key's own path as a sibling")
    if bits.bit_count() != len(proof.siblings):
        raise ProofShapeError("the bitmap and the siblings do not agree")
    if any(len(s) != HASH_SIZE for s in proof.siblings):
        raise ProofShapeError(f"a sibling hash is {HASH_SIZE} bytes")
    return bits


def _child(key: int, depth: int) -> int:
    """Which child of its branch at ``depth`` a key's path takes: its next 4 bits (``key``
    marked or not)."""
    return key >> (BITS - LEVEL_BITS * (depth + 1)) & _LOW


def _bit(depth: int, child: int) -> int:
    """A proof's bitmap bit for ``child`` of the branch at ``depth``."""
    return 1 << (_BITMAP_BITS - 1 - FANOUT * depth - child)


def _key(key: bytes) -> int:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a map key is {KEY_BYTES} bytes")
    return int.from_bytes(key, "big")


def _value(value: bytes) -> bytes:
    if len(value) != HASH_SIZE:
        raise ValueError(f"a map value is {HASH_SIZE} bytes")
    return value
