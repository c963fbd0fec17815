"""C2SP tlog-tiles: paths, which tiles a tree has, entry bundles, and roots recomputed
from bundles against pymerkle and the RFC 6962 vectors."""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from coffre.ledger import CompactRange, LedgerError, leaf_hash, merkle_root
from coffre.ledger.tiles import (
    MAX_ENTRY_BYTES,
    TILE_WIDTH,
    TileId,
    bundle_roots,
    encode_bundle,
    entry_bundles,
    index_path,
    leaf_hashes,
    root_from_bundles,
    split_bundle,
    subtree_roots,
    tile_width,
)

RFC6962 = json.loads((Path(__file__).parent / "vectors" / "rfc6962.json").read_text())

tiles = st.builds(
    TileId,
    st.none() | st.integers(0, 63),
    st.integers(0, 10**15),
    st.integers(1, TILE_WIDTH),
)


# -- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "path"),
    [
        (0, "000"),
        (5, "005"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),  # the spec's example
        (10**9, "x001/x000/x000/000"),
    ],
)
def test_index_paths(index: int, path: str) -> None:
    assert index_path(index) == path


def test_tile_paths() -> None:
    assert TileId(0, 1234067).path() == "tile/0/x001/x234/067"
    assert TileId(0, 1234067, 8).path() == "tile/0/x001/x234/067.p/8"
    assert TileId(None, 1234067, 8).path() == "tile/entries/x001/x234/067.p/8"
    assert TileId(2, 0, 1).path() == "tile/2/000.p/1"
    for wrong in (TileId(64, 0), TileId(0, 0, 0), TileId(0, 0, 257), TileId(0, -1)):
        with pytest.raises(ValueError):
            wrong.path()


@given(tiles)
def test_a_path_names_its_tile(tile: TileId) -> None:
    path = tile.path()
    assert path.startswith("tile/")
    assert TileId.parse(path.removeprefix("tile/")) == tile


@pytest.mark.parametrize(
    "path",
    [
        "0/x000/005",  # a leading group of zeros
        "0/5",
        "0/0005",
        "0/x001",
        "00/000",
        "64/000",
        "0/000.p/256",
        "0/000.p/0",
        "0/000.p/08",
        "0/000.p/",
        "0/000/",
        "entry/000",
        "entries/x001/x234/067.p/8/",
        "-1/000",
        "0/000.p/8.p/8",
    ],
)
def test_only_the_spec_s_spelling_names_a_tile(path: str) -> None:
    assert TileId.parse(path) is None


def test_an_index_no_log_can_reach_names_no_tile() -> None:
    """Tiles of a tree of at most 2**64 leaves have indexes of 17 digits at most: a path
    of thousands of digits names none (Python refuses to read an int of over 4,300)."""
    assert TileId.parse("0/x072/x057/x594/x037/x927/935") == TileId(0, 72057594037927935)
    for groups in (7, 1500):
        assert TileId.parse("0/" + "x999/" * groups + "999") is None


@given(st.text(alphabet="x0123456789/.pentries", max_size=30))
def test_any_path_that_parses_is_spelled_as_the_spec_says(path: str) -> None:
    tile = TileId.parse(path)
    assert tile is None or tile.path() == f"tile/{path}"


# -- which tiles a tree has ------------------------------------------------------------------


def test_the_spec_s_tree_of_70000() -> None:
    """273 full level-0 tiles and one of 112, one full level-1 tile and one of 17, one
    level-2 tile of 1 (c2sp.org/tlog-tiles, Partial Tiles)."""
    size = 70_000
    assert [tile_width(size, 0, n) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert [tile_width(size, 1, n) for n in (0, 1, 2)] == [256, 17, 0]
    assert [tile_width(size, 2, n) for n in (0, 1)] == [1, 0]
    assert tile_width(size, 3, 0) == 0
    bundles = entry_bundles(size)
    assert len(bundles) == 274 and bundles[-1] == TileId(None, 273, 112)
    assert all(not b.partial for b in bundles[:-1])


def test_a_tree_of_256_has_a_level_1_tile_of_1() -> None:
    assert tile_width(256, 0, 0) == 256 and tile_width(256, 1, 0) == 1
    assert entry_bundles(256) == [TileId(None, 0)]
    assert entry_bundles(0) == []


@given(st.integers(0, 2**40), st.integers(0, 5))
def test_full_tiles_then_one_of_size_over_256_to_the_level_mod_256(size: int, level: int) -> None:
    last = (size >> (8 * level)) // TILE_WIDTH
    assert tile_width(size, level, last) == (size // 256**level) % 256
    assert tile_width(size, level, last + 1) == 0
    if last:
        assert tile_width(size, level, last - 1) == TILE_WIDTH


# -- entry bundles ---------------------------------------------------------------------------


entries = st.lists(st.binary(max_size=300), max_size=40)


@given(entries)
def test_bundles_round_trip(data: list[bytes]) -> None:
    bundle = encode_bundle(data)
    assert len(bundle) == sum(2 + len(e) for e in data)
    assert split_bundle(bundle) == data


@given(st.integers(0, 200), st.integers(0, TILE_WIDTH))
def test_bundles_of_one_length_round_trip(length: int, count: int) -> None:
    data = [bytes([i % 256]) * length for i in range(count)]
    bundle = encode_bundle(data)
    assert bundle[:2] == (length.to_bytes(2, "big") if count else b"")
    assert split_bundle(bundle) == data


def test_a_bundle_s_layout() -> None:
    assert encode_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    assert encode_bundle([b"ab", b"cd"]) == b"\x00\x02ab\x00\x02cd"


@given(entries.filter(bool), st.data())
def test_a_bundle_cut_inside_an_entry_is_refused(data: list[bytes], draw: st.DataObject) -> None:
    bundle = encode_bundle(data)
    ends = list(accumulate(2 + len(entry) for entry in data))
    cut = draw.draw(st.integers(1, len(bundle) - 1))
    if cut in ends:
        assert split_bundle(bundle[:cut]) == data[: ends.index(cut) + 1]
    else:
        with pytest.raises(LedgerError, match="ends inside"):
            split_bundle(bundle[:cut])


def test_an_entry_longer_than_a_uint16_is_refused() -> None:
    with pytest.raises(LedgerError, match="at most 65535 bytes"):
        encode_bundle([b"x" * (MAX_ENTRY_BYTES + 1)])


# -- roots from bundles ----------------------------------------------------------------------


def test_the_rfc_6962_roots_from_a_bundle() -> None:
    leaves = [bytes.fromhex(leaf) for leaf in RFC6962["leaves"]]
    for size in range(1, len(leaves) + 1):
        bundle = split_bundle(encode_bundle(leaves[:size]))
        root = root_from_bundles(size, [bundle_roots(bundle)])
        assert root.hex() == RFC6962["roots"][size - 1]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 3 * TILE_WIDTH + 20))
def test_roots_from_bundles_agree_with_pymerkle(size: int) -> None:
    data = [i.to_bytes(4, "big") * (1 + i % 3) for i in range(size)]
    reference = InmemoryTree.init_from_entries(data, algorithm="sha256")
    bundles = [split_bundle(encode_bundle(data[i : i + TILE_WIDTH])) for i in range(0, size, 256)]
    root = root_from_bundles(size, [bundle_roots(bundle) for bundle in bundles])
    assert root == (reference.get_root() if size else merkle_root([]))


@given(st.lists(st.binary(max_size=20), max_size=TILE_WIDTH))
def test_a_bundle_s_roots_are_its_compact_range(data: list[bytes]) -> None:
    hashes = [leaf_hash(d) for d in data]
    assert leaf_hashes(data) == b"".join(hashes)
    compact = CompactRange()
    compact.extend(hashes)
    assert subtree_roots(leaf_hashes(data)) == list(compact.hashes)


def test_roots_from_bundles_refuse_the_wrong_shape() -> None:
    """As many bundles as the size needs, one root for each full one, as many as the
    size's last bits for the last."""
    one, three = bundle_roots([b"a"]), bundle_roots([b"a"] * 3)
    full = bundle_roots([b"a"] * TILE_WIDTH)
    assert root_from_bundles(TILE_WIDTH + 3, [full, three]) == merkle_root(
        [leaf_hash(b"a")] * (TILE_WIDTH + 3)
    )
    for size, roots in (
        (TILE_WIDTH + 1, [full]),
        (TILE_WIDTH, [full, one]),
        (2 * TILE_WIDTH, [full, three]),
        (3, [one]),
    ):
        with pytest.raises(ValueError):
            root_from_bundles(size, roots)
    with pytest.raises(ValueError):
        subtree_roots(b"x" * 33)
