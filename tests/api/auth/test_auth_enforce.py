"""What routes will call: the target a resource makes, and a refusal answered as the
client must see it (a hidden record exactly like a missing one)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from coffre.api.auth.enforce import NOBODY, UNENFORCED, Guard, refusal, target_for
from coffre.api.auth.scopes import (
    Decision,
    Interaction,
    Outcome,
    Principal,
    Role,
    Target,
    decide,
    parse_scopes,
)
from coffre.exceptions import FhirError
from coffre.search.naming import named_patients, names_patients
from coffre.service import RecordStore

ALICE = Principal(
    "alice", "portal", parse_scopes("patient/*.rs")[0], Role.PATIENT, "alice", "Patient/alice"
)


@pytest.mark.parametrize(
    ("resource", "patient", "shared"),
    [
        (
            {"resourceType": "Observation", "subject": {"reference": "Patient/alice"}},
            "alice",
            False,
        ),
        ({"resourceType": "Patient", "id": "bob"}, "bob", False),
        ({"resourceType": "Observation", "subject": {"reference": "Group/g"}}, NOBODY, False),
        ({"resourceType": "Practitioner", "id": "dr"}, None, True),
    ],
)
def test_a_resource_makes_the_target_of_its_compartment(
    resource: dict[str, Any], patient: str | None, shared: bool
) -> None:
    target = target_for(Interaction.READ, resource)
    assert (target.resource_type, target.patient, target.shared) == (
        resource["resourceType"],
        patient,
        shared,
    )


@pytest.mark.parametrize(
    ("resource", "named"),
    [
        ({"resourceType": "Task", "for": {"reference": "Patient/bob"}}, ("bob",)),
        (
            {
                "resourceType": "Task",
                "for": {"reference": "Patient/bob"},
                "focus": {"reference": "Patient/alice"},
                "owner": {"reference": "Practitioner/dr"},
                "requester": {"reference": "Patient/bob/_history/2"},
            },
            ("alice", "bob"),
        ),
        ({"resourceType": "Device", "patient": {"reference": "Patient/carol"}}, ("carol",)),
        # a Binary takes the access rules of its securityContext (binary.html)
        ({"resourceType": "Binary", "securityContext": {"reference": "Patient/dan"}}, ("dan",)),
        ({"resourceType": "Binary", "securityContext": {"reference": "DocumentReference/d"}}, ()),
        ({"resourceType": "Task", "owner": {"reference": "Practitioner/dr"}}, ()),
        ({"resourceType": "Task", "for": {"reference": "#contained"}}, ()),
        ({"resourceType": "Practitioner", "id": "dr"}, ()),
    ],
)
def test_a_shared_resource_names_the_patients_its_reference_parameters_name(
    resource: dict[str, Any], named: tuple[str, ...]
) -> None:
    target = target_for(Interaction.READ, resource)
    assert (target.shared, target.patient, target.named) == (True, None, named)


def test_a_record_of_nobody_is_hidden_from_a_patient() -> None:
    orphan = target_for(Interaction.READ, {"resourceType": "Observation"})
    assert decide(ALICE, orphan).outcome is Outcome.HIDE


def test_a_hidden_record_is_answered_exactly_as_a_missing_one(client: TestClient) -> None:
    missing = client.get("/fhir/Observation/ghost")
    assert missing.status_code == 404
    hidden = refusal(Decision(Outcome.HIDE, "another patient's"), "Observation", "ghost")
    assert hidden is not None
    assert (hidden.status, hidden.outcome()) == (404, missing.json())


def test_a_forbidden_interaction_says_why() -> None:
    error = refusal(Decision(Outcome.FORBID, "no c on Observation"), "Observation", "")
    assert error is not None
    assert (error.status, error.code) == (403, "forbidden") and "no c" in error.diagnostics
    assert refusal(Decision(Outcome.ALLOW, ""), "Observation", "x") is None


def test_check_raises_the_refusal_and_returns_the_confinement(records: RecordStore) -> None:
    guard = Guard(records, ALICE, None)
    search = Target(Interaction.SEARCH, "Observation")
    assert guard.check(search).within == "alice"
    with pytest.raises(FhirError, match="does not exist") as hidden:
        guard.check(Target(Interaction.READ, "Observation", patient="bob"), "o1")
    assert hidden.value.status == 404
    with pytest.raises(FhirError, match="does not allow") as forbidden:
        guard.check(Target(Interaction.CREATE, "Observation", patient="alice"))
    assert forbidden.value.status == 403


def test_without_a_token_nothing_is_enforced(records: RecordStore) -> None:
    guard = Guard(records, None, None)
    assert guard.check(Target(Interaction.DELETE, "Patient", patient="x")) is UNENFORCED


def test_without_a_token_nothing_is_worked_out_nor_refused(records: RecordStore) -> None:
    with records.writer() as writer:
        writer.update(
            "Task",
            "t",
            {
                "resourceType": "Task",
                "id": "t",
                "status": "requested",
                "intent": "order",
                "for": {"reference": "Patient/bob"},
            },
        )
    stored = records.read("Task", "t")
    assert Guard(records, None, None).admits(stored)
    assert not Guard(records, ALICE, None).admits(stored)


def test_only_types_outside_the_compartment_are_asked_whom_they_name() -> None:
    assert names_patients("Task") and names_patients("Device") and names_patients("Binary")
    assert not names_patients("Observation") and not names_patients("Patient")
    assert not names_patients("Practitioner") and not names_patients("Organization")
    observation = {"resourceType": "Observation", "focus": [{"reference": "Patient/bob"}]}
    assert named_patients(observation) == ()  # its compartment says whose it is
