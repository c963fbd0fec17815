"""What a read or a search shows of each resource (search.html#summary, #elements): the
same ``_summary`` and ``_elements`` for a read over REST, a page of results and a
Bundle's entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coffre.exceptions import FhirError, bounded
from coffre.fhir import json
from coffre.fhir.elements import choice_names, element_names, mandatory_names
from coffre.search.parameters import parameters_for
from coffre.search.results import Pairs, listed, one_of

SUMMARIES = ("true", "false", "count", "data", "text")
READ_SUMMARIES = tuple(s for s in SUMMARIES if s != "count")  # a count is a search's
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


@dataclass(frozen=True, slots=True)
class Shape:
    """What of each resource an answer shows (``_summary``, ``_elements``)."""

    summary: str | None
    elements: tuple[str, ...]

    @property
    def whole(self) -> bool:
        return self.summary in (None, "false") and not self.elements

    @property
    def of_includes(self) -> Shape:
        """What an answer shows of its included resources: ``_elements`` names a match's
        elements (other types' have other names), and leaves the includes whole."""
        return Shape(self.summary, ())

    def served(self, body: bytes) -> Any:
        """What an answer shows of a resource sealed as ``body``: the whole of it is its
        JSON as sealed, embedded without being parsed."""
        if self.whole:
            return json.embedded(body)
        return self._subset(json.loads(body))

    def _subset(self, resource: dict[str, Any]) -> dict[str, Any]:
        if self.summary == "data":
            return _subsetted({k: v for k, v in resource.items() if k != "text"})
        # "Servers SHOULD always return mandatory elements whether they are requested or
        # not" (search.html#elements); _summary=text keeps them too, and R4 marks them all
        # as summary elements.
        resource_type = resource["resourceType"]
        keep = {"resourceType", "id", "meta", *mandatory_names(resource_type)}
        if self.summary == "text":
            keep.add("text")
        elif self.summary == "true":
            keep |= _summary_elements(resource_type)
        else:
            keep |= set(self.elements)
        # A primitive comes with its extensions (``_birthDate`` with ``birthDate``), a
        # choice element by its own name (``value`` keeps ``valueQuantity``).
        choices = choice_names(resource_type)
        return _subsetted(
            {
                k: v
                for k, v in resource.items()
                if (name := k.removeprefix("_")) in keep or choices.get(name) in keep
            }
        )


def search_shape(pairs: Pairs) -> Shape:
    """What a page of search results shows of each resource."""
    return Shape(one_of(pairs, "_summary", SUMMARIES), tuple(listed(pairs, "_elements")))


def unknown_elements(resource_type: str, shape: Shape, strict: bool) -> list[str]:
    """Why each name ``_elements`` gives that is no top-level element of the type (a
    typo, a path such as ``identifier.value``) shows nothing: a 400 when ``strict``, as
    an unknown search parameter, else said in the answer's outcome."""
    unknown = [name for name in shape.elements if name not in element_names(resource_type)]
    if not unknown:
        return []
    reason = (
        f"_elements={bounded(','.join(unknown))}: no top-level element of {resource_type} has that"
        " name (_elements takes element names alone, such as identifier or name)"
    )
    if strict:
        raise FhirError(400, "not-supported", f"the search cannot be answered: {reason}")
    return [reason]


def read_shape(pairs: Pairs) -> Shape:
    """What a read or vread shows of its resource (``_summary``, ``_elements``);
    ``_summary=count`` is for searches."""
    return Shape(one_of(pairs, "_summary", READ_SUMMARIES), tuple(listed(pairs, "_elements")))


def _subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**resource, "meta": meta}


def _summary_elements(resource_type: str) -> set[str]:
    """Elements a summary keeps: those search parameters read (the R4 definitions mark
    nearly all of them as summary elements; Coffre does not carry the summary flags)."""
    found: set[str] = set()
    for param in parameters_for(resource_type).values():
        if param.roots is not None and not param.code.startswith("_"):
            found |= param.roots
    return found
