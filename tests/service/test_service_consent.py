"""A patient's refusal of research use: a sealed, logged, versioned FHIR Consent."""

from __future__ import annotations

import pytest

from coffre.exceptions import FhirError
from coffre.fhir.validation import validate
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore
from coffre.service.consent import (
    consent_resource,
    current_consent,
    record_research_consent,
    refuses_research,
    research_consent_id,
    research_opt_out,
    research_refusals,
)


def _patients(records: RecordStore, *ids: str) -> None:
    with records.writer() as writer:
        for patient_id in ids:
            writer.update("Patient", patient_id, {"resourceType": "Patient", "id": patient_id})


def _say(records: RecordStore, patient_id: str, opt_out: bool) -> bool:
    with records.writer() as writer:
        return record_research_consent(writer, patient_id, opt_out).changed


def test_no_refusal_until_one_is_recorded(records: RecordStore) -> None:
    _patients(records, "p1")
    assert current_consent(records, "p1") is None
    assert research_opt_out(records, "p1") is False
    assert research_opt_out(records, "never-seen") is False


def test_a_refusal_is_an_active_deny_consent_in_the_patients_compartment(
    records: RecordStore,
) -> None:
    _patients(records, "p1", "p2")
    before = records.storage.leaf_count()
    assert _say(records, "p1", True)
    stored = current_consent(records, "p1")
    assert stored is not None
    consent = stored.resource()
    assert validate(consent) == "Consent"
    assert consent["status"] == "active"
    assert consent["scope"]["coding"][0]["code"] == "research"
    assert consent["patient"] == {"reference": "Patient/p1"}
    assert consent["provision"]["type"] == "deny"
    assert consent["provision"]["purpose"][0]["code"] == "HRESCH"
    assert "dateTime" in consent
    assert stored.comp == records.keys.patient_compartment("p1")
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert [leaf.kind for leaf in leaves] == [LeafKind.CREATE]
    assert research_opt_out(records, "p1") is True
    assert research_opt_out(records, "p2") is False


def test_withdrawing_makes_a_new_inactive_version_and_repeating_makes_none(
    records: RecordStore,
) -> None:
    _patients(records, "p1")
    assert _say(records, "p1", True)
    assert not _say(records, "p1", True)
    assert _say(records, "p1", False)
    stored = current_consent(records, "p1")
    assert stored is not None and stored.version == 2
    assert stored.resource()["status"] == "inactive"
    assert research_opt_out(records, "p1") is False
    assert _say(records, "p1", True)
    assert research_opt_out(records, "p1") is True


def test_an_unknown_patient_cannot_opt_out(records: RecordStore) -> None:
    with records.writer() as writer, pytest.raises(FhirError) as raised:
        record_research_consent(writer, "ghost", True)
    assert raised.value.status == 404


def test_each_patient_has_an_id_no_client_can_guess(records: RecordStore) -> None:
    first, second = research_consent_id(records, "p1"), research_consent_id(records, "p2")
    assert first != second and "p1" not in first
    assert first == research_consent_id(records, "p1")
    assert len(first) <= 64


def test_a_consent_is_a_refusal_only_if_active_deny_for_research_and_this_patient() -> None:
    refusal = consent_resource("p1", True, "2026-12-02T10:00:00+00:00")
    assert refuses_research(refusal, "p1")
    assert not refuses_research(refusal, "p2")
    assert not refuses_research(consent_resource("p1", False, None), "p1")
    permit = {**refusal, "provision": {**refusal["provision"], "type": "permit"}}
    assert not refuses_research(permit, "p1")
    treatment = {**refusal, "provision": {"type": "deny", "purpose": [{"code": "TREAT"}]}}
    assert not refuses_research(treatment, "p1")


def test_a_deleted_consent_is_no_refusal(records: RecordStore) -> None:
    _patients(records, "p1")
    _say(records, "p1", True)
    with records.writer() as writer:
        writer.delete("Consent", research_consent_id(records, "p1"))
    assert research_opt_out(records, "p1") is False
    assert _say(records, "p1", True)
    assert research_opt_out(records, "p1") is True


def test_the_refusals_searched_are_those_each_patient_would_be_asked_for(
    records: RecordStore,
) -> None:
    """Refused, withdrawn, deleted, refused at an id a client chose: only the first two
    patients' own active refusals count, as research_opt_out says of each."""
    ids = ("p1", "p2", "p3", "p4", "p5")
    _patients(records, *ids)
    for patient_id in ("p1", "p2", "p3", "p4"):
        _say(records, patient_id, True)
    _say(records, "p3", False)
    with records.writer() as writer:
        writer.delete("Consent", research_consent_id(records, "p4"))
        elsewhere = {**consent_resource("p5", True, None), "id": "chosen-by-an-app"}
        writer.update("Consent", "chosen-by-an-app", elsewhere)
    assert sorted(research_refusals(records)) == ["p1", "p2"]
    assert [p for p in ids if research_opt_out(records, p)] == ["p1", "p2"]
