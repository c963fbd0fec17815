"""fhirpathpy, an FHIRPath engine independent of Coffre's, evaluating the official R4 search
expressions: the oracle of the search tests.

Three justified rewrites of the expressions it is given:
- fhirpathpy has no ``resolve()``; search only asks what type a reference points to, so
  ``resolve() is T`` becomes a test on the reference string, which is what Coffre's
  ``resolve()`` looks at too;
- fhirpathpy does not take a resource as a ``Resource`` (``Resource.id`` selects nothing
  on a Patient): the leading ``Resource.`` or ``DomainResource.`` becomes the type's name;
- fhirpathpy refuses ``as`` on several items, as FHIRPath 2.0 does, where R4 search
  expressions use it as a filter (``Observation.component.value as Quantity``): ``x as T``
  and ``x.as(T)`` become ``x.ofType(T)``, which is what R4 meant.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

_RESOLVE_IS = re.compile(r"resolve\(\) is (\w+)")
_BASE_TYPE = re.compile(r"\b(?:Resource|DomainResource)\.")
_AS = re.compile(r"(?: as |\.as\()(\w+)\)?")


@cache
def oracle(expression: str, resource_type: str) -> Any:
    """A function from a resource (or element) to what ``expression`` selects in it."""
    rewritten = _BASE_TYPE.sub(f"{resource_type}.", expression)
    rewritten = _RESOLVE_IS.sub(
        lambda m: f"reference.matches('^(.*/)?{m.group(1)}/[^/]+(/_history/.*)?$')", rewritten
    )
    rewritten = _AS.sub(r".ofType(\1)", rewritten)
    return fhirpath_compile(rewritten, models["r4"])
