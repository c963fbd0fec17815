"""References, compartments and validation messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.fhir.compartment import compartment_patients, patient_of
from coffre.fhir.references import parse_reference, references_in, rewrite_references
from coffre.fhir.validation import validate


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        ("Patient/123", ("Patient", "123")),
        ("http://example.org/fhir/Observation/a-1/_history/2", ("Observation", "a-1")),
        ("#contained", None),
        ("urn:uuid:0f7e", None),
        ("Patient?identifier=x|1", None),
        ("Nope/1", None),
    ],
)
def test_references_parse_to_type_and_id(reference: str, parsed: tuple[str, str] | None) -> None:
    assert parse_reference(reference) == parsed


def test_references_are_found_and_rewritten_at_any_depth() -> None:
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "subject": {"reference": "urn:uuid:1"},
        "participant": [{"individual": {"reference": "Practitioner/9"}}],
        "contained": [
            {"resourceType": "Location", "managingOrganization": {"reference": "urn:uuid:1"}}
        ],
    }
    assert len(references_in(resource)) == 3
    rewrite_references(resource, lambda ref: "Patient/p" if ref == "urn:uuid:1" else None)
    assert resource["subject"]["reference"] == "Patient/p"
    assert resource["contained"][0]["managingOrganization"]["reference"] == "Patient/p"
    assert resource["participant"][0]["individual"]["reference"] == "Practitioner/9"


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "DetectedIssue", "status": "final", "reference": "guidelines/ddi.html"},
        {
            "resourceType": "Immunization",
            "education": [{"reference": "leaflets/flu", "documentType": "leaflet"}],
        },
        {
            "resourceType": "PlanDefinition",
            "action": [
                {
                    "condition": [
                        {
                            "kind": "applicability",
                            "expression": {"language": "text/cql", "reference": "Library/abc/x"},
                        }
                    ]
                }
            ],
        },
    ],
)
def test_uri_elements_named_reference_are_no_references(resource: dict[str, Any]) -> None:
    """Three R4 elements named ``reference`` are uris: they are left as they are."""
    assert references_in(resource) == []


def test_references_are_found_by_their_element_types_wherever_they_nest() -> None:
    """In an identifier's assigner, an extension's value, a primitive's extension, a
    contained resource, a Bundle's entry, a Parameters' resource."""
    subject = {"reference": "Patient/1"}
    assigner = {"reference": "Organization/1"}
    valued = {"reference": "Practitioner/1"}
    primitive = {"reference": "Device/1"}
    contained = {"reference": "Location/1"}
    entry = {"reference": "Group/1"}
    resource: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "a",
                "resource": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [
                        {
                            "resource": {
                                "resourceType": "Observation",
                                "subject": subject,
                                "identifier": [{"value": "1", "assigner": assigner}],
                                "extension": [{"url": "urn:x", "valueReference": valued}],
                                "_status": {
                                    "extension": [{"url": "urn:y", "valueReference": primitive}]
                                },
                                "contained": [
                                    {
                                        "resourceType": "Encounter",
                                        "location": [{"location": contained}],
                                    }
                                ],
                                "focus": [entry],
                            }
                        }
                    ],
                },
            }
        ],
    }
    found = references_in(resource)
    assert sorted(map(id, found)) == sorted(
        map(id, [subject, assigner, valued, primitive, contained, entry])
    )


@pytest.mark.parametrize(
    ("resource", "patient"),
    [
        ({"resourceType": "Patient", "id": "p1"}, "p1"),
        ({"resourceType": "Observation", "subject": {"reference": "Patient/p2"}}, "p2"),
        (
            {
                "resourceType": "Observation",
                "subject": {"reference": "Group/g"},
                "performer": [{"reference": "Patient/p3"}],
            },
            "p3",
        ),
        ({"resourceType": "Claim", "patient": {"reference": "Patient/p4/_history/2"}}, "p4"),
        ({"resourceType": "Organization", "name": "CHU de Québec"}, None),
        ({"resourceType": "Observation", "subject": {"reference": "Group/g"}}, None),
    ],
)
def test_the_compartment_follows_the_compartment_definition(
    resource: dict[str, Any], patient: str | None
) -> None:
    assert patient_of(resource) == patient


def _members(*patients: str) -> list[dict[str, Any]]:
    return [{"entity": {"reference": f"Patient/{p}"}} for p in patients]


@pytest.mark.parametrize(
    ("resource", "patients"),
    [
        ({"resourceType": "Group", "member": _members("bob", "alice")}, ("alice", "bob")),
        ({"resourceType": "Group", "member": _members("alice", "alice")}, ("alice",)),
        (
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": "Patient/bob"},
                "asserter": {"reference": "Patient/alice"},
            },
            ("bob",),
        ),
        (
            {
                "resourceType": "Appointment",
                "participant": [
                    {"actor": {"reference": "Patient/b"}},
                    {"actor": {"reference": "Practitioner/x"}},
                    {"actor": {"reference": "Patient/a"}},
                ],
            },
            ("a", "b"),
        ),
        ({"resourceType": "Group", "member": []}, ()),
    ],
)
def test_a_record_of_the_compartment_is_of_the_patients_its_first_naming_parameter_names(
    resource: dict[str, Any], patients: tuple[str, ...]
) -> None:
    """The compartment's first parameter that names a Patient decides (a Group's members,
    not an allergy's asserter); a record of several patients is no one's alone."""
    assert compartment_patients(resource) == patients
    assert patient_of(resource) == (patients[0] if len(patients) == 1 else None)


def test_validation_names_the_element_at_fault() -> None:
    with pytest.raises(FhirError) as caught:
        validate(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueQuantity": {"value": "12"},
            }
        )
    assert caught.value.status == 422
    assert caught.value.expression == "Observation.valueQuantity.value"


def test_validation_checks_nested_resources_by_their_own_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient", "birthDate": "1980-13-45"}}],
    }
    with pytest.raises(FhirError) as caught:
        validate(bundle)
    assert "entry[0].resource" in caught.value.diagnostics
    assert caught.value.expression == "Patient.birthDate"


_SUBJECT = {"resourceType": "Patient", "id": "p"}


def _observation(*contained: dict[str, Any], **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "poids"},
        "contained": list(contained),
        **elements,
    }


@pytest.mark.parametrize(
    "resource",
    [
        _observation(_SUBJECT, subject={"reference": "#p"}),
        _observation(
            {"resourceType": "Organization", "id": "o"},
            {**_SUBJECT, "managingOrganization": {"reference": "#o"}},
            subject={"reference": "#p"},
        ),
        _observation(
            {"resourceType": "Patient", "link": [{"other": {"reference": "#"}, "type": "seealso"}]}
        ),
    ],
    ids=["referred-to", "referred-to-by-another-contained", "refers-to-its-container"],
)
def test_contained_resources_that_are_part_of_their_container_are_taken(
    resource: dict[str, Any],
) -> None:
    assert validate(resource) == "Observation"


@pytest.mark.parametrize(
    ("resource", "rule"),
    [
        (
            _observation(
                {
                    **_SUBJECT,
                    "contained": [{"resourceType": "Organization", "id": "o"}],
                    "managingOrganization": {"reference": "#o"},
                },
                subject={"reference": "#p"},
            ),
            "dom-2",
        ),
        (
            _observation({**_SUBJECT, "meta": {"versionId": "2"}}, subject={"reference": "#p"}),
            "dom-4",
        ),
        (
            _observation(
                {**_SUBJECT, "meta": {"lastUpdated": "2026-12-06T05:00:00Z"}},
                subject={"reference": "#p"},
            ),
            "dom-4",
        ),
        (
            _observation(
                {**_SUBJECT, "meta": {"security": [{"code": "R"}]}}, subject={"reference": "#p"}
            ),
            "dom-5",
        ),
        (_observation(_SUBJECT), "dom-3"),
        (_observation(_SUBJECT, subject={"reference": "#q"}), "dom-3"),
        (_observation({"resourceType": "Patient"}, subject={"reference": "#None"}), "has no id"),
    ],
    ids=["nested", "version", "time", "security", "unreferred", "other-id", "no-id"],
)
def test_contained_resources_breaking_an_r4_invariant_are_refused_by_name(
    resource: dict[str, Any], rule: str
) -> None:
    with pytest.raises(FhirError) as caught:
        validate(resource)
    assert caught.value.status == 422 and rule in caught.value.diagnostics
    assert caught.value.expression == "Observation.contained[0]"


_ALONE = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"}}


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (_ALONE | {"subject": {"reference": "#p"}}, "Observation.subject.reference"),
        (
            _observation(
                {**_SUBJECT, "managingOrganization": {"reference": "#o"}},
                subject={"reference": "#p"},
            ),
            "Observation.contained[0].managingOrganization.reference",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": _ALONE | {"subject": {"reference": "#p"}}}],
            },
            "Observation.subject.reference",
        ),
    ],
    ids=["no-contained", "from-a-contained-one", "in-a-bundle-entry"],
)
def test_a_local_reference_to_no_contained_resource_is_refused(
    resource: dict[str, Any], expression: str
) -> None:
    with pytest.raises(FhirError) as caught:
        validate(resource)
    assert caught.value.status == 422 and "ref-1" in caught.value.diagnostics
    assert caught.value.expression == expression


def test_a_bundle_entry_does_not_resolve_another_entrys_contained_resources() -> None:
    held = _observation(_SUBJECT, subject={"reference": "#p"})
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": held}, {"resource": _ALONE | {"subject": {"reference": "#p"}}}],
    }
    with pytest.raises(FhirError) as caught:
        validate(bundle)
    assert "entry[1].resource" in caught.value.diagnostics and "ref-1" in caught.value.diagnostics


@pytest.mark.parametrize(
    "value", [[], "Patient", 3, None, {"resourceType": 7}, {"resourceType": "Nope"}]
)
def test_what_is_no_resource_at_all_is_a_400(value: Any) -> None:
    with pytest.raises(FhirError) as caught:
        validate(value)
    assert caught.value.status == 400


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_validation_refuses_garbage_with_a_fhir_error_only(value: Any) -> None:
    resource = {"resourceType": "Patient", "extension": value} if isinstance(value, list) else value
    try:
        validate(resource)
    except FhirError as error:
        assert error.status in (400, 422)


def test_canonical_json_is_stable_under_key_order() -> None:
    assert json.canonical({"b": 1, "a": {"d": 2, "c": 3}}) == json.canonical(
        {"a": {"c": 3, "d": 2}, "b": 1}
    )
