"""Every compiled search extractor against fhirpathpy evaluating the same official expression
on the same resources: the HL7 R4 examples and Synthea patients (the rewrites fhirpathpy
needs are in tests/fhirpath_oracle.py).

One difference is expected: a reference to a contained resource (``#id``) resolves in
Coffre to that resource, so ``where(resolve() is Patient)`` keeps it when the contained
resource is a Patient; the rewritten oracle, which reads only the reference string, cannot.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data_path
from fhirpath_oracle import oracle

from coffre.search.fhirpath import Prim
from coffre.search.parameters import parameters_for

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


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
            evaluate = oracle(param.expression, resource["resourceType"])
            theirs = {_canonical(item) for item in evaluate(resource)}
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
