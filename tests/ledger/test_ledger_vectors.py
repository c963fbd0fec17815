"""The published RFC 6962 / Certificate Transparency vectors, and broken cases that must fail.

Sources: vectors/PROVENANCE.md.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from coffre.ledger import (
    EMPTY_ROOT,
    CompactRange,
    LedgerError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors"
RFC6962: dict[str, Any] = json.loads((VECTORS / "rfc6962.json").read_text())
LEAF_HASHES = [leaf_hash(bytes.fromhex(leaf)) for leaf in RFC6962["leaves"]]
ROOTS = [bytes.fromhex(root) for root in RFC6962["roots"]]


def _subtree(begin: int, end: int) -> bytes:
    return merkle_root(LEAF_HASHES[begin:end])


def _hexes(hashes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


def _cases(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", RFC6962["hashes"], ids=lambda case: case["desc"])
def test_hasher_vectors(case: dict[str, Any]) -> None:
    got = {
        "empty": lambda: EMPTY_ROOT,
        "leaf": lambda: leaf_hash(bytes.fromhex(case.get("data", ""))),
        "node": lambda: node_hash(
            bytes.fromhex(case.get("left", "")), bytes.fromhex(case.get("right", ""))
        ),
    }[case["kind"]]()
    assert got.hex() == case["want"]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_first_leaves(size: int) -> None:
    compact = CompactRange()
    compact.extend(LEAF_HASHES[:size])
    assert merkle_root(LEAF_HASHES[:size]) == ROOTS[size - 1]
    assert root_of(LEAF_HASHES[:size]) == ROOTS[size - 1]
    assert compact.root() == ROOTS[size - 1]


@pytest.mark.parametrize("case", RFC6962["inclusion"], ids=str)
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    index, size, proof = case["leaf_index"], case["tree_size"], _hexes(case["proof"])
    verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size - 1])
    assert inclusion_proof(index, size, _subtree) == proof


@pytest.mark.parametrize("case", RFC6962["consistency"], ids=str)
def test_consistency_vectors(case: dict[str, Any]) -> None:
    size1, size2, proof = case["size1"], case["size2"], _hexes(case["proof"])
    verify_consistency(size1, size2, proof, ROOTS[size1 - 1], ROOTS[size2 - 1])
    assert consistency_proof(size1, size2, _subtree) == proof


@pytest.mark.parametrize("case", _cases("broken_inclusion.json"), ids=lambda c: c["desc"])
def test_broken_inclusion_proofs_fail(case: dict[str, Any]) -> None:
    with pytest.raises(LedgerError):
        verify_inclusion(
            bytes.fromhex(case["leaf_hash"]),
            case["leaf_index"],
            case["tree_size"],
            _hexes(case["proof"]),
            bytes.fromhex(case["root"]),
        )


@pytest.mark.parametrize("case", _cases("broken_consistency.json"), ids=lambda c: c["desc"])
def test_broken_consistency_proofs_fail(case: dict[str, Any]) -> None:
    with pytest.raises(LedgerError):
        verify_consistency(
            case["size1"],
            case["size2"],
            _hexes(case["proof"]),
            bytes.fromhex(case["root1"]),
            bytes.fromhex(case["root2"]),
        )


def _upstream(kind: str) -> list[Path]:
    return sorted((VECTORS / "upstream" / kind).rglob("*.json"))


@pytest.mark.parametrize("path", _upstream("inclusion"), ids=lambda p: p.name)
def test_upstream_inclusion_files(path: Path) -> None:
    case = json.loads(path.read_text())
    index = case.get("leafIdx", case.get("leafIndex"))
    b64 = base64.b64decode

    def check() -> None:
        proof = [b64(h) for h in case["proof"]]
        verify_inclusion(b64(case["leafHash"]), index, case["treeSize"], proof, b64(case["root"]))

    if case["wantErr"]:
        with pytest.raises(LedgerError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", _upstream("consistency"), ids=lambda p: p.name)
def test_upstream_consistency_files(path: Path) -> None:
    case = json.loads(path.read_text())
    b64 = base64.b64decode

    def check() -> None:
        proof = [b64(h) for h in case["proof"]]
        root1, root2 = b64(case["root1"]), b64(case["root2"])
        verify_consistency(case["size1"], case["size2"], proof, root1, root2)

    if case["wantErr"]:
        with pytest.raises(LedgerError):
            check()
    else:
        check()
