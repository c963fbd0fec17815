"""The log in the C2SP tlog-tiles layout under /ledger/tile: hash tiles against pymerkle,
entry bundles as stored, partial tiles, caching, and nothing beyond the latest checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import write_organizations
from pg import HostDatabase
from pymerkle import InmemoryTree
from starlette.testclient import TestClient
from synthetic_log import append_leaves

from coffre.api import create_app
from coffre.ledger import leaf_hash
from coffre.ledger.tiles import TileId, entry_bundles, split_bundle
from coffre.service import RecordStore, Vault

SIZE = 70_000
"""The spec's example: 273 full level-0 tiles and one of 112, a full level-1 tile and
one of 17, a level-2 tile of 1."""
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[bytes]]]:
    vault = Vault.at(tmp_path_factory.mktemp("tiles") / "vault")
    vault.create()
    records = vault.open()
    append_leaves(records, SIZE)
    with TestClient(create_app(records), raise_server_exceptions=False) as client:
        yield client, records.storage.leaves(0, SIZE)
    records.storage.close()


def _tile(client: TestClient, path: str, caching: str = IMMUTABLE) -> bytes:
    response = client.get(f"/ledger/{path}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["cache-control"] == caching
    return response.content


def _hashes(tile: bytes) -> list[bytes]:
    assert len(tile) % 32 == 0
    return [tile[i : i + 32] for i in range(0, len(tile), 32)]


def _missing(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert fragment in response.json()["issue"][0]["diagnostics"]


def test_hash_tiles_agree_with_pymerkle(big: tuple[TestClient, list[bytes]]) -> None:
    client, leaves = big
    # pymerkle, one tree per 256 leaves: its leaves are level 0, its root a level-1 hash.
    chunks = [
        InmemoryTree.init_from_entries(leaves[i : i + 256], algorithm="sha256")
        for i in range(0, SIZE, 256)
    ]
    level0 = [_tile(client, TileId(0, n).path()) for n in range(273)]
    level0.append(_tile(client, "tile/0/273.p/112", "no-cache"))
    assert _hashes(b"".join(level0)) == [
        chunk.get_leaf(i) for chunk in chunks for i in range(1, chunk.get_size() + 1)
    ]
    level1 = _tile(client, "tile/1/000") + _tile(client, "tile/1/001.p/17", "no-cache")
    assert _hashes(level1) == [chunk.get_root() for chunk in chunks[:273]]
    first = InmemoryTree.init_from_entries(leaves[:65536], algorithm="sha256")
    assert _tile(client, "tile/2/000.p/1", "no-cache") == first.get_root()


def test_entry_bundles_hold_the_leaves_as_stored(big: tuple[TestClient, list[bytes]]) -> None:
    client, leaves = big
    bundles = entry_bundles(SIZE)
    served = [
        split_bundle(_tile(client, b.path(), "no-cache" if b.partial else IMMUTABLE))
        for b in bundles
    ]
    assert [leaf for bundle in served for leaf in bundle] == leaves
    assert bundles[-1].path() == "tile/entries/273.p/112"


def test_a_narrower_partial_tile_of_an_older_checkpoint(
    big: tuple[TestClient, list[bytes]],
) -> None:
    """The first transaction signed size 50,000: its partial tiles stay servable."""
    client, leaves = big
    assert 50_000 % 256 == 80 and 50_000 // 256 == 195
    bundle = split_bundle(_tile(client, "tile/entries/195.p/80", "no-cache"))
    assert bundle == leaves[195 * 256 : 50_000]
    tile = _tile(client, "tile/0/195.p/80", "no-cache")
    assert _hashes(tile) == [leaf_hash(leaf) for leaf in bundle]
    # The full tile since 70,000, and a partial one wider than the tree: none.
    assert len(_tile(client, "tile/0/195")) == 256 * 32
    _missing(client.get("/ledger/tile/0/273.p/113"), "beyond the latest checkpoint")


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/274",
        "tile/0/273",
        "tile/entries/273",
        "tile/entries/274.p/1",
        "tile/1/001",
        "tile/1/002.p/1",
        "tile/2/000",
        "tile/3/000.p/1",
        "tile/63/x999/x999/999",
    ],
)
def test_no_tile_beyond_the_latest_checkpoint(
    big: tuple[TestClient, list[bytes]], path: str
) -> None:
    _missing(big[0].get(f"/ledger/{path}"), "beyond the latest checkpoint (size 70000)")


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/5",
        "tile/0/x000/005",
        "tile/64/000",
        "tile/0/000.p/256",
        "tile/entries/",
        "tile/entries/" + "x999/" * 1500 + "999",  # 4,503 digits: more than Python's int reads
    ],
)
def test_a_path_that_names_no_tile(big: tuple[TestClient, list[bytes]], path: str) -> None:
    _missing(big[0].get(f"/ledger/{path}"), "no such tile")


# -- a small log, written through the API ----------------------------------------------------


def test_an_empty_log_has_no_tiles(client: TestClient) -> None:
    _missing(client.get("/ledger/tile/entries/000.p/1"), "latest checkpoint (size 0)")


def test_leaves_the_host_adds_are_not_served(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """A leaf beyond the checkpoint is no part of the log until the gateway signs it."""
    write_organizations(client, 3)
    leaves = records.storage.leaves(0, 3)
    with HostDatabase.of(vault) as db:
        db.execute("INSERT INTO leaves (idx, data) VALUES (3, ?)", (leaves[0],))
    assert records.storage.leaf_count() == 4
    assert split_bundle(_tile(client, "tile/entries/000.p/3", "no-cache")) == leaves
    for path in ("tile/entries/000.p/4", "tile/0/000.p/4"):
        _missing(client.get(f"/ledger/{path}"), "beyond the latest checkpoint (size 3)")


def test_a_bundle_leaves_out_what_the_storage_lost(
    client: TestClient, records: RecordStore, vault: Vault
) -> None:
    """Served as it is, for the auditor to see: never made up, never cached."""
    write_organizations(client, 3)
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM leaves WHERE idx = 2")
    assert len(split_bundle(_tile(client, "tile/entries/000.p/3", "no-cache"))) == 2


def test_a_tree_that_lost_a_leaf_is_damaged(client: TestClient, vault: Vault) -> None:
    """Level 0 hashes the leaves themselves: a lost leaf leaves its hash tile short."""
    write_organizations(client, 3)
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM leaves WHERE idx = 2")
    response = client.get("/ledger/tile/0/000.p/3")
    assert response.status_code == 500, response.text
    assert "lacks nodes of tile/0/000.p/3" in response.json()["issue"][0]["diagnostics"]
