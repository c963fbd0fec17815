"""The blind tokens a record is stored with (coffre.service.indexing): each index key of
the search plan (``tests/index_keys.py``) blinded, whatever the tokens kept of earlier values."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from conftest import shared_data_path
from index_keys import index_keys

from coffre.seal import PurposeKeys
from coffre.search.extract import index_values
from coffre.service import indexing
from coffre.service.indexing import blind, index_tokens

KEYS = PurposeKeys.derive(os.urandom(32))


def _blinded_keys(keys: PurposeKeys, resource: dict[str, Any]) -> set[bytes]:
    resource_type = resource["resourceType"]
    found = index_keys(index_values(resource))
    return {blind(keys, resource_type, parameter, key) for parameter, key in found}


def _synthea_resources(bundles: int) -> list[dict[str, Any]]:
    folder = shared_data_path("synthea", "smart-2019")
    resources = []
    for path in sorted(folder.glob("*.json"))[:bundles]:
        resources += [entry["resource"] for entry in json.loads(path.read_text())["entry"]]
    return resources


def test_a_resource_has_the_tokens_of_its_index_keys_with_values_kept_or_not() -> None:
    """Three Synthea patients' resources, indexed with no value kept, then again with
    every value kept, and with a cache too small to keep a resource's values."""
    resources = _synthea_resources(3)
    indexing._value_tokens.cache_clear()
    first = [index_tokens(KEYS, resource) for resource in resources]
    assert indexing._value_tokens.cache_info().hits > 0
    again = [index_tokens(KEYS, resource) for resource in resources]
    assert first == again
    for resource, tokens in zip(resources, first, strict=True):
        assert set(tokens) == _blinded_keys(KEYS, resource), resource["id"]


def test_equal_values_of_two_kinds_keep_tokens_of_their_own() -> None:
    """A reference and its identifier give equal tuples here (``Ref('Patient/1',
    'Patient')``, ``RefIdentifier('Patient/1', 'Patient')``), under different keys."""
    indexing._value_tokens.cache_clear()
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {
            "reference": "Patient/1",
            "identifier": {"system": "Patient/1", "value": "Patient"},
        },
    }
    assert set(index_tokens(KEYS, observation)) == _blinded_keys(KEYS, observation)


@pytest.mark.parametrize("only", [frozenset({"subject"}), frozenset({"code", "status"})])
def test_the_tokens_of_some_parameters_are_theirs_alone(only: frozenset[str]) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/1"},
    }
    found = index_keys(index_values(observation, only=only))
    expected = {blind(KEYS, "Observation", parameter, key) for parameter, key in found}
    assert set(index_tokens(KEYS, observation, only)) == expected
    assert {parameter for parameter, _ in found} == only
