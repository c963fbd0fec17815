"""Criteria Coffre refuses before any look-up: a value none of whose readings is what the
client meant would otherwise match nothing, or everything, without a word."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.search import check_criteria, parse_criteria
from coffre.search.criteria import escape_value, split_or, unescape


def _refusal(resource_type: str, query: str, strict: bool = False) -> str:
    with pytest.raises(FhirError) as refused:
        check_criteria(resource_type, parse_criteria(query), strict=strict)
    assert refused.value.status == 400
    return refused.value.diagnostics


@pytest.mark.parametrize(
    "query", ["name=a,,b", "name=,", "name=%20", "name=a,%20", "subject:Patient.name=,"]
)
def test_an_empty_value_in_a_list_is_refused_not_matched_as_a_prefix_of_everything(
    query: str,
) -> None:
    resource_type = "Observation" if query.startswith("subject") else "Patient"
    assert "empty value" in _refusal(resource_type, query)


def test_an_escaped_comma_is_a_value_not_an_empty_one() -> None:
    kept, _ = check_criteria("Patient", parse_criteria(r"name=a\,b"))
    assert kept[0].values == ("a,b",)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("code-value-quantity=8302-2", "takes 2 values joined by $ (token$quantity)"),
        ("code-value-quantity=8302-2$180$cm", "takes 2 values joined by $"),
        ("code-value-quantity=$5", "has an empty part in '$5': give each of token$quantity"),
        ("code-value-quantity=8302-2$", "has an empty part"),
        ("code-value-quantity=8302-2$180|cm", "number||code"),
        ("value-quantity=180|cm", "number||code"),
        ("value-quantity=180|http://unitsofmeasure.org|cm|x", "number|system|code"),
        ("value-quantity=180|http://unitsofmeasure.org|", "number|system|code"),
    ],
)
def test_a_composite_or_quantity_of_the_wrong_parts_says_what_it_takes(
    query: str, expected: str
) -> None:
    assert expected in _refusal("Observation", query)


@pytest.mark.parametrize(
    "query",
    [
        "code-value-quantity=8302-2$180",
        "value-quantity=180||cm",
        "value-quantity=le180",
        r"value-quantity=180|a\|b|cm",
    ],
)
def test_well_formed_composites_and_quantities_are_kept(query: str) -> None:
    kept, ignored = check_criteria("Observation", parse_criteria(query))
    assert len(kept) == 1 and not ignored


@pytest.mark.parametrize(
    "value",
    ["http://terminology.hl7.org/CodeSystem/v2-0203|MR", "a|b|c|d", "a||123", "a|MR|", "||"],
)
def test_of_type_takes_exactly_system_code_and_value(value: str) -> None:
    assert "system|code|value" in _refusal("Patient", f"identifier:of-type={value}")


@pytest.mark.parametrize(
    ("resource_type", "query"),
    [
        ("Observation", "subject:Foo.name=x"),
        ("Patient", "_has:Foo:patient:name=x"),
        ("Patient", "_has:foo:patient:name=x"),
    ],
)
def test_a_chain_or_has_naming_no_resource_type_is_refused_even_leniently(
    resource_type: str, query: str
) -> None:
    name = query.partition("=")[0]
    assert (
        _refusal(resource_type, query)
        == f"{name}: {name.split(':')[1].split('.')[0]} is not an R4 resource type"
    )


@pytest.mark.parametrize("query", ["identifier=|||", "identifier=a|b|c", "gender:not=a|b|c"])
def test_a_token_of_more_than_two_parts_is_refused(query: str) -> None:
    assert "a token is code, system|code" in _refusal("Patient", query)


def test_an_escaped_bar_keeps_a_token_in_two_parts() -> None:
    kept, _ = check_criteria("Patient", parse_criteria(r"identifier=urn:x|a\|b"))
    assert len(kept) == 1


@pytest.mark.parametrize(
    "query",
    [".name=x", "general-practitioner.=x", "general-practitioner..name=x", "_has=x", "=x"],
)
def test_a_malformed_chain_or_has_is_refused_even_leniently(query: str) -> None:
    """Ignored as an unknown parameter, it would answer with every Patient."""
    assert "is not the name of a search parameter" in _refusal("Patient", query)


def test_an_unknown_parameter_behind_a_known_type_is_still_ignored_leniently() -> None:
    query = parse_criteria("subject:Patient.foo=x")
    kept, ignored = check_criteria("Observation", query, strict=False)
    assert not kept and ignored == ["no target of 'subject' has a search parameter 'foo'"]


@pytest.mark.parametrize(
    ("resource_type", "query", "says"),
    [
        ("Observation", "subject.gender:exact=male", "modifier :exact on the token parameter"),
        ("Observation", "subject:Patient.name:foo=x", "modifier :foo on the string parameter"),
        ("Patient", "_has:Observation:patient:code:above=x", "modifier :above on the token"),
        ("Observation", "subject:identifier.name=x", "modifier :identifier on the reference"),
        ("Observation", "subject:missing.name=x", "modifier :missing on the reference"),
        ("Patient", "general-practitioner:Observation.code=x", "modifier :Observation"),
        ("Patient", "_has:Observation:encounter:code=x", "'encounter' never refers to a Patient"),
        ("Patient", "_has:Observation:code:code=x", "no reference search parameter 'code'"),
        ("Patient", "gender.name=x", "'gender' is not a reference: it cannot be chained"),
        ("Patient", "gender:of-type=a|b|c", ":of-type reads an Identifier's type; 'gender'"),
        ("Observation", "code:of-type=a|b|c", "'code' indexes CodeableConcept"),
        ("Observation", "subject:Patient.gender:of-type=a|b|c", "'gender' indexes code"),
        ("Patient", "gender:text=male", ":text reads the text of a CodeableConcept"),
        ("Patient", "active:text=true", "'active' indexes boolean"),
    ],
)
def test_a_misused_modifier_or_target_is_refused_even_leniently(
    resource_type: str, query: str, says: str
) -> None:
    """Ignored, each would answer with every record of the type; not ignored, with none:
    R4 wants a 400 for a modifier a server does not support (``:of-type`` is for
    identifiers alone), and so does a target that the reference never names."""
    assert says in _refusal(resource_type, query)


@pytest.mark.parametrize(
    ("resource_type", "query"),
    [
        ("Patient", "_has:Observation:patient:_has:Foo:subject:code=x"),
        ("Observation", "subject:Patient._has:Foo:patient:name=x"),
        ("Observation", "subject:Patient.organization:Foo.name=x"),
    ],
)
def test_a_type_named_deeper_in_a_chain_is_checked_too(resource_type: str, query: str) -> None:
    name = query.partition("=")[0]
    assert _refusal(resource_type, query) == f"{name}: Foo is not an R4 resource type"


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        ("Observation", "subject:Patient.identifier:of-type=a|b", "system|code|value"),
        ("Observation", "subject.identifier:of-type=a|b", "system|code|value"),
        ("Encounter", "_has:Observation:encounter:value-quantity=100|mg", "number|system|code"),
        ("Encounter", "_has:Observation:encounter:code-value-quantity=a", "joined by $"),
        (
            "Patient",
            "_has:Encounter:patient:_has:Observation:encounter:value-quantity=1|mg",
            "number||code",
        ),
    ],
)
def test_the_value_of_a_chain_or_has_is_checked_on_the_type_it_searches(
    resource_type: str, query: str, expected: str
) -> None:
    assert expected in _refusal(resource_type, query)


@given(st.text(min_size=1))
def test_an_escaped_value_is_one_value_that_reads_back_as_given(value: str) -> None:
    """Whatever a person typed (commas, bars, dollar signs, backslashes), escaped it is one
    value of a string parameter, which reads back as typed."""
    (only,) = split_or(escape_value(value))
    assert unescape(only) == value
