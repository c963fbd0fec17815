"""The verifiable map: roots against a plain recursive definition, proofs, batches."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.ledger import (
    MapProof,
    MemoryNodeStore,
    ProofShapeError,
    RootMismatchError,
    SparseMerkleMap,
    verify_map_proof,
)
from coffre.ledger.smt import BITMAP_BYTES, EMPTY, LEVELS, map_leaf_hash

hashes = st.binary(min_size=32, max_size=32)
# Keys near one another share long prefixes, so that leaves sit deep in the tree.
near = st.builds(
    lambda base, tail, cut: base[:cut] + tail[cut:],
    st.just(bytes(range(32))),
    hashes,
    st.integers(0, 32),
)
keys = st.one_of(hashes, near)
maps = st.dictionaries(keys, hashes, max_size=40)


def _reference_root(items: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The map's root straight from its definition: the hash of a subtree of no key is 32
    zero bytes, of one key its leaf, of more SHA-256(0x01 || its 16 children's, in the order
    of the key's next 4 bits)."""
    if not items:
        return EMPTY
    if len(items) == 1:
        ((key, value),) = items.items()
        return map_leaf_hash(key, value)
    parts: list[dict[bytes, bytes]] = [{} for _ in range(16)]
    for key, value in items.items():
        parts[int(key.hex()[depth], 16)][key] = value
    children = b"".join(_reference_root(part, depth + 1) for part in parts)
    return hashlib.sha256(b"\x01" + children).digest()


def _map(items: dict[bytes, bytes]) -> SparseMerkleMap:
    smt = SparseMerkleMap()
    smt.update(items)
    return smt


@given(maps)
def test_the_root_is_the_definitions(items: dict[bytes, bytes]) -> None:
    assert _map(items).root == _reference_root(items)


@given(maps, keys)
def test_membership_and_absence_proofs_verify(items: dict[bytes, bytes], absent: bytes) -> None:
    smt = _map(items)
    for key, value in items.items():
        assert smt.get(key) == value
        verify_map_proof(smt.root, key, value, smt.prove(key))
    if absent not in items:
        assert smt.get(absent) is None
        verify_map_proof(smt.root, absent, None, smt.prove(absent))


@given(maps.filter(bool), hashes, st.data())
def test_a_wrong_claim_fails(items: dict[bytes, bytes], other: bytes, data: st.DataObject) -> None:
    smt = _map(items)
    key = data.draw(st.sampled_from(sorted(items)), label="key")
    proof = smt.prove(key)
    wrong_value = other if other != items[key] else bytes(a ^ 1 for a in other)
    with pytest.raises(RootMismatchError):
        verify_map_proof(smt.root, key, wrong_value, proof)
    with pytest.raises(RootMismatchError):
        verify_map_proof(smt.root, key, None, proof)


@given(maps, keys, hashes)
def test_an_absent_key_cannot_be_shown_present(
    items: dict[bytes, bytes], absent: bytes, value: bytes
) -> None:
    if absent in items:
        return
    smt = _map(items)
    with pytest.raises((RootMismatchError, ProofShapeError)):
        verify_map_proof(smt.root, absent, value, smt.prove(absent))


@given(maps, keys, hashes)
def test_updates_change_the_root(items: dict[bytes, bytes], key: bytes, value: bytes) -> None:
    smt = _map(items)
    before = smt.root
    smt.update({key: value})
    assert (smt.root == before) == (items.get(key) == value)
    assert smt.root == _reference_root({**items, key: value})
    assert smt.update({}) == smt.root


@given(maps, st.randoms(use_true_random=False), st.integers(1, 6))
def test_batches_in_any_order_give_one_root(
    items: dict[bytes, bytes], rng: random.Random, batches: int
) -> None:
    order = list(items.items())
    rng.shuffle(order)
    smt = SparseMerkleMap()
    for b in range(batches):
        smt.update(dict(order[b::batches]))
    assert smt.root == _map(items).root


@given(maps, maps)
def test_later_batches_win(first: dict[bytes, bytes], second: dict[bytes, bytes]) -> None:
    smt = _map(first)
    smt.update(second)
    assert smt.root == _reference_root({**first, **second})


def _one_by_one(batches: list[dict[bytes, bytes]], store: MemoryNodeStore) -> SparseMerkleMap:
    smt = SparseMerkleMap(store)
    for batch in batches:
        for key, value in batch.items():
            smt.update({key: value})
    return smt


@given(st.lists(maps, min_size=1, max_size=4), keys)
def test_a_batch_gives_the_roots_and_proofs_of_one_key_at_a_time(
    batches: list[dict[bytes, bytes]], absent: bytes
) -> None:
    # Later batches update keys of earlier ones and push their leaves down.
    batched_store, single_store = MemoryNodeStore(), MemoryNodeStore()
    batched, single = SparseMerkleMap(batched_store), _one_by_one(batches, single_store)
    for batch in batches:
        batched.update(batch)
    assert batched.root == single.root
    # the same nodes, and no stale ones: a leaf pushed down leaves no leaf behind
    assert batched_store.branches == single_store.branches
    assert batched_store.leaves == single_store.leaves
    for key in {*(key for batch in batches for key in batch), absent}:
        assert batched.prove(key) == single.prove(key)
        verify_map_proof(batched.root, key, single.get(key), batched.prove(key))


@given(maps, maps)
def test_changes_leave_the_map_as_it_is_until_applied(
    first: dict[bytes, bytes], second: dict[bytes, bytes]
) -> None:
    smt = _map(first)
    before = smt.root
    changes = smt.changes(second)
    assert smt.root == before
    assert changes.root == _reference_root({**first, **second})
    smt.apply(changes)
    assert smt.root == changes.root
    assert smt.root == _map({**first, **second}).root


@pytest.mark.parametrize("order", [1, -1])
def test_a_batch_that_pushes_down_a_leaf_whose_key_it_updates(order: int) -> None:
    # ``near`` lands on ``stored``'s lone leaf: the leaf is pushed down, with the batch's
    # new value, not the stored one, whichever of the two keys the batch names first.
    stored, near = bytes(32), bytes(31) + b"\x01"
    smt = _map({stored: b"a" * 32, bytes([0x80]) + bytes(31): b"c" * 32})
    batch = dict(list({stored: b"b" * 32, near: b"d" * 32}.items())[::order])
    smt.update(batch)
    expected = {stored: b"b" * 32, near: b"d" * 32, bytes([0x80]) + bytes(31): b"c" * 32}
    assert smt.root == _reference_root(expected)
    assert smt.get(stored) == b"b" * 32
    assert _one_by_one([expected], MemoryNodeStore()).root == smt.root


def test_the_empty_map() -> None:
    smt = SparseMerkleMap()
    assert smt.root == EMPTY
    proof = smt.prove(bytes(32))
    assert (proof.depth, proof.siblings, proof.neighbour) == (0, (), None)
    verify_map_proof(EMPTY, bytes(32), None, proof)


def test_keys_that_differ_in_the_last_bit_sit_at_the_bottom() -> None:
    low, high = bytes(32), bytes(31) + b"\x01"
    smt = _map({low: b"a" * 32, high: b"b" * 32})
    proof = smt.prove(high)
    assert proof.depth == LEVELS
    assert len(proof.siblings) == 1
    verify_map_proof(smt.root, high, b"b" * 32, proof)


def test_the_store_keeps_a_leaf_per_key_and_fewer_branches() -> None:
    # A branch has two children or more: fewer branches than keys, about a third of them
    # for random keys (a binary tree would keep two or three nodes a key).
    store = MemoryNodeStore()
    smt = SparseMerkleMap(store)
    rng = random.Random(7)
    smt.update({rng.randbytes(32): rng.randbytes(32) for _ in range(1000)})
    assert len(store.leaves) == 1000
    assert 1000 // 16 < len(store.branches) < 1000 // 2


def test_misshapen_map_proofs_are_refused() -> None:
    rng = random.Random(1)
    smt = _map({rng.randbytes(32): rng.randbytes(32) for _ in range(50)})
    key = rng.randbytes(32)
    root, proof = smt.root, smt.prove(key)
    verify_map_proof(root, key, None, proof)
    bits = int.from_bytes(proof.bitmap, "big")
    # the key's own child of the root listed as a sibling, one hash more to keep the count
    own_marked = bits | 1 << (BITMAP_BYTES * 8 - 1 - (key[0] >> 4))
    own_siblings = (bytes(32), *proof.siblings)
    misshapen = [
        MapProof(LEVELS + 1, proof.bitmap, proof.siblings, proof.neighbour),
        MapProof(proof.depth, proof.bitmap[:-1], proof.siblings, proof.neighbour),
        MapProof(proof.depth, (bits | 1).to_bytes(BITMAP_BYTES, "big"), proof.siblings, None),
        MapProof(proof.depth, own_marked.to_bytes(BITMAP_BYTES, "big"), own_siblings, None),
        MapProof(proof.depth, proof.bitmap, proof.siblings[:-1], proof.neighbour),
        MapProof(proof.depth, proof.bitmap, (*proof.siblings[:-1], b"short"), proof.neighbour),
    ]
    for wrong in misshapen:
        with pytest.raises(ProofShapeError):
            verify_map_proof(root, key, None, wrong)


def test_a_neighbour_must_sit_on_the_path_and_be_another_key() -> None:
    smt = _map({bytes(32): b"v" * 32, b"\xff" * 32: b"w" * 32})
    key = bytes(31) + b"\x01"
    proof = smt.prove(key)
    assert proof.neighbour == (bytes(32), b"v" * 32)
    verify_map_proof(smt.root, key, None, proof)
    off_path = MapProof(proof.depth, proof.bitmap, proof.siblings, (b"\x80" + bytes(31), b"v" * 32))
    itself = MapProof(proof.depth, proof.bitmap, proof.siblings, (key, b"v" * 32))
    for wrong in (off_path, itself):
        with pytest.raises(ProofShapeError):
            verify_map_proof(smt.root, key, None, wrong)
    with pytest.raises(ProofShapeError):
        verify_map_proof(smt.root, key, b"v" * 32, proof)


def test_keys_and_values_are_32_bytes() -> None:
    smt = SparseMerkleMap()
    with pytest.raises(ValueError):
        smt.update({bytes(31): bytes(32)})
    with pytest.raises(ValueError):
        smt.update({bytes(32): bytes(33)})
    with pytest.raises(ValueError):
        smt.prove(bytes(33))
