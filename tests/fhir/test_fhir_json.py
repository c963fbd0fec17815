"""FHIR JSON in and out: a decimal is written back as it came (FHIR gives its precision a
meaning), and stays a number for everything else."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir import json
from coffre.fhir.json import PreciseDecimal
from coffre.search.fhirpath.runtime import val
from coffre.search.normalise import decimal


@st.composite
def decimal_texts(draw: st.DrawFn) -> str:
    """JSON decimal literals as people and systems write them: trailing zeros, exponents,
    long fractions, signs (integers are ints, which JSON writes one way)."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.from_regex(r"0|[1-9][0-9]{0,20}", fullmatch=True))
    fraction = draw(st.from_regex(r"(\.[0-9]{1,20})?", fullmatch=True))
    exponent = draw(
        st.from_regex(
            r"[eE][+-]?[0-9]{1,2}" if not fraction else r"([eE][+-]?[0-9]{1,2})?", fullmatch=True
        )
    )
    return f"{sign}{whole}{fraction}{exponent}"


@given(
    decimal_texts(),
    st.sampled_from(['{{"value": {}}}', '{{"a": {{"b": [1, {}]}}}}', '{{"a":[{} ,2]}}']),
)
def test_a_number_is_written_back_as_it_came(text: str, shape: str) -> None:
    """In a member or an array member of a FHIR document (an object)."""
    body = shape.format(text).encode()
    loaded = json.loads(body)
    if "value" in loaded:
        number = loaded["value"]
    elif isinstance(loaded["a"], dict):
        number = loaded["a"]["b"][1]
    else:
        number = loaded["a"][0]
    assert isinstance(number, float) and number == float(text)
    for written in (json.dumps(loaded), json.canonical(loaded)):
        assert text.encode() in written
        assert json.loads(written) == loaded


@pytest.mark.parametrize(
    ("text", "precise"),
    [("1.50", True), ("0.010", True), ("1e2", True), ("7.2", False), ("1.0", False), ("12", False)],
)
def test_only_a_number_a_float_would_rewrite_keeps_its_text(text: str, precise: bool) -> None:
    number = json.loads(f'{{"value": {text}}}')["value"]
    assert isinstance(number, PreciseDecimal) is precise


@pytest.mark.parametrize(
    "text", ["18446744073709551616", "-9223372036854775809", "123456789012345678901234567890"]
)
def test_an_integer_past_64_bits_is_written_back_as_it_came(text: str) -> None:
    """orjson reads it as a float: 18446744073709551616 was sealed as 1.8446744073709552e+19."""
    loaded = json.loads(f'{{"value": {text}, "a": [1, {text}]}}'.encode())
    assert loaded["value"] == float(text) and loaded["a"][1] == float(text)
    for written in (json.dumps(loaded), json.canonical(loaded)):
        assert written.count(text.encode()) == 2, written


@pytest.mark.parametrize("text", ["9223372036854775807", "18446744073709551615", "-1"])
def test_an_integer_of_64_bits_stays_an_int(text: str) -> None:
    assert json.loads(f'{{"value": {text}}}')["value"] == int(text)


def test_a_string_that_looks_like_a_number_stays_a_string() -> None:
    body = b'{"text": "ratio 1:2.50, 3e5", "id": "4e3b", "value": 7.20}'
    loaded = json.loads(body)
    assert loaded["text"] == "ratio 1:2.50, 3e5" and loaded["id"] == "4e3b"
    assert json.dumps(loaded) == b'{"text":"ratio 1:2.50, 3e5","id":"4e3b","value":7.20}'


def test_a_precise_decimal_computes_as_its_value() -> None:
    number = json.loads(b'{"value": [7.20]}')["value"][0]
    assert number + 1 == pytest.approx(8.2) and number < 7.3 and number == 7.2
    assert val(number) == Decimal("7.2") and decimal(number) == Decimal("7.2")
    copied = pickle.loads(pickle.dumps(number))
    assert copied.text == "7.20" and json.dumps({"v": copied}) == b'{"v":7.20}'


def test_a_body_too_deep_for_the_slower_parse_is_refused() -> None:
    """A document orjson reads but the standard library's parser cannot (a server's answer
    to ``coffre audit``, say) is refused, not a crash."""
    deep = b'{"v": 1.50, "a": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(FhirError) as refused:
        json.loads(deep)
    assert refused.value.status == 400


def test_a_body_that_is_not_utf8_is_refused_where_it_stops_being_so() -> None:
    """A file saved as Latin-1 (é as one byte): the message points at the byte, not at
    the document's first character."""
    body = '{"resourceType": "Patient",\n "name": [{"family": "Lefèvre"}]}'.encode("latin-1")
    with pytest.raises(FhirError) as refused:
        json.loads(body, "patient.json")
    assert refused.value.status == 400
    assert "patient.json is not valid JSON: byte 53 (line 2, column 26) is not UTF-8" in (
        refused.value.diagnostics
    )
    with pytest.raises(FhirError) as refused:  # an NDJSON file's line: the caller names it
        json.loads(body.replace(b"\n", b"") + b"\r\n", "line 2")
    assert "line 2 is not valid JSON: byte 52 (column 53) is not UTF-8" in (
        refused.value.diagnostics
    )
