"""An operation's Parameters body as Coffre's operations read it (coffre/fhir/parameters.py):
the values of the parameters it takes, each alone in its element, or a 400 that shows what
to send, whatever JSON arrives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir.parameters import operation_parameters, read_parameters

TAKES = {"optOut": "valueBoolean", "note": "valueString", "appointment": "resource"}
SHAPE = '{"resourceType": "Parameters", "parameter": [...]}'
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "valueBoolean", "resource", "x"]), children)
    ),
    max_leaves=8,
)


def _parameters(*parameter: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameter)}


def test_the_values_come_in_order_and_the_others_by_name() -> None:
    body = _parameters(
        {"name": "note", "valueString": "a", "extension": []},
        {"name": "why", "valueInteger": 3},
        {"name": "optOut", "valueBoolean": False, "id": "p1"},
        {"name": "appointment", "resource": {"resourceType": "Appointment"}},
    )
    taken, others = read_parameters(body, "$op", TAKES, SHAPE)
    assert taken == [
        ("note", "a"),
        ("optOut", False),
        ("appointment", {"resourceType": "Appointment"}),
    ]
    assert others == ["why"]
    with pytest.raises(FhirError, match=r"\$op does not take why"):
        operation_parameters(body, "$op", TAKES, SHAPE)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"resourceType": "Patient"}, "$op takes a Parameters resource"),
        ({"resourceType": "Parameters", "parameter": {"name": "note"}}, "a list of objects"),
        (_parameters({"valueString": "a"}), "has a name"),
        (_parameters({"name": "", "valueString": "a"}), "has a name"),
        (_parameters({"name": "note", "valueString": 5}), "note is one valueString alone"),
        (_parameters({"name": "note"}), "note is one valueString alone"),
        (_parameters({"name": "optOut", "valueBoolean": "true"}), "one valueBoolean"),
        (_parameters({"name": "optOut", "valueBoolean": True, "valueString": "no"}), "alone"),
        (_parameters({"name": "optOut", "valueBoolean": True, "modifierExtension": []}), "alone"),
        (_parameters({"name": "appointment", "resource": "Appointment/1"}), "one resource"),
    ],
)
def test_what_cannot_be_read_as_it_is_meant_is_a_400_showing_the_shape(
    body: Any, says: str
) -> None:
    with pytest.raises(FhirError) as refused:
        read_parameters(body, "$op", TAKES, SHAPE)
    assert refused.value.status == 400
    assert says in refused.value.diagnostics and SHAPE in refused.value.diagnostics


@given(JSON, JSON)
def test_any_json_is_read_or_refused_with_a_400(parameter: Any, body: Any) -> None:
    for sent in (body, {"resourceType": "Parameters", "parameter": parameter}):
        try:
            taken, others = read_parameters(sent, "$op", TAKES, SHAPE)
        except FhirError as refused:
            assert refused.status == 400
            continue
        assert all(name in TAKES for name, _ in taken) and not set(others) & set(TAKES)
