"""Every compiled search extractor against fhirpathpy evaluating the same official expression
on the same resources: the HL7 R4 examples and Synthea patients.

fhirpathpy is an independent FHIRPath engine, used here as an oracle only. Two justified
rewrites of the expressions it is given:
- fhirpathpy has no ``resolve()``; search only asks what type a reference points to, so
  ``resolve() is T`` becomes a test on the reference string, which is what Coffre's
  ``resolve()`` looks at too;
- fhirpathpy does not take a resource as a ``Resource`` (``Resource.id`` selects nothing
  on a Patient): the leading ``Resource.`` or ``DomainResource.`` becomes the type's name;
- fhirpathpy refuses ``as`` on several items, as FHIRPath 2.0 does, where R4 search
  expressions use it as a filter (``Observation.component.value as Quantity``): ``x as T``
  and ``x.as(T)`` become ``x.ofType(T)``, which is what R4 meant.

And one difference is expected: a reference to a contained resource (``#id``) resolves in
Coffre to that resource, so ``where(resolve() is Patient)`` keeps it when the contained
resource is a Patient; the rewritten oracle, which reads only the reference string, cannot.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data_path
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from coffre.search.fhirpath import Prim
from coffre.search.parameters import parameters_for

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
_RESOLVE_IS = re.compile(r"resolve\(\) is (\w+)")
_BASE_TYPE = re.compile(r"\b(?:Resource|DomainResource)\.")
_AS = re.compile(r"(?: as |\.as\()(\w+)\)?")


@cache
def _oracle(expression: str, resource_type: str) -> Any:
    rewritten = _BASE_TYPE.sub(f"{resource_type}.", expression)
    rewritten = _RESOLVE_IS.sub(
        lambda m: f"reference.matches('^(.*/)?{m.group(1)}/[^/]+(/_history/.*)?$')", rewritten
    )
    rewritten = _AS.sub(r".ofType(\1)", rewritten)
    return fhirpath_compile(rewritten, models["r4"])


def _plain(item: Any) -> Any:
    """JSON with every number as its normalised decimal text: 6.0, 6 and '6.0' agree."""
    if isinstance(item, Prim):
        item = item.value
    if isinstance(item, bool) or item is None:
        return item
    if isinstance(item, int | float | Decimal):
        return str(Decimal(str(item)).normalize())
    if isinstance(item, dict):
        return {key: _plain(value) for key, value in item.items()}
    if isinstance(item, list):
        return [_plain(value) for value in item]
    return str(item)


def _canonical(item: Any) -> str:
    return json.dumps(_plain(item), sort_keys=True)


def _contained(item: str) -> bool:
    return item.startswith('{"reference": "#')


def _resources(paths: list[Path]) -> list[dict[str, Any]]:
    found = []
    for path in paths:
        data = json.loads(path.read_text())
        found.append(data)
        if data.get("resourceType") == "Bundle":
            found.extend(e["resource"] for e in data.get("entry", []) if "resource" in e)
    return found


def _compare(resources: list[dict[str, Any]]) -> tuple[int, Counter[str]]:
    checked, differences = 0, Counter[str]()
    for resource in resources:
        for code, param in parameters_for(resource["resourceType"]).items():
            if param.extract is None or param.type == "special":
                continue
            key = (code, resource["resourceType"])
            ours = {_canonical(item) for _, items in param.extract(resource) for item in items}
            oracle = _oracle(param.expression, resource["resourceType"])
            theirs = {_canonical(item) for item in oracle(resource)}
            if "resolve()" in param.expression:
                ours = {item for item in ours if item in theirs or not _contained(item)}
            checked += 1
            if ours != theirs:
                differences[
                    f"{key}: ours-theirs {sorted(ours - theirs)[:2]} theirs-ours {sorted(theirs - ours)[:2]}"
                ] += 1
    return checked, differences


def test_extractors_agree_with_fhirpathpy_on_the_hl7_examples() -> None:
    folder = shared_data_path("fhir-examples")
    checked, differences = _compare(_resources(sorted(folder.glob("*.json"))))
    assert checked > 20_000
    assert not differences, "\n".join(f"{n}x {d}" for d, n in differences.most_common(40))


def test_extractors_agree_with_fhirpathpy_on_synthea_patients() -> None:
    folder = shared_data_path("synthea")
    paths = (
        sorted(folder.glob("fhir-data-pipes-2021/*.json"))[:3]
        + sorted(folder.glob("smart-2019/*.json"))[:2]
    )
    checked, differences = _compare(_resources(paths))
    assert checked > 10_000
    assert not differences, "\n".join(f"{n}x {d}" for d, n in differences.most_common(40))
