"""The generated modules (coffre/fhir/_schema_r4.py, _definitions_r4.py, _elements_r4.py) are what
scripts/generate_fhir_modules.py makes of the official definitions in ../shared/data:
a change to the script is not left without its regenerated modules."""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType

from conftest import shared_data_path
from hypothesis import example, given
from hypothesis import strategies as st

from coffre.fhir import _definitions_r4, _elements_r4
from coffre.fhir.elements import choice_names, element_names, mandatory_names

ROOT = Path(__file__).resolve().parents[2]


@cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_fhir_modules", ROOT / "scripts" / "generate_fhir_modules.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_compiled_schema_is_the_scripts_output() -> None:
    generator = _generator()
    schema = json.loads(shared_data_path("schema", "fhir.schema.json").read_text())
    code, resource_types = generator.compile_schema(schema)
    committed = (ROOT / "coffre" / "fhir" / "_schema_r4.py").read_text()
    assert committed == generator.HEADER.format(what="JSON schema") + code
    assert frozenset(resource_types) == _definitions_r4.RESOURCE_TYPES


def test_the_compartment_paths_are_the_scripts_output() -> None:
    generator = _generator()
    paths = generator.compartment_paths(shared_data_path())
    assert {k: tuple(v) for k, v in paths.items()} == _definitions_r4.PATIENT_COMPARTMENT_PATHS


def test_the_element_names_of_each_resource_type_are_the_schemas() -> None:
    """What ``_elements`` may name: every top-level property of the schema's (a
    primitive's ``_name`` as its own), each choice element by its own name too."""
    schema = json.loads(shared_data_path("schema", "fhir.schema.json").read_text())
    for resource_type in _definitions_r4.RESOURCE_TYPES:
        properties = schema["definitions"][resource_type]["properties"]
        named = {name.removeprefix("_") for name in properties} - {"resourceType"}
        choices = set(choice_names(resource_type).values())
        assert element_names(resource_type) == named | choices, resource_type


def test_the_element_rules_are_the_scripts_output() -> None:
    """The mandatory elements the schema's ``required`` lists, and the primitives and
    choices it leaves out (an Observation's status, a MedicationRequest's medication[x]);
    a choice's JSON names lead to its element, look-alikes that are not choices do not."""
    generator = _generator()
    schema = json.loads(shared_data_path("schema", "fhir.schema.json").read_text())
    types = sorted(schema["discriminator"]["mapping"])
    assert generator.element_rules(schema, types) == _elements_r4.ELEMENT_RULES
    assert mandatory_names("Observation") == {"code", "status"}
    assert {"medicationCodeableConcept", "medicationReference", "status"} <= mandatory_names(
        "MedicationRequest"
    )
    assert mandatory_names("Patient") == set()
    assert _elements_r4.ELEMENT_RULES["Extension"][0] == (("url", ("url",)),)
    assert choice_names("Observation")["valueQuantity"] == "value"
    assert "statusReason" not in choice_names("MedicationRequest")


def test_the_uri_elements_are_the_scripts_output() -> None:
    """The elements of a uri type, choices' among them (an extension's ``valueUri``), in
    data types (an attachment's ``url``) and backbone elements alike; a string is none."""
    generator = _generator()
    schema = json.loads(shared_data_path("schema", "fhir.schema.json").read_text())
    types = sorted(schema["discriminator"]["mapping"])
    rules = generator.element_rules(schema, types)
    assert generator.uri_elements(schema, rules, types) == _elements_r4.URI_ELEMENTS
    uris = _elements_r4.URI_ELEMENTS
    assert {"url", "valueUri", "valueCanonical", "valueOid", "valueUuid"} <= set(uris["Extension"])
    assert "valueString" not in uris["Extension"]
    assert uris["Attachment"] == ("url",)
    assert "url" in uris["ValueSet"] and "title" not in uris["ValueSet"]


@given(st.text(alphabet="aZ9+/=!é \n\t\u2003", max_size=14))
@example("QUFB")
@example(" QUFB\n QUFBQUFB  ")
@example("QUFB Q")
@example("QU FB")
def test_base64_is_checked_in_one_pass_on_the_schemas_terms(value: str) -> None:
    """The expression that replaces the schema's accepts exactly the same strings."""
    generator = _generator()
    schemas = re.compile(generator.BASE64_PATTERN).search(value) is not None
    assert (re.compile(generator.BASE64_LINEAR).search(value) is not None) == schemas
