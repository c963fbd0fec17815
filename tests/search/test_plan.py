"""The planner never misses: whenever the exact test says a value matches a criterion, the
value's index keys satisfy the criterion's plan (or the plan is a scan). False hits are
allowed (the exact test removes them); a miss would be a wrong answer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from index_keys import index_keys

from coffre.exceptions import FhirError
from coffre.search.criteria import Criterion, check_criteria, criterion, parse_criteria
from coffre.search.extract import index_values
from coffre.search.matching import criterion_match
from coffre.search.normalise import date_range, number_range, text
from coffre.search.parameters import SearchParameter, parameters_for
from coffre.search.plan import PREFIXES, PRESENT, _date_keys, plan
from coffre.search.values import (
    Composite,
    DateRange,
    Number,
    QuantityValue,
    Ref,
    Text,
    Token,
    Value,
)


def _param(resource_type: str, code: str) -> SearchParameter:
    return parameters_for(resource_type)[code]


def _never_misses(param: SearchParameter, found: Criterion, values: list[Value]) -> None:
    planned = plan(param, found)
    if planned is None or not criterion_match(param, found, values):
        return
    keys = {key for _, key in index_keys({param.code: values})}
    assert any(set(conjunction) <= keys for conjunction in planned), (found, values)


_PREFIX = st.sampled_from(sorted(PREFIXES))
_DECIMAL = st.decimals(min_value=-10_000, max_value=10_000, places=3, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(target=_DECIMAL, query=_DECIMAL, prefix=_PREFIX)
def test_numbers(target: Decimal, query: Decimal, prefix: str) -> None:
    param = _param("RiskAssessment", "probability")
    _never_misses(
        param,
        Criterion("probability", (f"{prefix}{query}",)),
        [Number(target, *number_range(target))],
    )


@pytest.mark.parametrize(
    ("target", "query"), [("0e-30", "ap5e-31"), ("0e-30", "5e-31"), ("-1e-31", "ap1e-31")]
)
def test_numbers_near_zero_are_never_missed(target: str, query: str) -> None:
    """The smallest positive bucket also holds every magnitude under 1e-30: its lower
    bound was 1e-30, so a range from zero into it was indexed without it."""
    value = Decimal(target)
    _never_misses(
        _param("RiskAssessment", "probability"),
        Criterion("probability", (query,)),
        [Number(value, *number_range(value))],
    )


@settings(max_examples=300, deadline=None)
@given(target=_DECIMAL, query=_DECIMAL, prefix=_PREFIX, unit=st.sampled_from(["", "|", "|u|mg"]))
def test_quantities(target: Decimal, query: Decimal, prefix: str, unit: str) -> None:
    param = _param("Observation", "value-quantity")
    value = QuantityValue(target, *number_range(target), "u", "mg", "milligram")
    _never_misses(param, Criterion("value-quantity", (f"{prefix}{query}{unit}",)), [value])


_DATE = st.builds(
    lambda y, m, d, h, precision: f"{y:04d}-{m:02d}-{d:02d}T{h:02d}:30:00Z"[:precision],
    st.integers(1850, 2150),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.sampled_from([4, 7, 10, 20]),
)


@settings(max_examples=400, deadline=None)
@given(start=_DATE, end=st.one_of(st.none(), _DATE), query=_DATE, prefix=_PREFIX)
def test_dates_and_periods(start: str, end: str | None, query: str, prefix: str) -> None:
    low, high = date_range(start) or (0, 0)
    if end is not None:
        high = max(high, (date_range(end) or (0, 0))[1])
    param = _param("Encounter", "date")
    _never_misses(param, Criterion("date", (f"{prefix}{query}",)), [DateRange(low, high)])


_MICROS_2026 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@given(
    start=st.integers(-(10**17), 10**17).map(lambda offset: _MICROS_2026 + offset),
    length=st.one_of(st.just(1), st.integers(1, 90_000_000_000)),
)
def test_a_span_has_the_keys_of_its_own_moments_whatever_the_cache_keeps(
    start: int, length: int
) -> None:
    """Spans within one day share the cached keys of the whole day: they must be those
    the span itself has (an instant written to the microsecond, a span across midnight)."""
    found = {key for _, key in index_keys({"d": [DateRange(start, start + length)]})}
    assert found == {PRESENT, *_date_keys.__wrapped__(start, start + length)}


def test_an_open_period_is_found_by_any_later_date() -> None:
    param = _param("Encounter", "date")
    low, _ = date_range("2001-05-02") or (0, 0)
    _never_misses(param, Criterion("date", ("gt2120",)), [DateRange(low, 2**62)])
    _never_misses(param, Criterion("date", ("2019-03-04",)), [DateRange(low, 2**62)])


_WORDS = st.text(alphabet="abcéÉ ßXyz-", min_size=0, max_size=20)


@settings(max_examples=400, deadline=None)
@given(
    value=_WORDS,
    query=_WORDS.filter(bool),
    modifier=st.sampled_from([None, "exact", "contains"]),
    cut=st.integers(0, 20),
)
def test_strings(value: str, query: str, modifier: str | None, cut: int) -> None:
    param = _param("Patient", "family")
    for raw in (query, value[cut:], value[:cut]):
        if raw:
            found = Criterion("family", (raw,), modifier)
            _never_misses(param, found, [Text(text(value), value)])


@settings(max_examples=200, deadline=None)
@given(
    system=st.sampled_from([None, "s1", "http://loinc.org"]),
    code=st.sampled_from(["a", "8302-2", "b|c"]),
    query=st.sampled_from(["a", "8302-2", "s1|a", "|a", "s1|", "http://loinc.org|8302-2", "x|a"]),
    modifier=st.sampled_from([None, "not", "missing"]),
)
def test_tokens(system: str | None, code: str, query: str, modifier: str | None) -> None:
    param = _param("Observation", "code")
    found = Criterion("code", ("false",) if modifier == "missing" else (query,), modifier)
    _never_misses(param, found, [Token(system, code)])


@pytest.mark.parametrize(
    ("value", "name", "query"),
    [
        ("a|b", "given:exact", "a\\|b"),
        ("c$d", "given", "c\\$"),
        ("e\\f", "given:contains", "e\\\\f"),
    ],
)
def test_escaped_characters_in_a_string_query_are_literal(
    value: str, name: str, query: str
) -> None:
    param = _param("Patient", "given")
    found = criterion(name, query)
    values: list[Value] = [Text(text(value), value)]
    assert criterion_match(param, found, values)
    _never_misses(param, found, values)


def test_escaped_characters_in_uris_references_and_composite_strings_are_literal() -> None:
    url = _param("ValueSet", "url")
    assert criterion_match(url, criterion("url", "urn:a\\$b"), ["urn:a$b"])
    canonical = _param("QuestionnaireResponse", "questionnaire")
    found = criterion("questionnaire", "http://q.example/Q/1\\|2.0")
    assert criterion_match(canonical, found, [Ref("http://q.example/Q/1|2.0", None)])
    composite = _param("Observation", "code-value-string")
    found = criterion("code-value-string", "http://loinc.org|1-8$left\\\\right")
    value = Composite((Token("http://loinc.org", "1-8"), Text("left\\right", "left\\right")))
    assert criterion_match(composite, found, [value])


@pytest.mark.parametrize(
    ("reference", "query", "modifier"),
    [
        ("Patient/1", "Patient/1", None),
        ("Patient/1", "1", None),
        ("Patient/1", "1", "Patient"),
        ("Patient/1", "Patient/1", "Patient"),
        ("Patient/1", "http://coffre.example/fhir/Patient/1", None),
        ("Patient/1", "Patient/1/_history/3", None),
        # a resource that wrote Coffre's own URL is indexed as written, and found by it
        ("http://coffre.example/fhir/Patient/1", "http://coffre.example/fhir/Patient/1", None),
    ],
)
def test_references_match_and_are_planned(reference: str, query: str, modifier: str | None) -> None:
    param = _param("Observation", "subject")
    found = Criterion("subject", (query,), modifier)
    values: list[Value] = [Ref(reference, "Patient")]
    assert criterion_match(param, found, values, "http://coffre.example/fhir")
    keys = {key for _, key in index_keys({"subject": values})}
    planned = plan(param, found, "http://coffre.example/fhir")
    assert planned is not None and any(set(c) <= keys for c in planned)


@pytest.mark.parametrize(
    ("written", "query"),
    [
        ("http://ex.org/fhir/Patient/77/_history/2", "http://ex.org/fhir/Patient/77"),
        ("http://ex.org/fhir/Patient/77/_history/2", "http://ex.org/fhir/Patient/77/_history/2"),
        ("http://ex.org/fhir/Patient/77", "http://ex.org/fhir/Patient/77/_history/5"),
    ],
)
def test_a_versioned_absolute_reference_names_its_record(written: str, query: str) -> None:
    """As a relative one does (Patient/1/_history/3 is found by Patient/1): the absolute
    one was kept with its version, and found by that exact URL only."""
    param = _param("Observation", "subject")
    observation = {"resourceType": "Observation", "subject": {"reference": written}}
    values = index_values(observation)["subject"]
    found = Criterion("subject", (query,))
    assert criterion_match(param, found, values)
    keys = {key for _, key in index_keys({"subject": values})}
    planned = plan(param, found)
    assert planned is not None and any(set(c) <= keys for c in planned)


@pytest.mark.parametrize("query", ["Group/1", "http://coffre.example/fhir/Group/1/_history/2"])
def test_a_type_modifier_that_contradicts_the_reference_is_a_400(query: str) -> None:
    """``subject:Patient=Group/1`` asks for a Patient that is a Group: it matched any
    Group/1, the modifier ignored."""
    found = Criterion("subject", (query,), "Patient")
    with pytest.raises(FhirError, match="is to a Group record, where the modifier :Patient"):
        plan(_param("Observation", "subject"), found, "http://coffre.example/fhir")


@pytest.mark.parametrize(
    ("target", "query", "expected"),
    [
        ("2020-03-15", "2020-03", True),
        ("2020-03", "2020-03-15", False),
        ("2020-03-15", "ne2020-03", False),
        ("2020-03-15", "gt2020-03-14", True),
        ("2020-03-15", "ge2020-03-15", True),
        ("2020-03-15", "lt2020-03-15", False),
        ("2020-03-15", "le2020-03-15", True),
        ("2020-03-15", "sa2020-03-14", True),
        ("2020-03-15", "sa2020-03", False),
        ("2020-03-15", "eb2020-04", True),
        ("2020-03-15T10:00:00+02:00", "2020-03-15T08:00:00Z", True),
    ],
)
def test_date_prefixes_follow_the_precision_ranges(target: str, query: str, expected: bool) -> None:
    param = _param("Patient", "birthdate")
    values: list[Value] = [DateRange(*(date_range(target) or (0, 0)))]
    assert criterion_match(param, Criterion("birthdate", (query,)), values) is expected


@pytest.mark.parametrize(
    ("target", "query", "expected"),
    [
        ("100", "100", True),
        ("100.4", "100", True),
        ("100.6", "100", False),
        ("100", "100.0", False),
        ("101", "gt100", True),
        ("100.2", "gt100", False),
        ("99", "lt100", True),
        ("105", "ap100", True),
        ("115", "ap100", False),
        ("-3", "lt0", True),
    ],
)
def test_number_prefixes_follow_the_implicit_precision(
    target: str, query: str, expected: bool
) -> None:
    param = _param("RiskAssessment", "probability")
    value = Decimal(target)
    found = Criterion("probability", (query,))
    assert criterion_match(param, found, [Number(value, *number_range(value))]) is expected


def test_names_parse_into_modifiers_chains_and_reverse_chains() -> None:
    assert criterion("name:exact", "Li") == Criterion("name", ("Li",), "exact")
    assert criterion("subject:Patient.name", "a,b\\,c") == Criterion(
        "subject", ("a", "b,c"), "Patient", "name"
    )
    has = criterion("_has:Observation:patient:code", "1234")
    assert has == Criterion("_has", ("1234",), has=("Observation", "patient"), chain="code")
    assert parse_criteria("_count=5&_sort=name&gender=male") == (Criterion("gender", ("male",)),)


def test_unknown_parameters_are_refused_when_strict_and_reported_when_lenient() -> None:
    criteria = parse_criteria("gender=male&favourite=blue")
    kept, ignored = check_criteria("Patient", criteria, strict=False)
    assert kept == (Criterion("gender", ("male",)),)
    assert "'favourite'" in ignored[0]
    with pytest.raises(Exception, match="favourite"):
        check_criteria("Patient", criteria)
    with pytest.raises(Exception, match=":sounds"):
        check_criteria("Patient", parse_criteria("name:sounds=x"), strict=False)


@pytest.mark.parametrize("raw", ["1_000", "\u0661\u0660\u0660", "+5", ".5", "5.", "1e", "0x10"])
def test_a_number_fhir_does_not_write_is_a_400(raw: str) -> None:
    """Python's Decimal reads all of these; no FHIR client means any of them."""
    found = Criterion("value-quantity", (raw,), None)
    with pytest.raises(FhirError, match="is not a number"):
        plan(_param("Observation", "value-quantity"), found, None)


def test_a_date_of_another_scripts_digits_is_no_date() -> None:
    assert date_range("\uff19\uff19\uff19\uff19") is None  # full-width 9999
    assert date_range("2024") is not None
