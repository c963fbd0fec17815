"""The R4 search parameters of each resource type, as the generated module lists them.

``coffre/search/_parameters_r4.py`` is written by ``scripts/generate_search_parameters.py``
from the official definitions; each parameter's FHIRPath expression is compiled there into
a plain Python function, so nothing is interpreted when a resource is indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# What an extractor returns: the elements found, grouped by their FHIR type ("" when only
# the value itself can tell, as after resolve()).
Extracted = tuple[tuple[str, list[Any]], ...]


class Extractor(Protocol):
    """A compiled expression: evaluated on ``r``, the resource, or for a composite's
    component on one element of it, with ``root`` the resource (``%resource``)."""

    def __call__(self, r: Any, root: Any = None) -> Extracted: ...


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a composite parameter, evaluated on each element the composite selects."""

    code: str
    type: str
    expression: str
    extract: Extractor


@dataclass(frozen=True, slots=True)
class SearchParameter:
    """A search parameter as it applies to one resource type."""

    code: str
    type: str
    url: str
    expression: str | None
    extract: Extractor | None
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    # A token's FHIR element types (Identifier, CodeableConcept, code...): what its modifiers
    # can read (``:of-type`` only an Identifier's type).
    element_types: frozenset[str] = frozenset()
    # The top-level properties ``extract`` reads, when it reads nothing else of the resource.
    roots: frozenset[str] | None = None


def parameters_for(resource_type: str) -> dict[str, SearchParameter]:
    """The parameters of a resource type by code; empty for an unknown type."""
    from coffre.search._parameters_r4 import PARAMETERS

    return PARAMETERS.get(resource_type, {})
