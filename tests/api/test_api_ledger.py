"""The auditor's endpoints under /ledger: the checkpoint, the key, proofs that verify against
the signed roots, leaves that recompute them, and a 400 (never a 500) for bad input."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from conftest import ORGANIZATION, write_organizations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import HostDatabase
from starlette.testclient import TestClient

from coffre.ledger import (
    Checkpoint,
    VerifierKey,
    leaf_hash,
    open_checkpoint,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from coffre.service import RecordStore, Vault


def signed(records: RecordStore, size: int) -> Checkpoint:
    note = records.storage.checkpoint_at(size)
    assert note is not None, f"no checkpoint at size {size}"
    return open_checkpoint(note, records.ledger.verifier_key)


def hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(value, validate=True) for value in values]


def assert_outcome(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert fragment in body["issue"][0]["diagnostics"]


# -- checkpoint and key -------------------------------------------------------------------


def test_an_empty_log_has_no_checkpoint_yet(client: TestClient) -> None:
    assert_outcome(client.get("/ledger/checkpoint"), 404, "no checkpoint yet")


def test_the_checkpoint_is_the_latest_signed_note(client: TestClient, records: RecordStore) -> None:
    write_organizations(client, 3)
    response = client.get("/ledger/checkpoint")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == records.storage.latest_checkpoint()
    checkpoint = open_checkpoint(response.text, records.ledger.verifier_key)
    assert checkpoint.size == records.storage.leaf_count() == 3


def test_the_key_endpoint_gives_the_vault_s_verifier_key(
    client: TestClient, records: RecordStore
) -> None:
    response = client.get("/ledger/key")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert VerifierKey.parse(response.text.strip()) == records.ledger.verifier_key


# -- proofs -------------------------------------------------------------------------------


def test_inclusion_proofs_verify_against_every_signed_root(
    client: TestClient, records: RecordStore
) -> None:
    write_organizations(client, 9)
    leaves = records.storage.leaves(0, 9)
    for size in range(1, 10):
        root = signed(records, size).root
        for index in range(size):
            response = client.get("/ledger/proof/inclusion", params={"index": index, "size": size})
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["index"], body["size"]) == (index, size)
            verify_inclusion(leaf_hash(leaves[index]), index, size, hashes(body["proof"]), root)


def test_consistency_proofs_verify_between_every_pair_of_signed_roots(
    client: TestClient, records: RecordStore
) -> None:
    write_organizations(client, 9)
    for new in range(1, 10):
        for old in range(new + 1):
            response = client.get("/ledger/proof/consistency", params={"old": old, "new": new})
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["old"], body["new"]) == (old, new)
            old_root = root_of([]) if old == 0 else signed(records, old).root
            verify_consistency(old, new, hashes(body["proof"]), old_root, signed(records, new).root)


def test_a_log_missing_a_leaf_answers_503_not_a_wrong_proof(
    client: TestClient, vault: Vault
) -> None:
    """The tree lacks a node, and its leaves cannot give it again: no proof can be given
    that leads to the signed root."""
    write_organizations(client, 4)
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM leaves WHERE idx = 3")
    response = client.get("/ledger/proof/inclusion", params={"index": 0, "size": 4})
    assert_outcome(response, 503, "no proof can be given: the log's leaves do not give the root")


# -- leaves -------------------------------------------------------------------------------


def test_leaves_recompute_the_signed_root(client: TestClient, records: RecordStore) -> None:
    write_organizations(client, 10)
    fetched: list[bytes] = []
    caching = []
    while len(fetched) < 10:
        response = client.get("/ledger/leaves", params={"start": len(fetched), "count": 4})
        assert response.status_code == 200
        assert response.json()["start"] == len(fetched)
        fetched += hashes(response.json()["leaves"])
        caching.append(response.headers["cache-control"])
    assert fetched == records.storage.leaves(0, 10)
    assert root_of([leaf_hash(leaf) for leaf in fetched]) == signed(records, 10).root
    # [0, 4) and [4, 8) are whole and never change; [8, 12) has two leaves so far.
    assert caching == ["public, max-age=31536000, immutable"] * 2 + ["no-cache"]


def test_leaves_beyond_the_checkpoint_are_an_empty_page(client: TestClient) -> None:
    write_organizations(client, 2)
    for start in (2, 3, 10**19):
        response = client.get("/ledger/leaves", params={"start": start, "count": 5})
        assert response.status_code == 200
        assert response.json() == {"start": start, "leaves": []}
        assert response.headers["cache-control"] == "no-cache"


def test_a_page_of_leaves_holds_at_most_1000(client: TestClient, records: RecordStore) -> None:
    with records.writer() as writer:
        for number in range(1001):  # organisations: a leaf each, none for a patient's key
            writer.update("Organization", f"o{number}", {**ORGANIZATION, "id": f"o{number}"})
    response = client.get("/ledger/leaves", params={"start": 0, "count": 5000})
    assert len(response.json()["leaves"]) == 1000
    assert "immutable" in response.headers["cache-control"]
    assert len(client.get("/ledger/leaves?start=1000").json()["leaves"]) == 1


# -- bad input ----------------------------------------------------------------------------

BAD_QUERIES = [
    ("/ledger/proof/inclusion", "index=3&size=3", "no leaf 3"),
    ("/ledger/proof/inclusion", "index=5&size=3", "no leaf 5"),
    ("/ledger/proof/inclusion", "index=0&size=0", "no leaf 0"),
    ("/ledger/proof/inclusion", "index=0&size=4", "beyond the latest checkpoint (3)"),
    ("/ledger/proof/inclusion", "index=0&size=99999999999999999999", "beyond"),
    ("/ledger/proof/inclusion", "size=3", "give index once"),
    ("/ledger/proof/inclusion", "index=0&index=1&size=3", "give index once"),
    ("/ledger/proof/inclusion", "index=-1&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=1.0&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=+1&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=%201&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=1e0&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=0x1&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=%D9%A1&size=3", "whole number"),  # an Arabic-Indic 1
    ("/ledger/proof/inclusion", "index=1%0A&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=&size=3", "whole number"),
    ("/ledger/proof/inclusion", "index=1&size=" + "9" * 5000, "whole number"),
    ("/ledger/proof/consistency", "old=3&new=2", "larger than new"),
    ("/ledger/proof/consistency", "old=1&new=4", "beyond the latest checkpoint"),
    ("/ledger/proof/consistency", "old=1", "give new once"),
    ("/ledger/proof/consistency", "old=one&new=2", "whole number"),
    ("/ledger/leaves", "", "give start once"),
    ("/ledger/leaves", "start=0&count=0", "at least 1"),
    ("/ledger/leaves", "start=-1", "whole number"),
    ("/ledger/leaves", "start=0&count=-5", "whole number"),
]


@pytest.mark.parametrize(("path", "query", "fragment"), BAD_QUERIES)
def test_bad_input_is_a_400_outcome(
    client: TestClient, path: str, query: str, fragment: str
) -> None:
    write_organizations(client, 3)
    assert_outcome(client.get(f"{path}?{query}"), 400, fragment)


def test_unknown_ledger_paths_and_methods_are_outcomes(client: TestClient) -> None:
    assert_outcome(client.get("/ledger/tiles/0/000"), 404)
    assert_outcome(client.post("/ledger/checkpoint"), 405)


_NAMES = st.sampled_from(["index", "size", "old", "new", "start", "count", "x"])
_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=12).map(str),
    st.integers(min_value=0, max_value=2**70).map(str),
    st.text(max_size=12),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["proof/inclusion", "proof/consistency", "leaves"]),
    pairs=st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
    raw=st.text(max_size=20),
)
def test_no_query_string_gets_a_500(
    client: TestClient, path: str, pairs: list[tuple[str, str]], raw: str
) -> None:
    if client.get("/ledger/checkpoint").status_code == 404:
        write_organizations(client, 5)
    for query in (urlencode(pairs), quote(raw, safe="=&+%")):
        response = client.get(f"/ledger/{path}?{query}")
        assert response.status_code in (200, 400), (query, response.text)
        if response.status_code == 400:
            assert response.json()["resourceType"] == "OperationOutcome"
        else:
            assert set(response.json()) in (
                {"index", "size", "proof"},
                {"old", "new", "proof"},
                {"start", "leaves"},
            )
