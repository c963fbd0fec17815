"""JSON Patch as Coffre applies it (coffre/fhir/json_patch.py): what RFC 6902 says, as the
``jsonpatch`` package applies it on its own, with refusals that never quote the record."""

from __future__ import annotations

import base64
from typing import Any

import jsonpatch
import jsonpointer
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.exceptions import FhirError
from coffre.fhir.json_patch import json_patch_of_binary, parse_json_patch

MARK = "val-"  # every string value of a generated document starts with it; no path holds it
KEYS = st.text(alphabet="abxyz~/", max_size=3)
STRANGE_KEYS = st.text(alphabet="ABC", min_size=1, max_size=3)  # never a generated key
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.text(alphabet="klmn", max_size=3).map(MARK.__add__),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(KEYS, JSON, max_size=4)


def pointers(value: Any, parts: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The reference tokens of every location in ``value``, itself first."""
    found = [parts]
    if isinstance(value, dict):
        for key, child in value.items():
            found += pointers(child, (*parts, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += pointers(child, (*parts, str(index)))
    return found


def as_pointer(parts: tuple[str, ...]) -> str:
    return str(jsonpointer.JsonPointer.from_parts(list(parts)).path)


@st.composite
def patches(draw: st.DrawFn, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Well-formed operations on ``document``: mostly on locations it has, or beside
    them (a new key, ``-``, an index), some on locations it does not have."""
    existing = pointers(document)

    def path() -> str:
        parts = draw(st.sampled_from(existing))
        kind = draw(st.sampled_from(["there", "there", "beside", "nowhere"]))
        if kind == "beside":
            parts = (*parts, draw(st.sampled_from(["-", "0", "1"]) | KEYS))
        elif kind == "nowhere":
            parts = (*parts, draw(STRANGE_KEYS))
        return as_pointer(parts)

    operations = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]))
        operation: dict[str, Any] = {"op": op, "path": path()}
        if op in ("add", "replace", "test"):
            operation["value"] = draw(JSON)
        if op in ("move", "copy"):
            operation["from"] = path()
        operations.append(operation)
    return operations


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@settings(max_examples=400)
@given(st.data(), DOCUMENTS)
def test_a_patch_applies_as_rfc_6902_and_jsonpatch_say(
    data: st.DataObject, document: dict[str, Any]
) -> None:
    operations = data.draw(patches(document))
    before = canonical(document)
    patch = parse_json_patch(orjson.dumps(operations))
    try:
        expected = jsonpatch.JsonPatch(operations).apply(document)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        with pytest.raises(FhirError) as refused:
            patch.applied_to(document, "Basic/1")
        assert refused.value.status == 409
        assert MARK not in refused.value.diagnostics  # no value of the record, ever
    else:
        assert canonical(patch.applied_to(document, "Basic/1")) == canonical(expected)
    assert canonical(document) == before  # all or nothing, on a copy


@given(st.data(), DOCUMENTS)
def test_a_patch_carried_as_a_binary_is_the_same_patch(
    data: st.DataObject, document: dict[str, Any]
) -> None:
    operations = data.draw(patches(document))
    body = orjson.dumps(operations)
    encoded = base64.b64encode(body).decode()
    width = data.draw(st.sampled_from([len(encoded), 76, 4]))  # wrapped in lines, or not
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": "\n".join(encoded[i : i + width] for i in range(0, len(encoded), width)),
    }
    assert json_patch_of_binary(binary) == parse_json_patch(body)


POINTERS = st.lists(KEYS | STRANGE_KEYS, max_size=3).map(lambda parts: as_pointer(tuple(parts)))
LOOSE_OPERATIONS = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "frob"])},
    optional={"path": POINTERS | JSON, "from": POINTERS | JSON, "value": JSON},
)


@settings(max_examples=300)
@given(JSON | st.lists(LOOSE_OPERATIONS, max_size=3), DOCUMENTS)
def test_any_json_is_a_patch_that_applies_or_a_clean_refusal(
    body: Any, document: dict[str, Any]
) -> None:
    """Whatever JSON a client sends as a patch: a 400 when it is no JSON Patch, else a
    patch whose application gives a value or a 409, never another error."""
    try:
        patch = parse_json_patch(orjson.dumps(body))
    except FhirError as error:
        assert error.status == 400
        return
    try:
        patch.applied_to(document, "Basic/1")
    except FhirError as error:
        assert error.status == 409


@pytest.mark.parametrize(
    ("held", "tested", "passes"),
    [
        (True, 1, False),
        (0, False, False),
        ([1, True], [True, 1], False),
        ({"a": False}, {"a": 0}, False),
        (None, False, False),
        (1, 1.0, True),  # numbers are equal by their values
        ([{"a": [2]}], [{"a": [2.0]}], True),
        ({"a": 1, "b": True}, {"b": True, "a": 1}, True),
    ],
)
def test_a_test_operation_compares_as_rfc_6902_not_as_python(
    held: Any, tested: Any, passes: bool
) -> None:
    """RFC 6902 §4.6: literals equal only themselves (Python takes true for 1; the package
    compares as the RFC does)."""
    patch = parse_json_patch(orjson.dumps([{"op": "test", "path": "/x", "value": tested}]))
    if passes:
        assert patch.applied_to({"x": held}, "Basic/1") == {"x": held}
    else:
        with pytest.raises(FhirError) as refused:
            patch.applied_to({"x": held}, "Basic/1")
        assert refused.value.status == 409
