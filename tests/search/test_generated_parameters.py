"""The committed search parameter module is what the generator writes today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import ROOT, shared_data_path

from coffre.search.parameters import parameters_for


def _generator() -> object:
    spec = importlib.util.spec_from_file_location(
        "generate_search_parameters", ROOT / "scripts" / "generate_search_parameters.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
@pytest.mark.slow
def test_the_generated_module_is_up_to_date(tmp_path: Path) -> None:
    output = tmp_path / "_parameters_r4.py"
    _generator().write(shared_data_path(), output)  # type: ignore[attr-defined]
    committed = ROOT / "coffre" / "search" / "_parameters_r4.py"
    assert output.read_text() == committed.read_text(), (
        "run `make generate` and commit coffre/search/_parameters_r4.py"
    )


def test_every_resource_type_has_the_common_parameters() -> None:
    from coffre.fhir._definitions_r4 import RESOURCE_TYPES

    for resource_type in RESOURCE_TYPES:
        codes = parameters_for(resource_type)
        assert {"_id", "_lastUpdated", "_tag", "_profile", "_security"} <= codes.keys()


def test_shared_expressions_are_split_per_type() -> None:
    patient, practitioner = parameters_for("Patient"), parameters_for("Practitioner")
    assert patient["name"].extract is not None and practitioner["name"].extract is not None
    name = {"resourceType": "Patient", "name": [{"family": "Tremblay"}]}
    assert patient["phonetic"].extract is not None
    assert patient["phonetic"].extract(name) == (("HumanName", name["name"]),)


def test_references_know_their_targets_and_composites_their_components() -> None:
    observation = parameters_for("Observation")
    assert "Patient" in observation["subject"].targets
    components = observation["code-value-quantity"].components
    assert [(c.code, c.type) for c in components] == [
        ("code", "token"),
        ("value-quantity", "quantity"),
    ]
    assert parameters_for("NoSuchType") == {}
