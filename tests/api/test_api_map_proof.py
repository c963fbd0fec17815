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


def _by_location(client: TestClient, location: str) -> dict[str, Any]:
    response = client.get("/ledger/proof/map", params={"location": location})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_latest_write_of_a_record_is_proven_and_an_older_one_is_not(
    client: TestClient, records: RecordStore
) -> None:
    key = VerifierKey.parse(client.get("/ledger/key").text.strip())
    client.put("/fhir/Patient/m1", json={"resourceType": "Patient", "id": "m1"}, headers=FHIR_JSON)
    first = client.get("/fhir/Patient/m1/$map-proof").json()
    assert first["record"] == "Patient/m1"
    first_value = _check(first, key)
    client.put(
        "/fhir/Patient/m1",
        json={"resourceType": "Patient", "id": "m1", "gender": "female"},
        headers=FHIR_JSON,
    )
    client.get("/fhir/Patient/m1")  # a read is a leaf too, but it does not move the map
    second = client.get("/fhir/Patient/m1/$map-proof").json()
    second_value = _check(second, key)
    assert first_value != second_value
    # The older value does not verify against the newer signed map root.
    stale = dict(second, value=first["value"])
    with pytest.raises(RootMismatchError):
        _check(stale, key)
    # Anyone given the record's location checks the same, without naming the record.
    public = _by_location(client, second["location"])
    assert "record" not in public
    assert _check(public, key) == second_value


def test_a_location_never_written_is_proven_absent(client: TestClient) -> None:
    key = VerifierKey.parse(client.get("/ledger/key").text.strip())
    client.put("/fhir/Patient/m2", json={"resourceType": "Patient", "id": "m2"}, headers=FHIR_JSON)
    answer = _by_location(client, base64.b64encode(bytes(range(32))).decode())
    assert answer["value"] is None
    assert _check(answer, key) is None


def test_a_record_name_tells_the_public_nothing(client: TestClient) -> None:
    """Naming a record on the public endpoint would tell anyone (the host included)
    whether it exists, when it changes, and which rows are its."""
    client.put("/fhir/Patient/m5", json={"resourceType": "Patient", "id": "m5"}, headers=FHIR_JSON)
    known = client.get("/ledger/proof/map?record=Patient/m5")
    unknown = client.get("/ledger/proof/map?record=Patient/nobody")
    assert known.status_code == unknown.status_code == 400
    assert known.json() == unknown.json()
    assert "$map-proof" in known.json()["issue"][0]["diagnostics"]


def test_a_record_that_does_not_exist_has_no_proof_by_name(client: TestClient) -> None:
    client.put("/fhir/Patient/m6", json={"resourceType": "Patient", "id": "m6"}, headers=FHIR_JSON)
    response = client.get("/fhir/Patient/nobody/$map-proof")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "location", ["", "not base64!", base64.b64encode(bytes(31)).decode(), "AAAA" * 12]
)
def test_a_malformed_location_is_a_400(client: TestClient, location: str) -> None:
    client.put("/fhir/Patient/m3", json={"resourceType": "Patient", "id": "m3"}, headers=FHIR_JSON)
    response = client.get("/ledger/proof/map", params={"location": location})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_before_any_write_there_is_no_checkpoint_to_prove_against(client: TestClient) -> None:
    location = base64.b64encode(bytes(32)).decode()
    assert client.get("/ledger/proof/map", params={"location": location}).status_code == 404


def test_a_location_given_twice_is_a_400_not_the_last_one_s_proof(client: TestClient) -> None:
    client.put("/fhir/Patient/m4", json={"resourceType": "Patient", "id": "m4"}, headers=FHIR_JSON)
    first, other = base64.b64encode(bytes(32)).decode(), base64.b64encode(bytes(range(32))).decode()
    response = client.get("/ledger/proof/map", params=[("location", first), ("location", other)])
    assert response.status_code == 400, response.text
    assert "once" in response.json()["issue"][0]["diagnostics"]


def test_the_operation_takes_no_parameters_and_only_get(client: TestClient) -> None:
    client.put("/fhir/Patient/m7", json={"resourceType": "Patient", "id": "m7"}, headers=FHIR_JSON)
    response = client.get("/fhir/Patient/m7/$map-proof?_count=2")
    assert response.status_code == 400
    assert "_count" in response.json()["issue"][0]["diagnostics"]
    assert client.post("/fhir/Patient/m7/$map-proof").status_code == 405
