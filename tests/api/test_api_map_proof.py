"""A third party checks that a record's latest write is the one a signed checkpoint maps."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from conftest import FHIR_JSON
from starlette.testclient import TestClient

from coffre.ledger import (
    MapProof,
    RootMismatchError,
    VerifierKey,
    open_checkpoint,
    verify_map_proof,
)
from coffre.service import RecordStore


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _check(answer: dict[str, Any], key: VerifierKey) -> bytes | None:
    """What a patient's app or an auditor does with the answer: trust only the signature."""
    checkpoint = open_checkpoint(answer["checkpoint"], key)
    proof = answer["proof"]
    neighbour = proof["neighbour"]
    parsed = MapProof(
        proof["depth"],
        _b(proof["bitmap"]),
        tuple(_b(h) for h in proof["siblings"]),
        None if neighbour is None else (_b(neighbour[0]), _b(neighbour[1])),
    )
    value = None if answer["value"] is None else _b(answer["value"])
    assert checkpoint.map_root is not None
    verify_map_proof(checkpoint.map_root, _b(answer["location"]), value, parsed)
    return value


def test_the_latest_write_of_a_record_is_proven_and_an_older_one_is_not(
    client: TestClient, records: RecordStore
) -> None:
    key = VerifierKey.parse(client.get("/ledger/key").text.strip())
    client.put("/fhir/Patient/m1", json={"resourceType": "Patient", "id": "m1"}, headers=FHIR_JSON)
    first = client.get("/ledger/proof/map?record=Patient/m1").json()
    first_value = _check(first, key)
    client.put(
        "/fhir/Patient/m1",
        json={"resourceType": "Patient", "id": "m1", "gender": "female"},
        headers=FHIR_JSON,
    )
    client.get("/fhir/Patient/m1")  # a read is a leaf too, but it does not move the map
    second = client.get("/ledger/proof/map?record=Patient/m1").json()
    second_value = _check(second, key)
    assert first_value != second_value
    # The older value does not verify against the newer signed map root.
    stale = dict(second, value=first["value"])
    with pytest.raises(RootMismatchError):
        _check(stale, key)


def test_a_record_never_written_is_proven_absent(client: TestClient) -> None:
    key = VerifierKey.parse(client.get("/ledger/key").text.strip())
    client.put("/fhir/Patient/m2", json={"resourceType": "Patient", "id": "m2"}, headers=FHIR_JSON)
    answer = client.get("/ledger/proof/map?record=Patient/nobody").json()
    assert answer["value"] is None
    assert _check(answer, key) is None


@pytest.mark.parametrize(
    "record", ["", "Patient", "Patient/", "patient/1", "Nope/1", "Patient/a b", "Patient/1/2"]
)
def test_a_malformed_record_is_a_400(client: TestClient, record: str) -> None:
    client.put("/fhir/Patient/m3", json={"resourceType": "Patient", "id": "m3"}, headers=FHIR_JSON)
    response = client.get("/ledger/proof/map", params={"record": record})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_before_any_write_there_is_no_checkpoint_to_prove_against(client: TestClient) -> None:
    assert client.get("/ledger/proof/map?record=Patient/1").status_code == 404


def test_a_record_named_twice_is_a_400_not_the_last_one_s_proof(client: TestClient) -> None:
    client.put("/fhir/Patient/m4", json={"resourceType": "Patient", "id": "m4"}, headers=FHIR_JSON)
    response = client.get("/ledger/proof/map?record=Patient/m4&record=Patient/other")
    assert response.status_code == 400, response.text
    assert "once" in response.json()["issue"][0]["diagnostics"]
