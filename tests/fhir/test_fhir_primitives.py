"""What R4 says of its primitives beyond the schema's patterns (coffre.fhir.primitives), as
validation applies it: dates that exist, integers of 32 bits, strings of at most 1 MB."""

from __future__ import annotations

from typing import Any

import pytest
from deadline import within

from coffre.exceptions import FhirError
from coffre.fhir.validation import validate

_MEDICATION_REQUEST = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {"text": "amoxicilline"},
    "subject": {"reference": "Patient/p1"},
}


def _repeat_count(count: Any) -> dict[str, Any]:
    return _MEDICATION_REQUEST | {"dosageInstruction": [{"timing": {"repeat": {"count": count}}}]}


def _observation(**value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}} | value


@pytest.mark.parametrize(
    ("resource", "path", "rule"),
    [
        ({"resourceType": "Patient", "birthDate": "2023-02-29"}, "Patient.birthDate", "calendar"),
        (_observation(effectiveDateTime="2023-04-31T10:00:00Z"), "effectiveDateTime", "calendar"),
        (_observation(issued="2023-06-31T10:00:00.000Z"), "Observation.issued", "calendar"),
        ({"resourceType": "Patient", "multipleBirthInteger": 2**31}, "multipleBirth", "2147483647"),
        ({"resourceType": "Patient", "multipleBirthInteger": 1.5}, "multipleBirth", "integer"),
        # A whole number written as a decimal: FHIR's integer has no point nor exponent.
        ({"resourceType": "Patient", "multipleBirthInteger": 2.0}, "multipleBirth", "integer"),
        (_observation(valueInteger=1e2), "valueInteger", "integer"),
        (_repeat_count(3.0), "repeat.count", "integer"),
        (_observation(valueInteger=-(2**31) - 1), "valueInteger", "-2147483648"),
        ({"resourceType": "Patient", "photo": [{"size": -1}]}, "photo[0].size", "equal to 0"),
        (_repeat_count(0), "repeat.count", "equal to 1"),
        (_observation(valueString="a" * (2**20 + 1)), "valueString", "1,048,576 characters"),
        (
            {"resourceType": "Patient", "name": [{"text": "é" * (2**20 + 1)}]},
            "name[0].text",
            "1 MB",
        ),
    ],
)
def test_a_day_that_does_not_exist_an_integer_past_32_bits_or_a_long_string_is_refused(
    resource: dict[str, Any], path: str, rule: str
) -> None:
    with pytest.raises(FhirError) as caught:
        validate(resource)
    assert caught.value.status == 422
    assert path in (caught.value.expression or "") and rule in caught.value.diagnostics


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "birthDate": "2024-02-29"},
        {"resourceType": "Patient", "birthDate": "1987"},
        {"resourceType": "Patient", "birthDate": "1987-02"},
        _observation(effectiveDateTime="2000-02-29T23:59:60+14:00"),
        {"resourceType": "Patient", "multipleBirthInteger": 2**31 - 1},
        _observation(valueInteger=-(2**31)),
        {"resourceType": "Patient", "photo": [{"size": 0}]},
        _repeat_count(1),
        # 1 MB is counted in characters: two megabytes of UTF-8
        {"resourceType": "Patient", "name": [{"text": "é" * 2**20}]},
    ],
)
def test_the_ends_of_each_range_and_partial_dates_are_accepted(resource: dict[str, Any]) -> None:
    assert validate(resource) == resource["resourceType"]


@pytest.mark.parametrize(
    ("resource", "said"),
    [
        ({"resourceType": "Patient", "birthDate": "31/01/1961"}, "must be a date: YYYY, YYYY-MM"),
        (_observation(issued="2026-01-31"), "must be an instant: a date and a time"),
        ({"resourceType": "Patient", "id": "a_b"}, "must be an id: 1 to 64 letters"),
        ({"resourceType": "Patient", "language": "fr  CA"}, "must be a code: not empty, without"),
        (_observation(valueTime="2pm"), "must be a time of day: hh:mm:ss"),
        (
            {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueBase64Binary": "a"}]},
            "must be base64: groups of 4",
        ),
    ],
)
def test_a_malformed_primitive_is_refused_in_words_not_by_its_regular_expression(
    resource: dict[str, Any], said: str
) -> None:
    with pytest.raises(FhirError) as caught:
        validate(resource)
    assert said in caught.value.diagnostics and "pattern" not in caught.value.diagnostics


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        ({"resourceType": "Binary", "contentType": "text/plain", "data": "pas du base64!"}, "data"),
        ({"resourceType": "Patient", "photo": [{"data": "QUFB="}]}, "photo[0].data"),
    ],
)
def test_an_attachment_whose_data_is_not_base64_is_refused(
    resource: dict[str, Any], path: str
) -> None:
    """The schema gives base64Binary no pattern; R4's datatypes page gives it one."""
    with pytest.raises(FhirError) as caught:
        validate(resource)
    assert path in (caught.value.expression or "")
    assert "must be base64: groups of 4" in caught.value.diagnostics


def test_base64_split_over_lines_is_accepted() -> None:
    photo = {"contentType": "image/png", "data": "iVBORw0K\nGgoAAAAN\r\n SUhEUg=="}
    assert validate({"resourceType": "Patient", "photo": [photo]}) == "Patient"


def test_base64_with_runs_of_whitespace_is_judged_in_one_pass() -> None:
    """The schema's expression tried every way of splitting each run of spaces between
    two groups: 15 groups took seconds, each more three times as long. A 250-byte value
    must not hold a server's process."""
    value = "AAAA  " * 40 + "!"
    extension = {"url": "urn:x", "valueBase64Binary": value}
    with within(10), pytest.raises(FhirError) as caught:
        validate({"resourceType": "Patient", "extension": [extension]})
    assert "must be base64" in caught.value.diagnostics
