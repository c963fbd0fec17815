"""What a resource is indexed under: for each search parameter of its type, the typed,
normalised values (see :mod:`coffre.search.values`).

A parameter appears in the result when its expression selects anything at all, even if
nothing there normalises to a value (a CodeableConcept without codes): that is what
``:missing=false`` matches. A parameter absent from the result is missing.
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

from coffre.search.normalise import PHONETIC, phonetic
from coffre.search.parameters import Component, Extractor, SearchParameter, parameters_for
from coffre.search.values import BY_TYPE, Composite, Groups, Text, Value

Plan = tuple[tuple[str, str, Extractor, tuple[Component, ...], frozenset[str] | None], ...]


@cache
def _plan(resource_type: str) -> Plan:
    """The parameters of a type that have an expression, in a form quick to loop over."""
    params: dict[str, SearchParameter] = parameters_for(resource_type)
    return tuple(
        (code, param.type, param.extract, param.components, _roots(param))
        for code, param in params.items()
        if param.extract is not None
    )


def _roots(param: SearchParameter) -> frozenset[str] | None:
    """The roots to check before running an extractor, unless the expression yields a value
    without them (``Patient.deceased.exists() and ...`` is ``false`` on any Patient)."""
    return None if param.expression and "exists()" in param.expression else param.roots


def _unique(values: list[Value]) -> list[Value]:
    """The values once each, in a list of their own (``values`` may be memoised). Values
    of two kinds may be equal tuples: a reference ``Patient/1`` beside an identifier of
    system ``Patient/1`` and value ``Patient``."""
    return list({(type(value), value): value for value in values}.values())


Memo = dict[tuple[Extractor, int, str], list[Value]]


def _composite(
    resource: dict[str, Any],
    groups: Groups,
    components: tuple[Component, ...],
    base: str | None,
    memo: Memo,
) -> list[Value]:
    """Per element the composite selects, every combination of its components' values.
    Components recur across composites (an Observation's ``code`` is in nine): ``memo``
    keeps each one's values for an element."""
    out: list[Value] = []
    for _, items in groups:
        for item in items:
            values = []
            for component in components:
                key = (component.extract, id(item), component.type)
                if key not in memo:
                    memo[key] = BY_TYPE[component.type](component.extract(item, resource), base)
                values.append(memo[key])
            out.extend(Composite(combination) for combination in itertools.product(*values))
    return out


def index_values(
    resource: dict[str, Any], base: str | None = None, only: frozenset[str] | None = None
) -> dict[str, list[Value]]:
    """Each search parameter of the resource's type whose element is present, with its values.

    ``base`` is Coffre's own base URL: absolute references to it index as ``Type/id``;
    ``only`` limits the work to the parameters a search tests.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return {}
    found: dict[str, list[Value]] = {}
    memo: Memo = {}
    keys = resource.keys()
    planned = _plan(resource_type)
    if only is not None:
        planned = tuple(entry for entry in planned if entry[0] in only)
    for code, kind, extract, components, roots in planned:
        if roots is not None and keys.isdisjoint(roots):
            continue
        groups = extract(resource)
        for _, items in groups:
            if items:
                break
        else:
            continue
        if kind == "composite":
            found[code] = _unique(_composite(resource, groups, components, base, memo))
        else:
            values = BY_TYPE[kind](groups, base)
            memo[(extract, id(resource), kind)] = values
            found[code] = _unique(_sounds(values) if code == PHONETIC else values)
    return found


def _sounds(names: list[Value]) -> list[Value]:
    """What ``phonetic`` indexes of a name's parts: the codes of each part's words, and
    each word's alone (a search for one word of a part finds it)."""
    found: list[Value] = []
    for name in names:
        if isinstance(name, Text) and (codes := phonetic(name.normalised)):
            found += [Text(code, code) for code in dict.fromkeys([codes, *codes.split()])]
    return found
