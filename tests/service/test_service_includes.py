"""The relative references a sealed record's JSON holds, read from its text: every
``reference`` element's, and nothing a text merely quotes."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coffre.fhir._definitions_r4 import RESOURCE_TYPES
from coffre.fhir.json import dumps
from coffre.service.includes import relative_references
from coffre.service.stored import Stored

TYPES = st.sampled_from(["Practitioner", "Organization", "Location", "Medication", "Patient"])
IDS = st.from_regex(r"[A-Za-z0-9.\-]{1,64}", fullmatch=True)
RELATIVE = st.tuples(TYPES, IDS)
NOT_RELATIVE = st.sampled_from(
    [
        "#contained-1",
        "urn:uuid:5a2b1c9e-0000-4000-8000-000000000000",
        "https://elsewhere.example/fhir/Practitioner/p1",
        "Nothing/x",
        "practitioner/p1",
        "Practitioner/",
    ]
)
LOOK_ALIKE = RELATIVE.map(lambda ref: f'"reference":"{ref[0]}/{ref[1]}"')
TEXTS = st.one_of(st.text(max_size=20), LOOK_ALIKE, LOOK_ALIKE.map(lambda t: f"<p>{t}</p>"))


@st.composite
def trees(draw: st.DrawFn, depth: int = 3) -> dict[str, Any]:
    """A JSON tree with references, other kinds of references, and texts that quote one."""
    node: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(["text", "note", "display", "div"]), max_size=3)):
        node[key] = draw(TEXTS)
    choice = draw(st.integers(0, 2))
    if choice == 0:
        resource_type, resource_id = draw(RELATIVE)
        node["reference"] = f"{resource_type}/{resource_id}" + draw(
            st.sampled_from(["", "/_history/2"])
        )
    elif choice == 1:
        node["reference"] = draw(NOT_RELATIVE)
    if depth > 0:
        for key in draw(st.lists(st.sampled_from(["subject", "performer", "item"]), max_size=2)):
            node[key] = draw(st.lists(trees(depth - 1), min_size=1, max_size=2))
    return node


def _held(node: Any) -> set[tuple[str, str]]:
    """The relative references of the tree, walked as objects (the oracle)."""
    if isinstance(node, list):
        return set().union(*map(_held, node))
    if not isinstance(node, dict):
        return set()
    found = set().union(*map(_held, node.values()))
    reference = node.get("reference")
    if isinstance(reference, str):
        resource_type, _, rest = reference.partition("/")
        resource_id = rest.split("/_history/")[0]
        if resource_type in RESOURCE_TYPES and re.fullmatch(r"[A-Za-z0-9.\-]{1,64}", resource_id):
            found.add((resource_type, resource_id))
    return found


@given(trees())
def test_the_references_read_from_the_text_are_those_the_json_holds(node: dict[str, Any]) -> None:
    stored = Stored("Observation", "o", 1, 0, False, dumps({"resourceType": "Observation", **node}))
    assert set(relative_references(stored)) == _held(node)
