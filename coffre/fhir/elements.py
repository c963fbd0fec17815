"""The rules of FHIR's element definitions that the R4 JSON schema cannot state.

The schema lists as required only the mandatory elements of complex types (a primitive's
value may stand in its ``_name`` sibling, a choice in one of several names), and never
says that a choice element holds one type. So an Observation without its ``status``, or
with both ``valueBoolean`` and ``valueString``, passed it. The rules come from R4's
element definitions (``_elements_r4``, generated); empty values are the schema's to refuse.
A narrative's div, which the schema takes as any string, is checked on the way
(``narrative``: R4's txt-1 and txt-2), and so is ext-1: an extension has a value or
extensions, never both nor neither. The local references met on the way (``#id``) are
handed back for the container to resolve (ref-1), since a contained resource's own point
at its siblings.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from coffre.fhir._elements_r4 import ELEMENT_RULES
from coffre.fhir.narrative import NARRATIVE_TYPE, NarrativeError, check_narrative
from coffre.fhir.references import REFERENCE_TYPE


class ElementError(ValueError):
    """An element that breaks a rule: its path (``Observation.component[0].code``), what
    is wrong with it, and the OperationOutcome's issue code."""

    def __init__(self, path: str, problem: str, code: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path, self.problem, self.code = path, problem, code


LocalReferences = list[tuple[str, str]]
"""The References to a contained resource (``#id``, not ``#`` alone), with their paths."""


def check_elements(resource: dict[str, Any], resource_type: str) -> LocalReferences:
    """Raise ElementError for the first element of ``resource`` (valid against the schema)
    that is missing though mandatory, or holds several types of one choice, or for a
    narrative whose div breaks R4's rules; return its local references. Nested resources
    (contained, Bundle entries) are left to their own check."""
    local: LocalReferences = []
    _check(resource, resource_type, resource_type, local)
    return local


def _check(node: dict[str, Any], type_name: str, path: str, local: LocalReferences) -> None:
    required, looks = ELEMENT_RULES[type_name]
    for element, names in required:
        if not any(name in node or f"_{name}" in node for name in names):
            raise ElementError(f"{path}.{element}", _missing(names), "required")
    if type_name == NARRATIVE_TYPE:
        _check_narrative(node, path)
    elif type_name == REFERENCE_TYPE:
        reference = node.get("reference")
        if type(reference) is str and reference.startswith("#") and reference != "#":
            local.append((f"{path}.reference", reference))
    chosen: dict[str, str] | None = None
    for key, value in node.items():
        look = looks.get(key)
        if look is None:
            continue
        child, choice = look
        if choice is not None:
            chosen = _one_type(chosen or {}, choice, key.removeprefix("_"), path)
        if child is None:
            continue
        if type(value) is dict:
            _check(value, child, f"{path}.{key}", local)
        elif type(value) is list:
            for i, item in enumerate(value):
                if type(item) is dict:
                    _check(item, child, f"{path}.{key}[{i}]", local)
    if type_name == "Extension" and (chosen is not None and "value[x]" in chosen) == (
        "extension" in node
    ):
        raise ElementError(path, _EXT_1, "invariant")


_EXT_1 = (
    "must have either a value or extensions of its own, not both nor neither (ext-1):"
    " a complex extension holds its parts as extensions"
)


def _check_narrative(narrative: dict[str, Any], path: str) -> None:
    div = narrative["div"]  # mandatory, and a string, by the schema (which has no _div)
    try:
        check_narrative(div)
    except NarrativeError as error:
        raise ElementError(f"{path}.div", error.problem, error.code) from None


def _one_type(chosen: dict[str, str], choice: str, name: str, path: str) -> dict[str, str]:
    """Note that ``name`` gives ``choice`` (``value[x]``) its type; refuse a second type."""
    first = chosen.setdefault(choice, name)
    if first != name:
        several = f"has several types ({first}, {name}): a choice element holds one"
        raise ElementError(f"{path}.{choice}", several, "structure")
    return chosen


def _missing(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return "is missing: the element is mandatory (cardinality 1..)"
    return f"is missing: the element is mandatory, as one of {', '.join(names)}"


@cache
def mandatory_names(resource_type: str) -> frozenset[str]:
    """The JSON names of a resource type's mandatory top-level elements (a choice's, one
    per type: ``medicationCodeableConcept``, ``medicationReference``)."""
    required, _ = ELEMENT_RULES[resource_type]
    return frozenset(name for _, names in required for name in names)


@cache
def choice_names(resource_type: str) -> dict[str, str]:
    """A resource type's top-level choice elements, by JSON name: ``valueQuantity`` ->
    ``value``. A prefix alone cannot tell a choice from a look-alike (a MedicationRequest's
    ``status`` and ``statusReason``)."""
    _, looks = ELEMENT_RULES[resource_type]
    return {
        name: choice.removesuffix("[x]")
        for name, (_, choice) in looks.items()
        if choice is not None and not name.startswith("_")
    }


@cache
def element_names(resource_type: str) -> frozenset[str]:
    """The names of a resource type's top-level elements, as ``_elements`` gives them:
    each element's (a primitive's ``_name`` stands for it), a choice element's own
    (``value``), and a DomainResource's ``contained``, whose resources need no look."""
    _, looks = ELEMENT_RULES[resource_type]
    names = {name.removeprefix("_") for name in looks} | set(choice_names(resource_type).values())
    if "text" in names:  # a DomainResource
        names.add("contained")
    return frozenset(names)
