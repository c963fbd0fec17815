"""The element rules the R4 JSON schema cannot state: mandatory primitives and choices, one
type per choice; and no empty array or string, which the schema now refuses too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import shared_data_path

from coffre.exceptions import FhirError
from coffre.fhir.elements import mandatory_names
from coffre.fhir.validation import validate

ABSENT = {
    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
    "valueCode": "unknown",
}
ABSENT_ONLY = {"extension": [ABSENT]}
CODE = {"text": "tension artérielle"}


@pytest.mark.parametrize(
    ("resource", "path", "told"),
    [
        (
            {"resourceType": "Observation", "code": CODE},
            "Observation.status",
            "is missing: the element is mandatory",
        ),
        (
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/1"},
            },
            "MedicationRequest.medication[x]",
            "is missing: the element is mandatory, as one of medicationCodeableConcept, medicationReference",
        ),
        (
            {"resourceType": "Patient", "name": [{"extension": [{"valueString": "x"}]}]},
            "Patient.name[0].extension[0].url",
            "is missing",
        ),
        (
            {"resourceType": "Patient", "_birthDate": {"extension": [{"valueCode": "unknown"}]}},
            "Patient._birthDate.extension[0].url",
            "is missing",
        ),
        (
            {
                "resourceType": "Patient",
                "text": {"div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
            },
            "Patient.text.status",
            "is missing",
        ),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": CODE,
                "component": [{"code": CODE}, {"valueString": "x"}],
            },
            "Observation.component[1].code",
            "is missing",
        ),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": CODE,
                "valueBoolean": True,
                "valueString": "non",
            },
            "Observation.value[x]",
            "has several types (valueBoolean, valueString): a choice element holds one",
        ),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": CODE,
                "valueBoolean": True,
                "_valueString": {"extension": [ABSENT]},
            },
            "Observation.value[x]",
            "has several types (valueBoolean, valueString)",
        ),
        (
            {"resourceType": "Patient", "deceasedBoolean": False, "deceasedDateTime": "2020-01-01"},
            "Patient.deceased[x]",
            "has several types",
        ),
        (
            {
                "resourceType": "Patient",
                "extension": [{"url": "http://x", "valueString": "x", "valueBoolean": True}],
            },
            "Patient.extension[0].value[x]",
            "has several types",
        ),
        (
            {"resourceType": "Patient", "extension": [{"url": "http://x"}]},
            "Patient.extension[0]",
            "must have either a value or extensions of its own, not both nor neither (ext-1)",
        ),
        (
            {
                "resourceType": "Patient",
                "extension": [
                    {"url": "http://x", "valueString": "a", "extension": [{"url": "y", **ABSENT}]}
                ],
            },
            "Patient.extension[0]",
            "must have either a value",
        ),
        (
            {"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x"}]}},
            "Patient._birthDate.extension[0]",
            "must have either a value",
        ),
        ({"resourceType": "Patient", "name": []}, "Patient.name", "is empty"),
        (
            {"resourceType": "Patient", "identifier": [{"system": "", "value": "1"}]},
            "Patient.identifier[0].system",
            "is empty",
        ),
        (
            {"resourceType": "Patient", "text": {"status": "generated", "div": ""}},
            "Patient.text.div",
            "is empty",
        ),
    ],
)
def test_an_element_that_breaks_its_definition_is_refused_by_its_path(
    resource: dict[str, Any], path: str, told: str
) -> None:
    with pytest.raises(FhirError) as refused:
        validate(resource)
    assert refused.value.status == 422
    assert refused.value.expression == path, refused.value
    assert f"{path} {told}" in str(refused.value)


@pytest.mark.parametrize(
    "resource",
    [
        # A mandatory primitive may stand in its extensions alone (a data-absent reason).
        {"resourceType": "Observation", "_status": {"extension": [ABSENT]}, "code": CODE},
        {
            "resourceType": "Observation",
            "status": "final",
            "code": CODE,
            "valueString": "x",
            "_valueString": {"id": "v"},
        },
        {"resourceType": "Patient", "name": [{"given": ["Élise", "Marie"]}]},
        # A complex extension holds its parts as extensions; a value may be extensions only.
        {
            "resourceType": "Patient",
            "extension": [{"url": "http://x", "extension": [{"url": "part", "valueString": "a"}]}],
        },
        {"resourceType": "Patient", "extension": [{"url": "http://x", "_valueCode": ABSENT_ONLY}]},
    ],
)
def test_what_the_definitions_allow_passes(resource: dict[str, Any]) -> None:
    assert validate(resource) == resource["resourceType"]


def test_a_nested_resource_is_checked_against_its_own_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Observation", "code": CODE}}],
    }
    with pytest.raises(FhirError, match=r"entry\[0\]\.resource is not a valid Observation"):
        validate(bundle)


@pytest.mark.shared_data
def test_every_mandatory_element_of_the_hl7_examples_is_missed_when_left_out() -> None:
    """Over every official example: each mandatory top-level element it holds, taken out
    with its extensions, gets a 422 naming it (the schema missed 162 of them, such as
    Observation.status and Consent.status)."""
    checked = 0
    for path in sorted(shared_data_path("fhir-examples").glob("*.json")):
        example = json.loads(path.read_text())
        resource_type = example["resourceType"]
        for name in sorted(mandatory_names(resource_type) & example.keys()):
            cut = {k: v for k, v in example.items() if k.removeprefix("_") != name}
            with pytest.raises(FhirError) as refused:
                validate(cut)
            assert refused.value.expression.startswith(f"{resource_type}."), path.name
            checked += 1
    assert checked > 1_000
