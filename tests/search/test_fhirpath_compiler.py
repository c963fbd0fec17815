"""The FHIRPath parser and compiler: syntax, static types, and the search-specific parts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from conftest import shared_data_path
from fhirpath_suite import load_model

from coffre.search.fhirpath import (
    Compiler,
    FhirPathEvaluationError,
    FhirPathSyntaxError,
    FhirPathTypeError,
    Model,
    Temporal,
    evaluate,
    parse,
)

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(shared_data_path("schema", "fhir.schema.json"))


OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "contained": [{"resourceType": "Patient", "id": "p"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/123"},
    "performer": [
        {"reference": "Practitioner/9"},
        {"reference": "#p"},
        {"reference": "http://elsewhere.example/fhir/Patient/7/_history/2"},
        {"reference": "urn:uuid:0b4e"},
    ],
    "effectiveDateTime": "2021-03-04T05:06:07+02:00",
    "valueQuantity": {
        "value": 72.5,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
    "component": [
        {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
        {"code": {"text": "b"}, "valueString": "x"},
    ],
}


@pytest.mark.parametrize(
    "text",
    ["2 +", "(1", "1 2", "Patient.", "'unterminated", "2 /* open", "a.where(", "@2020-13-45"],
)
def test_malformed_expressions_are_refused(model: Model, text: str) -> None:
    with pytest.raises((FhirPathSyntaxError, FhirPathTypeError)):
        Compiler(model, "Patient").compile(text)


def test_precedence_comments_and_literals(model: Model) -> None:
    assert evaluate("1 + 2 * 3 // six and one", {}, model) == [7]
    assert evaluate("2 /* two */ - 1 - 1", {}, model) == [0]
    assert evaluate("-(3 div 2) = -1", {}, model) == [True]
    assert evaluate("1.50 + 1", {}, model) == [Decimal("2.50")]
    assert evaluate("'a\\u0062\\'c' & {}", {}, model) == ["ab'c"]
    assert evaluate("@2020-01-01T10:00:00Z > @2020-01-01T11:00:00+02:00", {}, model) == [True]
    assert parse("a.b[0]").kind == "index"


def test_choice_elements_resolve_at_compile_time(model: Model) -> None:
    code = Compiler(model, "Observation").compile("Observation.value.unit").merged()
    assert "valueQuantity" in code and "valueString" not in code
    assert evaluate("(Observation.value as Quantity).value", OBSERVATION, model) == [
        Decimal("72.5")
    ]
    assert evaluate("Observation.value is Quantity", OBSERVATION, model) == [True]
    assert evaluate("Observation.component.value.ofType(string)", OBSERVATION, model) == ["x"]
    effective = evaluate("Observation.effective", OBSERVATION, model)
    assert isinstance(effective[0], Temporal) and effective[0].tz == 120


def test_a_union_of_types_keeps_only_the_part_for_the_root(model: Model) -> None:
    compiled = Compiler(model, "Patient").compile(
        "Patient.name | Practitioner.name | Person.name", split_union=True
    )
    assert [branch.type for branch in compiled.branches] == ["HumanName"]


def test_unknown_elements_are_type_errors_unless_lenient(model: Model) -> None:
    with pytest.raises(FhirPathTypeError, match="given1"):
        Compiler(model, "Patient").compile("Patient.name.given1")
    with pytest.raises(FhirPathTypeError, match="valueQuantity"):
        Compiler(model, "Observation").compile("Observation.valueQuantity")
    lenient = Compiler(model, "Observation", lenient=True)
    assert lenient.compile("Observation.nothingHere").branches == ()
    assert lenient.slips == ["Observation.nothingHere"]


def test_resolve_knows_a_reference_type_from_its_string(model: Model) -> None:
    found = evaluate(
        "Observation.performer.where(resolve() is Patient).reference", OBSERVATION, model
    )
    assert found == ["#p", "http://elsewhere.example/fhir/Patient/7/_history/2"]
    assert evaluate("Observation.subject.resolve().id", OBSERVATION, model) == ["123"]
    assert evaluate(
        "Observation.performer.resolve() is Practitioner",
        {**OBSERVATION, "performer": OBSERVATION["performer"][:1]},
        model,
    ) == [True]


def test_primitive_extensions_and_values_without_one(model: Model) -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {"given": [None, "Jo"], "_given": [{"extension": [{"url": "u", "valueString": "s"}]}]}
        ],
    }
    assert evaluate("Patient.name.given.count()", patient, model) == [2]
    assert evaluate("Patient.name.given.extension('u').value", patient, model) == ["s"]
    assert evaluate("Patient.name.given.select(hasValue())", patient, model) == [False, True]


def test_errors_at_run_time(model: Model) -> None:
    with pytest.raises(FhirPathEvaluationError):
        evaluate("Observation.component.single()", OBSERVATION, model)
    with pytest.raises(FhirPathEvaluationError):
        evaluate("Observation.code < 1", OBSERVATION, model)
    assert evaluate("1 / 0", {}, model) == []


def test_generated_source_is_plain_python(model: Model) -> None:
    compiled = Compiler(model, "Observation").compile(
        "Observation.code.coding.where(system = %loinc).code"
    )
    assert compiled.helpers <= {"nav", "navp", "test", "eq", "values"}
    assert "http://loinc.org" in compiled.merged()
