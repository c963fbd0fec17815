"""``_typeFilter`` queries read by the search's rules: what is kept, what is refused,
and what a lenient kick-off is told of what was left out (names, never values)."""

from __future__ import annotations

import pytest

from coffre.exceptions import FhirError
from coffre.service.type_filters import reached_types, read_type_filters

TYPES = ("Observation", "Patient")


def test_each_query_is_kept_with_its_type_and_its_criteria() -> None:
    queries = ["Observation?code=http://loinc.org|1,2&date=ge2020", "Patient?gender=male"]
    filters, notes = read_type_filters(queries, TYPES, lenient=False)
    assert filters == (
        ("Observation", "code=http%3A%2F%2Floinc.org%7C1%2C2&date=ge2020"),
        ("Patient", "gender=male"),
    )
    assert notes == []


@pytest.mark.parametrize(
    "query",
    [
        "Observation",
        "Nonsense?code=1",
        "Observation?",
        "Encounter?status=finished",  # not a type of the export
        "Observation?_count=10",
        "Observation?_include=Observation:subject",
        "Observation?colour=red",
        "Observation?code:exact=1",  # a modifier a token does not take
        "Observation?date=yesterday",
        "Observation?value-quantity=180|cm",
        "Observation?code=a,,b",
        "Observation?_has:Nonsense:subject:code=1",
    ],
)
def test_a_query_a_search_would_refuse_is_a_400(query: str) -> None:
    with pytest.raises(FhirError) as refused:
        read_type_filters([query], TYPES, lenient=False)
    assert refused.value.status == 400


def test_lenient_leaves_out_what_it_cannot_answer_and_says_so_by_name_only() -> None:
    query = "Observation?colour=crimson&code=secret-code&_sort=date"
    filters, notes = read_type_filters([query], TYPES, lenient=True)
    assert filters == (("Observation", "code=secret-code"),)
    assert len(notes) == 2
    assert "colour" in notes[0] and "_sort" in notes[1]
    assert not any("crimson" in note or "secret" in note for note in notes)


def test_lenient_still_refuses_a_value_its_parameter_cannot_read() -> None:
    with pytest.raises(FhirError):
        read_type_filters(["Observation?date=yesterday"], TYPES, lenient=True)


def test_the_types_a_filter_s_chains_and_has_search_are_named() -> None:
    filters = (
        ("Observation", "subject:Patient.organization.name=x"),
        ("Patient", "_has:Encounter:subject:code=1"),
        ("Observation", "code=1"),
    )
    assert reached_types(filters) == ["Encounter", "Organization", "Patient"]
