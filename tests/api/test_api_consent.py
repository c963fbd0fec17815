"""``Patient/{id}/$research-consent``: read, record and withdraw the refusal of research use."""

from __future__ import annotations

from conftest import FHIR_JSON
from minted import bearer
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore
from coffre.service.consent import research_opt_out


def _parameters(opt_out: object) -> dict[str, object]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "optOut", "valueBoolean": opt_out}],
    }


def _patient(client: TestClient) -> str:
    response = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert response.status_code == 201
    return str(response.json()["id"])


def test_the_default_is_no_refusal_and_reading_it_is_logged(
    client: TestClient, records: RecordStore
) -> None:
    patient = _patient(client)
    before = records.storage.leaf_count()
    response = client.get(f"/fhir/Patient/{patient}/$research-consent")
    assert response.status_code == 200
    consent = response.json()
    assert consent["resourceType"] == "Consent" and "id" not in consent
    assert consent["status"] == "inactive"
    assert consent["patient"] == {"reference": f"Patient/{patient}"}
    logged = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert [leaf.kind for leaf in logged] == [LeafKind.READ]


def test_put_records_then_withdraws_the_refusal(client: TestClient, records: RecordStore) -> None:
    patient = _patient(client)
    url = f"/fhir/Patient/{patient}/$research-consent"
    created = client.put(url, json=_parameters(True), headers=FHIR_JSON)
    assert created.status_code == 201
    assert created.json()["status"] == "active"
    assert created.headers["etag"] == 'W/"1"'
    assert research_opt_out(records, patient)
    assert client.get(url).json() == created.json()
    withdrawn = client.post(url, json=_parameters(False), headers=FHIR_JSON)
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "inactive"
    assert withdrawn.json()["id"] == created.json()["id"]
    assert not research_opt_out(records, patient)
    history = client.get(f"/fhir/Consent/{created.json()['id']}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["inactive", "active"]


def test_a_missing_patient_is_404_both_ways(client: TestClient) -> None:
    url = "/fhir/Patient/absent/$research-consent"
    assert client.get(url).status_code == 404
    assert client.put(url, json=_parameters(True), headers=FHIR_JSON).status_code == 404


def test_a_deleted_patient_is_410_both_ways(client: TestClient) -> None:
    patient = _patient(client)
    assert client.delete(f"/fhir/Patient/{patient}").status_code == 204
    url = f"/fhir/Patient/{patient}/$research-consent"
    assert client.get(url).status_code == 410
    assert client.put(url, json=_parameters(True), headers=FHIR_JSON).status_code == 410


def test_the_input_is_a_parameters_with_one_boolean(client: TestClient) -> None:
    url = f"/fhir/Patient/{_patient(client)}/$research-consent"
    for body in ({"optOut": True}, _parameters("yes"), {"resourceType": "Parameters"}):
        response = client.put(url, json=body, headers=FHIR_JSON)
        assert response.status_code == 400, body
        assert response.json()["resourceType"] == "OperationOutcome"


def test_parameters_of_the_wrong_shape_are_a_400_not_a_500(client: TestClient) -> None:
    url = f"/fhir/Patient/{_patient(client)}/$research-consent"
    for parameter in ("optOut", [1], {"name": "optOut", "valueBoolean": True}, None):
        body = {"resourceType": "Parameters", "parameter": parameter}
        response = client.put(url, json=body, headers=FHIR_JSON)
        assert response.status_code == 400, body
        assert "parameter" in response.json()["issue"][0]["diagnostics"]


def test_the_capability_statement_declares_the_operation(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"everything", "research-consent"} <= {op["name"] for op in patient["operation"]}


def test_a_token_reaches_its_own_patients_consent_only(records: RecordStore) -> None:
    with records.writer() as writer:
        for patient in ("p1", "p2"):
            writer.update("Patient", patient, {"resourceType": "Patient", "id": patient})
    authority = Authority.ephemeral()
    app = create_app(records, authority=authority)
    with TestClient(app, raise_server_exceptions=False) as client:
        reader = bearer(authority, "patient", "Patient/p1", "user/*.rs")
        writer = bearer(authority, "patient", "Patient/p1", "user/*.rs user/Consent.u")
        researcher = bearer(authority, "researcher", "Practitioner/r", "user/*.rs")
        assert client.get("/fhir/Patient/p1/$research-consent", headers=reader).status_code == 200
        assert client.get("/fhir/Patient/p2/$research-consent", headers=reader).status_code == 404
        put = {**writer, **FHIR_JSON}
        assert (
            client.put(
                "/fhir/Patient/p2/$research-consent", json=_parameters(True), headers=put
            ).status_code
            == 404
        )
        assert (
            client.put(
                "/fhir/Patient/p1/$research-consent",
                json=_parameters(True),
                headers={**reader, **FHIR_JSON},
            ).status_code
            == 403
        )
        assert (
            client.put(
                "/fhir/Patient/p1/$research-consent", json=_parameters(True), headers=put
            ).status_code
            == 201
        )
        assert (
            client.get("/fhir/Patient/p1/$research-consent", headers=researcher).status_code == 403
        )
    assert research_opt_out(records, "p1") and not research_opt_out(records, "p2")
