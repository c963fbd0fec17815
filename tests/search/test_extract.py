"""index_values(): each parameter type's normalised values, presence, and composites."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from coffre.search.extract import index_values
from coffre.search.normalise import HIGHEST, date_range
from coffre.search.values import (
    Composite,
    DateRange,
    Number,
    OfType,
    QuantityValue,
    Ref,
    RefIdentifier,
    Text,
    Token,
    TokenText,
    reference,
)

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"lastUpdated": "2024-05-06T07:08:09Z", "tag": [{"system": "s", "code": "t"}]},
    "identifier": [
        {
            "system": "urn:ramq",
            "value": "TREM1234",
            "type": {"coding": [{"system": "v2", "code": "MR"}], "text": "Medical record"},
        }
    ],
    "active": True,
    "name": [{"family": "Tremblay", "given": ["Élodie", "Marie"], "prefix": ["Dre"]}],
    "telecom": [{"system": "phone", "value": "514-555-0100"}],
    "gender": "female",
    "birthDate": "1980-02",
    "address": [{"line": ["12 rue Saint-Denis"], "city": "Montréal", "postalCode": "H2X 1K4"}],
    "generalPractitioner": [
        {"reference": "https://coffre.example/fhir/Practitioner/9"},
        {"identifier": {"system": "urn:npi", "value": "42"}},
    ],
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}]
    },
    "subject": {"reference": "Patient/p1"},
    "effectivePeriod": {"start": "2021-01-01"},
    "valueQuantity": {
        "value": 72.5,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {
                "value": 120,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
    ],
}


def test_tokens_with_text_and_identifier_types() -> None:
    found = index_values(PATIENT)
    assert found["identifier"] == [
        Token("urn:ramq", "TREM1234"),
        OfType("v2", "MR", "TREM1234"),
        TokenText("medical record"),
    ]
    assert found["active"] == [Token(None, "true")]
    assert found["gender"] == [Token(None, "female")]
    assert found["phone"] == [Token("phone", "514-555-0100")]
    assert found["_id"] == [Token(None, "p1")]
    assert found["_tag"] == [Token("s", "t")]
    code = index_values(OBSERVATION)["code"]
    assert code == [Token("http://loinc.org", "29463-7"), TokenText("body weight")]


def test_strings_keep_the_exact_value_beside_the_normalised_one() -> None:
    found = index_values(PATIENT)
    assert Text("elodie", "Élodie") in found["given"]
    assert set(found["name"]) >= {Text("tremblay", "Tremblay"), Text("dre", "Dre")}
    assert Text("montreal", "Montréal") in found["address-city"]
    assert Text("12 rue saint-denis", "12 rue Saint-Denis") in found["address"]


def test_dates_are_precision_ranges() -> None:
    found = index_values(PATIENT)
    assert found["birthdate"] == [DateRange(*(date_range("1980-02") or (0, 0)))]
    assert found["_lastUpdated"][0].high - found["_lastUpdated"][0].low == 1_000_000
    period = index_values(OBSERVATION)["date"]
    assert period == [DateRange((date_range("2021-01-01") or (0, 0))[0], HIGHEST)]


def test_references_are_local_when_on_our_base() -> None:
    found = index_values(PATIENT, base="https://coffre.example/fhir")
    assert found["general-practitioner"] == [
        Ref("Practitioner/9", "Practitioner"),
        RefIdentifier("urn:npi", "42"),
    ]
    assert index_values(OBSERVATION)["patient"] == [Ref("Patient/p1", "Patient")]
    assert reference("Patient/1/_history/3", None) == Ref("Patient/1", "Patient")
    assert reference("http://other.example/fhir/Patient/1", "https://coffre.example/fhir") == Ref(
        "http://other.example/fhir/Patient/1", "Patient"
    )
    assert reference("urn:uuid:abc", None) == Ref("urn:uuid:abc", None)


def test_a_reference_and_an_identifier_written_alike_are_both_kept() -> None:
    """``Ref('Patient/1', 'Patient')`` and ``RefIdentifier('Patient/1', 'Patient')`` are
    equal tuples: the identifier was dropped as a repeat of the reference."""
    subject = {"reference": "Patient/1", "identifier": {"system": "Patient/1", "value": "Patient"}}
    found = index_values({"resourceType": "Observation", "subject": subject})["subject"]
    assert found == [Ref("Patient/1", "Patient"), RefIdentifier("Patient/1", "Patient")]


def test_quantities_numbers_and_composites() -> None:
    found = index_values(OBSERVATION)
    weight = QuantityValue(
        Decimal("72.5"), Decimal("72.45"), Decimal("72.55"), "http://unitsofmeasure.org", "kg", "kg"
    )
    assert found["value-quantity"] == [weight]
    assert Composite((Token("http://loinc.org", "29463-7"), weight)) in found["code-value-quantity"]
    pairs = found["component-code-value-quantity"]
    systolic = [p.parts for p in pairs if p.parts[0] == Token("http://loinc.org", "8480-6")]
    assert [quantity.value for _, quantity in systolic] == [Decimal(120)]
    assert len(pairs) == 2  # each code with its own value, never across components
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert index_values(risk)["probability"] == [
        Number(Decimal("0.25"), Decimal("0.245"), Decimal("0.255"))
    ]


def test_present_elements_are_listed_and_missing_ones_are_not() -> None:
    found = index_values({"resourceType": "Observation", "code": {"text": "free text only"}})
    assert found["code"] == [TokenText("free text only")]
    assert "value-quantity" not in found and "subject" not in found
    assert index_values({"resourceType": "NoSuchType"}) == {}
    assert index_values({}) == {}


def test_a_bundle_refers_to_its_first_resource() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}],
    }
    assert index_values(bundle)["composition"] == [Ref("Composition/c1", "Composition")]


def test_a_component_reads_the_whole_resource_through_percent_resource() -> None:
    sequence = {
        "resourceType": "MolecularSequence",
        "coordinateSystem": 0,
        "referenceSeq": {"chromosome": {"coding": [{"system": "chr", "code": "1"}]}},
        "variant": [{"start": 10, "end": 12}],
    }
    found = index_values(sequence)["chromosome-variant-coordinate"]
    assert [c.parts[0] for c in found] == [Token("chr", "1")]
    assert found[0].parts[1] == Number(Decimal(10), Decimal("9.5"), Decimal("10.5"))
