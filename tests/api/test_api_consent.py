"""``Patient/{id}/$research-consent``: read, record and withdraw the refusal of research use."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FHIR_JSON
from minted import bearer
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore
from coffre.service.consent import consent_resource, research_consent_id, research_opt_out


def _parameters(opt_out: object) -> dict[str, object]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "optOut", "valueBoolean": opt_out}],
    }


_MODIFIER = {"url": "https://example.org/fhir/only-if", "valueBoolean": False}


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
        assert response.status_code in (400, 422), body
        assert response.json()["resourceType"] == "OperationOutcome"


def test_parameters_of_the_wrong_shape_are_a_422_not_a_500(client: TestClient) -> None:
    url = f"/fhir/Patient/{_patient(client)}/$research-consent"
    for parameter in ("optOut", [1], {"name": "optOut", "valueBoolean": True}, None):
        body = {"resourceType": "Parameters", "parameter": parameter}
        response = client.put(url, json=body, headers=FHIR_JSON)
        assert response.status_code == 422, body
        assert "Parameters.parameter" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("parameters", "extra", "status"),
    [
        ([{"name": "optOut", "valueBoolean": True, "valueString": "no"}], {}, 422),
        ([{"name": "optOut", "valueBoolean": True}] * 2, {}, 400),
        ([{"name": "optOut", "valueBoolean": True}, {"name": "why", "valueString": "x"}], {}, 400),
        ([{"name": "optOut", "valueBoolean": True, "modifierExtension": [_MODIFIER]}], {}, 400),
        ([{"name": "optOut", "valueBoolean": True}], {"implicitRules": "http://x.org/r"}, 400),
        ([{"name": "optOut", "valueBoolean": True}], {"optIn": True}, 422),
    ],
)
def test_a_choice_read_from_part_of_what_was_sent_is_refused(
    client: TestClient,
    records: RecordStore,
    parameters: list[dict[str, Any]],
    extra: dict[str, Any],
    status: int,
) -> None:
    """Each was taken as an opt-out, whatever else it said: two values, a second
    optOut, a parameter Coffre ignores, a modifier or rules it does not know, an unknown
    element."""
    patient = _patient(client)
    body = {"resourceType": "Parameters", "parameter": parameters, **extra}
    url = f"/fhir/Patient/{patient}/$research-consent"
    response = client.put(url, json=body, headers=FHIR_JSON)
    assert response.status_code == status, response.text
    assert not research_opt_out(records, patient)


def test_the_operation_takes_no_parameter_in_its_url(client: TestClient) -> None:
    url = f"/fhir/Patient/{_patient(client)}/$research-consent?optOut=true"
    for response in (client.get(url), client.put(url, json=_parameters(True), headers=FHIR_JSON)):
        assert response.status_code == 400, response.text
        assert "does not support optOut" in response.json()["issue"][0]["diagnostics"]


def test_a_change_made_by_someone_else_since_is_a_412_with_if_match(client: TestClient) -> None:
    """The GET gives the Consent's ETag; a PUT with If-Match used to overwrite a newer
    choice whatever it named."""
    url = f"/fhir/Patient/{_patient(client)}/$research-consent"
    read = client.get(url)
    assert "etag" not in read.headers  # none recorded yet: the default, unsaved
    refused = client.put(url, json=_parameters(True), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert refused.status_code == 412, refused.text
    first = client.put(url, json=_parameters(True), headers={**FHIR_JSON, "If-None-Match": "*"})
    assert first.status_code == 201 and first.headers["etag"] == 'W/"1"'
    again = client.put(url, json=_parameters(False), headers={**FHIR_JSON, "If-None-Match": "*"})
    assert again.status_code == 412, again.text
    withdrawn = client.put(url, json=_parameters(False), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert withdrawn.status_code == 200 and withdrawn.headers["etag"] == 'W/"2"'
    stale = client.put(url, json=_parameters(True), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412 and "version 2" in stale.json()["issue"][0]["diagnostics"]


def test_head_answers_as_get_without_a_body(client: TestClient) -> None:
    url = f"/fhir/Patient/{_patient(client)}/$research-consent"
    response = client.head(url)
    assert response.status_code == 200 and response.content == b""


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


def test_a_refusal_changes_through_the_operation_only_and_the_patient_withdraws_it(
    records: RecordStore,
) -> None:
    """A clinician records a patient's refusal but does not withdraw it; nobody changes it
    by a PUT, PATCH or DELETE of the Consent, which would leave her answer saying what she
    chose while the hub counts her again."""
    with records.writer() as writer:
        writer.update("Patient", "p1", {"resourceType": "Patient", "id": "p1"})
        writer.update(
            "Encounter",
            "e1",
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "Patient/p1"},
                "participant": [{"individual": {"reference": "Practitioner/doc"}}],
            },
        )
    authority = Authority.ephemeral()
    url = "/fhir/Patient/p1/$research-consent"
    with TestClient(create_app(records, authority=authority)) as client:
        doctor = {**bearer(authority, "clinician", "Practitioner/doc", "user/*.cruds"), **FHIR_JSON}
        admin = {**bearer(authority, "admin", "Practitioner/it", "user/*.cruds"), **FHIR_JSON}
        patient = {**bearer(authority, "patient", "Patient/p1", "user/*.cruds"), **FHIR_JSON}
        assert client.put(url, json=_parameters(True), headers=doctor).status_code == 201
        withdrawn = client.put(url, json=_parameters(False), headers=doctor)
        assert withdrawn.status_code == 403 and "withdrawn by the patient" in withdrawn.text
        consent = client.get(url, headers=admin).json()
        at = f"/fhir/Consent/{consent['id']}"
        purpose = [{"op": "add", "path": "/provision/purpose/0/code", "value": "HRESCH2"}]
        patch = {**admin, "Content-Type": "application/json-patch+json"}
        for response in (
            client.patch(at, json=purpose, headers=patch),
            client.put(at, json={**consent, "status": "inactive"}, headers=admin),
            client.delete(at, headers=admin),
            client.patch(at, json=purpose, headers={**doctor, **patch}),
        ):
            assert response.status_code == 403, response.text
            assert "$research-consent only" in response.text
        assert research_opt_out(records, "p1")
        assert client.put(url, json=_parameters(False), headers=patient).status_code == 200
        # Her first choice is hers too: no PUT creates it where she never chose.
        first = consent_resource("p2", False, None)
        first["id"] = research_consent_id(records, "p2")
        created = client.put(f"/fhir/Consent/{first['id']}", json=first, headers=admin)
        assert created.status_code == 403 and "$research-consent only" in created.text
        # Whoever may not see her Consent is answered as for a missing record.
        stranger = bearer(authority, "clinician", "Practitioner/other", "user/*.cruds")
        unseen = client.delete(at, headers=stranger)
        assert unseen.status_code == 200 and "choice" not in unseen.text
        assert client.get(at, headers=admin).status_code == 200
    assert not research_opt_out(records, "p1")
